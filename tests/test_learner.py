"""Nothing is lost when a query or a teach fails (tidal_modal.learner)."""

import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner, Committee
from sklearn.datasets import make_blobs
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy, tidal_margin
from tidal_modal.strategies import MODAL_RETURNS_METRICS

from .models import MLP

pytestmark = pytest.mark.modal


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture
def data():
    X, y = make_blobs(n_samples=90, n_features=4, centers=3, random_state=1)
    return X.astype(np.float32), y


def make_learner(data, cls=TiDALActiveLearner, **net_kwargs):
    """A learner trained on classes 0 and 1 only, classes not declared: class 2 is a new class."""
    X, y = data
    module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    net = TiDALNetClassifier(module, max_epochs=2, lr=0.1, verbose=0, **net_kwargs)
    first = np.flatnonzero(y < 2)[:20]
    return cls(net, query_strategy=tidal_margin, X_training=X[first], y_training=y[first])


def state(learner):
    """The training data, the model's parameters and its history length, as copies."""
    params = {k: v.clone() for k, v in learner.estimator.module_.state_dict().items()}
    return learner.X_training.copy(), learner.y_training.copy(), params, len(learner.estimator.history)


def assert_same_state(learner, before):
    X_training, y_training, params, n_epochs = state(learner)
    np.testing.assert_array_equal(X_training, before[0])
    np.testing.assert_array_equal(y_training, before[1])
    assert all(torch.equal(params[k], before[2][k]) for k in params)
    assert n_epochs == before[3]


class FailWhenArmed(Callback):
    """Raises in the first training batch once armed: an error in the middle of training."""

    def __init__(self, armed=False):
        self.armed = armed

    def on_batch_end(self, net, **kwargs):
        if self.armed:
            raise RuntimeError("out of memory")


class TestTeach:
    @pytest.mark.parametrize("warm_start", [False, True])
    def test_failed_teach_loses_nothing(self, data, warm_start):
        X, y = data
        learner = make_learner(data, warm_start=warm_start)
        before = state(learner)
        new = np.flatnonzero(y == 2)[:5]
        with pytest.raises(ValueError, match=r"class\(es\) \[2\]|outputs 2 logits"):
            learner.teach(X[new], y[new])
        assert_same_state(learner, before)
        # once the labels are fixed, teaching again adds the rows once
        learner.teach(X[new], np.zeros(5, dtype=y.dtype))
        assert len(learner.X_training) == len(before[0]) + 5

    @pytest.mark.parametrize("fault", ["label-outside-the-classes", "error-during-training"])
    def test_failed_teach_restores_the_whole_pipeline(self, data, fault):
        """A Pipeline refits its scaler on the new rows before its net fails."""
        X, y = data
        scaler, failure = StandardScaler(), FailWhenArmed()
        module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        net = TiDALNetClassifier(module, classes=[0, 1], max_epochs=2, lr=0.1, verbose=0, callbacks=[failure])
        known = np.flatnonzero(y < 2)
        learner = TiDALActiveLearner(
            make_pipeline(scaler, net), X_training=X[known[:20]], y_training=y[known[:20]]
        )
        pipeline, steps = learner.estimator, list(learner.estimator.steps)
        mean, scale = scaler.mean_.copy(), scaler.scale_.copy()
        weights = {k: v.clone() for k, v in net.module_.state_dict().items()}
        if fault == "label-outside-the-classes":
            rows = np.flatnonzero(y == 2)[:5]
        else:
            rows, failure.armed = known[20:25], True
        with pytest.raises((ValueError, RuntimeError), match=r"class\(es\) \[2\]|out of memory"):
            learner.teach(X[rows], y[rows])
        assert learner.estimator is pipeline and pipeline.steps == steps and steps[0][1] is scaler
        np.testing.assert_array_equal(scaler.mean_, mean)
        np.testing.assert_array_equal(scaler.scale_, scale)
        assert scaler.n_samples_seen_ == 20
        assert all(torch.equal(v, weights[k]) for k, v in net.module_.state_dict().items())
        assert len(learner.X_training) == 20

    def test_plain_modal_learner_keeps_the_rows_of_a_failed_teach(self, data):
        """Why TiDALActiveLearner exists: modAL appends the rows before fitting."""
        X, y = data
        learner = make_learner(data, cls=ActiveLearner)
        n_before = len(learner.X_training)
        new = np.flatnonzero(y == 2)[:5]
        with pytest.raises(ValueError):
            learner.teach(X[new], y[new])
        assert len(learner.X_training) == n_before + 5

    def test_successful_teach(self, data):
        X, y = data
        learner = make_learner(data, warm_start=True)
        n_epochs = len(learner.estimator.history)
        rows = np.flatnonzero(y < 2)[20:25]
        learner.teach(X[rows], y[rows])
        assert len(learner.X_training) == 25
        assert len(learner.estimator.history) == 2 * n_epochs  # warm start: the history goes on


