"""SYNTHETIC multimodal data sets at the sizes of the field's Amazon benchmarks (for scale
benchmarks only: no result on them says anything about real recommendation quality).

Sizes (``SIZES``): users / items / interactions of the 5-core Amazon data sets that MMRec
distributes, which multimodal-recommendation papers use::

    baby      19,445 /  7,050 / 160,792
    sports    35,598 / 18,357 / 296,337
    clothing  39,387 / 23,033 / 278,677
    tiny         200 /    100 /   2,000   (tests; feature widths 64 and 16)

Generative model (seeded; every count above is exact):

* latent factors ``U`` [n_users, k] and ``V`` [n_items, k], standard normal (``k = 16``);
* item popularity weights ``p_r ∝ r^-popularity`` over a random permutation of the items
  (long tail: at the default 0.55 the top 1% of the items hold ~10x their uniform share);
* user activity ``d_u = min_per_user + Multinomial(rest, lognormal weights)`` (long tail,
  every user has at least ``min_per_user`` interactions; Amazon 5-core users have >= 5);
* every item first gets one interaction with the user of highest ``a_ui + Gumbel`` (so every
  item occurs); then each user's remaining ``d_u`` items are drawn without replacement with
  probability ``∝ p_i · exp(β · a_ui)`` (Gumbel top-k), ``a_ui = U_u·V_i / √k``, ``β = 3``
  (at 1.5, data sets before 2026-12-06, MMGCN's validation peaked after one epoch, on content
  alone, and it hardly memorised its training pairs: ``benchmarks/memorisation.py``);
* timestamps: a user's interactions get increasing random times.

Two content modalities are noisy views of ``V`` (of its first ``visible · k`` columns; default
all), so content predicts interactions:

* ``imagelike`` (4096-d, the width of the CNN features MMRec ships): ``relu(V A + σ·noise)``,
  sparse and non-negative like post-ReLU CNN activations. **Not derived from any image.**
* ``textlike`` (384-d, the width of the sentence-transformer features): ``V B + σ·noise``
  scaled to unit L2 norm per row, like sentence embeddings. **Not derived from any text.**

Output folder ``<out>/synthetic-<size>/`` (``<out>`` defaults to ``benchmarks/data``, which is
git-ignored): ``<name>.inter`` (``user_id:token item_id:token timestamp:float``, RecBole splits
it), ``<name>.imagelikefeat``, ``<name>.textlikefeat`` (atomic feature files, see
:mod:`recbole_tru.data.features`), ``<name>.yaml`` (config: ``load_col``, ``modalities``,
``feature_dims``) and ``README.md`` (says SYNTHETIC, the generator, the seed and the command).
Everything is generated and written in chunks of users or items, so memory stays at a few
hundred MB whatever the size; files are written to a temporary name and renamed into place.
The same size and seed on the same software give byte-identical files.

    python -m recbole_tru.data.builders synthetic --size baby
"""
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import yaml

from recbole_tru.files import atomic_write

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = ROOT / "benchmarks" / "data"
FLOAT_FORMAT = "%.4g"
MODALITIES = {"imagelike": "imagelikefeat", "textlike": "textlikefeat"}
GENERATOR_FILE = "generator.json"      # the generator's knobs a data set folder was written with


@dataclass(frozen=True)
class Size:
    users: int
    items: int
    interactions: int
    imagelike_dim: int = 4096
    textlike_dim: int = 384
    source: str = ""


SIZES = {
    "tiny": Size(200, 100, 2_000, 64, 16, "test size"),
    "baby": Size(19_445, 7_050, 160_792, source="Amazon Baby (5-core, as in MMRec)"),
    "sports": Size(35_598, 18_357, 296_337, source="Amazon Sports and Outdoors (5-core, as in MMRec)"),
    "clothing": Size(39_387, 23_033, 278_677, source="Amazon Clothing, Shoes and Jewelry (5-core, as in MMRec)"),
}


