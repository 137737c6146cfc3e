"""The plugin's ``Config``: RecBole's, with ``properties/`` layered over RecBole's own.

Precedence, highest first (as in RecBole): command line > ``config_dict`` > ``--config_files``
> the plugin's ``properties/`` (``overall.yaml``, ``model/<model>.yaml``,
``dataset/<dataset>.yaml``, ``dataset/<dataset>/<model>.yaml``, ``unlearn/*.yaml``) > RecBole's
``properties/``.
"""
import difflib
from pathlib import Path

from recbole.config import Config as RecBoleConfig

from recbole_tru import compat
from recbole_tru.data.forget import REGIMES, USER_MODES
from recbole_tru.registry import UNLEARNERS, get_model

PACKAGE_DIR = Path(__file__).resolve().parent
# The folder holding the plugin's properties/ and its embedded dataset/: the installed package
# itself (a wheel ships both inside it, see setup.py), else the repository root (a source
# checkout, an editable install).
PACKAGE_ROOT = PACKAGE_DIR if (PACKAGE_DIR / "properties").is_dir() else PACKAGE_DIR.parent
PROPERTIES = PACKAGE_ROOT / "properties"
DATASETS = PACKAGE_ROOT / "dataset"
DEFAULT_DATASET = "ml-100k-mm"

# Config keys starting with these belong to the plugin: every one must be declared (with a
# default and a comment) in properties/, so a typo fails at start-up instead of being ignored.
PLUGIN_PREFIXES = ("forget_", "unlearn_", "tru_", "reverse_", "finetune_", "gradascent_", "retrain_",
                   "audit_", "tune_", "sisa_", "feature_", "influence_", "recommend_")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(*names):
    return (lambda v: v in names), "one of " + ", ".join(names)


# Allowed values of the plugin's keys: (test, what the error says is allowed). A key's rule is
# its own entry, else (plugin prefixes only) the entry of its suffix. None passes where the
# declared default is None.
SHARE = (lambda v: _number(v) and 0 < v < 1), "a number in (0, 1)"
UNIT = (lambda v: _number(v) and 0 < v <= 1), "a number in (0, 1]"
POSITIVE = (lambda v: _number(v) and v > 0), "a number > 0"
NON_NEGATIVE = (lambda v: _number(v) and v >= 0), "a number >= 0"
COUNT = (lambda v: _integer(v) and v > 0), "an integer > 0"
COUNT_OR_ZERO = (lambda v: _integer(v) and v >= 0), "an integer >= 0"
POSITIVE_OR_TRAINING = ((lambda v: v is None or (_number(v) and v > 0)),
                        "a number > 0, or ~ (the model's training learning_rate)")
VALUE_RULES = {
    "forget_share": SHARE, "forget_regime": _one_of(*REGIMES), "forget_user_mode": _one_of(*USER_MODES),
    "forget_unknown": _one_of("error", "skip"), "unlearn_chain_targets": _one_of("new", "all"),
    "unlearn_evaluate": _one_of("both", "output", "none"),
    "tru_budget": UNIT, "tru_alpha_min": UNIT, "tru_stop": _one_of("guarded", "epochs"),
    "tru_stop_metric": _one_of("ks", "recall", "auc"), "tru_item_stop_metric": _one_of("ks", "recall", "auc"), "tru_reference": _one_of("live", "frozen"),
    "tru_reset_items": _one_of("init", "cold"),
    "tru_sparse_grad": ((lambda v: isinstance(v, bool) or v == "auto"), "True, False or auto"),
    "tru_match": _one_of("pooled", "user"), "tru_match_order": _one_of("rank", "support"), "tru_match_min_pairs": COUNT, "tru_solve": _one_of("none", "rows"), "tru_solve_passes": COUNT, "tru_match_quantiles": _one_of("mid", "drawn"), "tru_temperature": POSITIVE, "tru_stop_delta": NON_NEGATIVE,
    "tru_repair_budget": POSITIVE, "tru_rank_sample": COUNT_OR_ZERO, "tru_push_project": COUNT_OR_ZERO, "tru_stop_refine": COUNT_OR_ZERO, "tru_repair_learning_rate": POSITIVE_OR_TRAINING,
    "audit_shadow_share": SHARE, "audit_user_holdout": SHARE, "audit_unseen_ratio": NON_NEGATIVE,
    "audit_user_classifier": _one_of("logistic", "mlp"),
    **{key: COUNT for key in ("tru_budget_batches", "tru_reference_size", "tru_cold_items", "tru_check_steps",
                              "tru_stop_k", "tru_stop_patience", "tru_scale_refresh", "audit_pairs", "audit_chunk",
                              "audit_svd_dim", "audit_user_topk", "unlearn_overlap_k", "recommend_topk",
                              "audit_lr_refs")},
}
SUFFIX_RULES = {"_epochs": COUNT_OR_ZERO, "_batch_size": COUNT,
                "_learning_rate": POSITIVE, "_weight": NON_NEGATIVE}


