"""Search-space files: one key per hyperparameter, RecBole style, parsed to Ray Tune domains.

A search-space file (``properties/tune/<method>.yaml``) is YAML with three kinds of lines::

    tru_learning_rate: loguniform [0.001, 0.01]   # searched: <distribution> [arguments]
    tru_stop: guarded                             # fixed for every trial (any other value)
    tune_num_samples: 8                           # a sweep setting (tune_* keys)

Distributions (Ray Tune's, with their argument lists; bounds are values, not exponents as in
RecBole's own hyper-tuning files):

=============  ==================  ==============================================
name           arguments           draws
=============  ==================  ==============================================
choice         [v1, v2, ...]       one of the values (numbers or strings)
grid           [v1, v2, ...]       every value (multiplies the trials, as Ray's grid_search)
uniform        [low, high]         a float in [low, high]
quniform       [low, high, q]      uniform, rounded to a multiple of q
loguniform     [low, high]         a float, uniform in log space (low > 0)
qloguniform    [low, high, q]      loguniform, rounded to a multiple of q
randint        [low, high]         an int in [low, high) (high excluded, as in Ray)
qrandint       [low, high, q]      an int in [low, high] that is a multiple of q
lograndint     [low, high]         an int in [low, high), uniform in log space
=============  ==================  ==============================================

A file tunes ONE unlearning method: every searched or fixed key must be a declared key of that
method (``<method>_*`` in ``properties/unlearn/<method>.yaml``); keys that would change the
data, the deletion request or the trained models are refused, and so are unknown keys and
unknown distributions, with an error that names the file and the key. A file whose keys belong
to no method, run without ``--unlearn``, tunes the BACKBONE's training instead
(``properties/tune/backbone.yaml``, :mod:`recbole_tru.tune.backbone`): its keys are the model's
training settings; data, split, evaluation and epoch-budget keys are refused. Precedence of sweep
settings and fixed values: command line / ``config_dict`` > the search-space file >
``properties/unlearn/tune.yaml``.
"""
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ray import tune

from recbole_tru.config import PLUGIN_PREFIXES
from recbole_tru.registry import parse_unlearn

_DISTRIBUTION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\[.*\])\s*$", re.S)

# name -> (number of arguments (None: a non-empty list), Ray Tune constructor)
DISTRIBUTIONS = {
    "choice": (None, tune.choice),
    "grid": (None, tune.grid_search),
    "uniform": (2, tune.uniform),
    "quniform": (3, tune.quniform),
    "loguniform": (2, tune.loguniform),
    "qloguniform": (3, tune.qloguniform),
    "randint": (2, tune.randint),
    "qrandint": (3, tune.qrandint),
    "lograndint": (2, tune.lograndint),
}
SETTINGS_PREFIX = "tune_"
NOT_TUNABLE = ("retrain", "sisa")     # nothing to tune / trains its own models
# a file without --unlearn whose keys belong to no method tunes the backbone's training
# (recbole_tru.tune.backbone); these keys may not be searched there: they change the data, the
# split, the evaluation or the run itself, not how the model is trained
BACKBONE = "backbone"
BACKBONE_REFUSED_GROUPS = ("General", "Evaluation", "Dataset")
BACKBONE_REFUSED = ("model_seed", "unlearn", "checkpoint", "recommend", "tune", "ray_address", "output_dir",
                    "model", "dataset", "epochs", "stopping_step")


class SearchSpaceError(ValueError):
    """A search-space file is missing, malformed, or names an unknown key or distribution."""


@dataclass
class SearchSpace:
    path: Path
    method: str
    domains: dict                                   # searched key -> Ray Tune domain
    specs: dict                                     # searched key -> (distribution, arguments)
    fixed: dict = field(default_factory=dict)       # key -> value applied to every trial
    settings: dict = field(default_factory=dict)    # tune_* -> value (defaults + file + command line)

    def describe(self):
        lines = [f"{k}: {name} {args}" for k, (name, args) in self.specs.items()]
        return lines + [f"{k}: {v} (fixed)" for k, v in self.fixed.items()]


def number(value):
    """YAML 1.1 reads ``1e-4`` as a string: numbers written that way become numbers."""
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def resolve_path(value, package_root):
    """The search-space file: as given (relative to the working directory), else relative to
    the plugin's root (so ``properties/tune/tru.yaml`` works from anywhere)."""
    path = Path(value).expanduser()
    for candidate in (path, Path(package_root) / path):
        if candidate.is_file():
            return candidate.resolve()
    raise SearchSpaceError(f"Search-space file not found: {value} (config key 'tune')")