@dataclass(frozen=True)
class Generator:
    """The generator's knobs (defaults documented in the module docstring)."""

    seed: int = 2026
    factors: int = 16            # k, width of the latent factors
    popularity: float = 0.55     # Zipf exponent of the item popularity weights
    activity_sigma: float = 1.0  # lognormal sigma of the user activity weights
    min_per_user: int = 5        # interactions of the least active users
    affinity: float = 3.0        # β, weight of the latent affinity in the item choice (1.5 until
                                 # 2026-12-06: MMGCN hardly memorised, docs/scale.md)
    noise: float = 0.5           # σ of the feature noise (relative to the signal's unit scale)
    visible: float = 1.0         # share of the k latent factors the content is derived from (the
                                 # rest drive interactions only: what only ID embeddings can learn)
    user_chunk: int = 1024       # users per generation chunk
    item_chunk: int = 512        # items per feature chunk


def dataset_name(size):
    return f"synthetic-{size}"


# ------------------------------------------------------------------------------ interactions

def _popularity(rng, n_items, exponent):
    """log p_i: Zipf weights over a random permutation of the items."""
    ranks = np.empty(n_items, dtype=np.float64)
    ranks[rng.permutation(n_items)] = np.arange(1, n_items + 1)
    return -exponent * np.log(ranks)


def _seed_users(rng, user_factors, item_factors, gen):
    """For every item, the user who gets its guaranteed interaction (argmax of a_ui + Gumbel)."""
    n_items, k = len(item_factors), gen.factors
    owner = np.empty(n_items, dtype=np.int64)
    for start in range(0, n_items, gen.user_chunk):
        v = item_factors[start:start + gen.user_chunk]
        score = gen.affinity * (v @ user_factors.T) / np.sqrt(k)
        score += rng.gumbel(size=score.shape)
        owner[start:start + len(v)] = score.argmax(axis=1)
    return owner


def _degrees(rng, size, seeded, gen):
    """Interactions per user: max(min_per_user, seeded) + a multinomial share of the rest."""
    base = np.maximum(seeded, gen.min_per_user)
    rest = size.interactions - int(base.sum())
    if rest < 0:
        raise ValueError(f"{size.interactions} interactions cannot give {size.users} users "
                         f"{gen.min_per_user} each")
    weights = rng.lognormal(0.0, gen.activity_sigma, size=size.users)
    degrees = base + rng.multinomial(rest, weights / weights.sum())
    over = degrees > size.items                 # a user cannot have more items than exist
    if over.any():
        raise ValueError(f"a user would need {degrees.max()} distinct items of {size.items}")
    return degrees