def value_rule(key):
    if key in VALUE_RULES:
        return VALUE_RULES[key]
    if not key.startswith(PLUGIN_PREFIXES):
        return None
    return next((rule for suffix, rule in SUFFIX_RULES.items() if key.endswith(suffix)), None)


# The plugin's own property files, each declaring keys every run reads: a missing one is a broken
# install, never skipped (a model's or data set's own file is optional: RecBole's models and users'
# data sets have none).
REQUIRED_PROPERTIES = ("overall.yaml", "unlearn/forget.yaml", "unlearn/run.yaml", "unlearn/audit.yaml",
                       "unlearn/tune.yaml", *(f"unlearn/{method}.yaml" for method in UNLEARNERS))


def plugin_property_files(model, dataset):
    """The plugin's property files for ``model`` on ``dataset``, lowest precedence first:
    ``overall.yaml``, ``model/<model>.yaml``, ``dataset/<dataset>.yaml`` and
    ``dataset/<dataset>/<model>.yaml`` (the model's settings tuned on that data set,
    ``benchmarks/backbones.py``) where they exist, then every ``unlearn/*.yaml``. Raises
    FileNotFoundError naming a missing required file."""
    missing = [PROPERTIES / name for name in REQUIRED_PROPERTIES if not (PROPERTIES / name).is_file()]
    if missing:
        raise FileNotFoundError(f"recbole_tru's property file(s) {', '.join(map(str, missing))} are missing: the "
                                f"installation is incomplete (reinstall the package)")
    optional = [PROPERTIES / "model" / f"{model}.yaml", PROPERTIES / "dataset" / f"{dataset}.yaml",
                PROPERTIES / "dataset" / dataset / f"{model}.yaml"]
    return ([PROPERTIES / "overall.yaml"] + [f for f in optional if f.is_file()]
            + sorted((PROPERTIES / "unlearn").glob("*.yaml")))


class Config(RecBoleConfig):
    """RecBole ``Config`` with the plugin's properties, model lookup and key checks.

    Args:
        model (str or class): model name or class; plugin models are found first.
        dataset (str): data set name; defaults to ``ml-100k-mm``.
        config_file_list (list of str): YAML files (``--config_files``).
        config_dict (dict): parameters.
        read_cmd_line (bool): read ``--key=value`` items of ``sys.argv`` (RecBole's
            behaviour); off for programmatic use, e.g. under pytest.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None,
                 read_cmd_line=True):
        compat.apply()
        self._read_cmd_line = read_cmd_line
        super().__init__(model, dataset, config_file_list, config_dict)
        self._check_plugin_keys()
        self._check_plugin_values()

    def _load_cmd_line(self):
        return super()._load_cmd_line() if self._read_cmd_line else {}

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("No model given: pass --model=NAME (e.g. VBPR, MMGCN, BPR, LightGCN).")
        if isinstance(model, str):
            final_model, final_model_class = model, get_model(model)
        else:
            final_model, final_model_class = model.__name__, model
        final_dataset = dataset or self.external_config_dict.get("dataset") or DEFAULT_DATASET
        return final_model, final_model_class, final_dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.plugin_keys = set()
        for path in plugin_property_files(model, dataset):
            loaded = self._update_internal_config_dict(str(path)) or {}
            self.plugin_keys.update(loaded)
            if path.parent.name == "dataset":
                self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]
        if self.internal_config_dict.get("data_path") is None:
            local = Path("dataset")
            self.internal_config_dict["data_path"] = str(
                local if (local / dataset).is_dir() else DATASETS)

    def _check_plugin_keys(self):
        known = self.plugin_keys
        unknown = [k for k in self.external_config_dict
                   if k.startswith(PLUGIN_PREFIXES) and k not in known]
        if unknown:
            lines = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known), n=2)
                lines.append(f"'{key}'" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
            raise KeyError("Unknown recbole_tru config key(s): " + ", ".join(lines)
                           + f". Declared keys are listed in {PROPERTIES}.")

    def _check_plugin_values(self):
        """Every plugin key with a rule (:data:`VALUE_RULES`, :data:`SUFFIX_RULES`) holds an
        allowed value; otherwise one ValueError names each key, its value and what is allowed."""
        problems = []
        for key in sorted(self.plugin_keys):
            rule, value = value_rule(key), self.final_config_dict.get(key)
            if rule is None or (value is None and self.internal_config_dict.get(key) is None):
                continue
            test, allowed = rule
            if not test(value):
                problems.append(f"'{key}' must be {allowed}, got {value!r}")
        if problems:
            raise ValueError("Invalid recbole_tru config value(s): " + "; ".join(problems) + ".")
