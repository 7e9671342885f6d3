"""TD-aware ranked batch queries (tidal_modal.batch)."""

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from sklearn.metrics import pairwise_distances
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, classifier_td_entropy, tidal_entropy
from tidal_modal.batch import ranked_batch, tidal_ranked_batch
from tidal_modal.strategies import MODAL_RETURNS_METRICS

from .models import MLP


def indices_of(result):
    return result[0] if MODAL_RETURNS_METRICS else result


class TestRankedBatch:
    def test_weight_one_is_top_k(self):
        scores = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
        points = np.zeros((5, 2))  # all at one place: diversity cannot decide
        assert ranked_batch(scores, points, None, 3, weight=1.0).tolist() == [1, 4, 3]

    def test_weight_zero_is_farthest_first(self):
        points = np.array([[0.0, 0], [1, 0], [10, 0], [5, 0], [0, 4]])
        scores = np.array([5.0, 4, 3, 2, 1])  # the first pick, with nothing labeled, is by score
        # from row 0: row 2 is farthest (10); then row 4 (4 from row 0, 7.2 from row 2 -> 4);
        # row 3 (5 from 0, 5 from 2) beats row 4 (4) -- so 3 before 4; then 4
        assert ranked_batch(scores, points, None, 4, weight=0.0).tolist() == [0, 2, 3, 4]

    def test_labeled_rows_repel(self):
        points = np.array([[0.0], [0.1], [3.0], [3.1]])
        scores = np.array([4.0, 3, 2, 1])
        labeled = np.array([[0.0]])
        # balanced: row 0 is the most uncertain but sits on a labeled row (diversity 0):
        # 0.5 * 1 + 0 = 0.5 < row 2's 0.5 * 0.5 + 0.5 * 3 / 3.1
        assert ranked_batch(scores, points, labeled, 1, weight=0.5).tolist() == [2]

    def test_the_batch_is_distinct(self):
        rng = np.random.RandomState(0)
        picked = ranked_batch(rng.rand(50), rng.randn(50, 3), rng.randn(5, 3), 50, weight=0.9)
        assert sorted(picked.tolist()) == list(range(50))


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    torch.manual_seed(0)
    net = TiDALNetClassifier(MLP, max_epochs=5, lr=0.05, verbose=0).fit(X[:100], y[:100])
    return net, X, y


def duplicated_pool(net, X):
    """The pool with its 5 most uncertain rows (by TD entropy) copied 10 times each, first."""
    pool = X[100:600]
    top = np.argsort(-classifier_td_entropy(net, pool))[:5]
    return np.concatenate([np.repeat(pool[top], 10, axis=0), pool])


