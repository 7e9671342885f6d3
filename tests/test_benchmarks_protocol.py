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

    class SpyLearner(protocol.ActiveLearner):
        def __init__(self, estimator, **kwargs):
            super().__init__(estimator, **kwargs)
            weights = {k: v.clone() for k, v in estimator.module_.state_dict().items()}
            seen.append((self.X_training.copy(), weights))

    monkeypatch.setattr(protocol, "ActiveLearner", SpyLearner)
    return seen


class TestSameStart:
    def test_strategies_share_initial_rows_and_weights_for_a_seed(self, digits, config, initial_fits):
        rows = {
            s: list(run_active_learning(s, 0, digits, config)) for s in ["random", "tidal_entropy", "bald"]
        }
        (X_a, w_a), (X_b, w_b), (X_c, w_c) = initial_fits
        np.testing.assert_array_equal(X_a, X_b)
        np.testing.assert_array_equal(X_a, X_c)
        for key in w_a:
            torch.testing.assert_close(w_a[key], w_b[key])
            torch.testing.assert_close(w_a[key], w_c[key])
        assert len({r[0]["accuracy"] for r in rows.values()}) == 1

    def test_seeds_differ(self, digits, config, initial_fits):
        for seed in (0, 1):
            list(run_active_learning("random", seed, digits, config))
        (X_0, w_0), (X_1, w_1) = initial_fits
        assert not np.array_equal(X_0, X_1)
        assert not torch.equal(w_0["backbone.layers.0.weight"], w_1["backbone.layers.0.weight"])


class TestLoop:
    def test_rows_per_cycle_and_labeled_counts(self, digits, config):
        config = ALConfig(dataset="digits", initial_size=20, query_size=15, cycles=2, epochs=1)
        rows = list(run_active_learning("entropy", 3, digits, config))
        assert [r["cycle"] for r in rows] == [0, 1, 2]
        assert [r["n_labeled"] for r in rows] == [20, 35, 50]
        assert rows[0]["query_seconds"] == 0 and rows[1]["query_seconds"] > 0
        assert all(0 <= r["accuracy"] <= 1 and r["fit_seconds"] > 0 for r in rows)

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
