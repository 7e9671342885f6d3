from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks import baselines, protocol
from benchmarks.datasets import load_dataset
from benchmarks.protocol import ALConfig, run_active_learning
from tidal_modal.strategies import MODAL_RETURNS_METRICS


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def config():
    return ALConfig(dataset="digits", initial_size=30, query_size=10, cycles=1, epochs=2)


@pytest.fixture
def initial_fits(monkeypatch):
    """Spy on the learners the protocol builds: the initial rows and the weights after the initial fit."""
    seen = []

    class SpyLearner(protocol.TiDALActiveLearner):
        def __init__(self, estimator, **kwargs):
            super().__init__(estimator, **kwargs)
            weights = {k: v.clone() for k, v in estimator.module_.state_dict().items()}
            seen.append((self.X_training.copy(), weights, estimator))

    monkeypatch.setattr(protocol, "TiDALActiveLearner", SpyLearner)
    return seen


class TestSameStart:
    def test_strategies_share_initial_rows_and_weights_for_a_seed(self, digits, config, initial_fits):
        rows = {
            s: list(run_active_learning(s, 0, digits, config)) for s in ["random", "tidal_entropy", "bald"]
        }
        (X_a, w_a, _), (X_b, w_b, _), (X_c, w_c, _) = initial_fits
        np.testing.assert_array_equal(X_a, X_b)
        np.testing.assert_array_equal(X_a, X_c)
        for key in w_a:
            torch.testing.assert_close(w_a[key], w_b[key])
            torch.testing.assert_close(w_a[key], w_c[key])
        assert len({r[0]["accuracy"] for r in rows.values()}) == 1

    def test_seeds_differ(self, digits, config, initial_fits):
        for seed in (0, 1):
            list(run_active_learning("random", seed, digits, config))
        (X_0, w_0, _), (X_1, w_1, _) = initial_fits
        assert not np.array_equal(X_0, X_1)
        assert not torch.equal(w_0["backbone.layers.0.weight"], w_1["backbone.layers.0.weight"])


class TestLoop:
    def test_rows_per_cycle_and_labeled_counts(self, digits, config, initial_fits):
        config = ALConfig(dataset="digits", initial_size=20, query_size=15, cycles=2, epochs=1)
        rows, accuracy = [], []
        for row in run_active_learning("entropy", 3, digits, config):
            net = initial_fits[0][2]  # the learner's net, as the row is yielded
            accuracy.append(np.mean(net.predict(digits.X_test) == digits.y_test))
            rows.append(row)
        assert [r["cycle"] for r in rows] == [0, 1, 2]
        assert [r["n_labeled"] for r in rows] == [20, 35, 50]
        assert [r["accuracy"] for r in rows] == pytest.approx(accuracy)  # on the test split

    def test_fit_and_query_seconds(self, digits, monkeypatch):
        """A clock that only the fits and the queries move: 3 s per initial fit, 5 s per teach,
        2 s per query; a row reports its cycle's fit and the query that picked its rows."""
        clock = [0.0]

        class TimedLearner(protocol.TiDALActiveLearner):
            def __init__(self, estimator, **kwargs):
                super().__init__(estimator, **kwargs)
                clock[0] += 3.0

            def teach(self, X, y, **kwargs):
                super().teach(X, y, **kwargs)
                clock[0] += 5.0

            def query(self, X_pool, **kwargs):
                clock[0] += 2.0
                return super().query(X_pool, **kwargs)

        monkeypatch.setattr(protocol, "TiDALActiveLearner", TimedLearner)
        monkeypatch.setattr(protocol, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
        config = ALConfig(dataset="digits", initial_size=20, query_size=15, cycles=2, epochs=1)
        rows = list(run_active_learning("random", 0, digits, config))
        assert [(r["fit_seconds"], r["query_seconds"]) for r in rows] == [(3.0, 0.0), (5.0, 2.0), (5.0, 2.0)]

    def test_queried_rows_leave_the_pool(self, digits, monkeypatch):
        pools = []

        def first_rows(classifier, X_pool, n_instances=1):
            pools.append(X_pool)
            indices = np.arange(n_instances)
            return (indices, np.zeros(n_instances)) if MODAL_RETURNS_METRICS else indices

        monkeypatch.setitem(baselines.STRATEGIES, "first_rows", first_rows)
        config = ALConfig(dataset="digits", initial_size=20, query_size=15, cycles=2, epochs=1)
        rows = list(run_active_learning("first_rows", 0, digits, config))
        assert [len(p) for p in pools] == [len(digits.y_pool) - 20, len(digits.y_pool) - 35]
        np.testing.assert_array_equal(pools[1], pools[0][15:])
        assert rows[-1]["n_labeled"] == 50
