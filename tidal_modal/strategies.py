"""modAL query strategies that rank a pool by training dynamics: TiDAL and DISAL.

Three layers, as in modAL: the pure scores (:mod:`tidal_modal.scores`), a measure on an
estimator (:mod:`tidal_modal.measures`) and the query strategies here, which share one
plumbing (:func:`_query`: pool subsets, checks, top-k by :func:`select_top_k`, modAL's return
convention). The TiDAL strategies only use the estimator's public ``predict_td``, so any
estimator that has one can be queried; :func:`disal` uses a skorch net's recorded trajectory.
"""

from __future__ import annotations

import inspect
import sys

import numpy as np
from modAL.models.base import BaseLearner
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.random import sample_without_replacement

from .measures import (
    _influence_members,
    _td_members,
    classifier_dynamic_influence,
    classifier_td_entropy,
    classifier_td_margin,
)
from .pool import num_rows, take_rows
from .validation import InputData, check_positive_int

__all__ = [
    "classifier_td_entropy",
    "classifier_td_margin",
    "disal",
    "select_top_k",
    "tidal_entropy",
    "tidal_margin",
]


# modAL 0.4.1 takes the indices alone; 0.4.2 unpacks ``(indices, metrics)`` and, if that fails,
# silently calls the strategy again -- and mis-reads bare indices of length 2. Ask the modAL
# that is imported (0.4.2 added ``return_metrics`` to ``query``) rather than package metadata.
MODAL_RETURNS_METRICS = "return_metrics" in inspect.signature(BaseLearner.query).parameters


