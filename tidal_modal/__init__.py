"""tidal-modal: TiDAL (Training Dynamics for Active Learning) for skorch and modAL."""

from .checkpoint import CheckpointError
from .learner import TiDALActiveLearner
from .measures import (
    classifier_dynamic_influence,
    classifier_td_entropy,
    classifier_td_margin,
    classifier_td_margin_uncertainty,
)
from .net import TiDALNetClassifier
from .scores import label_influence, td_entropy, td_margin
from .strategies import disal, tidal_entropy, tidal_margin
from .trajectory import TrajectoryRecorder

__version__ = "0.2.0"

__all__ = [
    "CheckpointError",
    "TiDALActiveLearner",
    "TiDALNetClassifier",
    "TrajectoryRecorder",
    "classifier_dynamic_influence",
    "classifier_td_entropy",
    "classifier_td_margin",
    "classifier_td_margin_uncertainty",
    "disal",
    "label_influence",
    "td_entropy",
    "td_margin",
    "tidal_entropy",
    "tidal_margin",
]
