from recbole_tru.model.base import MultimodalRecommender
from recbole_tru.model.mmgcn import MMGCN
from recbole_tru.model.vbpr import VBPR

__all__ = ["MultimodalRecommender", "VBPR", "MMGCN"]
