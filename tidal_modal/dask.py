"""Pool scoring on Dask (``pip install "tidal-modal[dask]"``): what the strategies do with a
``dask.array.Array`` pool.

The strategies (:func:`~tidal_modal.tidal_entropy`, :func:`~tidal_modal.tidal_margin`,
:func:`~tidal_modal.disal`) call :func:`dask_top_k` when ``X_pool`` is a dask array; nothing
else in the library imports this module, so ``import tidal_modal`` never imports Dask.

Each block of rows is scored on a worker by the strategy's own measure and keeps only its
top ``n_instances`` as ``(key, score)`` pairs; merges of :data:`MERGE_EVERY` results run as
tasks too, and the client receives the final ``n_instances`` pairs. The estimator (without a
learner's labeled data) is pickled once per query and scattered with ``broadcast=True`` to the
workers of the current ``dask.distributed.Client`` (a worker that later lacks it fetches it from
another worker, not from the client), or is a single graph key under Dask's local scheduler;
it is never pickled into the tasks. The order is :func:`~tidal_modal.strategies.select_top_k`'s
(highest score first, ties by position, or by a random permutation drawn as the in-memory path
draws it), so the query equals the in-memory query of the same pool.
"""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

import cloudpickle
import dask
import numpy as np

from .strategies import check_finite_scores, select_top_k

__all__ = ["dask_top_k"]

# Block results merged per task: a tree of merges, so that no task (and not the client)
# receives more than MERGE_EVERY * n_instances pairs.
MERGE_EVERY = 8


class _BlockScorer:
    """What each worker holds once: the strategy's measure and the estimator it scores with.

    A worker's threads share this one copy, and a net is not safe to run from several threads
    at once (its forward hooks are registered per call), so blocks are scored one at a time
    per process; reading or generating the blocks still runs in parallel. Nor can a net be
    pickled in the middle of a forward pass (those hooks are local functions), and a worker may
    have to send its copy to another one at any time (Dask's active memory manager drops
    replicas that no queued task waits for): so the copy travels as the bytes it was made from,
    pickled once on the client, and each worker unpickles them once, on its first block.
    """

    def __init__(self, uncertainty, model):
        self._scoring, self._payload = (uncertainty, model), None
        self._lock = threading.Lock()

    def __getstate__(self):
        if self._payload is None:  # on the client, before the first send
            with self._lock:
                self._payload = cloudpickle.dumps(self._scoring)
        return {"payload": self._payload}

    def __setstate__(self, state):
        self._scoring, self._payload = None, state["payload"]
        self._lock = threading.Lock()

    def __call__(self, block):
        with self._lock:
            if self._scoring is None:
                self._scoring = cloudpickle.loads(self._payload)
            uncertainty, model = self._scoring
            scores = np.asarray(uncertainty(model, block))  # [n_rows]
        check_finite_scores(scores)
        return scores


def _best(keys, scores, n_instances):
    """The ``n_instances`` best ``(key, score)`` pairs, highest score first, ties by the smaller
    key: :func:`select_top_k` on the pairs in key order, which breaks ties by position."""
    if len(keys) <= 1:
        return keys, scores
    by_key = np.argsort(keys, kind="stable")
    top = by_key[select_top_k(scores[by_key], min(n_instances, len(keys)))]
    return keys[top], scores[top]


def _block_top_k(scorer, block, start, ranks, n_instances):
    """Score one block of rows ``start, start + 1, ...``; keep its best ``n_instances``, keyed by
    position or, for a random tie break, by the rows' ranks in the permutation."""
    scores = scorer(block)
    keys = np.arange(start, start + len(scores)) if ranks is None else ranks
    return _best(keys, scores, n_instances)


def _merge_top_k(parts, n_instances):
    keys, scores = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return _best(keys, scores, n_instances)


def _estimators_only(classifier):
    """What the measures need of ``classifier``: a modAL learner's estimator, a Committee's
    members' estimators, without the labeled data the learners hold (it is not sent)."""
    learners = getattr(classifier, "learner_list", None)
    if learners is not None:
        return SimpleNamespace(
            learner_list=[SimpleNamespace(estimator=learner.estimator) for learner in learners]
        )
    return getattr(classifier, "estimator", classifier)