class TestOnANet:
    def test_a_more_diverse_batch_than_top_k(self, fitted):
        net, X, _ = fitted
        pool = duplicated_pool(net, X)
        top_k = indices_of(tidal_entropy(net, pool, n_instances=10))
        batch = indices_of(tidal_ranked_batch(net, pool, n_instances=10))
        assert len(np.unique(pool[top_k], axis=0)) <= 2  # the copies of the most uncertain rows
        assert len(np.unique(pool[batch], axis=0)) == 10
        spread = [pairwise_distances(pool[idx]).mean() for idx in (top_k, batch)]
        assert spread[1] > 3 * spread[0]
        # and still uncertain rows: all in the more uncertain half, most in the top quarter
        entropy = classifier_td_entropy(net, pool)
        assert (entropy[batch] >= np.median(entropy)).all()
        assert np.median(entropy[batch]) >= np.quantile(entropy, 0.75)

    def test_weight_one_equals_tidal_entropy(self, fitted):
        net, X, _ = fitted
        pool = X[100:600]
        expected = indices_of(tidal_entropy(net, pool, n_instances=8))
        assert (
            indices_of(tidal_ranked_batch(net, pool, n_instances=8, weight=1.0)).tolist() == expected.tolist()
        )

    def test_penultimate_features_are_the_last_layers_input(self, fitted):
        net, X, _ = fitted
        pool = X[100:130]
        captured = []
        handle = net.module_.out.register_forward_hook(
            lambda m, a, o: captured.append(a[0].detach())
        )
        net.predict_proba(pool)
        handle.remove()
        features = torch.cat(captured).numpy()
        scores = classifier_td_entropy(net, pool)
        expected = ranked_batch(scores, features, None, 6, weight=0.3)
        assert (
            indices_of(tidal_ranked_batch(net, pool, n_instances=6, weight=0.3)).tolist() == expected.tolist()
        )

    def test_learner_pipeline_subset_and_seed(self, fitted, digits):
        X, y = digits
        torch.manual_seed(0)
        net = TiDALNetClassifier(MLP, max_epochs=3, lr=0.05, verbose=0)
        learner = TiDALActiveLearner(
            make_pipeline(StandardScaler(), net),
            query_strategy=tidal_ranked_batch,
            X_training=X[:60],
            y_training=y[:60],
        )
        runs = [learner.query(X[60:], n_instances=7, pool_subset=200, random_state=3)[0] for _ in range(2)]
        assert runs[0].tolist() == runs[1].tolist() and len(set(runs[0].tolist())) == 7
        other = learner.query(X[60:], n_instances=7, pool_subset=200, random_state=4)[0]
        assert other.tolist() != runs[0].tolist()
        learner.teach(X[60:][runs[0]], y[60:][runs[0]])
        assert len(learner.y_training) == 67

    @pytest.mark.parametrize("embedding", ["input", "penultimate"])
    def test_embeddings_and_a_tensor_pool(self, fitted, embedding):
        net, X, _ = fitted
        pool = X[100:300]
        as_array = indices_of(tidal_ranked_batch(net, pool, n_instances=5, embedding=embedding))
        as_tensor = indices_of(
            tidal_ranked_batch(net, torch.as_tensor(pool), n_instances=5, embedding=embedding)
        )
        assert as_array.tolist() == as_tensor.tolist()


class TestErrors:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"weight": 1.5}, r"weight must be a number in \[0, 1\]"),
            ({"weight": True}, r"weight must be a number"),
            ({"embedding": "raw"}, "embedding must be one of"),
        ],
    )
    def test_bad_options(self, fitted, kwargs, match):
        net, X, _ = fitted
        with pytest.raises(ValueError, match=match):
            tidal_ranked_batch(net, X[:50], n_instances=2, **kwargs)

    def test_an_estimator_without_layers(self):
        class TDOnly(BaseEstimator):
            def predict_td(self, X, return_proba=False):
                return np.full((len(X), 2), 0.5)

        with pytest.raises(
            ValueError, match="needs a fitted skorch net with an nn.Linear.*embedding='input'"
        ):
            tidal_ranked_batch(TDOnly(), np.eye(4), n_instances=2)
        assert len(indices_of(tidal_ranked_batch(TDOnly(), np.eye(4), n_instances=2, embedding="input"))) == 2


def test_a_dataframe_pool_with_reordered_columns_gets_the_same_batch(digits):
    """embedding='input' reads a DataFrame by the net's column names, as the scores do."""
    pd = pytest.importorskip("pandas")
    X, y = digits
    columns = [f"pixel{i}" for i in range(X.shape[1])]
    torch.manual_seed(0)
    net = TiDALNetClassifier(MLP, max_epochs=3, lr=0.05, verbose=0)
    net.fit(pd.DataFrame(X[:100], columns=columns), y[:100])
    pool = pd.DataFrame(X[100:300], columns=columns)
    expected = indices_of(tidal_ranked_batch(net, pool, n_instances=6, embedding="input"))
    reordered = pool[columns[::-1]]
    assert indices_of(tidal_ranked_batch(net, reordered, n_instances=6, embedding="input")).tolist() == (
        expected.tolist()
    )
