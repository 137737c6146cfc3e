"""The plugin's ``Config``: RecBole's, with ``properties/`` layered over RecBole's own.

Precedence, highest first (as in RecBole): command line > ``config_dict`` > ``--config_files``
> the plugin's ``properties/`` (``overall.yaml``, ``model/<model>.yaml``,
``dataset/<dataset>.yaml``, ``unlearn/*.yaml``) > RecBole's ``properties/``.
"""
import difflib
from pathlib import Path

from recbole.config import Config as RecBoleConfig

from recbole_tru import compat
from recbole_tru.registry import get_model

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PROPERTIES = PACKAGE_ROOT / "properties"
DATASETS = PACKAGE_ROOT / "dataset"
DEFAULT_DATASET = "ml-100k-mm"

# Config keys starting with these belong to the plugin: every one must be declared (with a
# default and a comment) in properties/, so a typo fails at start-up instead of being ignored.
PLUGIN_PREFIXES = ("forget_", "unlearn_", "tru_", "reverse_", "finetune_", "gradascent_", "retrain_",
                   "audit_", "tune_", "sisa_", "feature_")


def plugin_property_files(model, dataset):
    files = [PROPERTIES / "overall.yaml", PROPERTIES / "model" / f"{model}.yaml",
             PROPERTIES / "dataset" / f"{dataset}.yaml"]
    files += sorted((PROPERTIES / "unlearn").glob("*.yaml"))
    return [f for f in files if f.is_file()]


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
