"""Query strategies of the study "make training dynamics pay" (``benchmarks/run_td_pays.sh``).

Each variant uses something the TD head knows and a snapshot classifier may not, and each
``source="td"`` variant has a twin with ``source="classifier"`` that runs the same code on the
classifier's probabilities, so that a difference between the two is TD's and not the selection
rule's. What the TD head knows (``benchmarks/results/fidelity-paper``): in the paper's regime, TD
entropy separates minority-class rows from majority rows better than snapshot entropy.

- :func:`balanced_query`: minority-seeking, class-balanced selection. Each pick goes to the class
  with the fewest labeled (and already picked) rows among the classes predicted for the
  candidates, and takes that class's most uncertain candidate. The predicted class is the argmax
  of the predicted TD (``source="td"``) or of the probabilities.
- :func:`balanced_batch_query`: the same choice of class, then modAL's ranked-batch rule inside
  it (distance in the input space to the labeled and picked rows, weighted by ``|U| / (|U| + |D|)``,
  against the uncertainty), so that a batch is spread out within each class too.
- :func:`modal_batch_query`: modAL's ranked batch fed with a TD measure in ``[0, 1]``.
- :func:`combined_query`: top-k by the mean of two ranks, TD entropy and classifier margin.
- :func:`space_batch_query`: the library's ranked batch with distances between predicted TD
  vectors (or probability vectors) instead of penultimate features.
- :func:`disagreement_query`: top-k by ``1 - TD[predicted class]``, how little of its predicted
  training history a row spent in the class the classifier now gives it (rows whose prediction
  is unstable, as in forgetting events); its twin is least confidence, ``1 - p[predicted class]``.

None of these is part of the library; a variant that wins moves there, with tests and docs.
"""

from functools import partial

import numpy as np
from modAL.batch import ranked_batch as modal_ranked_batch
from scipy.special import entr
from scipy.stats import rankdata
from sklearn.metrics import pairwise_distances, pairwise_distances_argmin_min

from tidal_modal.batch import ranked_batch
from tidal_modal.measures import _predict_td
from tidal_modal.strategies import MODAL_RETURNS_METRICS, _query

__all__ = [
    "VARIANTS",
    "balanced_batch_query",
    "balanced_query",
    "combined_query",
    "disagreement_query",
    "minority_first",
    "modal_batch_query",
    "space_batch_query",
]

SOURCES = ("td", "classifier")


def _check_source(source):
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; got {source!r}")


def _normalized_entropy(p):
    """Entropy of each row of ``p`` divided by ``log(n_classes)``: in ``[0, 1]``."""
    return entr(np.clip(p, 0, None)).sum(axis=1) / np.log(p.shape[1])


def _distribution(classifier, X, source):
    """The predicted TD (``source="td"``) or the class probabilities of the rows ``X``."""
    td, proba = _predict_td(classifier, X, return_proba=True)
    return td if source == "td" else proba


def _labeled_counts(classifier, n_classes):
    """Labeled rows per class (in the order of the net's ``classes_``) of a modAL learner."""
    classes = np.asarray(classifier.estimator.classes_)
    y = np.asarray(classifier.y_training)
    counts = np.array([(y == c).sum() for c in classes], dtype=float)
    return np.pad(counts, (0, max(0, n_classes - len(counts))))[:n_classes]


def minority_first(predicted, counts, n_instances, pick_in_class):
    """Greedy class-balanced selection: positions of ``n_instances`` rows, in the order picked.

    Each step takes the class with the fewest rows so far (``counts``, plus the rows picked in
    this batch; ties to the lower class index) among the classes that still have candidates, and
    ``pick_in_class(rows, picked)`` chooses one of its candidates ``rows`` (positions).

    Examples
    --------
    >>> order = minority_first(np.array([0, 0, 1, 1]), np.array([5.0, 1.0]), 3, lambda rows, picked: rows[0])
    >>> order.tolist()
    [2, 3, 0]
    """
    predicted = np.asarray(predicted)
    taken = np.asarray(counts, dtype=float).copy()
    open_rows = np.ones(len(predicted), dtype=bool)
    order = []
    for _ in range(n_instances):
        available = np.unique(predicted[open_rows])
        cls = available[np.argmin(taken[available])]
        rows = np.flatnonzero(open_rows & (predicted == cls))
        row = int(pick_in_class(rows, np.array(order, dtype=np.intp)))
        order.append(row)
        open_rows[row] = False
        taken[cls] += 1
    return np.array(order, dtype=np.intp)


def _as_rows(X):
    X = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float64)
    return X.reshape(len(X), -1)


def balanced_query(classifier, X_pool, n_instances=1, *, source="td"):
    """Minority-seeking, class-balanced top uncertainty (module docstring).

    Within a class, the most uncertain candidate: normalised entropy of the predicted TD
    (``source="td"``) or of the probabilities.
    """
    _check_source(source)
    seen = {}

    def score(clf, X):
        dist = _distribution(clf, X, source)
        seen["predicted"] = dist.argmax(axis=1)
        return _normalized_entropy(dist)

    def select(scores, n, rng):
        counts = _labeled_counts(classifier, int(seen["predicted"].max()) + 1)

        def pick(rows, picked):
            return rows[np.argmax(scores[rows])]  # the class's highest score; ties to the first row

        return minority_first(seen["predicted"], counts, n, pick)

    return _query(score, classifier, X_pool, n_instances, False, None, None, select=select)