class TestClassesFromTheModule:
    """modAL's habits without ``classes=``: the first labeled sets miss classes."""

    @staticmethod
    def start(y, classes, n=12, offset=0):
        return np.concatenate([np.flatnonzero(y == c)[offset : offset + n // len(classes)] for c in classes])

    def test_committee_on_starts_that_miss_classes(self, digits):
        X, y = digits
        members = [
            TiDALActiveLearner(
                TiDALNetClassifier(MLP, max_epochs=3, lr=0.05, verbose=0),
                X_training=X[self.start(y, labels)],
                y_training=y[self.start(y, labels)],
            )
            for labels in ([0, 1, 2], [3, 4])  # each member misses most classes, and the other's
        ]
        committee = Committee(members, query_strategy=tidal_entropy)
        for member in members:
            assert np.asarray(member.estimator.classes_).tolist() == list(range(10))
        idx, _ = committee.query(X[500:], n_instances=5)
        committee.teach(X[500:][idx], y[500:][idx])
        assert committee.predict_proba(X[:20]).shape == (20, 10)
        assert all(
            len(member.y_training) == len(self.start(y, labels)) + 5
            for member, labels in zip(members, ([0, 1, 2], [3, 4]), strict=True)
        )

    def test_teach_only_new_without_warm_start(self, digits):
        X, y = digits
        first = self.start(y, [0, 1, 2, 3, 4])
        net = TiDALNetClassifier(MLP, max_epochs=20, lr=0.05, verbose=0)
        learner = TiDALActiveLearner(net, X_training=X[first], y_training=y[first])
        sevens = self.start(y, [7], n=6, offset=20)
        learner.teach(X[sevens], y[sevens], only_new=True)  # a fresh fit on a single class
        assert np.asarray(net.classes_).tolist() == list(range(10))
        assert net.training_dynamics_.shape == (6, 10)
        assert (net.predict(X[y == 7][:30]) == 7).all()  # what the refit on sevens alone learned
        assert len(learner.y_training) == len(first) + 6


class TestQuery:
    @pytest.mark.parametrize(
        ("pool", "kwargs"),
        [
            (lambda X: X, {"n_instances": 0}),
            (lambda X: X, {"n_instances": 1000}),
            (lambda X: np.where(np.arange(len(X))[:, None] == 3, np.nan, X), {"n_instances": 2}),
            (lambda X: X[:, :3], {"n_instances": 2}),
        ],
        ids=["zero", "too-many", "nan", "features"],
    )
    def test_failed_query_loses_nothing(self, data, pool, kwargs):
        X_pool = pool(data[0])
        pool_before = X_pool.copy()
        learner = make_learner(data)
        before = state(learner)
        with pytest.raises((ValueError, TypeError)):
            learner.query(X_pool, **kwargs)
        assert_same_state(learner, before)
        np.testing.assert_array_equal(X_pool, pool_before)

    @pytest.mark.parametrize(("cls", "expected_calls"), [(TiDALActiveLearner, 1), (ActiveLearner, None)])
    def test_a_failing_strategy_runs_once(self, data, cls, expected_calls):
        calls = []

        def failing(learner, X_pool, **kwargs):
            calls.append(kwargs)
            raise RuntimeError("out of memory")

        learner = make_learner(data, cls=cls)
        learner.query_strategy = failing
        with pytest.raises(RuntimeError, match="out of memory"):
            learner.query(data[0], n_instances=3)
        # plain modAL 0.4.2 calls it again after the first error
        assert len(calls) == (expected_calls or (2 if MODAL_RETURNS_METRICS else 1))

    def test_return_metrics(self, data):
        learner = make_learner(data)
        if MODAL_RETURNS_METRICS:
            idx, rows, metrics = learner.query(data[0], n_instances=3, return_metrics=True)
            np.testing.assert_array_equal(metrics, -np.sort(-metrics))  # most uncertain first
        else:  # 0.4.1 strategies return indices only
            with pytest.warns(UserWarning, match="no metrics"):
                idx, rows, metrics = learner.query(data[0], n_instances=3, return_metrics=True)
            assert metrics is None
        np.testing.assert_array_equal(rows, data[0][idx])

    def test_tensor_pool(self, data):
        learner = make_learner(data)
        X_pool = torch.as_tensor(data[0])
        idx, rows = learner.query(X_pool, n_instances=4, random_state=0)
        assert torch.equal(rows, X_pool[torch.as_tensor(idx)])
        expected = tidal_margin(learner, data[0], n_instances=4, random_state=0)
        np.testing.assert_array_equal(idx, expected[0] if MODAL_RETURNS_METRICS else expected)
