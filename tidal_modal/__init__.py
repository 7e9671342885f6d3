"""tidal-modal: TiDAL (Training Dynamics for Active Learning) for skorch and modAL."""

from .learner import TiDALActiveLearner
from .net import TiDALNetClassifier
from .scores import td_entropy, td_margin
from .strategies import tidal_entropy, tidal_margin

__version__ = "0.1.0"

__all__ = [
    "TiDALActiveLearner",
    "TiDALNetClassifier",
    "td_entropy",
    "td_margin",
    "tidal_entropy",
    "tidal_margin",
]
