from recbole_tru.data.atomic import AtomicFileError
from recbole_tru.data.dataset import MultimodalDataset, create_dataset
from recbole_tru.data.features import FeatureFileError

__all__ = ["AtomicFileError", "MultimodalDataset", "create_dataset", "FeatureFileError"]
