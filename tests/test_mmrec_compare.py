"""benchmarks/mmrec_compare.py without MMRec: the export writes our split and features in MMRec's
format (and the importer reads them back to the same split), our side's two test maskings, and
the parser of MMRec's log on lines in the shape its trainer writes."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, TINY_CONFIG
from recbole_tru.config import Config
from recbole_tru.data.builders.mmrec import SPLITS, import_mmrec
from recbole_tru.data.features import read_feature_file
from recbole_tru.training import load_data

spec = importlib.util.spec_from_file_location(
    "mmrec_compare_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "mmrec_compare.py")
mc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mc)


@pytest.fixture(scope="module")
def exported(tiny_root, workdir):
    """The tiny data set exported (our split) and its RecBole split, as token pairs per split."""
    config_dict = {**TINY_CONFIG, "data_path": str(tiny_root)}
    written = mc.export(workdir / "mmrec_data", TINY, config_dict, mmrec=workdir / "mmrec")
    config = Config(model="VBPR", dataset=TINY, config_dict=config_dict, read_cmd_line=False)
    dataset, *loaders = load_data(config)
    uid, iid = dataset.uid_field, dataset.iid_field
    ours = {}
    for name, loader in zip(SPLITS, loaders):
        feat = loader.dataset.inter_feat
        ours[name] = set(zip(dataset.id2token(uid, feat[uid].numpy()), dataset.id2token(iid, feat[iid].numpy())))
    return written, ours, workdir


def _maps(folder):
    users = pd.read_csv(folder / "u_id_mapping.csv", sep="\t", dtype=str)
    items = pd.read_csv(folder / "i_id_mapping.csv", sep="\t", dtype=str)
    return dict(zip(users["userID"], users["user_id"])), dict(zip(items["itemID"], items["item_id"]))


def test_export_writes_our_split_with_x_label(exported):
    written, ours, _ = exported
    inter = pd.read_csv(written["inter"], sep="\t", dtype=str)
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert inter["userID"].astype(int).min() == 0 and inter["itemID"].astype(int).min() == 0
    users, items = _maps(written["inter"].parent)
    for label, name in enumerate(SPLITS):
        rows = inter[inter["x_label"] == str(label)]
        assert len(rows) == len(ours[name])
        assert set(zip(rows["userID"].map(users), rows["itemID"].map(items))) == ours[name]


def test_export_features_rows_are_our_items(exported, tiny_root):
    written, _, _ = exported
    _, items = _maps(written["inter"].parent)
    for modality, file in mc.FEATURE_FILES.items():
        matrix = np.load(written[modality])
        tokens, source = read_feature_file(tiny_root / TINY / f"{TINY}.{modality}feat", "item_id")
        row_of = {t: k for k, t in enumerate(tokens)}
        assert matrix.dtype == np.float32 and matrix.shape == (len(items), source.shape[1])
        for k in range(len(items)):         # row k = itemID k = our item token items[k]
            np.testing.assert_allclose(matrix[k], source[row_of[items[str(k)]]], atol=1e-6)


def test_export_mmrec_yaml_puts_meta_in_the_vision_slot(exported):
    written, _, workdir = exported
    text = written["mmrec_yaml"].read_text()
    assert written["mmrec_yaml"] == workdir / "mmrec" / "src" / "configs" / "dataset" / f"{TINY}.yaml"
    assert "vision_feature_file: 'meta_feat.npy'" in text and "text_feature_file: 'text_feat.npy'" in text
    assert "NOT VISUAL" in text and f"inter_file_name: '{TINY}.inter'" in text
    assert f"data_path: '{(workdir / 'mmrec_data').resolve()}/'" in text


def test_round_trip_through_the_importer(exported, tmp_path):
    written, ours, _ = exported
    folder = written["inter"].parent
    back = import_mmrec(folder, tmp_path, name=TINY, features=mc.FEATURE_FILES)
    users, items = _maps(folder)
    for name in SPLITS:
        frame = pd.read_csv(back[name], sep="\t", dtype=str)
        pairs = set(zip(frame["user_id:token"].map(users), frame["item_id:token"].map(items)))
        assert pairs == ours[name]
    assert "feature_dims: {text: 8, meta: 5}" in back["yaml"].read_text()


def test_our_side_tests_with_both_maskings(tiny_root, workdir):
    row = mc.measure_ours("VBPR", 3, TINY, {**TINY_CONFIG, "data_path": str(tiny_root), "epochs": 1})
    assert row["epochs"] == 1 and row["best_epoch"] == 0 and len(row["seconds_per_epoch"]) == 1
    for metric in ("recall@20", "ndcg@20"):
        # one ranking code path reproduces RecBole's evaluator (train+valid masked) ...
        assert row["test_own_ranking_train+valid"][metric] == pytest.approx(row["test"]["train+valid"][metric],
                                                                            abs=1e-6)
        # ... and unmasked validation items can only push test items down
        assert row["test"]["train"][metric] <= row["test"]["train+valid"][metric] + 1e-9


def test_ranking_metrics_definitions():
    top = np.array([[5, 1, 2], [7, 8, 9]])
    out = mc.ranking_metrics(top, [{1, 3}, {9}], k=3)
    d = 1 / np.log2(np.arange(2, 5))
    assert out["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert out["ndcg@3"] == pytest.approx((d[1] / (d[0] + d[1]) + d[2] / d[0]) / 2)


# MMRec's log (src/common/trainer.py, src/utils/quick_start.py; stream handler format), two grid
# points of one process: the first stops early, the second ends at the epoch cap. Test lines
# carry the extra train+valid-masked pass (tv_) that the comparison's trainer adds.
LOG = """\
06 Dec 04:08    INFO \n\n=================================\n\n
06 Dec 04:08    INFO =========1/2: Parameters:['seed', 'reg_weight']=(1, 0.1)=======
06 Dec 04:08    INFO VBPR(
  (item_linear): Linear(in_features=416, out_features=64, bias=True)
)
Trainable parameters: 255040
06 Dec 04:08    INFO epoch 0 training [time: 0.70s, train loss: 27.4576]
06 Dec 04:08    INFO epoch 0 evaluating [time: 0.26s, valid_score: 0.062800]
06 Dec 04:08    INFO valid result:
recall@20: 0.0628    ndcg@20: 0.0512
06 Dec 04:08    INFO test result:
recall@20: 0.0616    ndcg@20: 0.0486    tv_recall@20: 0.0650    tv_ndcg@20: 0.0520
06 Dec 04:08    INFO ██ VBPR--Best validation results updated!!!
06 Dec 04:08    INFO epoch 1 training [time: 0.69s, train loss: 25.6459]
06 Dec 04:08    INFO epoch 1 evaluating [time: 0.24s, valid_score: 0.110300]
06 Dec 04:08    INFO valid result:
recall@20: 0.1103    ndcg@20: 0.0884
06 Dec 04:08    INFO test result:
recall@20: 0.1102    ndcg@20: 0.0862    tv_recall@20: 0.1150    tv_ndcg@20: 0.0930
06 Dec 04:08    INFO ██ VBPR--Best validation results updated!!!
06 Dec 04:08    INFO epoch 2 training [time: 0.73s, train loss: 22.1873]
06 Dec 04:08    INFO epoch 2 evaluating [time: 0.23s, valid_score: 0.100000]
06 Dec 04:08    INFO valid result:
recall@20: 0.1000    ndcg@20: 0.0800
06 Dec 04:08    INFO test result:
recall@20: 0.0990    ndcg@20: 0.0790    tv_recall@20: 0.1010    tv_ndcg@20: 0.0810
06 Dec 04:08    INFO +++++Finished training, best eval result in epoch 1
06 Dec 04:08    INFO best valid result: recall@20: 0.1103    ndcg@20: 0.0884
06 Dec 04:08    INFO test result: recall@20: 0.1102    ndcg@20: 0.0862    tv_recall@20: 0.1150    tv_ndcg@20: 0.0930
06 Dec 04:08    INFO ████Current BEST████:
Parameters: ['seed', 'reg_weight']=(1, 0.1),
Valid: recall@20: 0.1103    ndcg@20: 0.0884    ,
Test: recall@20: 0.1102    ndcg@20: 0.0862    tv_recall@20: 0.1150    tv_ndcg@20: 0.0930    \n\n
06 Dec 04:09    INFO =========2/2: Parameters:['seed', 'reg_weight']=(1, 1e-05)=======
06 Dec 04:09    INFO epoch 0 training [time: 0.71s, train loss: 27.1000]
06 Dec 04:09    INFO epoch 0 evaluating [time: 0.25s, valid_score: 0.070000]
06 Dec 04:09    INFO valid result:
recall@20: 0.0700    ndcg@20: 0.0600
06 Dec 04:09    INFO test result:
recall@20: 0.1200    ndcg@20: 0.0900    tv_recall@20: 0.1250    tv_ndcg@20: 0.0950
06 Dec 04:09    INFO ██ VBPR--Best validation results updated!!!
06 Dec 04:09    INFO best valid result: recall@20: 0.0700    ndcg@20: 0.0600
06 Dec 04:09    INFO test result: recall@20: 0.1200    ndcg@20: 0.0900    tv_recall@20: 0.1250    tv_ndcg@20: 0.0950
06 Dec 04:09    INFO ████Current BEST████:
Parameters: ['seed', 'reg_weight']=(1, 1e-05),
Valid: recall@20: 0.0700    ndcg@20: 0.0600    ,
Test: recall@20: 0.1200    ndcg@20: 0.0900    tv_recall@20: 0.1250    tv_ndcg@20: 0.0950    \n\n
06 Dec 04:09    INFO \n============All Over=====================
06 Dec 04:09    INFO \n\n█████████████ BEST ████████████████
06 Dec 04:09    INFO \tParameters: ['seed', 'reg_weight']=(1, 1e-05),
Valid: recall@20: 0.0700    ndcg@20: 0.0600    ,
Test: recall@20: 0.1200    ndcg@20: 0.0900    tv_recall@20: 0.1250    tv_ndcg@20: 0.0950    \n\n
"""


def test_parse_mmrec_log():
    records, own = mc.parse_mmrec_log(LOG)
    first, second = records
    assert first["parameters"] == {"seed": 1, "reg_weight": 0.1} and (first["index"], first["of"]) == (1, 2)
    assert first["seconds_per_epoch"] == [0.70, 0.69, 0.73] and first["eval_seconds"] == [0.26, 0.24, 0.23]
    assert (first["epochs"], first["best_epoch"], first["finished_epoch"]) == (3, 1, 1)
    assert first["valid"] == {"recall@20": 0.1103, "ndcg@20": 0.0884}
    assert first["test"] == {"recall@20": 0.1102, "ndcg@20": 0.0862, "tv_recall@20": 0.1150, "tv_ndcg@20": 0.0930}
    assert (second["epochs"], second["best_epoch"], second["finished_epoch"]) == (1, 0, None)
    assert own == {"seed": 1, "reg_weight": 1e-05}     # MMRec's "BEST": the better TEST Recall@20
    rows = [mc.mmrec_record(r, "VBPR", 1) for r in records]
    assert rows[0]["setting"] == {"reg_weight": 0.1}
    assert rows[0]["test"] == {"train+valid": {"recall@20": 0.1150, "ndcg@20": 0.0930},
                               "train": {"recall@20": 0.1102, "ndcg@20": 0.0862}}
    assert mc.pick_on_validation(rows) is rows[0]     # ours: the better VALIDATION Recall@20


def test_report_from_rows():
    def row(library, seed, ndcg, seconds, epochs=30):
        metrics = {"recall@20": 2 * ndcg, "ndcg@20": ndcg}
        extra = {"epoch_cap": 100, "stopping_step": 10} if library == "ours" else {"finished_epoch": epochs - 21}
        return {"library": library, "model": "VBPR", "seed": seed, "setting": {}, "best_epoch": epochs - 11,
                "epochs": epochs, "seconds_per_epoch": [seconds, seconds], "test": {"train+valid": metrics,
                                                                                    "train": metrics}, **extra}
    rows = [row("MMRec", 1, 0.30, 2.0), row("ours", 1, 0.29, 1.0), row("MMRec", 2, 0.28, 2.0),
            row("ours", 2, 0.28, 1.0, epochs=100)]
    summary = mc.summarise(rows)["VBPR"]
    assert summary["seconds_ratio_mmrec_over_ours"] == pytest.approx(2.0)
    assert summary["ours"]["epoch_cap_hit"] == [False, True]
    reading = summary["ndcg@20 (train+valid)"]
    assert reading["mean_difference"] == pytest.approx(-0.005) and reading["spread"] == pytest.approx(0.02)
    assert reading["reading"] == "within spread"
    report = {"command": "c", "wall_seconds": 60, "machine": "m", "mmrec_commit": "abc", "grid": {"VBPR": "once"},
              "mmrec_fixes": ["f"], "summary": {"VBPR": summary}, "rows": rows,
              "mmrec_config": {"VBPR": {}, "MMGCN": {"epochs": 100}}}
    text = mc.markdown(report)
    assert "| MMRec | VBPR | 1, 2 | 0.5800 ± " in text and "| 30 / 100* |" in text and "| 2.00 |" in text
    # the stopping rules stated are the ones the rows ran with
    assert "Ours stops after 10, at most 100 epochs," in text and "at most 1000 (VBPR), 100 (MMGCN) epochs" in text
    assert mc.per_model_seeds("MMGCN=1", ["VBPR", "MMGCN"], [1, 2, 3]) == {"VBPR": [1, 2, 3], "MMGCN": [1]}
    with pytest.raises(SystemExit, match="outside --seeds"):
        mc.per_model_seeds("MMGCN=4", ["MMGCN"], [1, 2, 3])
    assert mc.csv_text(rows).splitlines()[0].startswith("library,model,seed,setting,")
    assert mc.grid_modes("VBPR=once,MMGCN=off", ["VBPR"]) == {"VBPR": "once"}
    with pytest.raises(SystemExit):
        mc.grid_modes("VBPR=sometimes", ["VBPR"])
