"""Shared fixtures: a tiny synthetic multimodal data set in RecBole atomic files, and configs
that never read pytest's own command line."""
import os

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
        return tiny_config(tiny_root, model, tmp_path, **overrides)

    return make


@pytest.fixture(scope="module")
def workdir(request, tmp_path_factory):
    """A module-wide working directory (RecBole writes log/, log_tensorboard/ and saved/ in cwd)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "_cwd")
    old = os.getcwd()
    os.chdir(path)
    yield path
    os.chdir(old)


def tiny_config(root, model, workdir, dataset=TINY, **overrides):
    """A Config on a tiny data set under ``root`` whose checkpoints and outputs go to ``workdir``."""
    params = {**TINY_CONFIG, "data_path": str(root), "checkpoint_dir": str(workdir / "saved"),
              "output_dir": str(workdir / "outputs"), **overrides}
    return Config(model=model, dataset=dataset, config_dict=params, read_cmd_line=False)


def in_ci():
    """Whether the tests run under CI (``CI=true``/``1``): nothing may skip for a broken set-up."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def start_ray_or_skip():
    """Start a local Ray of 2 CPUs; True when this call started it (False: it was running).
    Where Ray cannot start: skip, except under CI (:func:`in_ci`), where the error is raised."""
    import ray

    from recbole_tru.cluster import init_kwargs

    if ray.is_initialized():
        return False
    try:
        ray.init(**init_kwargs(num_cpus=2))
    except Exception as err:  # noqa: BLE001 -- any reason Ray cannot start here
        if in_ci():
            raise
        pytest.skip(f"Ray cannot start on this machine ({type(err).__name__}: {err})")
    return True


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance of 2 CPUs for the module. Where Ray cannot start the module's tests
    skip, except under CI (``CI`` set to true or 1, as ``.ci/run`` does): there a broken Ray
    set-up fails them."""
    import ray

    started = start_ray_or_skip()
    yield
    if started:
        ray.shutdown()
