"""modAL query strategies that rank a pool by the predicted training dynamics.

Three layers, as in modAL: the pure scores (:mod:`tidal_modal.scores`), a measure on an
estimator (:func:`classifier_td_entropy`, :func:`classifier_td_margin`) and the query
strategies, which hand the top-k selection to :func:`select_top_k`. The strategies only use
the estimator's public ``predict_td``, so any estimator that has one can be queried.
"""

import inspect

import numpy as np
from modAL.models.base import BaseLearner
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.random import sample_without_replacement

from .pool import iter_slices, num_rows, take_rows
from .scores import td_entropy, td_margin
from .validation import InputData, check_positive_int

__all__ = [
    "classifier_td_entropy",
    "classifier_td_margin",
    "select_top_k",
    "tidal_entropy",
    "tidal_margin",
]


# modAL 0.4.1 takes the indices alone; 0.4.2 unpacks ``(indices, metrics)`` and, if that fails,
# silently calls the strategy again -- and mis-reads bare indices of length 2. Ask the modAL
# that is imported (0.4.2 added ``return_metrics`` to ``query``) rather than package metadata.
MODAL_RETURNS_METRICS = "return_metrics" in inspect.signature(BaseLearner.query).parameters


def _td_estimator(classifier):
    """Split what a strategy is given into ``(transform or None, estimator with predict_td)``."""
    estimator = getattr(classifier, "estimator", classifier)  # a modAL learner holds the estimator
    transform = None
    if isinstance(estimator, Pipeline):
        transform, estimator = estimator[:-1], estimator[-1]
    if not callable(getattr(estimator, "predict_td", None)):
        raise TypeError(
            f"TiDAL query strategies need an estimator with a predict_td method, such as "
            f"TiDALNetClassifier (or a Pipeline ending in one); got {type(estimator).__name__}. "
            "Use modAL's uncertainty strategies for other estimators."
        )
    return transform, estimator


def _td_members(classifier):
    """``_td_estimator`` of each member of a modAL ``Committee``, or of ``classifier`` alone."""
    learners = getattr(classifier, "learner_list", None)
    if learners is None:
        return [_td_estimator(classifier)]
    if not len(learners):
        raise ValueError("The Committee has no learners to query.")
    return [_td_estimator(learner) for learner in learners]


def select_top_k(
    scores: ArrayLike,
    n_instances: int,
    *,
    random_tie_break: bool = False,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray:
    """Indices of the ``n_instances`` highest scores, highest first, in O(n) selection.

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
    """
    scores = np.asarray(scores)
    n_instances = check_positive_int(n_instances, "n_instances")
    n = len(scores)
    if n_instances > n:
        raise ValueError(f"n_instances={n_instances} is larger than the {n} candidates scored.")
    order = check_random_state(random_state).permutation(n) if random_tie_break else None
    candidates = scores if order is None else scores[order]
    top = np.argpartition(candidates, n - n_instances)[n - n_instances :]  # O(n), no sort
    # order the few selected rows: by score, then by their (possibly shuffled) position
    top = top[np.lexsort((top, -candidates[top]))]
    return top if order is None else order[top]


# Rows a Pipeline's earlier steps transform at a time: each row is transformed once, and no
# transformed copy of a large pool is made; large enough that per-call overhead is negligible.
TRANSFORM_CHUNK_ROWS = 8192


def _member_predict_td(transform, estimator, X, return_proba):
    """``predict_td`` of one estimator, through a Pipeline's transform."""
    if transform is None:
        return estimator.predict_td(X, return_proba=return_proba)
    parts = [
        estimator.predict_td(transform.transform(chunk), return_proba=return_proba)
        for chunk in iter_slices(X, TRANSFORM_CHUNK_ROWS)
    ]
    if return_proba:
        return tuple(np.concatenate(outputs) for outputs in zip(*parts, strict=True))
    return np.concatenate(parts)


def _predict_td(classifier, X, return_proba=False):
    """``predict_td`` of the estimator behind ``classifier``; a modAL ``Committee`` gives its
    members' mean.

    The members' mean probabilities are the committee's consensus, whose argmax is the label
    ``Committee.predict`` returns.
    """
    outputs = [_member_predict_td(*member, X, return_proba) for member in _td_members(classifier)]
    if len(outputs) == 1:
        return outputs[0]
    if not return_proba:
        outputs = [(out,) for out in outputs]
    if len({out[0].shape for out in outputs}) > 1:
        raise ValueError(
            "The Committee's members predict different numbers of classes; declare the same "
            "classes=[...] for every member."
        )
    means = tuple(np.mean(arrays, axis=0) for arrays in zip(*outputs, strict=True))
    return means if return_proba else means[0]


def classifier_td_entropy(classifier: BaseEstimator, X: InputData) -> np.ndarray:
    """Entropy of the predicted training dynamics of each row of ``X`` (higher = more uncertain).

    Parameters
    ----------
    classifier : estimator with ``predict_td``, Pipeline ending in one, modAL learner or Committee
        A Committee's members' predicted TD are averaged.
    X : array-like, tensor or Dataset
        Rows to score.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    return td_entropy(_predict_td(classifier, X))


def classifier_td_margin(classifier: BaseEstimator, X: InputData) -> np.ndarray:
    """Margin of the predicted training dynamics at the classifier's predicted label.

    Predicted TD and predicted labels come from one forward pass. Lower = more uncertain.

    Parameters
    ----------
    classifier : estimator with ``predict_td``, Pipeline ending in one, modAL learner or Committee
        A Committee's members' predicted TD are averaged, and its consensus label (the argmax
        of the members' mean probabilities) is the predicted label.
    X : array-like, tensor or Dataset
        Rows to score.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    td, proba = _predict_td(classifier, X, return_proba=True)
    return td_margin(td, proba.argmax(axis=1))


def _query(uncertainty, classifier, X_pool, n_instances, random_tie_break, pool_subset, random_state):
    n_instances = check_positive_int(n_instances, "n_instances")
    _td_members(classifier)  # fail on a wrong estimator before any work
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
            X_pool = take_rows(X_pool, candidates)
    n_candidates = n_pool if candidates is None else len(candidates)
    if n_instances > n_candidates:
        raise ValueError(
            f"n_instances={n_instances} is larger than the {n_candidates} candidates "
            f"({'pool_subset' if candidates is not None else 'X_pool'} size)."
        )
    scores = uncertainty(classifier, X_pool)
    if not np.isfinite(scores).all():
        raise ValueError(
            "The scores of the pool contain NaN or inf: the network's outputs are not finite "
            "(diverged training, or non-finite values in X_pool). Check the data and the learning rate."
        )
    top = select_top_k(scores, n_instances, random_tie_break=random_tie_break, random_state=rng)
    indices = top if candidates is None else candidates[top]
    if MODAL_RETURNS_METRICS:
        return indices, scores[top]
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
    X_pool : array-like or tensor
        The unlabeled pool.
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
    >>> from modAL.models import ActiveLearner
    >>> from tidal_modal import TiDALNetClassifier, tidal_entropy
    >>> X = np.random.RandomState(0).randn(100, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... )
    >>> learner = ActiveLearner(net, query_strategy=tidal_entropy, X_training=X[:20], y_training=y[:20])
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
    """

    def uncertainty(clf, X):
        return -classifier_td_margin(clf, X)

    return _query(uncertainty, classifier, X_pool, n_instances, random_tie_break, pool_subset, random_state)
