from recbole_tru.data.dataset import MultimodalDataset, create_dataset
from recbole_tru.data.features import FeatureFileError

__all__ = ["MultimodalDataset", "create_dataset", "FeatureFileError"]
