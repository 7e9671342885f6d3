import numpy as np
import pytest
import torch
from torch import nn

from benchmarks import baselines
from benchmarks.backbones import MLP
from benchmarks.baselines import (
    STRATEGIES,
    bald_sampling,
    bald_score,
    classifier_ranked_batch,
    coreset_sampling,
    k_center_greedy,
    mc_dropout_proba,
    penultimate_features,
    random_sampling,
    uncertainty_batch,
)
from tidal_modal import TiDALActiveLearner, TiDALNetClassifier
from tidal_modal.strategies import MODAL_RETURNS_METRICS


def indices_of(result):
    return result[0] if MODAL_RETURNS_METRICS else result


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(60, 4).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1)
    return X, y


def small_net(dropout):
    return TiDALNetClassifier(
        MLP, module__n_features=4, module__n_classes=3, module__hidden=16, module__dropout=dropout,
        max_epochs=2, batch_size=16, verbose=0,
    )  # fmt: skip


def fit_net(data, dropout):
    torch.manual_seed(0)
    return small_net(dropout).fit(*data)


@pytest.fixture(scope="module")
def net(data):
    return fit_net(data, dropout=0.5)


def eval_proba(net, X):
    """Softmax of the module in eval mode, computed by hand (not through skorch)."""
    module = net.module_.eval()
    with torch.no_grad():
        return torch.softmax(module(torch.as_tensor(X)), dim=1).numpy()