def balanced_batch_query(classifier, X_pool, n_instances=1, *, source="td"):
    """Minority-seeking classes, modAL's ranked-batch rule within each class (module docstring)."""
    _check_source(source)
    seen = {}

    def score(clf, X):
        dist = _distribution(clf, X, source)
        seen["predicted"], seen["rows"] = dist.argmax(axis=1), _as_rows(X)
        return _normalized_entropy(dist)

    def select(scores, n, rng):
        candidates = seen["rows"]
        labeled = _as_rows(classifier.X_training)
        counts = _labeled_counts(classifier, int(seen["predicted"].max()) + 1)
        _, distance = pairwise_distances_argmin_min(candidates, labeled)

        def pick(rows, picked):
            n_labeled = len(labeled) + len(picked)
            n_unlabeled = len(candidates) - len(picked)
            alpha = n_unlabeled / (n_unlabeled + n_labeled)  # modAL's weighting
            combined = alpha * (1 - 1 / (1 + distance[rows])) + (1 - alpha) * scores[rows]
            row = rows[np.argmax(combined)]
            new = pairwise_distances(candidates, candidates[row : row + 1])[:, 0]
            distance[:] = np.minimum(distance, new)
            return row

        return minority_first(seen["predicted"], counts, n, pick)

    return _query(score, classifier, X_pool, n_instances, False, None, None, select=select)


def modal_batch_query(classifier, X_pool, n_instances=1, *, measure="td_entropy"):
    """modAL's ranked batch (input-space distances, its weighting) on a measure in ``[0, 1]``:
    ``td_entropy`` (normalised entropy of the predicted TD) or ``td_least_confidence``
    (one minus the predicted TD's largest entry)."""
    measures = {
        "td_entropy": _normalized_entropy,
        "td_least_confidence": lambda td: 1 - td.max(axis=1),
    }
    if measure not in measures:
        raise ValueError(f"measure must be one of {sorted(measures)}; got {measure!r}")
    scores = measures[measure](_distribution(classifier, X_pool, "td"))
    result = modal_ranked_batch(classifier, X_pool, scores, n_instances, metric="euclidean", n_jobs=None)
    indices = np.asarray(result[0] if isinstance(result, tuple) else result)
    return (indices, scores[indices]) if MODAL_RETURNS_METRICS else indices


def combined_query(classifier, X_pool, n_instances=1):
    """Top-k by the mean of the ranks of TD entropy and classifier margin uncertainty (one pass)."""

    def score(clf, X):
        td, proba = _predict_td(clf, X, return_proba=True)
        top2 = np.sort(proba, axis=1)[:, -2:]
        margin_uncertainty = 1 - (top2[:, 1] - top2[:, 0])
        return (rankdata(_normalized_entropy(td)) + rankdata(margin_uncertainty)) / (2 * len(td))

    return _query(score, classifier, X_pool, n_instances, False, None, None)


def space_batch_query(classifier, X_pool, n_instances=1, *, source="td", weight=0.5):
    """The library's ranked batch rule (:func:`~tidal_modal.batch.ranked_batch`) with distances
    between predicted TD vectors (``source="td"``) or probability vectors, and their entropy as
    the uncertainty."""
    _check_source(source)
    seen = {}

    def score(clf, X):
        seen["rows"] = _distribution(clf, X, source)
        return _normalized_entropy(seen["rows"])

    def select(scores, n, rng):
        labeled = _distribution(classifier, classifier.X_training, source)
        return ranked_batch(scores, seen["rows"], labeled, n, weight)

    return _query(score, classifier, X_pool, n_instances, False, None, None, select=select)


def disagreement_query(classifier, X_pool, n_instances=1):
    """Top-k by ``1 - TD[c]``, ``c`` the classifier's predicted class (module docstring)."""

    def score(clf, X):
        td, proba = _predict_td(clf, X, return_proba=True)
        return 1 - td[np.arange(len(td)), proba.argmax(axis=1)]

    return _query(score, classifier, X_pool, n_instances, False, None, None)


# name -> strategy; a TD variant's name starts with "tidal_", its classifier twin's does not
VARIANTS = {
    "tidal_balanced": partial(balanced_query, source="td"),
    "balanced": partial(balanced_query, source="classifier"),
    "tidal_balanced_batch": partial(balanced_batch_query, source="td"),
    "balanced_batch": partial(balanced_batch_query, source="classifier"),
    "tidal_modal_batch": modal_batch_query,
    "tidal_combined": combined_query,
    "tidal_space_batch": partial(space_batch_query, source="td"),
    "proba_space_batch": partial(space_batch_query, source="classifier"),
    "tidal_disagreement": disagreement_query,
}
