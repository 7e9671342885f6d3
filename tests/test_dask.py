"""Pool scoring on Dask (tidal_modal.dask): the in-memory query's answer, streamed, never short."""

import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, disal, tidal_entropy, tidal_margin
from tidal_modal.batch import tidal_ranked_batch
from tidal_modal.measures import classifier_td_entropy
from tidal_modal.strategies import MODAL_RETURNS_METRICS, select_top_k

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from tidal_modal.dask import _BlockScorer, dask_top_k  # noqa: E402 -- after the skip: it imports Dask

pytestmark = pytest.mark.modal

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = [tidal_entropy, tidal_margin, disal]
N_CLASSES = 4
MEMORY_LIMIT = 2**30  # per worker; a torch-importing worker starts at ~0.45 GiB
TIMEOUT = 120  # seconds, for any one query on the cluster


def indices_of(result):
    return result[0] if MODAL_RETURNS_METRICS else result


def within(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, failing the test instead of hanging past ``seconds``."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


# --- what the workers import: module-level, so that they unpickle it by reference -------------


class PlantedTD(BaseEstimator):
    """A stub whose predicted TD (and probabilities) are read off each row's columns
    ``first, ..., first + 3`` (no training needed)."""

    def __init__(self, first=0):
        self.first = first

    def predict_td(self, X, return_proba=False):
        td = np.asarray(X)[:, self.first : self.first + N_CLASSES]
        return (td, td) if return_proba else td


def mixed(t):
    """A TD that is ``t`` parts uniform, ``1 - t`` parts confident: entropy rises with ``t``."""
    return t / N_CLASSES + (1 - t) * np.array([0.97, 0.01, 0.01, 0.01])


# The streamed pool: 80 blocks of 16 MiB (1.25 GiB in all, more than a worker may hold), made on
# the workers; every row is the same confident TD except the planted ones, most uncertain first.
BLOCK_ROWS, WIDE, N_BLOCKS = 2048, 2048, 80
PLANTED = {5 * BLOCK_ROWS + 7: 1.0, 79 * BLOCK_ROWS + 2047: 0.9, 0: 0.8, 40 * BLOCK_ROWS + 1000: 0.7}


def planted_block(block_id=None):
    block = np.full((BLOCK_ROWS, WIDE), 0.5, dtype=np.float32)  # written: it occupies its memory
    block[:, :N_CLASSES] = mixed(0.0)
    start = block_id[0] * BLOCK_ROWS
    for row, t in PLANTED.items():
        if start <= row < start + BLOCK_ROWS:
            block[row - start, :N_CLASSES] = mixed(t)
    return block


def kill_worker_once(X, marker):
    """Identity, except that the first call in a Dask worker kills that worker's process."""
    try:
        distributed.get_worker()
    except ValueError:  # on the client
        return X
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return X
    os.kill(os.getpid(), signal.SIGKILL)


PAUSE = {}  # the events of the scoring paused below


def pause(module, args):
    PAUSE["started"].set()
    PAUSE["release"].wait(30)


def entropy_paused_mid_forward(net, block):
    """TD entropy, paused at the input of the net's last layer: the TD head's hooks are on then."""
    handle = net.module_[-1].register_forward_pre_hook(pause)
    try:
        return classifier_td_entropy(net, block)
    finally:
        handle.remove()


def reset_peak_rss():
    """Restart the process's resident-memory high-water mark (Linux: VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss():
    """Bytes of the process's resident-memory high-water mark since :func:`reset_peak_rss`.

    Not ``getrusage``'s ``ru_maxrss``: Linux keeps that mark across fork and exec, so a worker
    that the nanny started from a pytest process of 1.1 GiB (CI, late in the suite) reported
    1.1 GiB before it did anything, and both workers the same number.
    """
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool():
    rng = np.random.RandomState(0)
    X = (rng.randn(2000, 16) * 3 + 5).astype(np.float32)  # StandardScaler has work to do
    y = (X[:, 0] + X[:, 1] > 10).astype(np.int64)
    return X, y


def make_net():
    module = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    return TiDALNetClassifier(module, max_epochs=3, lr=0.05, train_split=None, verbose=0)


@pytest.fixture(scope="module")
def learner(pool):
    X, y = pool
    return TiDALActiveLearner(make_net(), query_strategy=tidal_margin, X_training=X[:200], y_training=y[:200])


@pytest.fixture(scope="module")
def scaled(pool):
    X, y = pool
    return make_pipeline(StandardScaler(), make_net()).fit(X[:200], y[:200])  # a scaler fitted in memory


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=MEMORY_LIMIT,
        silence_logs=logging.CRITICAL,  # a killed worker is expected below
    )
    client = distributed.Client(cluster, timeout="60s")
    client.wait_for_workers(2, timeout=60)
    yield client
    client.close(timeout=30)
    cluster.close(timeout=30)


@pytest.fixture
def local_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# --- tests ------------------------------------------------------------------------------------


class TestEqualsInMemory:
    """On two worker processes, the query is the in-memory query of the same pool."""

    KWARGS = [{}, {"pool_subset": 700, "random_state": 3}, {"random_tie_break": True, "random_state": 1}]

    @pytest.mark.parametrize("strategy", STRATEGIES)
    @pytest.mark.parametrize("kwargs", KWARGS)
    def test_strategies(self, client, learner, pool, strategy, kwargs):
        X, _ = pool
        net = learner.estimator
        X_dask = da.from_array(X, chunks=(333, 8))  # uneven blocks, split columns
        expected = indices_of(strategy(net, X, 9, **kwargs))
        np.testing.assert_array_equal(
            indices_of(within(TIMEOUT, strategy, net, X_dask, 9, **kwargs)), expected
        )

    def test_scores_too_and_the_net_is_scattered_once(self, client, learner, pool, monkeypatch):
        X, _ = pool
        scores = classifier_td_entropy(learner.estimator, X)
        scatter = Mock(wraps=client.scatter)
        monkeypatch.setattr(client, "scatter", scatter)
        top, top_scores = within(
            TIMEOUT,
            dask_top_k,
            classifier_td_entropy,
            learner,
            da.from_array(X, chunks=250),
            12,
            rng=np.random.RandomState(0),
        )
        np.testing.assert_array_equal(top, select_top_k(scores, 12))
        np.testing.assert_array_equal(top_scores, scores[top])
        (scorer,), options = scatter.call_args
        assert scatter.call_count == 1 and options["broadcast"]
        assert scorer._scoring[1] is learner.estimator  # the net, not the learner and its labeled data

    @pytest.mark.parametrize("strategy", STRATEGIES)
    def test_pipeline_with_a_blockwise_transform(self, client, scaled, pool, strategy):
        X, _ = pool
        kwargs = {"pool_subset": 1500, "random_state": 0}
        expected = indices_of(strategy(scaled, X, 6, **kwargs))
        got = indices_of(within(TIMEOUT, strategy, scaled, da.from_array(X, chunks=400), 6, **kwargs))
        np.testing.assert_array_equal(got, expected)

    def test_through_the_learner_gives_the_rows_in_memory(self, client, learner, pool):
        X, _ = pool
        kwargs = {"n_instances": 5, "pool_subset": 1000, "random_state": 7}
        idx, rows = within(TIMEOUT, learner.query, da.from_array(X, chunks=300), **kwargs)
        np.testing.assert_array_equal(idx, learner.query(X, **kwargs)[0])
        assert isinstance(rows, np.ndarray)
        np.testing.assert_array_equal(rows, X[idx])

    def test_same_random_state_same_query(self, client, learner, pool):
        X, _ = pool
        X_dask = da.from_array(X, chunks=500)
        runs = [
            tuple(
                indices_of(
                    within(TIMEOUT, tidal_entropy, learner, X_dask, 5, pool_subset=300, random_state=s)
                )
            )
            for s in (4, 4, 5)
        ]
        assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_on_dasks_local_threads_they_take_turns_with_the_net(learner, pool, strategy):
    """Dask's default scheduler for arrays without a Client: threads of this process, one net."""
    X, _ = pool
    kwargs = {"pool_subset": 1800, "random_state": 0}
    with dask.config.set(scheduler="threads", num_workers=4):
        got = indices_of(within(TIMEOUT, strategy, learner, da.from_array(X, chunks=50), 9, **kwargs))
    np.testing.assert_array_equal(got, indices_of(strategy(learner, X, 9, **kwargs)))


class TestTies:
    """Ties break as in memory: by position, or by the permutation a ``random_state`` draws."""

    KWARGS = [
        {},
        {"random_tie_break": True, "random_state": 0},
        {"random_tie_break": True, "random_state": 1},
        {"pool_subset": 60, "random_state": 2, "random_tie_break": True},
    ]

    @pytest.mark.parametrize("kwargs", KWARGS)
    def test_tied_rows_across_blocks(self, local_scheduler, kwargs):
        X = np.tile(mixed(0.5), (100, 1))  # every row ties ...
        X[[13, 77]] = mixed(0.9)  # ... but two
        expected = indices_of(tidal_entropy(PlantedTD(), X, 7, **kwargs))
        got = indices_of(tidal_entropy(PlantedTD(), da.from_array(X, chunks=9), 7, **kwargs))
        np.testing.assert_array_equal(got, expected)
        if not kwargs:
            assert list(got) == [13, 77, 0, 1, 2, 3, 4]


def test_a_committee_is_averaged_as_in_memory(local_scheduler):
    from modAL.models import Committee

    X = np.random.RandomState(0).dirichlet(np.ones(N_CLASSES), size=(200, 2)).reshape(200, -1)
    committee = Committee(learner_list=[TiDALActiveLearner(PlantedTD(first)) for first in (0, N_CLASSES)])
    expected = indices_of(tidal_margin(committee, X, 5))
    assert list(expected) != list(indices_of(tidal_margin(PlantedTD(), X, 5)))  # both members count
    got = indices_of(tidal_margin(committee, da.from_array(X, chunks=30), 5))
    np.testing.assert_array_equal(got, expected)


def test_pool_larger_than_a_workers_memory_streams(client):
    X = da.map_blocks(
        planted_block,
        chunks=((BLOCK_ROWS,) * N_BLOCKS, (WIDE,)),
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
    )
    assert X.nbytes > 1.2 * MEMORY_LIMIT
    pids = client.run(os.getpid)
    client.run(reset_peak_rss)
    got = indices_of(within(TIMEOUT, tidal_entropy, PlantedTD(), X, 6))
    by_entropy = sorted(PLANTED, key=PLANTED.get, reverse=True)
    assert list(got) == by_entropy + [1, 2]  # then the first of the tied background rows
    assert client.run(os.getpid) == pids, "a worker was restarted"
    assert max(client.run(peak_rss).values()) < MEMORY_LIMIT


class TestWorkerKilledMidQuery:
    """A worker that dies while scoring: Dask retries its blocks, or the query fails saying so."""

    def test_retried_gives_the_full_result(self, client, learner, pool, tmp_path):
        X, _ = pool
        killing = Pipeline(
            [
                ("kill", FunctionTransformer(kill_worker_once, kw_args={"marker": str(tmp_path / "killed")})),
                ("net", learner.estimator),
            ]
        )
        pids = client.run(os.getpid)
        got = within(TIMEOUT, tidal_entropy, killing, da.from_array(X, chunks=100), 8)
        client.wait_for_workers(2, timeout=60)
        assert (tmp_path / "killed").exists() and client.run(os.getpid) != pids  # a worker did die
        np.testing.assert_array_equal(indices_of(got), indices_of(tidal_entropy(learner.estimator, X, 8)))

    def test_without_retries_it_fails_clearly(self, client, learner, pool, tmp_path):
        X, _ = pool
        killing = make_pipeline(
            FunctionTransformer(kill_worker_once, kw_args={"marker": str(tmp_path / "k")}), learner.estimator
        )

        def allowed_failures(n, dask_scheduler):
            dask_scheduler.allowed_failures, before = n, dask_scheduler.allowed_failures
            return before

        before = client.run_on_scheduler(allowed_failures, 0)
        try:
            with pytest.raises(RuntimeError, match="workers died while scoring it.*No partial result"):
                within(TIMEOUT, tidal_margin, killing, da.from_array(X, chunks=100), 8)
        finally:
            client.run_on_scheduler(allowed_failures, before)
            client.wait_for_workers(2, timeout=60)


def test_a_worker_can_send_its_copy_while_it_scores_with_it(learner, pool):
    """Dask's active memory manager drops replicas that no queued task waits for, so a worker
    may be asked for its copy of the net in the middle of a block. The copy is sent without
    waiting for the block, and the block's scores are not disturbed."""
    X, _ = pool
    PAUSE.update(started=threading.Event(), release=threading.Event())
    copy = pickle.loads(pickle.dumps(_BlockScorer(entropy_paused_mid_forward, learner.estimator)))
    expected = classifier_td_entropy(learner.estimator, X[:100])
    with ThreadPoolExecutor(2) as threads:
        scoring = threads.submit(copy, X[:100])
        assert PAUSE["started"].wait(30)
        try:
            sent = threads.submit(pickle.dumps, copy).result(timeout=10)  # not waiting for the block
        finally:
            PAUSE["release"].set()
        np.testing.assert_array_equal(scoring.result(30), expected)
    np.testing.assert_array_equal(pickle.loads(sent)(X[:100]), expected)


class TestErrors:
    def test_non_finite_scores(self, local_scheduler):
        X = np.tile(mixed(0.5), (50, 1))
        X[31, 0] = np.nan
        with pytest.raises(ValueError, match="NaN or inf"):
            tidal_entropy(PlantedTD(), da.from_array(X, chunks=10), 2)

    def test_unknown_chunk_sizes(self, local_scheduler):
        X = da.from_array(np.tile(mixed(0.5), (50, 1)), chunks=10)
        with pytest.raises(ValueError, match="compute_chunk_sizes"):
            tidal_entropy(PlantedTD(), X[X[:, 0] > 0], 2)

    def test_a_strategy_that_needs_every_score_refuses(self, local_scheduler, learner, pool):
        X, _ = pool
        with pytest.raises(TypeError, match=re.escape("pass X_pool.compute()")):
            tidal_ranked_batch(learner, da.from_array(X, chunks=500), 3)


def test_no_dask_import_until_a_dask_pool_then_dasks_default_scheduler():
    """``import tidal_modal`` imports no Dask; without a Client, Dask's default runs the query."""
    code = textwrap.dedent(
        """
        import sys, tidal_modal
        print(sorted(m for m in sys.modules if m.split(".")[0] == "dask"))
        import numpy as np, dask.array as da, dask.base

        class PlantedTD:  # the TD is the row
            def predict_td(self, X, return_proba=False):
                return np.asarray(X)

        X = np.full((60, 2), 0.5)
        X[[41, 7]] = [0.6, 0.4], [0.7, 0.3]
        result = tidal_modal.tidal_entropy(PlantedTD(), da.from_array(X, chunks=8), 3)
        print(dask.base.get_scheduler(), (result[0] if isinstance(result, tuple) else result).tolist())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("\n")[:2] == ["[]", "None [0, 1, 2]"], run.stdout
