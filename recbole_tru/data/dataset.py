"""A RecBole ``Dataset`` that also carries per-modality item features.

Config keys (``properties/overall.yaml``): ``modalities`` maps a modality name to the suffix of
its atomic feature file (``<data_path>/<dataset>.<suffix>``); ``feature_dims`` optionally
fixes each modality's width.
"""
import torch
from recbole.data.dataset import Dataset
from recbole.data.utils import create_dataset as recbole_create_dataset
from recbole.utils import ModelType

from recbole_tru.data.atomic import check_atomic_file
from recbole_tru.data.features import FeatureFileError, align_to_items, feature_file_path, read_feature_file


class MultimodalDataset(Dataset):
    """RecBole ``Dataset`` + ``item_features``: ``{modality: FloatTensor [n_items, dim]}``
    aligned to internal item ids (row 0 = padding = zeros). Copies made by ``build()`` and
    ``copy()`` share the same tensors."""

    def _load_feat(self, filepath, source):
        """RecBole's reader, after a check that names the file and line of a malformed row
        (RecBole would cut or mean-fill it silently, or fail without naming it)."""
        check_atomic_file(filepath, self.config["field_separator"] or "\t", self.config["seq_separator"] or " ",
                          self.config["encoding"] or "utf-8")
        return super()._load_feat(filepath, source)

    def _data_filtering(self):
        self.raw_item_tokens = self._item_tokens()
        super()._data_filtering()

    def _item_tokens(self):
        tokens = set()
        for feat in (self.inter_feat, self.item_feat):
            if feat is not None and self.iid_field in feat:
                tokens.update(feat[self.iid_field].dropna().astype(str))
        return tokens

    def _data_processing(self):
        super()._data_processing()
        self.item_features = self._load_item_features()

    def _load_item_features(self):
        modalities = self.config["modalities"] or {}
        if not isinstance(modalities, dict):
            raise FeatureFileError(f"config key 'modalities' must map modality names to file suffixes, got {modalities!r}")
        dims = self.config["feature_dims"] or {}
        token2id = self.field2token_id[self.iid_field]
        known = getattr(self, "raw_item_tokens", None)
        features = {}
        for name, suffix in modalities.items():
            path = feature_file_path(self.dataset_path, self.dataset_name, suffix)
            tokens, matrix = read_feature_file(path, self.iid_field, dims.get(name))
            aligned = align_to_items(path, tokens, matrix, token2id, self.item_num, known)
            features[name] = torch.from_numpy(aligned)
            self.logger.info(f"Loaded modality [{name}] from [{path}]: {tuple(aligned.shape)}")
        return features


def create_dataset(config):
    """General models get a :class:`MultimodalDataset`; other model types RecBole's own."""
    if config["MODEL_TYPE"] == ModelType.GENERAL:
        return MultimodalDataset(config)
    return recbole_create_dataset(config)