class NormedMLP(nn.Module):
    """Batch norm and a dropout layer that drops nothing: MC-dropout draws must be the eval pass."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.0))
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(self.layers(x))


class TestCoreset:
    def test_k_center_greedy_by_hand(self):
        pool = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [10.0, 0.0]])
        # distances to the labeled row (0, 0): 0, 5, 1, 10 -> pick row 3; then to (10, 0): row 1 is 5 away
        indices, distances = k_center_greedy(pool, np.array([[0.0, 0.0]]), 2)
        assert indices.tolist() == [3, 1]
        np.testing.assert_allclose(distances, [10.0, 5.0])

    def test_k_center_greedy_without_labeled_rows(self):
        indices, _ = k_center_greedy(np.array([[0.0], [1.0], [4.0]]), np.empty((0, 1)), 2)
        assert indices.tolist() == [0, 2]

    def test_k_center_greedy_with_more_centers_than_a_chunk(self):
        rng = np.random.RandomState(0)
        pool, labeled = rng.randn(30, 3), rng.randn(2100, 3)
        nearest = np.linalg.norm(pool[:, None] - labeled[None], axis=2).min(axis=1)
        indices, distances = k_center_greedy(pool, labeled, 1)
        assert indices[0] == nearest.argmax()
        np.testing.assert_allclose(distances[0], nearest.max())

    def test_penultimate_features_are_the_last_linear_input(self, net, data):
        X, _ = data
        module = net.module_.eval()
        with torch.no_grad():
            expected = module.layers[:-1](torch.as_tensor(X)).numpy()
        np.testing.assert_allclose(penultimate_features(net, X), expected, rtol=1e-5, atol=1e-6)

    def test_coreset_sampling_runs_k_center_on_features(self, net, data):
        X, _ = data
        pool, labeled = X[:40], X[40:]
        expected, _ = k_center_greedy(penultimate_features(net, pool), penultimate_features(net, labeled), 5)
        result = coreset_sampling(net, pool, 5, X_labeled=labeled)
        np.testing.assert_array_equal(indices_of(result), expected)


class TestBald:
    def test_bald_score_by_hand(self):
        disagree = [[0.9, 0.1], [0.1, 0.9]]  # H(mean) = ln 2; each draw's entropy is 0.3251
        agree = [[0.9, 0.1], [0.9, 0.1]]
        expected = np.log(2) + 0.9 * np.log(0.9) + 0.1 * np.log(0.1)
        np.testing.assert_allclose(bald_score(np.array([disagree, agree])), [expected, 0.0], atol=1e-12)

    def test_mc_dropout_draws_differ_and_sum_to_one(self, net, data):
        X, _ = data
        draws = mc_dropout_proba(net, X, n_draws=4)
        assert draws.shape == (60, 4, 3)
        np.testing.assert_allclose(draws.sum(axis=2), 1.0, rtol=1e-5)
        assert not np.allclose(draws[:, 0], draws[:, 1])

    def test_mc_dropout_leaves_the_module_in_eval_mode(self, net, data):
        X, _ = data
        expected = eval_proba(net, X)
        mc_dropout_proba(net, X, n_draws=2)
        assert not any(m.training for m in net.module_.modules())
        # a forward pass that sets no mode, as a user's own code or a hook may run, is deterministic
        with torch.no_grad():
            proba = torch.softmax(net.module_(torch.as_tensor(X)), dim=1).numpy()
        np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-7)

    def test_without_dropout_every_draw_is_the_prediction(self, data):
        X, _ = data
        net = fit_net(data, dropout=0.0)
        draws = mc_dropout_proba(net, X, n_draws=2)
        np.testing.assert_allclose(draws[:, 1], eval_proba(net, X), rtol=1e-5, atol=1e-7)

    def test_batch_norm_stays_in_eval_mode(self, data):
        """Only dropout is switched on: batch norm keeps its running statistics."""
        X, y = data
        torch.manual_seed(0)
        net = TiDALNetClassifier(NormedMLP, max_epochs=2, batch_size=16, verbose=0).fit(X, y)
        draws = mc_dropout_proba(net, X, n_draws=2)
        np.testing.assert_allclose(draws[:, 0], eval_proba(net, X), rtol=1e-5, atol=1e-7)

    def test_bald_sampling_picks_the_planted_row(self, net, data, monkeypatch):
        X, _ = data
        planted = np.tile([[0.5, 0.3, 0.2]], (60, 3, 1))
        planted[7] = np.eye(3)  # three confident draws that disagree: the most mutual information
        monkeypatch.setattr(baselines, "mc_dropout_proba", lambda net, X, n_draws: planted)
        assert indices_of(bald_sampling(net, X, 1)).tolist() == [7]


class TestRandom:
    def test_reproducible_distinct_indices(self, data):
        X, _ = data
        first = indices_of(random_sampling(None, X, 10, random_state=3))
        assert len(set(first.tolist())) == 10 and first.max() < len(X)
        np.testing.assert_array_equal(first, indices_of(random_sampling(None, X, 10, random_state=3)))


@pytest.mark.modal
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_queries_through_an_active_learner(name, data):
    X, y = data
    learner = TiDALActiveLearner(
        small_net(dropout=0.3), query_strategy=STRATEGIES[name], X_training=X[:20], y_training=y[:20]
    )
    indices, rows = learner.query(X[20:], n_instances=5)
    assert len(set(np.asarray(indices).tolist())) == 5
    np.testing.assert_array_equal(rows, X[20:][indices])


def test_a_caller_that_stops_early_leaves_no_dropout_on():
    """``_logit_batches`` restores eval mode in a ``finally``, also for a generator closed early."""
    from benchmarks.baselines import _logit_batches
    from tidal_modal import TiDALNetClassifier

    from .models import MLP

    X = np.random.RandomState(0).rand(100, 64).astype(np.float32)
    net = TiDALNetClassifier(MLP, module__dropout=0.5, max_epochs=1, verbose=0, batch_size=10)
    net.fit(X, np.arange(100) % 10)
    batches = _logit_batches(net, X, mc_dropout=True)
    next(batches)
    assert any(m.training for m in net.module_.modules())  # dropout on while scoring
    batches.close()
    assert not any(m.training for m in net.module_.modules())


@pytest.fixture(scope="module")
def learner(data):
    X, y = data
    torch.manual_seed(0)
    return TiDALActiveLearner(small_net(dropout=0.3), X_training=X[:20], y_training=y[:20])


class TestRankedBatchBaselines:
    @pytest.mark.modal
    def test_uncertainty_batch_is_modals_uncertainty_batch_sampling(self, learner, data):
        from modAL.batch import uncertainty_batch_sampling
        from modAL.uncertainty import classifier_uncertainty

        X, _ = data
        result = uncertainty_batch(learner, X[20:], 8)
        expected = uncertainty_batch_sampling(learner, X[20:], n_instances=8)
        np.testing.assert_array_equal(indices_of(result), np.asarray(indices_of(expected)))
        if MODAL_RETURNS_METRICS:  # the scores of the picked rows come back with them
            np.testing.assert_allclose(result[1], classifier_uncertainty(learner, X[20:])[result[0]])

    def test_uncertainty_batch_spreads_a_batch_where_top_k_does_not(self, learner, data):
        """The most uncertain row copied 10 times: top-k least confidence takes 5 copies, the ranked
        batch at most one."""
        from modAL.uncertainty import classifier_uncertainty

        X, _ = data
        rows = X[20:]
        worst = int(np.argmax(classifier_uncertainty(learner, rows)))
        copies = np.repeat(rows[worst : worst + 1], 10, axis=0)
        pool = np.concatenate([copies, np.delete(rows, worst, axis=0)])
        top = np.argsort(-classifier_uncertainty(learner, pool), kind="stable")[:5]
        assert (top < 10).all()
        assert (np.asarray(indices_of(uncertainty_batch(learner, pool, 5))) < 10).sum() <= 1

    def test_classifier_batch_is_tidal_ranked_batch_on_classifier_entropy(self, learner, data):
        from modAL.uncertainty import classifier_entropy

        from tidal_modal.batch import tidal_ranked_batch

        X, _ = data
        expected = tidal_ranked_batch(learner, X[20:], 6, measure=classifier_entropy)
        np.testing.assert_array_equal(
            indices_of(classifier_ranked_batch(learner, X[20:], 6)), indices_of(expected)
        )