def generate_interactions(size, gen=Generator()):
    """Returns ``(users, items, timestamps, user_factors, item_factors)``: int64 [n], int64 [n],
    float64 [n] (sorted by user, then time) and the latent factors."""
    rng = np.random.default_rng(gen.seed)
    k = gen.factors
    user_factors = rng.standard_normal((size.users, k))
    item_factors = rng.standard_normal((size.items, k))
    log_pop = _popularity(rng, size.items, gen.popularity)
    owner = _seed_users(rng, user_factors, item_factors, gen)
    seeded = np.bincount(owner, minlength=size.users)
    degrees = _degrees(rng, size, seeded, gen)
    seed_items = np.argsort(owner, kind="stable")        # item ids grouped by their seed user
    seed_ptr = np.zeros(size.users + 1, dtype=np.int64)
    np.cumsum(seeded, out=seed_ptr[1:])
    users_out, items_out = [], []
    for start in range(0, size.users, gen.user_chunk):
        stop = min(start + gen.user_chunk, size.users)
        score = gen.affinity * (user_factors[start:stop] @ item_factors.T) / np.sqrt(k) + log_pop
        score += rng.gumbel(size=score.shape)
        # the users' seeded items are already theirs: exclude them from the draw
        rows = np.repeat(np.arange(stop - start), seeded[start:stop])
        cols = seed_items[seed_ptr[start]:seed_ptr[stop]]
        score[rows, cols] = -np.inf
        need = degrees[start:stop] - seeded[start:stop]
        kmax = int(need.max())
        top = np.argpartition(-score, kmax - 1, axis=1)[:, :kmax] if kmax > 0 else np.zeros((stop - start, 0), np.int64)
        top_scores = np.take_along_axis(score, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        take = np.arange(kmax)[None, :] < need[:, None]
        chosen_users = np.repeat(np.arange(start, stop), need)
        chosen_items = top[take]
        users_out.append(np.concatenate([chosen_users, start + rows]))
        items_out.append(np.concatenate([chosen_items, cols]))
    users = np.concatenate(users_out)
    items = np.concatenate(items_out)
    by_user = np.argsort(users, kind="stable")
    users, items = users[by_user], items[by_user]
    # increasing random times per user (seconds from 2020-01-01)
    times = 1_577_836_800 + np.round(rng.uniform(0, 3.0e7, size=len(users)))
    times = times[np.lexsort((times, users))]    # users are sorted: this sorts times within users
    return users, items, times, user_factors, item_factors


# ------------------------------------------------------------------------------ features

def _feature_chunks(rng, item_factors, dim, kind, gen):
    """Yield float32 blocks [<= item_chunk, dim] of the ``kind`` modality, in item order."""
    k = gen.factors
    mixing = rng.standard_normal((k, dim)) / np.sqrt(k)
    if not 0.0 <= gen.visible <= 1.0:
        raise ValueError(f"Generator.visible must be in [0, 1], got {gen.visible}")
    seen = int(round(gen.visible * k))          # content sees the first ``seen`` factors only
    for start in range(0, len(item_factors), gen.item_chunk):
        v = item_factors[start:start + gen.item_chunk]
        # (rescaled so the signal keeps its unit scale against the noise)
        signal = v @ mixing if seen == k else v[:, :seen] @ mixing[:seen] * np.sqrt(k / max(seen, 1))
        block = signal + gen.noise * rng.standard_normal((len(v), dim))
        if kind == "imagelike":
            block = np.maximum(block, 0.0)
        else:
            block /= np.linalg.norm(block, axis=1, keepdims=True)
        yield block.astype(np.float32)


def _write_text(path, fill):
    """Write (or replace) the text file ``path`` atomically; ``fill(f)`` writes into it."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            fill(f)

    return atomic_write(path, write, replace=True)


def write_feature_stream(path, tokens, blocks, modality, fmt=FLOAT_FORMAT):
    """Write a feature file (header ``item_id:token<TAB><modality>:float_seq``) from blocks of
    rows, without holding the whole matrix or its text in memory."""
    tokens = iter(tokens)

    def fill(f):
        f.write(f"item_id:token\t{modality}:float_seq\n")
        for block in blocks:
            row_fmt = " ".join([fmt] * block.shape[1])
            f.write("".join(f"{next(tokens)}\t{row_fmt % tuple(row)}\n" for row in block.tolist()))

    return _write_text(path, fill)


def write_inter(path, users, items, times, chunk=200_000):
    def fill(f):
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for start in range(0, len(users), chunk):
            sl = slice(start, start + chunk)
            f.write("".join(f"u{u}\ti{i}\t{t:.0f}\n"
                            for u, i, t in zip(users[sl].tolist(), items[sl].tolist(), times[sl].tolist())))

    return _write_text(path, fill)


def config_text(name, size):
    config = {
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "modalities": dict(MODALITIES),
        "feature_dims": {"imagelike": size.imagelike_dim, "textlike": size.textlike_dim},
    }
    head = (f"# RecBole config for '{name}': a SYNTHETIC data set written by recbole_tru.data.builders.synthetic.\n"
            "# Its modalities are generated from latent factors; none comes from images or text.\n")
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def statistics(users, items, n_items):
    counts = np.bincount(items, minlength=n_items)
    top = np.sort(counts)[::-1][:max(1, n_items // 100)]
    per_user = np.bincount(users)
    return {"users": int(len(np.unique(users))), "items": int(np.count_nonzero(counts)),
            "interactions": int(len(users)), "top1pct_item_share": float(top.sum() / len(items)),
            "max_item_degree": int(counts.max()), "min_item_degree": int(counts.min()),
            "min_user_degree": int(per_user.min()), "max_user_degree": int(per_user.max())}


def readme_text(name, size_name, size, gen, stats, command):
    return f"""# {name}: SYNTHETIC data (not real interactions, images or text)

Written by `recbole_tru/data/builders/synthetic.py` with:

    {command}

It has the counts of {size.source or size_name}, nothing else of it: every interaction and
every feature value is generated from random latent factors (seed {gen.seed}). Use it to
measure time and memory at the field's sizes, never to compare recommendation quality.

| | value |
| --- | --- |
| users / items / interactions | {stats['users']:,} / {stats['items']:,} / {stats['interactions']:,} |
| interactions per user | min {stats['min_user_degree']}, max {stats['max_user_degree']} |
| interactions per item | min {stats['min_item_degree']}, max {stats['max_item_degree']} |
| share of interactions on the top 1% of items | {stats['top1pct_item_share']:.3f} |

Files:

* `{name}.inter` -- `user_id:token item_id:token timestamp:float` (RecBole splits it);
* `{name}.imagelikefeat` -- modality `imagelike`, {size.imagelike_dim}-d, **image-like synthetic**:
  `relu(V A + {gen.noise}·noise)` of the latent item factors `V` (non-negative and sparse like
  CNN activations, the width of the image features MMRec ships; no image was involved);
* `{name}.textlikefeat` -- modality `textlike`, {size.textlike_dim}-d, **text-like synthetic**:
  `V B + {gen.noise}·noise`, unit L2 norm per row (like sentence embeddings; no text was involved);
* `{name}.yaml` -- the RecBole config (`modalities`, `feature_dims`, `load_col`).

Generative model: latent factors k = {gen.factors}; item popularity Zipf exponent {gen.popularity};
user activity = {gen.min_per_user} + a lognormal(σ = {gen.activity_sigma}) multinomial share; each
item is first given to the user with the highest affinity + Gumbel noise, then each user draws
the rest without replacement with probability ∝ popularity · exp({gen.affinity} · affinity).
Content therefore predicts interactions. Values are written as `{FLOAT_FORMAT}`.

Run with `--dataset={name} --data_path=<parent folder> --config_files=<this folder>/{name}.yaml`.
"""


def build_synthetic(size="baby", out=None, seed=None, name=None, command=None, log=print):
    """Write the synthetic data set of ``size`` (a key of ``SIZES`` or a :class:`Size`) into
    ``<out>/<name>/``. Returns ``{kind: Path}``."""
    size_name = size if isinstance(size, str) else "custom"
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown synthetic size {size!r}: one of {', '.join(SIZES)}")
        size = SIZES[size]
    gen = Generator() if seed is None else replace(Generator(), seed=int(seed))
    name = name or dataset_name(size_name)
    dest = Path(out or DEFAULT_OUT) / name
    log(f"[{name}] generating {size.interactions:,} interactions ...")
    users, items, times, _, item_factors = generate_interactions(size, gen)
    stats = statistics(users, items, size.items)
    written = {"inter": write_inter(dest / f"{name}.inter", users, items, times)}
    tokens = [f"i{i}" for i in range(size.items)]
    feat_rng = np.random.default_rng([gen.seed, 1])
    for modality, dim in (("imagelike", size.imagelike_dim), ("textlike", size.textlike_dim)):
        log(f"[{name}] writing {modality} features {size.items:,} x {dim} ...")
        blocks = _feature_chunks(feat_rng, item_factors, dim, modality, gen)
        written[modality] = write_feature_stream(dest / f"{name}.{MODALITIES[modality]}", tokens, blocks, modality)
    command = command or f"python -m recbole_tru.data.builders synthetic --size {size_name} --seed {gen.seed}"
    written["yaml"] = _write_small(dest / f"{name}.yaml", config_text(name, size))
    written["generator"] = _write_small(dest / GENERATOR_FILE, json.dumps(asdict(gen), indent=1, sort_keys=True))
    written["readme"] = _write_small(dest / "README.md", readme_text(name, size_name, size, gen, stats, command))
    return written


def generator_of(folder):
    """The generator's knobs recorded in a synthetic data set folder (``None``: none recorded,
    a folder written before the record existed)."""
    path = Path(folder) / GENERATOR_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ValueError(f"{path}: not a generator record ({error})") from None


def ensure_synthetic(size, out=None, log=print):
    """The folder of the synthetic data set ``size`` under ``out``, written by this generator.

    An existing folder is reused only when its recorded generator equals today's defaults; one
    written by another generator version (or with no record) is regenerated, so a benchmark never
    measures stale data under a new name. Returns ``(folder, seconds spent generating or None,
    the generator's knobs)``."""
    folder = Path(out or DEFAULT_OUT) / dataset_name(size)
    current = asdict(Generator())
    if (folder / "README.md").is_file():
        recorded = generator_of(folder)
        if recorded == current:
            return folder, None, current
        log(f"[{folder.name}] written by another generator ({recorded or 'no record'}): regenerating")
    start = time.perf_counter()
    build_synthetic(size, out, log=log)
    return folder, time.perf_counter() - start, current


def _write_small(path, text):
    return _write_text(path, lambda f: f.write(text))
