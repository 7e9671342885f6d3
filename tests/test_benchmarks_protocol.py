import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from benchmarks import baselines, protocol
from benchmarks.datasets import load_dataset
from benchmarks.protocol import (
    RECIPE_FIELDS,
    ALConfig,
    class_covering_indices,
    initial_indices,
    run_active_learning,
)
from benchmarks.recipe import PAPER_RECIPE
from tidal_modal.strategies import MODAL_RETURNS_METRICS


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def first_rows_recording(pools):
    """A strategy that queries the first rows of each pool it is given, and keeps the pools."""

    def first_rows(classifier, X_pool, n_instances=1):
        pools.append(X_pool)
        indices = np.arange(n_instances)
        return (indices, np.zeros(n_instances)) if MODAL_RETURNS_METRICS else indices

    return first_rows


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
            # the classifier's weights under its own names, and the TD head's
            state = {
                **estimator.module_.state_dict(),
                **{f"td_head.{k}": v for k, v in estimator.td_head_.state_dict().items()},
            }
            weights = {k: v.clone() for k, v in state.items()}
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
        assert not torch.equal(w_0["layers.0.weight"], w_1["layers.0.weight"])
        assert not torch.equal(w_0["td_head.weight"], w_1["td_head.weight"])


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

        first_rows = first_rows_recording(pools)

        monkeypatch.setitem(baselines.STRATEGIES, "first_rows", first_rows)
        config = ALConfig(dataset="digits", initial_size=20, query_size=15, cycles=2, epochs=1)
        rows = list(run_active_learning("first_rows", 0, digits, config))
        assert [len(p) for p in pools] == [len(digits.y_pool) - 20, len(digits.y_pool) - 35]
        np.testing.assert_array_equal(pools[1], pools[0][15:])
        assert rows[-1]["n_labeled"] == 50


class FitRecorder(Callback):
    """Per fit: the optimiser object, whether it starts without state, and each epoch's LR."""

    fits = []

    def on_train_begin(self, net, **kwargs):
        self.fits.append({"optimizer": net.optimizer_, "fresh": not net.optimizer_.state, "lrs": []})

    def on_epoch_begin(self, net, **kwargs):
        self.fits[-1]["lrs"].append(net.optimizer_.param_groups[0]["lr"])


class TestPaperRecipe:
    @pytest.fixture
    def paper(self):
        recipe = {**PAPER_RECIPE, "lr_milestones": (0.6,)}
        return ALConfig(dataset="digits-ir100", initial_size=20, query_size=10, cycles=1, epochs=5, **recipe)

    def test_optimizer_rebuilt_and_lr_stepped_in_every_cycle(self, paper, monkeypatch):
        FitRecorder.fits = []
        monkeypatch.setattr(protocol, "EpochProgress", FitRecorder)
        data = load_dataset("digits-ir100")
        rows = list(run_active_learning("tidal_margin", 0, data, paper, epoch_progress=True))
        fits = FitRecorder.fits
        assert len(rows) == len(fits) == 2
        # a warm start keeps the weights, but every cycle has a new SGD optimiser with no momentum yet
        assert fits[0]["optimizer"] is not fits[1]["optimizer"] and all(f["fresh"] for f in fits)
        assert all(isinstance(f["optimizer"], torch.optim.SGD) for f in fits)
        assert fits[0]["optimizer"].defaults["momentum"] == 0.9
        assert fits[0]["optimizer"].defaults["weight_decay"] == 5e-4
        for fit in fits:  # x0.1 after 60% of the 5 epochs, from the full LR again in every cycle
            assert fit["lrs"] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01])

    def test_class_covering_start_is_shared_by_a_seeds_strategies(self, paper, initial_fits):
        data = load_dataset("digits-ir100")
        config = replace(paper, initial_size=10, cycles=0, epochs=1)  # the pool's 10 classes, one row each
        for strategy in ["random", "tidal_entropy", "bald"]:
            list(run_active_learning(strategy, 4, data, config))
        (X_a, _, _), (X_b, _, _), (X_c, _, _) = initial_fits
        np.testing.assert_array_equal(X_a, X_b)
        np.testing.assert_array_equal(X_a, X_c)
        rows = [np.flatnonzero((data.X_pool == x).all(axis=1))[0] for x in X_a]
        assert sorted(data.y_pool[rows]) == list(range(10))


class TestClassCoveringIndices:
    def test_covers_every_class_of_the_pool(self):
        y = np.repeat(np.arange(5), [50, 20, 5, 2, 1])
        for seed in range(10):
            rows = class_covering_indices(y, 8, seed)
            assert len(set(rows)) == 8 and set(y[rows]) == set(range(5))
        assert not np.array_equal(class_covering_indices(y, 8, 0), class_covering_indices(y, 8, 1))
        np.testing.assert_array_equal(class_covering_indices(y, 8, 3), class_covering_indices(y, 8, 3))

    def test_too_small_to_cover(self):
        with pytest.raises(ValueError, match="cannot cover the pool's 3 classes"):
            class_covering_indices(np.arange(3), 2, 0)

    def test_off_by_default_the_random_start_of_the_first_presets(self, digits, config, initial_fits):
        list(run_active_learning("random", 0, digits, config))
        expected = digits.X_pool[initial_indices(len(digits.y_pool), config.initial_size, 0)]
        np.testing.assert_array_equal(initial_fits[0][0], expected)


class TestPoolSubset:
    def test_each_query_scores_a_subset_and_the_first_is_shared(self, digits, monkeypatch):
        pools = []

        first_rows = first_rows_recording(pools)

        monkeypatch.setitem(baselines.STRATEGIES, "first_rows", first_rows)
        monkeypatch.setitem(baselines.STRATEGIES, "first_rows_too", first_rows)
        config = ALConfig(
            dataset="digits", initial_size=20, query_size=15, cycles=2, epochs=1, pool_subset=100
        )
        rows = list(run_active_learning("first_rows", 0, digits, config))
        list(run_active_learning("first_rows_too", 0, digits, replace(config, cycles=1)))
        assert [len(p) for p in pools] == [100, 100, 100]
        np.testing.assert_array_equal(pools[0], pools[2])  # the same candidates for either strategy
        assert not np.array_equal(pools[0], pools[1])
        # the queried rows left the pool: none of them is a candidate again
        assert not (pools[1][:, None, :] == pools[0][:15][None, :, :]).all(axis=2).any()
        assert rows[-1]["n_labeled"] == 50


class TestConfig:
    def test_default_recipe_fields_stay_out_of_the_dict(self):
        """config.json of results committed before the recipe fields must still match."""
        keys = set(ALConfig(dataset="digits").to_dict())
        assert keys.isdisjoint(RECIPE_FIELDS) and "mc_draws" in keys

    def test_recipe_fields_in_the_dict_where_set(self):
        config = ALConfig(dataset="mnist5k", **PAPER_RECIPE)
        values = config.to_dict()
        assert values["lr_milestones"] == [0.8] and values["optimizer"] == "sgd"
        assert values["cover_classes"] is True and values["pool_subset"] == 10_000 and "flip" not in values
        assert json.loads(json.dumps(values)) == values
        assert ALConfig(dataset="mnist5k", lr_milestones=[0.5]).lr_milestones == (0.5,)
