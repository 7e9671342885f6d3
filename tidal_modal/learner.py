"""A modAL ActiveLearner that loses nothing when teaching fails, queries exactly once, and saves itself."""

import copy
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from modAL.models import ActiveLearner
from modAL.utils.data import retrieve_rows
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator

from .checkpoint import load_learner, save_learner
from .net import TiDALNetClassifier
from .strategies import tidal_entropy
from .validation import InputData

__all__ = ["TiDALActiveLearner"]


def _snapshot_estimator(estimator: BaseEstimator) -> list[tuple[BaseEstimator, dict]]:
    """Copies of the attributes of ``estimator`` and of the estimators among its parameters
    (a Pipeline's steps, ...), TiDAL nets aside: they restore themselves when their fit fails.

    The parts themselves are not copied, only what each holds (``steps``, ``mean_``, ...):
    putting the copies back into the same objects restores them for anyone who holds them.
    """
    nested = estimator.get_params(deep=True).values() if isinstance(estimator, BaseEstimator) else ()
    parts = {id(part): part for part in [estimator, *nested] if isinstance(part, BaseEstimator)}
    return [
        (part, copy.deepcopy(part.__dict__, dict(parts)))  # the memo keeps every part by reference
        for part in parts.values()
        if not isinstance(part, TiDALNetClassifier)
    ]