def select_top_k(
    scores: ArrayLike,
    n_instances: int,
    *,
    random_tie_break: bool = False,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray:
    """Indices of the ``n_instances`` highest scores, highest first, in O(n) selection.

    Equal scores are taken and ordered by position, the earlier row first (at the k-th place
    too), or by a random permutation with ``random_tie_break``. The order is total, so the top
    k of a pool are the top k of its parts' top k (what scoring a Dask pool by blocks relies on).

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Uncertainty scores; higher is queried first.
    n_instances : int
        How many indices to return.
    random_tie_break : bool, default=False
        Break ties between equal scores at random (reproducibly, through ``random_state``)
        instead of by position.
    random_state : int, RandomState instance or None, default=None
        Seeds the tie break.

    Returns
    -------
    ndarray of int, shape (n_instances,)

    Raises
    ------
    ValueError
        If ``scores`` is not 1-D, holds NaN, or has fewer than ``n_instances`` entries.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(
            f"scores must be 1-D, one score per row; got shape {scores.shape}. Reduce a score per "
            "class to one per row first (e.g. its maximum or entropy)."
        )
    if scores.dtype.kind == "f" and np.isnan(scores).any():  # NaN has no rank: it would be taken anywhere
        raise ValueError(
            f"scores contain NaN at rows {np.flatnonzero(np.isnan(scores))[:10].tolist()}: they cannot be "
            "ranked. Check the classifier's outputs (a diverged net gives NaN)."
        )
    n_instances = check_positive_int(n_instances, "n_instances")
    n = len(scores)
    if n_instances > n:
        raise ValueError(f"n_instances={n_instances} is larger than the {n} candidates scored.")
    order = check_random_state(random_state).permutation(n) if random_tie_break else None
    candidates = scores if order is None else scores[order]
    top = np.argpartition(candidates, n - n_instances)[n - n_instances :]  # O(n), no sort
    kth = candidates[top].min()
    above, tied = top[candidates[top] > kth], np.flatnonzero(candidates == kth)
    if len(above) + len(tied) > n_instances:  # argpartition kept any of the tied rows: the first ones
        top = np.concatenate([above, tied[: n_instances - len(above)]])
    # order the few selected rows: by score, then by their (possibly shuffled) position
    top = top[np.lexsort((top, -candidates[top]))]
    return top if order is None else order[top]


def is_dask_array(X) -> bool:
    """Whether ``X`` is a ``dask.array.Array``, asked without importing Dask (if ``X`` is one,
    Dask is imported already)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(X, dask_array.Array)


def check_finite_scores(scores: np.ndarray) -> None:
    """Raise if a pool's scores are not all finite (nothing could be ranked from them)."""
    if not np.isfinite(scores).all():
        raise ValueError(
            "The scores of the pool contain NaN or inf: the network's outputs are not finite "
            "(diverged training, or non-finite values in X_pool). Check the data and the learning rate."
        )


def _query(
    uncertainty,
    classifier,
    X_pool,
    n_instances,
    random_tie_break,
    pool_subset,
    random_state,
    members=_td_members,
    select=None,
):
    """Score (a random subset of) ``X_pool`` with ``uncertainty(classifier, X)`` and return the top
    ``n_instances`` in modAL's convention; ``members(classifier)`` checks the estimator first.
    ``select(scores, n_instances, rng)``, if given, picks the rows instead of the top-k."""
    n_instances = check_positive_int(n_instances, "n_instances")
    members(classifier)  # fail on a wrong estimator before any work
    rng = check_random_state(random_state)
    n_pool = num_rows(X_pool)
    if n_pool == 0:
        raise ValueError("X_pool is empty: there is nothing left to query.")
    candidates = None
    if pool_subset is not None:
        pool_subset = check_positive_int(pool_subset, "pool_subset")
        if pool_subset < n_pool:
            # O(pool_subset) memory, unlike a permutation of the pool; sorted, so that a
            # memory-mapped pool is read front to back
            candidates = np.sort(sample_without_replacement(n_pool, pool_subset, random_state=rng))
    n_candidates = n_pool if candidates is None else len(candidates)
    if n_instances > n_candidates:
        raise ValueError(
            f"n_instances={n_instances} is larger than the {n_candidates} candidates "
            f"({'pool_subset' if candidates is not None else 'X_pool'} size)."
        )
    if is_dask_array(X_pool):
        if select is not None:
            raise TypeError(
                "This strategy selects from every score of the pool, which a dask array pool does not "
                "gather; pass X_pool.compute(), or query the dask pool with tidal_entropy, tidal_margin "
                "or disal."
            )
        from .dask import dask_top_k  # only here: `import tidal_modal` never imports Dask

        top, top_scores = dask_top_k(
            uncertainty,
            classifier,
            X_pool,
            n_instances,
            candidates,
            random_tie_break=random_tie_break,
            rng=rng,
        )
    else:
        scores = uncertainty(classifier, X_pool if candidates is None else take_rows(X_pool, candidates))
        check_finite_scores(scores)
        if select is None:
            top = select_top_k(scores, n_instances, random_tie_break=random_tie_break, random_state=rng)
        else:
            top = select(scores, n_instances, rng)
        top_scores = scores[top]
    indices = top if candidates is None else candidates[top]
    if MODAL_RETURNS_METRICS:
        return indices, top_scores
    return indices


def tidal_entropy(
    classifier: BaseEstimator,
    X_pool: InputData,
    n_instances: int = 1,
    *,
    random_tie_break: bool = False,
    pool_subset: int | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """TiDAL query strategy: the rows whose predicted training dynamics have the highest entropy.

    Parameters
    ----------
    classifier : modAL learner or Committee, TiDALNetClassifier or Pipeline ending in one
        A learner's ``.estimator`` is used. The earlier steps of a Pipeline transform the
        candidates once; the last step must have ``predict_td``. A Committee's members'
        predicted TD are averaged.
    X_pool : array-like, tensor or dask array
        The unlabeled pool. A ``dask.array.Array`` is scored block by block where it lives (on
        the current ``dask.distributed`` Client, or Dask's local scheduler), with the same
        result; see :mod:`tidal_modal.dask`.
    n_instances : int, default=1
        Number of rows to query.
    random_tie_break : bool, default=False
        Break ties between equal scores at random (through ``random_state``).
    pool_subset : int or None, default=None
        Score only a random subset of this many candidates (the paper scores 10,000 per
        cycle); returned indices still refer to the full ``X_pool``.
    random_state : int, RandomState instance or None, default=None
        Seeds the subset and the tie break; the same seed gives the same query.

    Returns
    -------
    indices : ndarray of int, shape (n_instances,)
        Rows of ``X_pool`` to label, most uncertain first. With modAL >= 0.4.2 the strategy
        returns ``(indices, scores)``, the convention that release's ``query`` unpacks.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy
    >>> X = np.random.RandomState(0).randn(100, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... )
    >>> learner = TiDALActiveLearner(net, query_strategy=tidal_entropy, X_training=X[:20], y_training=y[:20])
    >>> idx, rows = learner.query(X[20:], n_instances=5, random_state=0)
    >>> idx.shape, rows.shape
    ((5,), (5, 4))
    """
    return _query(
        classifier_td_entropy, classifier, X_pool, n_instances, random_tie_break, pool_subset, random_state
    )


def tidal_margin(
    classifier: BaseEstimator,
    X_pool: InputData,
    n_instances: int = 1,
    *,
    random_tie_break: bool = False,
    pool_subset: int | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """TiDAL query strategy: the rows with the smallest predicted-TD margin at the predicted label.

    The margin is ``ptilde[yhat] - max_{c != yhat} ptilde[c]``, with ``yhat`` the classifier's
    prediction (a Committee's consensus label); both come from one forward pass.

    Parameters
    ----------
    classifier, X_pool, n_instances, random_tie_break, pool_subset, random_state
        As in :func:`tidal_entropy`.

    Returns
    -------
    indices : ndarray of int, shape (n_instances,)
        As in :func:`tidal_entropy`; the scores returned with modAL >= 0.4.2 are the negated
        margins.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALNetClassifier
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... ).fit(X, y)
    >>> from tidal_modal import TiDALActiveLearner, tidal_margin
    >>> learner = TiDALActiveLearner(net, query_strategy=tidal_margin, X_training=X, y_training=y)
    >>> idx, rows = learner.query(X, n_instances=3)
    >>> idx.shape, rows.shape
    ((3,), (3, 4))
    """

    def uncertainty(clf, X):
        return -classifier_td_margin(clf, X)

    return _query(uncertainty, classifier, X_pool, n_instances, random_tie_break, pool_subset, random_state)


def disal(
    classifier: BaseEstimator,
    X_pool: InputData,
    n_instances: int = 1,
    *,
    random_tie_break: bool = False,
    pool_subset: int | None = None,
    random_state: int | np.random.RandomState | None = None,
    target: str = "pseudo",
    sign: str = "magnitude",
    normalize: bool = True,
    n_checkpoints: int | None = None,
    heads: str = "current",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """DISAL query strategy (our interpretation): the rows of highest dynamic influence.

    DISAL ("Tracing Training Progress: Dynamic Influence Based Selection for Active Learning",
    ACM MM 2024) selects "samples with higher projected gradients along the accumulated
    optimization direction at each checkpoint". Only its abstract is public; this is a
    documented interpretation, not the authors' code. A row ``x`` scores
    ``|sum_t < g_t(x), Delta_t / ||Delta_t|| >|``: ``Delta_t`` is the step of the classifier's
    last linear layer between the checkpoints (epochs) of the last fit, recorded by
    :class:`~tidal_modal.TrajectoryRecorder`, and ``g_t(x) = (p(x) - onehot(yhat)) outer [h, 1]``
    the closed-form cross-entropy gradient for that layer at the predicted label ``yhat``, with
    the layer's input ``h`` and probabilities ``p`` at the current weights. Scoring is one
    forward pass over the candidates plus a few matrix products. The abstract's "dynamic loss
    term" has no public definition and is left out. The defaults were chosen by measurement
    on the benchmark presets (README, "DISAL").

    Parameters
    ----------
    classifier : modAL learner or Committee, skorch net or Pipeline ending in one
        ``TiDALNetClassifier`` records the trajectory by default; a plain
        ``skorch.NeuralNetClassifier`` needs ``callbacks=[TrajectoryRecorder()]``. A
        Committee's members' scores are averaged.
    X_pool : array-like, tensor, Dataset or dask array
        The unlabeled pool (a dask array as in :func:`tidal_entropy`).
    n_instances, random_tie_break, pool_subset, random_state
        As in :func:`tidal_entropy`.
    target, sign, normalize, n_checkpoints, heads
        The interpretation's choices; see :func:`~tidal_modal.measures.classifier_dynamic_influence`.

    Returns
    -------
    indices : ndarray of int, shape (n_instances,)
        Rows of ``X_pool`` to label, highest score first; ``(indices, scores)`` with
        modAL >= 0.4.2, as for :func:`tidal_entropy`.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, disal
    >>> X = np.random.RandomState(0).randn(100, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=3, verbose=0
    ... )
    >>> learner = TiDALActiveLearner(net, query_strategy=disal, X_training=X[:20], y_training=y[:20])
    >>> idx, rows = learner.query(X[20:], n_instances=5, random_state=0)
    >>> idx.shape, len(net.trajectory_)
    ((5,), 3)
    """

    def influence(clf, X):
        return classifier_dynamic_influence(
            clf, X, target=target, sign=sign, normalize=normalize, n_checkpoints=n_checkpoints, heads=heads
        )

    return _query(
        influence,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        pool_subset,
        random_state,
        members=_influence_members,
    )