def _current_client():
    """The ``dask.distributed.Client`` that computing a dask collection would use now, if any."""
    get = dask.base.get_scheduler()  # a Client's bound ``get``, as dask.compute resolves it
    client = getattr(get, "__self__", None)
    return client if hasattr(client, "scatter") else None


def _compute(result, client):
    """``result.compute()``; workers lost for good are an error that says so, never a short result."""
    if client is None:
        return result.compute()
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    try:
        return result.compute()
    except (KilledWorker, CancelledError) as error:  # a block's retries used up; the net's copies lost
        raise RuntimeError(
            f"Scoring the dask pool failed: workers died while scoring it ({type(error).__name__}: "
            f"{error}). No partial result is returned. Give the workers more memory (a block is "
            "scored whole), use smaller chunks, or raise distributed.scheduler.allowed-failures."
        ) from error


def dask_top_k(uncertainty, classifier, X_pool, n_instances, candidates=None, *, random_tie_break=False, rng):
    """The best ``n_instances`` rows of a dask-array pool by ``uncertainty(classifier, block)``.

    Parameters
    ----------
    uncertainty : callable
        The strategy's measure, ``uncertainty(classifier, X) -> ndarray of shape (len(X),)``.
    classifier : estimator, Pipeline, modAL learner or Committee
        As the strategies take it; already checked.
    X_pool : dask.array.Array
        The pool, with known chunk sizes; its rows are scored block by block where it lives.
    n_instances : int
        At most the number of candidates.
    candidates : ndarray of int or None, default=None
        Sorted rows of ``X_pool`` drawn by the strategy (``pool_subset``); only those are scored.
    random_tie_break : bool, default=False
        Break ties by a permutation of the candidates drawn from ``rng``, as
        :func:`select_top_k` draws it.
    rng : numpy.random.RandomState

    Returns
    -------
    top : ndarray of int, shape (n_instances,)
        Positions among the candidates (rows of ``X_pool`` without ``candidates``), best first.
    scores : ndarray of shape (n_instances,)
        Their scores.

    Examples
    --------
    The strategies call it for a dask-array pool (``tidal_entropy(net, X_dask, 3)``); directly:

    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALNetClassifier
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... ).fit(X, y)
    >>> import dask.array as da
    >>> from tidal_modal import classifier_td_entropy
    >>> from tidal_modal.dask import dask_top_k
    >>> pool = da.from_array(X, chunks=20)
    >>> top, scores = dask_top_k(classifier_td_entropy, net, pool, 3, rng=np.random.RandomState(0))
    >>> bool((top == np.argsort(-classifier_td_entropy(net, X), kind="stable")[:3]).all())
    True
    """
    if any(np.isnan(size) for size in X_pool.chunks[0]):
        raise ValueError(
            "X_pool has unknown chunk sizes (rows filtered by a mask?); call "
            "X_pool.compute_chunk_sizes() before querying it."
        )
    if candidates is not None:
        X_pool = X_pool[candidates]
    X_pool = X_pool.rechunk({axis: -1 for axis in range(1, X_pool.ndim)})  # a block = whole rows
    n = X_pool.shape[0]
    # drawn from rng exactly as select_top_k draws it, so that ties break as in memory
    order = rng.permutation(n) if random_tie_break else None
    ranks = None
    if order is not None:
        ranks = np.empty(n, dtype=np.int64)
        ranks[order] = np.arange(n)

    scorer = _BlockScorer(uncertainty, _estimators_only(classifier))
    client = _current_client()
    if client is not None:
        scorer = client.scatter(scorer, broadcast=True, hash=False)  # once per worker
    else:
        scorer = dask.delayed(scorer, name=f"tidal-modal-scorer-{uuid.uuid4().hex}")  # one key
    starts = np.cumsum((0, *X_pool.chunks[0]))
    parts = [
        dask.delayed(_block_top_k)(
            scorer, block, int(start), None if ranks is None else ranks[start:stop], n_instances
        )
        for block, start, stop in zip(X_pool.to_delayed().ravel(), starts[:-1], starts[1:], strict=True)
    ]
    while len(parts) > 1:
        parts = [
            dask.delayed(_merge_top_k)(parts[i : i + MERGE_EVERY], n_instances)
            for i in range(0, len(parts), MERGE_EVERY)
        ]
    keys, scores = _compute(parts[0], client)
    return (keys if order is None else order[keys]), scores
