"""recbole-tru: machine unlearning for multimodal recommenders, as a RecBole plugin."""
from recbole_tru import compat

compat.apply()

__version__ = "0.1.0"
