"""A modAL ActiveLearner that loses nothing when teaching fails."""

from collections.abc import Callable
from typing import Any

import torch
from modAL.models import ActiveLearner
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator

from .strategies import MODAL_RETURNS_METRICS, tidal_entropy
from .validation import InputData

__all__ = ["TiDALActiveLearner"]


class TiDALActiveLearner(ActiveLearner):
    """modAL's :class:`~modAL.models.ActiveLearner`, with TiDAL entropy as default strategy
    and a ``teach`` that keeps the labeled data intact when fitting fails.

    modAL's ``teach`` appends the new rows to the training data *before* fitting, so a fit
    that raises leaves the learner holding data its model was never trained on, and calling
    ``teach`` again after fixing the labels would add the rows twice. This learner restores
    its training data when ``teach`` raises. The model itself is untouched by every error
    that :class:`~tidal_modal.TiDALNetClassifier` foresees (it validates before changing
    anything); an error in the middle of training (e.g. out of memory) leaves it partly
    trained.

    It also queries a pool held in a torch tensor under modAL 0.4.1, whose ``query`` cannot
    take the selected rows of a tensor.

    Parameters
    ----------
    estimator : TiDALNetClassifier, Pipeline ending in one, or any estimator
        As in :class:`modAL.models.ActiveLearner`.
    query_strategy : callable, default=tidal_entropy
        As in :class:`modAL.models.ActiveLearner`.
    *args, **kwargs
        Passed to :class:`modAL.models.ActiveLearner` (``X_training``, ``y_training``, ...).

    Examples
    --------
    >>> learner = TiDALActiveLearner(net, X_training=X0, y_training=y0)  # doctest: +SKIP
    >>> idx, rows = learner.query(X_pool, n_instances=100)[:2]          # doctest: +SKIP
    >>> learner.teach(rows, oracle(idx))                                # doctest: +SKIP
    """

    def __init__(
        self, estimator: BaseEstimator, query_strategy: Callable = tidal_entropy, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(estimator, query_strategy, *args, **kwargs)

    def teach(self, X: ArrayLike, y: ArrayLike, *args: Any, **kwargs: Any) -> None:
        """Add ``X``, ``y`` to the training data and refit; on an error, restore the data and re-raise.

        Parameters
        ----------
        X : array-like
            The newly labeled rows.
        y : array-like
            Their labels.
        *args, **kwargs
            As in :meth:`modAL.models.ActiveLearner.teach`.
        """
        # modAL builds new arrays when it appends, so keeping the references is a snapshot
        X_training, y_training = self.X_training, self.y_training
        try:
            super().teach(X, y, *args, **kwargs)
        except BaseException:
            self.X_training, self.y_training = X_training, y_training
            raise

    def query(self, X_pool: InputData, *args: Any, **kwargs: Any) -> tuple:
        """As :meth:`modAL.models.ActiveLearner.query`; also takes a tensor pool on modAL 0.4.1.

        Returns
        -------
        tuple
            ``(indices, rows)``, plus the metrics with modAL >= 0.4.2 and ``return_metrics=True``.
        """
        if MODAL_RETURNS_METRICS or not isinstance(X_pool, torch.Tensor):
            return super().query(X_pool, *args, **kwargs)
        indices = self.query_strategy(self, X_pool, *args, **kwargs)
        return indices, X_pool[torch.as_tensor(indices)]
