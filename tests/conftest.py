"""Shared fixtures: a tiny synthetic multimodal data set in RecBole atomic files, and configs
that never read pytest's own command line."""
import numpy as np
import pytest

from recbole_tru.config import Config

TINY = "tiny-mm"


def write_tiny_dataset(root, name=TINY, n_users=40, n_items=60, per_user=(8, 20), dims=(8, 5), seed=0):
    """Users prefer items whose latent factors match theirs; two modalities are noisy views of
    the item factors, so content predicts interactions. Returns the data set folder."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    item_factors = rng.normal(size=(n_items, 4))
    user_factors = rng.normal(size=(n_users, 4))
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(n_users):
        affinity = item_factors @ user_factors[u] + rng.gumbel(size=n_items)
        k = rng.integers(*per_user)
        for t, i in enumerate(np.argsort(-affinity)[:k]):
            lines.append(f"u{u}\ti{i}\t{1000 + t}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    for modality, dim in zip(("text", "meta"), dims):
        mixing = rng.normal(size=(4, dim))
        feats = item_factors @ mixing + 0.1 * rng.normal(size=(n_items, dim))
        rows = [f"item_id:token\t{modality}:float_seq"]
        rows += [f"i{i}\t" + " ".join(f"{v:.5f}" for v in feats[i]) for i in range(n_items)]
        (folder / f"{name}.{modality}feat").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_dataset(root)
    return root


TINY_CONFIG = {
    "modalities": {"text": "textfeat", "meta": "metafeat"},
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "epochs": 2, "train_batch_size": 256, "eval_batch_size": 4096,
    "embedding_size": 8, "content_embedding_size": 8, "latent_dim": 8,
    "show_progress": False, "state": "WARNING", "use_gpu": False, "seed": 7,
}


@pytest.fixture
def make_config(tiny_root, tmp_path, monkeypatch):
    """``make_config(model, **overrides)`` -> a Config on the tiny data set; cwd is tmp_path
    (RecBole writes log/ and saved/ there)."""
    monkeypatch.chdir(tmp_path)

    def make(model="VBPR", **overrides):
        params = {**TINY_CONFIG, "data_path": str(tiny_root), "checkpoint_dir": str(tmp_path / "saved"),
                  "output_dir": str(tmp_path / "outputs"), **overrides}
        return Config(model=model, dataset=TINY, config_dict=params, read_cmd_line=False)

    return make
