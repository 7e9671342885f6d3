"""A modAL ActiveLearner that loses nothing when teaching fails, queries exactly once, and saves itself."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from modAL.models import ActiveLearner
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from torch.utils.data import Dataset

from .checkpoint import load_learner, save_learner
from .net import TiDALNetClassifier
from .pool import LabeledDataset, num_rows, select_rows, stack_rows
from .strategies import is_dask_array, tidal_entropy
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


def _check_rows(X, y):
    """One label per row, before anything is stored or fitted."""
    if X is None or y is None:
        raise ValueError("Both X and y are needed: the rows and one label per row.")
    if np.isscalar(y) or getattr(y, "ndim", None) == 0:
        raise ValueError(
            f"y is a single label ({y!r}); pass one label per row in a sequence, e.g. teach(X[[i]], [label])."
        )
    if getattr(X, "ndim", 2) == 1:  # what X[i] of an array, a tensor or a Series is
        raise ValueError(
            f"X is 1-D (shape {tuple(X.shape)}): one row, or one feature? Pass rows as a 2-D array: "
            "X[[i]] or X.reshape(1, -1) for one row, X.reshape(-1, 1) for one feature."
        )
    n_rows, n_labels = num_rows(X), num_rows(y)
    if n_rows != n_labels:
        raise ValueError(f"X has {n_rows} rows but y has {n_labels} labels; give one label per row.")


def _training_data(X, y, bootstrap=False):
    """What the estimator is fitted on: a Dataset's inputs with their labels (see
    :class:`~tidal_modal.pool.LabeledDataset`), or ``X``, ``y``; a bootstrap sample if asked
    (drawn from numpy's global generator, as modAL does)."""
    if bootstrap:
        n = num_rows(X)
        rows = np.random.choice(n, n, replace=True)  # noqa: NPY002 -- modAL's convention
        X, y = select_rows(X, rows), select_rows(y, rows)
    if isinstance(X, Dataset):
        return LabeledDataset(X, y), None
    return X, y


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

        Raises
        ------
        ValueError
            Before anything is stored: a 1-D ``X`` or a single label, rows and labels of other
            lengths, rows that do not fit the labeled data (another row shape; a DataFrame with
            other columns, which in another order are aligned by name; values its dtype cannot
            hold, such as fractional labels for integer ones). Then whatever the fit raises; the
            learner is restored either way.
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

    # --- the labeled data: modAL's handling without modAL's check_X_y (which passes a keyword
    # scikit-learn 1.8 removed) nor its data_vstack (which calls DataFrame.append, gone in pandas 2)

    def _add_training_data(self, X: InputData, y: ArrayLike) -> None:
        """Append ``X``, ``y`` to the labeled data in its own type (:func:`~tidal_modal.pool.stack_rows`)."""
        _check_rows(X, y)
        self.X_training = stack_rows(self.X_training, X)
        self.y_training = stack_rows(self.y_training, y)

    def _fit_to_known(self, bootstrap: bool = False, **fit_kwargs: Any) -> TiDALActiveLearner:
        """Fit the estimator on all labeled data (a bootstrap sample of it if ``bootstrap``)."""
        self.estimator.fit(*_training_data(self.X_training, self.y_training, bootstrap), **fit_kwargs)
        return self

    def _fit_on_new(
        self, X: InputData, y: ArrayLike, bootstrap: bool = False, **fit_kwargs: Any
    ) -> TiDALActiveLearner:
        """Fit the estimator on ``X``, ``y`` alone (``teach(..., only_new=True)``)."""
        _check_rows(X, y)
        self.estimator.fit(*_training_data(X, y, bootstrap), **fit_kwargs)
        return self

    def fit(
        self, X: InputData, y: ArrayLike, bootstrap: bool = False, **fit_kwargs: Any
    ) -> TiDALActiveLearner:
        """Replace the labeled data by ``X``, ``y`` and fit the estimator on them.

        As :meth:`modAL.models.ActiveLearner.fit`; ``X`` may be an array (memory-mapped too), a
        tensor, a DataFrame or a torch Dataset, and the learner keeps it as it is.
        """
        _check_rows(X, y)
        self.X_training, self.y_training = X, y
        return self._fit_to_known(bootstrap=bootstrap, **fit_kwargs)

    def save(self, path: str | os.PathLike, *, metadata: Any = None, allow_pickle: bool = False) -> None:
        """Write the whole learner to ``path``, atomically: a crash leaves the old file or the new one.

        Saved: the estimator (a net with its weights, TD head, optimizer state, history, training
        dynamics and trajectory), ``X_training`` / ``y_training``, the query strategy (a function
        defined at the top level of a module, or a ``functools.partial`` of one), and the states
        of the global random generators (Python's, numpy's, torch's, CUDA's if in use), which
        :meth:`load` restores only if asked to. The file's header records the format and the
        release of tidal_modal that wrote it. See :mod:`tidal_modal.checkpoint` for the layout
        and the loop that saves after every ``teach``.

        By default the file is format 2, which :meth:`load` reads without pickle: weights and
        tensors as safetensors, arrays as ``.npy``, the rest as JSON, with classes and functions
        (the module's class, the strategy, the optimizer) stored by import path. It holds a
        :class:`~tidal_modal.TiDALNetClassifier` (or another skorch net) whose module is given as
        a class or as an instance of importable ``torch.nn.Module`` classes (e.g. an
        ``nn.Sequential`` of torch layers), labeled data in numpy arrays (memory-mapped ones
        too: their rows are written into the file, and load as an in-memory array) or torch
        tensors, and skorch callbacks whose attributes are their constructor's parameters.
        Anything else is refused before anything is written, with an error that names it and
        why; ``allow_pickle=True`` then saves it in the pickled format 1.

        Parameters
        ----------
        path : str or path-like
            The checkpoint; replaced if it exists.
        metadata : JSON data, default=None
            Kept in the file's header and returned by ``load(path, return_metadata=True)``,
            saved in the same atomic write as the learner: e.g. the indices of the pool rows
            labeled so far, so that the pool and the labeled data cannot disagree after a crash.
            It must load back equal: dicts with string keys, lists, strings, finite numbers,
            booleans and None (no tuples, numpy scalars or NaN).
        allow_pickle : bool, default=False
            Write format 1, a pickle of the whole learner: for what format 2 cannot hold (a
            scikit-learn Pipeline, a module or strategy defined in ``__main__``, a module with
            hooks, a callback with state beyond its parameters such as ``LRScheduler``, a
            DataFrame or a Dataset as labeled data). Such a file needs ``load(path,
            allow_pickle=True)``, and unpickling can run code: load only files you trust.

        Raises
        ------
        TypeError
            Raised before anything is written: the query strategy cannot be saved (a lambda or a
            function defined inside another function), ``metadata`` holds a value JSON would not
            give back equal (the message names where, e.g. ``metadata['labeled'][3]``, and the
            conversion), or, without ``allow_pickle``, a part of the learner that format 2 cannot
            hold (named, e.g. ``learner.estimator.module``, with the reason).
        ValueError
            ``metadata`` holds a NaN or an infinite float.
        """
        save_learner(self, path, metadata=metadata, allow_pickle=allow_pickle)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        restore_rng: bool = False,
        return_metadata: bool = False,
        allow_pickle: bool = False,
    ) -> TiDALActiveLearner | tuple[TiDALActiveLearner, Any]:
        """Read a learner written by :meth:`save`, in this process or another one.

        A file of format 2 (what :meth:`save` writes by default) is read without pickle: its
        arrays with ``allow_pickle=False``, its tensors with safetensors; the classes and
        functions it names (the module's class, the strategy) are imported. A file of format 1
        (``save(..., allow_pickle=True)``, and every file of tidal_modal 0.1.0 and 0.2.0) is a
        pickle, read only with ``allow_pickle=True``.

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
        allow_pickle : bool, default=False
            Also read a pickled file (format 1). Unpickling can run any code: only for files
            you trust. Saving the loaded learner again without ``allow_pickle`` converts it to
            format 2.

        Returns
        -------
        learner : TiDALActiveLearner
        metadata : JSON data
            Only if ``return_metadata``.

        Raises
        ------
        tidal_modal.checkpoint.CheckpointError
            A ``ValueError``: the file is not a learner checkpoint (the message says what it
            seems to be), is damaged, holds another class, is a pickle and ``allow_pickle`` is
            false (the message says to pass ``allow_pickle=True`` if you trust it), or was
            written by a release of tidal_modal this one cannot read (the message names that
            release).
        """
        learner, header = load_learner(path, cls, restore_rng=restore_rng, allow_pickle=allow_pickle)
        return (learner, header["metadata"]) if return_metadata else learner

    def query(self, X_pool: InputData, *args: Any, return_metrics: bool = False, **kwargs: Any) -> tuple:
        """Call the query strategy once and return the selected indices and rows.

        As :meth:`modAL.models.ActiveLearner.query` of modAL 0.4.2, with two differences that
        matter for an expensive strategy: the strategy is called exactly once (modAL 0.4.2
        calls it a second time when it raises, and reads bare indices of length 2 as
        ``(index, metrics)``), and a pool held in a torch tensor works on modAL 0.4.1 too.

        Parameters
        ----------
        X_pool : array-like, tensor, DataFrame or dask array
            The unlabeled pool. A dask array is scored where its blocks live (see
            :mod:`tidal_modal.dask`); only the selected rows are computed and returned.
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
        rows = select_rows(X_pool, indices)
        if is_dask_array(rows):  # the selected rows only, in memory, as a memory-mapped pool's are
            rows = rows.compute()
        if not return_metrics:
            return indices, rows
        if metrics is None:
            warnings.warn(
                "The query strategy returns no metrics; metrics is None.", UserWarning, stacklevel=2
            )
        return indices, rows, metrics
