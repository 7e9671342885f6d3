"""TD-aware ranked batch queries: uncertain *and* diverse batches (Cardoso et al., 2017).

A top-k query by TD entropy picks the k most uncertain rows, which in a large batch are often
near-duplicates of each other. Ranked batch-mode sampling (modAL's
``uncertainty_batch_sampling``) builds the batch greedily instead, trading each row's
uncertainty against its distance to the labeled rows and to the rows already picked. modAL's
version takes no custom measure, weighs the two terms by the pool's size (on a large pool
almost only distance counts) and measures distance in the raw input space.
:func:`tidal_ranked_batch` takes any measure (TD entropy by default), puts both terms on the
same ``[0, 1]`` scale so that ``weight`` means what it says, and measures distance in the
network's own feature space (the input of its last linear layer), captured during the scoring
pass itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.base import BaseEstimator
from sklearn.metrics import pairwise_distances_argmin_min

from .measures import TRANSFORM_CHUNK_ROWS, _td_members, classifier_td_entropy
from .modules import last_linear_name
from .pool import is_sliceable, iter_slices
from .strategies import _query
from .trajectory import classifier_module
from .validation import InputData

__all__ = ["ranked_batch", "tidal_ranked_batch"]

EMBEDDINGS = ("penultimate", "input")


def ranked_batch(
    scores: np.ndarray, candidates: np.ndarray, labeled: np.ndarray | None, n_instances: int, weight: float
) -> np.ndarray:
    """Greedy ranked batch: positions of ``n_instances`` rows, in the order they were picked.

    Each step picks the row that maximises ``weight * u + (1 - weight) * s``: ``u`` is the row's
    score as a rank in ``(0, 1]`` (so a measure's range, e.g. TD entropy's narrow one, does not
    matter), ``s`` its Euclidean distance to the nearest labeled or already picked row, divided
    by the largest such distance among the rows not picked yet. Ties go to the first row.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        Higher = more uncertain.
    candidates : ndarray of shape (n, d)
        The rows' embeddings.
    labeled : ndarray of shape (m, d) or None
        The labeled rows' embeddings (``None`` or empty: distance to the picked rows only).
    n_instances : int
    weight : float in [0, 1]
        1: top-k by score; 0: farthest-first traversal (core-set's greedy k-center).

    Returns
    -------
    ndarray of int, shape (n_instances,)

    Examples
    --------
    Three rows near each other score highest; the batch takes one of them, then the far row:

    >>> import numpy as np
    >>> from tidal_modal.batch import ranked_batch
    >>> rows = np.array([[0.0], [0.1], [0.2], [5.0]])
    >>> ranked_batch(np.array([0.9, 0.8, 0.7, 0.1]), rows, None, n_instances=2, weight=0.5)
    array([0, 3])
    """
    n = len(scores)
    uncertainty = rankdata(scores) / n
    candidates = np.asarray(candidates, dtype=np.float64).reshape(n, -1)
    if labeled is not None and len(labeled):
        labeled = np.asarray(labeled, dtype=np.float64).reshape(len(labeled), -1)
        _, distance = pairwise_distances_argmin_min(candidates, labeled)
    else:
        distance = np.full(n, np.inf)
    picked = np.zeros(n, dtype=bool)
    order = np.empty(n_instances, dtype=np.intp)
    for step in range(n_instances):
        open_distance = np.where(picked, -np.inf, distance)
        scale = open_distance.max()
        if np.isinf(scale):  # nothing labeled or picked yet: every row is equally far
            diversity = np.ones(n)
        else:
            diversity = distance / scale if scale > 0 else np.zeros(n)
        combined = np.where(picked, -np.inf, weight * uncertainty + (1 - weight) * diversity)
        row = int(np.argmax(combined))
        order[step], picked[row] = row, True
        distance = np.minimum(distance, np.linalg.norm(candidates - candidates[row], axis=1))
    return order


class _Embedding:
    """The rows as the first estimator behind ``classifier`` sees them: its last linear layer's
    input (captured while the measure runs), or the (transformed) input itself."""

    def __init__(self, classifier, embedding):
        self.transform, self.estimator = _td_members(classifier)[0]
        self.embedding = embedding
        self.layer = None
        if embedding == "penultimate":
            module = getattr(self.estimator, "module_", None)
            module = classifier_module(module) if isinstance(module, torch.nn.Module) else None
            name = last_linear_name(module) if module is not None else None
            if name is None:
                raise ValueError(
                    f"embedding='penultimate' needs a fitted skorch net with an nn.Linear layer; "
                    f"{type(self.estimator).__name__} has none. Use embedding='input'."
                )
            self.layer = module.get_submodule(name)

    def _capture(self, run):
        """Run ``run()`` and return the layer's inputs of every batch, ``[n, d]`` on the CPU."""
        captured = []
        handle = self.layer.register_forward_hook(
            lambda module, args, out: captured.append(args[0].detach().flatten(1).float().cpu())
        )
        try:
            result = run()
        finally:
            handle.remove()
        return result, (torch.cat(captured).numpy() if captured else np.empty((0, 0), np.float32))

    def _input(self, X):
        X = X.to_numpy() if hasattr(X, "to_numpy") else X  # a DataFrame
        if not is_sliceable(X):
            raise ValueError("embedding='input' needs a pool of array rows; use embedding='penultimate'.")
        parts = []
        for chunk in iter_slices(X, TRANSFORM_CHUNK_ROWS):
            chunk = chunk if self.transform is None else self.transform.transform(chunk)
            chunk = chunk.cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
            parts.append(chunk.reshape(len(chunk), -1))
        return np.concatenate(parts)

    def score(self, measure, classifier, X):
        """``measure(classifier, X)``, and the embeddings of the rows of ``X`` (one pass)."""
        if self.layer is None:
            return measure(classifier, X), self._input(X)
        scores, rows = self._capture(lambda: measure(classifier, X))
        if len(rows) != len(scores):
            raise RuntimeError(
                f"The last linear layer ran on {len(rows)} rows while {len(scores)} were scored "
                "(a layer that runs more than once per batch?); use embedding='input'."
            )
        return scores, rows

    def labeled(self, X):
        """Embeddings of the labeled rows ``X`` (``None`` if there are none)."""
        if X is None or not len(X):
            return None
        if self.layer is None:
            return self._input(X)
        net = self.estimator

        def forward():
            X_net = X if self.transform is None else self.transform.transform(X)
            for _ in net.forward_iter(X_net, training=False):
                pass

        return self._capture(forward)[1]


def _labeled_rows(classifier):
    """The labeled rows of a modAL learner (a Committee's first member), else ``None``."""
    learners = getattr(classifier, "learner_list", None)
    holder = learners[0] if learners else classifier
    return getattr(holder, "X_training", None)


def tidal_ranked_batch(
    classifier: BaseEstimator,
    X_pool: InputData,
    n_instances: int = 1,
    *,
    measure: Callable = classifier_td_entropy,
    weight: float = 0.5,
    embedding: str = "penultimate",
    pool_subset: int | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """TD-aware ranked batch query: rows that are uncertain by the TD measure and far from the
    labeled rows and from each other.

    See :func:`ranked_batch` for the greedy rule. The candidates' embeddings are captured during
    the measure's own forward pass; the labeled rows (a modAL learner's ``X_training``) take one
    more pass. Memory: the candidates' embeddings, ``n_candidates x d`` floats; use
    ``pool_subset`` on large pools (the paper scores 10,000 candidates per cycle).

    Parameters
    ----------
    classifier : modAL learner or Committee, TiDALNetClassifier or Pipeline ending in one
        As in :func:`~tidal_modal.tidal_entropy`. A Committee's first member gives the
        embeddings and the labeled rows.
    X_pool : array-like, tensor or Dataset
        The unlabeled pool.
    n_instances : int, default=1
        Batch size.
    measure : callable, default=classifier_td_entropy
        ``measure(classifier, X) -> scores``, higher = more uncertain (e.g.
        :func:`~tidal_modal.classifier_td_margin_uncertainty`, or a modAL measure).
    weight : float in [0, 1], default=0.5
        Weight of the uncertainty rank against diversity; 1 is top-k by ``measure``.
    embedding : {"penultimate", "input"}, default="penultimate"
        Where distances are measured: the input of the net's last ``nn.Linear``, or the rows
        as the net receives them (after a Pipeline's transform).
    pool_subset : int or None, default=None
        Score only a random subset of this many candidates.
    random_state : int, RandomState instance or None, default=None
        Seeds the subset; the same seed gives the same query.

    Returns
    -------
    indices : ndarray of int, shape (n_instances,)
        Rows of ``X_pool`` in the order they were picked; ``(indices, scores)`` with
        modAL >= 0.4.2 (the measure's scores of those rows).

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALActiveLearner, TiDALNetClassifier
    >>> from tidal_modal.batch import tidal_ranked_batch
    >>> X = np.random.RandomState(0).randn(100, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... )
    >>> learner = TiDALActiveLearner(
    ...     net, query_strategy=tidal_ranked_batch, X_training=X[:20], y_training=y[:20]
    ... )
    >>> idx, rows = learner.query(X[20:], n_instances=5, random_state=0)
    >>> len(set(idx.tolist()))
    5
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"weight must be a number in [0, 1]; got {weight!r}.")
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}; got {embedding!r}.")
    rows = _Embedding(classifier, embedding)  # refuses an estimator without predict_td first
    captured = {}

    def scored(clf, X):
        scores, captured["candidates"] = rows.score(measure, clf, X)
        return scores

    def select(scores, n, rng):
        labeled = rows.labeled(_labeled_rows(classifier))
        return ranked_batch(scores, captured["candidates"], labeled, n, weight)

    return _query(scored, classifier, X_pool, n_instances, False, pool_subset, random_state, select=select)