def parse_distribution(path, key, text):
    """``'loguniform [1e-4, 1e-2]'`` -> (name, arguments, Ray Tune domain); ``None`` when
    ``text`` is not of the form ``<name> [...]`` (then it is a fixed value)."""
    match = _DISTRIBUTION.match(text)
    if not match:
        return None
    name, raw = match.groups()
    if name not in DISTRIBUTIONS:
        close = difflib.get_close_matches(name, DISTRIBUTIONS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SearchSpaceError(f"{path}: key '{key}': unknown distribution '{name}'{hint}; "
                               f"known: {', '.join(DISTRIBUTIONS)}")
    try:
        args = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{path}: key '{key}': cannot read the arguments {raw!r} ({err})") from None
    args = [number(a) for a in args]
    n_args, make = DISTRIBUTIONS[name]
    if n_args is None:
        if not args:
            raise SearchSpaceError(f"{path}: key '{key}': {name} needs a non-empty list of values")
        return name, args, make(args)
    if len(args) != n_args or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise SearchSpaceError(f"{path}: key '{key}': {name} takes {n_args} numbers, got {args}")
    if args[0] >= args[1] or (name.startswith(("log", "qlog")) and args[0] <= 0):
        raise SearchSpaceError(f"{path}: key '{key}': {name} needs 0 < low < high for log scales "
                               f"and low < high otherwise, got {args}")
    return name, args, make(*args)


def _method(path, config, keys):
    """The method a file tunes: ``config['unlearn']`` (one name), else the prefix of its keys."""
    named = parse_unlearn(config["unlearn"])
    if len(named) > 1:
        raise SearchSpaceError(f"A sweep tunes one unlearning method; config key 'unlearn' names {named}")
    searched = [k for k in keys if not str(k).startswith(SETTINGS_PREFIX)]
    if not named and searched and not any(str(k).startswith(PLUGIN_PREFIXES) for k in searched):
        return BACKBONE
    prefixes = sorted({k.split("_", 1)[0] for k in searched})
    method = named[0] if named else (prefixes[0] if len(prefixes) == 1 else None)
    if method is None:
        raise SearchSpaceError(f"{path}: cannot tell which method to tune: set --unlearn=<method> "
                               f"(the file's keys have the prefixes {prefixes or 'none'})")
    if method in NOT_TUNABLE:
        raise SearchSpaceError(f"'{method}' cannot be tuned by a sweep (retrain has no keys; SISA trains its own models)")
    return method


def _check_backbone_key(path, config, key):
    """A key a backbone search may set: one of the model's training keys (its property file's,
    or RecBole's Training group), never one that changes the data, the split or the evaluation."""
    groups = {k: g for g, keys in config.parameters.items() for k in keys}
    if key not in config.final_config_dict:
        close = difflib.get_close_matches(key, sorted(config.final_config_dict), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SearchSpaceError(f"{path}: unknown key '{key}'{hint}: {config['model']} has no such setting")
    if key in BACKBONE_REFUSED or groups.get(key) in BACKBONE_REFUSED_GROUPS:
        why = f"a {groups[key]} setting" if key in groups and groups[key] in BACKBONE_REFUSED_GROUPS else "a run setting"
        raise SearchSpaceError(f"{path}: key '{key}' is {why}: a backbone search changes only how the model "
                               f"is trained (learning rate, L2 weight, widths, ...), never the data, the split, "
                               f"the evaluation or the epoch budget")


def load_search_space(value, config, package_root):
    """Read and check the search-space file ``value`` against ``config``'s declared keys."""
    path = resolve_path(value, package_root)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise SearchSpaceError(f"{path}: expected 'key: value' lines, got {type(raw).__name__}")
    method = _method(path, config, raw)
    declared = set(config.plugin_keys)
    settings = {k: config[k] for k in sorted(declared) if k.startswith(SETTINGS_PREFIX)}
    external = config.external_config_dict
    domains, specs, fixed = {}, {}, {}
    for key, value in raw.items():
        key = str(key)
        if method == BACKBONE and not key.startswith(SETTINGS_PREFIX):
            _check_backbone_key(path, config, key)
        elif key not in declared:
            close = difflib.get_close_matches(key, sorted(declared), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SearchSpaceError(f"{path}: unknown key '{key}'{hint}: a search space may only name "
                                   f"declared keys of properties/unlearn/*.yaml")
        parsed = parse_distribution(path, key, value) if isinstance(value, str) else None
        if key.startswith(SETTINGS_PREFIX):
            if parsed is not None:
                raise SearchSpaceError(f"{path}: key '{key}' is a sweep setting: give a value, not a distribution")
            if key not in external:
                settings[key] = number(value)
            continue
        if method != BACKBONE and not key.startswith(f"{method}_"):
            raise SearchSpaceError(f"{path}: key '{key}' is not a key of '{method}' (the method this sweep tunes): "
                                   f"a sweep changes only {method}_* keys, never the data, the request or the trained models")
        if parsed is None:
            if key not in external:
                fixed[key] = number(value)
            continue
        specs[key] = parsed[:2]
        domains[key] = parsed[2]
    if not domains:
        example = "learning_rate" if method == BACKBONE else f"{method}_learning_rate"
        raise SearchSpaceError(f"{path}: no key has a distribution (e.g. '{example}: loguniform [0.001, 0.01]')")
    for key in domains:
        if key in external:
            raise SearchSpaceError(f"{path}: key '{key}' is searched but also set on the command line / config_dict")
    return SearchSpace(path=path, method=method, domains=domains, specs=specs, fixed=fixed, settings=settings)
