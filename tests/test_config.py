"""The plugin's Config: precedence, the properties it layers in, and start-up errors for unknown
keys, models and unlearning methods."""
import re
import sys

import pytest
import yaml
from recbole.config import Config as RecBoleConfig

from conftest import TINY
from recbole_tru import registry
from recbole_tru.config import DATASETS, PROPERTIES, Config
from recbole_tru.model import MMGCN, VBPR


@pytest.fixture
def build(tiny_root, tmp_path, monkeypatch):
    """``build(model, config_dict=..., **kwargs)``: a Config on the tiny data set, nothing else set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_recbole_tru.py"])

    def make(model="VBPR", config_dict=None, **kwargs):
        params = {"data_path": str(tiny_root), "use_gpu": False, **(config_dict or {})}
        kwargs.setdefault("read_cmd_line", False)
        return Config(model=model, dataset=kwargs.pop("dataset", TINY), config_dict=params, **kwargs)

    return make


# --------------------------------------------------------------------------- precedence

def test_properties_override_recbole_defaults(build):
    config = build()
    assert config["epochs"] == 100                                # RecBole's own default: 300
    assert config["metric_decimal_place"] == 6                    # RecBole's: 4
    assert config["topk"] == [10, 20] and config["valid_metric"] == "NDCG@20"


def test_precedence_files_dict_command_line(build, tmp_path, monkeypatch):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("epochs: 3\nstopping_step: 9\n")
    second.write_text("epochs: 4\n")
    files = [str(first), str(second)]
    config = build(config_file_list=files)
    assert config["epochs"] == 4 and config["stopping_step"] == 9  # later files win, earlier kept
    assert build(config_file_list=files, config_dict={"epochs": 5})["epochs"] == 5
    monkeypatch.setattr(sys, "argv", ["run_recbole_tru.py", "--epochs=7"])
    on = build(config_file_list=files, config_dict={"epochs": 5}, read_cmd_line=True)
    assert on["epochs"] == 7 and on["stopping_step"] == 9
    off = build(config_file_list=files, config_dict={"epochs": 5}, read_cmd_line=False)
    assert off["epochs"] == 5


def test_model_properties_are_loaded_per_model(build):
    vbpr = build("VBPR")
    assert vbpr["content_embedding_size"] == 64 and vbpr["reg_weight"] == pytest.approx(1e-5)
    assert vbpr["model"] == "VBPR" and vbpr["MODEL_TYPE"].name == "GENERAL"
    mmgcn = build("MMGCN")
    assert (mmgcn["latent_dim"], mmgcn["n_layers"], mmgcn["combination"]) == (64, 2, "concat")
    assert mmgcn["content_embedding_size"] is None                # VBPR's key only in VBPR's config
    assert build("VBPR", config_dict={"content_embedding_size": 16})["content_embedding_size"] == 16


def test_model_class_is_accepted(build):
    assert build(VBPR)["model"] == "VBPR"
    assert build(MMGCN)["model"] == "MMGCN"


def test_default_dataset_and_its_properties(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                   # no ./dataset here
    config = Config(model="VBPR", config_dict={"use_gpu": False}, read_cmd_line=False)
    assert config["dataset"] == "ml-100k-mm"
    assert config["modalities"] == {"text": "textfeat", "meta": "metafeat"}
    assert config["feature_dims"] == {"text": 384}
    assert config["data_path"] == str(DATASETS / "ml-100k-mm")    # the plugin's copy
    assert "modalities" in config.parameters["Dataset"]


def test_dataset_in_working_directory_wins(tmp_path, monkeypatch):
    (tmp_path / "dataset" / "ml-100k-mm").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = Config(model="VBPR", config_dict={"use_gpu": False}, read_cmd_line=False)
    assert config["data_path"] == "dataset/ml-100k-mm"


def test_no_model_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyError, match="No model given"):
        Config(config_dict={"use_gpu": False}, read_cmd_line=False)


# --------------------------------------------------------------------------- unknown names

def test_unknown_plugin_key_names_it_and_suggests(build):
    with pytest.raises(KeyError) as err:
        build(config_dict={"tru_epochz": 3})
    message = err.value.args[0]
    assert "'tru_epochz'" in message and "did you mean tru_epochs" in message
    config = build(config_dict={"tru_epochs": 3, "my_own_key": 1})  # declared / not a plugin prefix
    assert config["tru_epochs"] == 3 and config["my_own_key"] == 1


def test_unknown_plugin_key_from_file_or_command_line(build, tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("reverse_epoch: 2\n")
    with pytest.raises(KeyError, match="reverse_epoch'.*reverse_epochs"):
        build(config_file_list=[str(bad)])
    monkeypatch.setattr(sys, "argv", ["run_recbole_tru.py", "--forget_shar=0.1"])
    with pytest.raises(KeyError, match="forget_shar'.*forget_share"):
        build(read_cmd_line=True)


def test_unknown_model_lists_known_models(build):
    with pytest.raises(ValueError) as err:
        build("VPBR")
    message = str(err.value)
    assert "Unknown model 'VPBR'" in message
    assert "Did you mean VBPR" in message
    known = message.split("Known models:")[1]
    for name in ("VBPR", "MMGCN", "BPR", "LightGCN", "SASRec"):
        assert re.search(rf"\b{name}\b", known), name
    assert "lightgbm" not in message.lower()


def test_get_model_plugin_first_then_recbole():
    from recbole.model.general_recommender.lightgcn import LightGCN

    assert registry.get_model("VBPR") is VBPR and registry.get_model("MMGCN") is MMGCN
    assert registry.get_model("LightGCN") is LightGCN
    with pytest.raises(ValueError, match="Unknown model 'lightgcn'"):
        registry.get_model("lightgcn")                           # names are case-sensitive
    assert "VBPR" not in registry.recbole_model_names()
    assert "BPR" in registry.recbole_model_names()
    assert not any("lightgbm" in n.lower() or "xgboost" in n.lower() for n in registry.recbole_model_names())


def test_parse_unlearn():
    methods = ["retrain", "finetune", "gradascent", "reverse", "tru"]
    assert registry.parse_unlearn("all") == methods == list(registry.DEFAULT_ALL)
    assert "sisa" in registry.UNLEARNERS and "sisa" not in methods   # SISA only when named
    assert registry.parse_unlearn(" tru , reverse ") == ["tru", "reverse"]
    assert registry.parse_unlearn(["finetune"]) == ["finetune"]
    for empty in (None, "", "none"):
        assert registry.parse_unlearn(empty) == []
    with pytest.raises(ValueError) as err:
        registry.parse_unlearn("tru,forgetall")
    message = str(err.value)
    assert "'forgetall'" in message
    assert all(m in message for m in methods + ["all"])


def test_unknown_unlearn_in_config_fails_at_parse(build):
    config = build(config_dict={"unlearn": "tru,revers"})
    assert config["unlearn"] == "tru,revers"
    with pytest.raises(ValueError, match="Did you mean reverse"):
        registry.parse_unlearn(config["unlearn"])


# --------------------------------------------------------------------------- properties/

TYPES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "list": (list,), "dict": (dict,)}
KEY_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")
COMMENT = re.compile(r"#\s*\((\w+)\)\s+\S")
PROPERTY_FILES = sorted(PROPERTIES.rglob("*.yaml"))


def test_property_files_found():
    names = {p.relative_to(PROPERTIES).as_posix() for p in PROPERTY_FILES}
    assert {"overall.yaml", "model/VBPR.yaml", "model/MMGCN.yaml", "dataset/ml-100k-mm.yaml",
            "unlearn/tru.yaml"} <= names


@pytest.mark.parametrize("path", PROPERTY_FILES, ids=lambda p: p.relative_to(PROPERTIES).as_posix())
def test_every_property_key_has_a_typed_comment(path):
    loader = RecBoleConfig._build_yaml_loader(None)              # RecBole's loader (reads 1e-05 as float)
    values = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
    seen = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = KEY_LINE.match(line)
        if not match:                                             # comments, blanks, nested lines
            continue
        key = match.group(1)
        seen.append(key)
        comment = COMMENT.search(line)
        assert comment, f"{path.name}:{number}: '{key}' has no '# (type) ...' comment"
        kind = comment.group(1)
        assert kind in TYPES, f"{path.name}:{number}: unknown type ({kind})"
        value = values[key]
        if value is not None:
            ok = isinstance(value, TYPES[kind]) and not (kind in ("int", "float") and isinstance(value, bool))
            assert ok, f"{path.name}:{number}: '{key}' is declared ({kind}) but its value is {value!r}"
    assert sorted(seen) == sorted(values), f"{path.name}: keys the line parser missed"


@pytest.mark.parametrize("name", ["tru_privacy.yaml", "tru_privacy_steps.yaml"])
def test_the_privacy_presets_are_not_loaded_by_default_and_set_their_keys(build, name):
    """properties/presets/ is not among the files every run reads; passed with --config_files a
    preset's keys win over the plugin's properties, and config_dict (like the command line) over it."""
    preset = PROPERTIES / "presets" / name
    values = yaml.safe_load(preset.read_text(encoding="utf-8"))
    plain = build("VBPR")
    assert all(plain[k] != v for k, v in values.items())
    config = build("VBPR", config_file_list=[str(preset)])
    assert all(config[k] == v for k, v in values.items())
    key = next(iter(values))
    assert build("VBPR", config_dict={key: plain[key]}, config_file_list=[str(preset)])[key] == plain[key]


def test_eval_batch_size_auto_follows_the_catalogue(build):
    """auto -> RecBole's 4096 up to 4,096 items (one or more users per batch), else 2**22 score
    cells; a number is kept; anything else names the key."""
    from recbole_tru.data.dataset import LARGE_EVAL_BATCH, RECBOLE_EVAL_BATCH, resolve_eval_batch_size

    config = build("VBPR")
    assert config["eval_batch_size"] == "auto"
    assert resolve_eval_batch_size(config, 1682) == RECBOLE_EVAL_BATCH == 4096      # ml-100k: as RecBole
    config["eval_batch_size"] = "auto"
    assert resolve_eval_batch_size(config, 7050) == LARGE_EVAL_BATCH                 # Amazon Baby: 594 users per batch
    assert LARGE_EVAL_BATCH // 7050 == 594 and RECBOLE_EVAL_BATCH // 7050 == 0      # RecBole's: max(0, 1) = one user
    config["eval_batch_size"] = 1000
    assert resolve_eval_batch_size(config, 7050) == 1000
    for bad in ("big", 0, -5, True):
        config["eval_batch_size"] = bad
        with pytest.raises(ValueError, match="'eval_batch_size'"):
            resolve_eval_batch_size(config, 10)


def test_the_data_set_resolves_eval_batch_size(tmp_path):
    from conftest import TINY_CONFIG, write_tiny_dataset
    from recbole_tru.training import load_data

    write_tiny_dataset(tmp_path)
    config = Config(model="VBPR", dataset=TINY, config_dict={**TINY_CONFIG, "data_path": str(tmp_path)},
                    read_cmd_line=False)
    _, _, valid, _ = load_data(config)
    assert config["eval_batch_size"] == 4096
    assert valid.step == 4096 // valid.dataset.item_num                   # users per full-sort batch
