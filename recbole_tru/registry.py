"""Name -> class lookup for models and unlearning methods, plugin first, RecBole second.

RecBole's own ``get_model`` probes ``exlib_recommender`` for unknown names and fails with a
misleading ``No module named 'lightgbm'``; here an unknown name fails at start-up with the
list of names that do exist.
"""
import difflib
import importlib
import importlib.util
import inspect

PLUGIN_MODELS = {
    "VBPR": "recbole_tru.model.vbpr",
    "MMGCN": "recbole_tru.model.mmgcn",
}

UNLEARNERS = {
    "retrain": "recbole_tru.unlearn.retrain:RetrainTrainer",
    "finetune": "recbole_tru.unlearn.finetune:FinetuneTrainer",
    "gradascent": "recbole_tru.unlearn.gradascent:GradAscentTrainer",
    "reverse": "recbole_tru.unlearn.reverse:ReverseTrainer",
    "tru": "recbole_tru.unlearn.tru:TRUTrainer",
    "sisa": "recbole_tru.unlearn.sisa:SISATrainer",
    "influence": "recbole_tru.unlearn.influence:InfluenceTrainer",
}
# ``all`` runs these (SISA trains K extra submodels: ask for it by name)
DEFAULT_ALL = ("retrain", "finetune", "gradascent", "reverse", "tru")

_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


def recbole_model_names():
    """Class names of RecBole's models (exlib models, which need extra libraries, excluded)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    names = set()
    for package in _RECBOLE_MODEL_PACKAGES:
        module = importlib.import_module(f"recbole.model.{package}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, AbstractRecommender):
                names.add(name)
    return sorted(names)


def _unknown(kind, name, known):
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"Unknown {kind} '{name}'.{hint} Known {kind}s: {', '.join(known)}.")


def get_model(model_name):
    """Return the model class named ``model_name``: the plugin's first, then RecBole's."""
    if model_name in PLUGIN_MODELS:
        return getattr(importlib.import_module(PLUGIN_MODELS[model_name]), model_name)
    for package in _RECBOLE_MODEL_PACKAGES:
        module_path = f"recbole.model.{package}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, model_name):
                return getattr(module, model_name)
    _unknown("model", model_name, sorted(PLUGIN_MODELS) + recbole_model_names())


def get_trainer(model_type, model_name):
    """The trainer that trains ``model_name`` (RecBole's choice; the plugin adds none)."""
    from recbole.utils import get_trainer as recbole_get_trainer

    return recbole_get_trainer(model_type, model_name)


def parse_unlearn(value):
    """``'tru'``, ``'tru,reverse'``, ``'all'`` or a list -> list of known method names."""
    if value is None or value == "" or value == "none":
        return []
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    if names == ["all"]:
        return list(DEFAULT_ALL)
    for name in names:
        if name not in UNLEARNERS:
            _unknown("unlearning method", name, list(UNLEARNERS) + ["all"])
    return names


def get_unlearn_trainer(name):
    """The trainer class of unlearning method ``name``."""
    if name not in UNLEARNERS:
        _unknown("unlearning method", name, list(UNLEARNERS))
    module, cls = UNLEARNERS[name].split(":")
    return getattr(importlib.import_module(module), cls)