class TiDALActiveLearner(ActiveLearner):
    """modAL's :class:`~modAL.models.ActiveLearner`, with TiDAL entropy as default strategy
    and a ``teach`` that keeps the labeled data and the model intact when fitting fails.

    modAL's ``teach`` appends the new rows to the training data *before* fitting, so a fit
    that raises leaves the learner holding data its model was never trained on, and calling
    ``teach`` again after fixing the labels would add the rows twice. And a Pipeline refits its
    first steps (e.g. a scaler) before its net can refuse the rows. When ``teach`` raises, this
    learner restores its training data and its whole estimator: a
    :class:`~tidal_modal.TiDALNetClassifier` restores itself (see
    :mod:`tidal_modal.transaction`), the other estimators in it are restored from copies of
    their attributes. (A ``KeyboardInterrupt`` inside the net's training loop does not raise:
    as in skorch, training stops early and ``teach`` keeps the net trained so far.)

    Its ``query`` calls the strategy exactly once on either modAL release (modAL 0.4.2 calls
    a strategy a second time when it raises), and takes a pool held in a torch tensor on
    modAL 0.4.1 too. :meth:`save` and :meth:`load` keep a labeling loop's state in one file
    that a crash cannot damage (see :mod:`tidal_modal.checkpoint`).

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
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALActiveLearner, TiDALNetClassifier
    >>> X = np.random.RandomState(0).randn(100, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... )
    >>> learner = TiDALActiveLearner(net, X_training=X[:20], y_training=y[:20])
    >>> idx, rows = learner.query(X[20:], n_instances=5, random_state=0)
    >>> learner.teach(rows, y[20:][idx])
    >>> len(learner.y_training)
    25
    """

    def __init__(
        self, estimator: BaseEstimator, query_strategy: Callable = tidal_entropy, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(estimator, query_strategy, *args, **kwargs)

    def teach(self, X: ArrayLike, y: ArrayLike, *args: Any, **kwargs: Any) -> None:
        """Add ``X``, ``y`` to the training data and refit; on an error, restore the learner and re-raise.

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
        estimator = _snapshot_estimator(self.estimator)
        try:
            super().teach(X, y, *args, **kwargs)
        except BaseException:
            self.X_training, self.y_training = X_training, y_training
            for part, attributes in estimator:
                part.__dict__.clear()
                part.__dict__.update(attributes)
            raise

    def save(self, path: str | os.PathLike, *, metadata: Any = None) -> None:
        """Write the whole learner to ``path``, atomically: a crash leaves the old file or the new one.

        Saved: the estimator (a net, or a Pipeline and its net, with weights, optimizer state,
        history and training dynamics), ``X_training`` / ``y_training``, the query strategy
        (a function defined at the top level of a module, or a ``functools.partial`` of one),
        and the states of the global random generators (Python's, numpy's, torch's, CUDA's if
        in use), which :meth:`load` restores only if asked to. The file's header records the
        format and the release of tidal_modal that wrote it. See :mod:`tidal_modal.checkpoint`
        for the layout and the loop that saves after every ``teach``.

        Parameters
        ----------
        path : str or path-like
            The checkpoint; replaced if it exists.
        metadata : JSON data, default=None
            Kept in the file's header and returned by ``load(path, return_metadata=True)``,
            saved in the same atomic write as the learner: e.g. the indices of the pool rows
            labeled so far, so that the pool and the labeled data cannot disagree after a crash.

        Raises
        ------
        TypeError
            The query strategy cannot be pickled (a lambda or a function defined inside
            another function), or ``metadata`` is not JSON data; raised before anything is
            written.
        """
        save_learner(self, path, metadata=metadata)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, restore_rng: bool = False, return_metadata: bool = False
    ) -> "TiDALActiveLearner | tuple[TiDALActiveLearner, Any]":
        """Read a learner written by :meth:`save`, in this process or another one.

        Only load files you trust: the learner is unpickled, and unpickling can run code.

        Parameters
        ----------
        path : str or path-like
        restore_rng : bool, default=False
            Also put the global random generators back in their states at the save, so that a
            resumed loop draws what an uninterrupted one would have drawn (a net's shuffling, a
            strategy's ``random_state=None``). Off by default: it changes the whole process's
            generators, which other code in it may be using.
        return_metadata : bool, default=False
            Also return the ``metadata`` given to :meth:`save`.

        Returns
        -------
        learner : TiDALActiveLearner
        metadata : JSON data
            Only if ``return_metadata``.

        Raises
        ------
        tidal_modal.checkpoint.CheckpointError
            A ``ValueError``: the file is not a learner checkpoint (the message says what it
            seems to be), is damaged, holds another class, or was written by a release of
            tidal_modal this one cannot read (the message names that release).
        """
        learner, header = load_learner(path, cls, restore_rng=restore_rng)
        return (learner, header["metadata"]) if return_metadata else learner

    def query(self, X_pool: InputData, *args: Any, return_metrics: bool = False, **kwargs: Any) -> tuple:
        """Call the query strategy once and return the selected indices and rows.

        As :meth:`modAL.models.ActiveLearner.query` of modAL 0.4.2, with two differences that
        matter for an expensive strategy: the strategy is called exactly once (modAL 0.4.2
        calls it a second time when it raises, and reads bare indices of length 2 as
        ``(index, metrics)``), and a pool held in a torch tensor works on modAL 0.4.1 too.

        Parameters
        ----------
        X_pool : array-like, tensor or DataFrame
            The unlabeled pool.
        *args, **kwargs
            Passed to the query strategy (e.g. ``n_instances``).
        return_metrics : bool, default=False
            Also return the scores of the selected rows, if the strategy gives them (the TiDAL
            strategies do with modAL >= 0.4.2).

        Returns
        -------
        indices : ndarray of int
        rows : the selected rows of ``X_pool``
        metrics : ndarray or None
            Only if ``return_metrics``.
        """
        result = self.query_strategy(self, X_pool, *args, **kwargs)
        indices, metrics = result if isinstance(result, tuple) else (result, None)
        if isinstance(X_pool, torch.Tensor):
            rows = X_pool[torch.as_tensor(indices, device=X_pool.device)]
        else:
            rows = retrieve_rows(X_pool, indices)
        if not return_metrics:
            return indices, rows
        if metrics is None:
            warnings.warn(
                "The query strategy returns no metrics; metrics is None.", UserWarning, stacklevel=2
            )
        return indices, rows, metrics
