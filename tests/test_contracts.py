"""The net and the strategies honour the scikit-learn, skorch and modAL contracts."""

import inspect
import warnings
from importlib.metadata import version

import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner, Committee
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping, EpochScoring, LRScheduler
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn
from torch.optim.lr_scheduler import StepLR

import tidal_modal
from tidal_modal import TiDALNetClassifier, tidal_entropy, tidal_margin
from tidal_modal.strategies import MODAL_RETURNS_METRICS


class MLP(nn.Module):
    """Adapts to any number of features; 3 logits (the checks use 2 or 3 classes)."""

    def __init__(self, n_classes=3):
        super().__init__()
        self.seq = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, n_classes))

    def forward(self, X):
        return self.seq(X.float())  # .float(): plain skorch does not cast the checks' float64


def make_net(**kwargs):
    return TiDALNetClassifier(**{"module": MLP, "max_epochs": 3, "lr": 0.1, "verbose": 0, **kwargs})


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def data():
    X, y = make_blobs(n_samples=90, n_features=4, centers=3, cluster_std=3.0, random_state=3)
    return X.astype(np.float32), y


# Checks that plain skorch fails too (shown by test_plain_skorch_fails_the_same_checks): skorch's
# __init__ stores its bookkeeping (history_, initialized_, virtual_params_) and double-underscore
# parameters such as module__n_classes as attributes. Plain skorch also fails
# check_n_features_in_after_fitting, which TiDALNetClassifier passes.
EXPECTED_FAILED_CHECKS = {
    "check_no_attributes_set_in_init": "skorch's __init__ sets history_, initialized_ and module__ params",
}


def _estimator_checks():
    marker = parametrize_with_checks(
        [make_net(classes=[0, 1, 2])], legacy=False, expected_failed_checks=lambda _: EXPECTED_FAILED_CHECKS
    )
    # a list instead of scikit-learn's generator, which pytest deprecates as parametrize values
    return pytest.mark.parametrize(marker.args[0], list(marker.args[1]), **marker.kwargs)


class TestScikitLearn:
    @_estimator_checks()
    def test_estimator_checks(self, estimator, check):
        check(estimator)

    def test_plain_skorch_fails_the_same_checks(self):
        net = NeuralNetClassifier(
            MLP, criterion=nn.CrossEntropyLoss, train_split=None, max_epochs=1, verbose=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = check_estimator(net, legacy=False, on_fail=None)
        failed = {r["check_name"] for r in results if r["status"] == "failed"}
        assert failed == set(EXPECTED_FAILED_CHECKS) | {"check_n_features_in_after_fitting"}


class TestSkorch:
    def test_callbacks(self, data):
        X, y = data
        callbacks = [
            EpochScoring("accuracy", lower_is_better=False, name="valid_acc_cb"),
            LRScheduler(policy=StepLR, step_size=1, gamma=0.5),  # steps before EarlyStopping stops
            EarlyStopping(monitor="valid_loss", patience=1, threshold=10.0),
        ]
        net = make_net(
            max_epochs=10, callbacks=callbacks, train_split=predefined_split(Dataset(X[60:], y[60:]))
        )
        net.fit(X[:60], y[:60])
        assert len(net.history) == 2  # stopped early: no improvement by 10 after epoch 1
        assert net.optimizer_.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
        assert set(net.history[-1]) >= {
            "train_loss",
            "train_td_loss",
            "valid_loss",
            "valid_acc",
            "valid_acc_cb",
        }
        accuracy = (net.predict(X[60:]) == y[60:]).mean()
        assert net.history[-1, "valid_acc"] == net.history[-1, "valid_acc_cb"] == pytest.approx(accuracy)

    def test_the_optimizer_trains_the_td_head(self, data):
        net = make_net().fit(*data)
        optimized = {id(p) for group in net.optimizer_.param_groups for p in group["params"]}
        trained = [*net.module_.parameters(), *net.td_head_.parameters()]
        assert {id(p) for p in trained} == optimized and net.td_head_.weight.requires_grad

    def test_valid_loss_is_the_cross_entropy_of_the_validation_rows(self, data):
        X, y = data
        net = make_net(train_split=predefined_split(Dataset(X[60:], y[60:]))).fit(X[:60], y[:60])
        expected = log_loss(y[60:], net.predict_proba(X[60:]), labels=[0, 1, 2])
        assert net.history[-1, "valid_loss"] == pytest.approx(expected, rel=1e-5)
        assert np.isnan(net.training_dynamics_).sum() == 0  # the TD buffer holds the 60 training rows

    @pytest.mark.parametrize("td_weight", [0.5, 2.0])
    def test_train_loss_is_ce_plus_weighted_kl(self, data, td_weight):
        """One epoch of one batch, from the same weights with or without the TD term: same CE."""
        epochs = []
        for weight in (0.0, td_weight):
            torch.manual_seed(0)
            net = make_net(td_weight=weight, max_epochs=1, batch_size=len(data[0])).fit(*data)
            epochs.append(net.history[0])
        ce = epochs[0]["train_loss"]
        kl = epochs[1]["train_td_loss"]
        assert kl > 0
        assert epochs[1]["train_loss"] == pytest.approx(ce + td_weight * kl, rel=1e-5)

    def test_partial_fit_continues_training_and_restarts_the_td(self, data):
        X, y = data
        net = make_net().fit(X, y)
        params = {k: v.clone() for k, v in net.module_.state_dict().items()}
        net.set_params(lr=0.0)
        net.partial_fit(X[:30], y[:30])
        after = net.module_.state_dict()
        assert all(torch.equal(after[k], params[k]) for k in params)  # not re-initialised
        assert len(net.history) == 6
        # with frozen weights every epoch sees the same softmax: the TD of this call alone
        td = net.training_dynamics_
        assert td.shape == (30, 3)
        np.testing.assert_allclose(td, net.predict_proba(X[:30]), atol=1e-6)


class PlantedTD(BaseEstimator, ClassifierMixin):
    """A fitted estimator with known outputs: row ``i`` of the pool is ``[[i]]``."""

    def __init__(self, td=None, proba=None):
        self.td = td
        self.proba = proba

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return np.asarray(self.proba)[np.asarray(X)[:, 0]]

    def predict_td(self, X, return_proba=False):
        td = np.asarray(self.td)[np.asarray(X)[:, 0]]
        return (td, self.predict_proba(X)) if return_proba else td


ROW_IDS = np.arange(4)[:, None]


def planted_committee(td, proba):
    """A Committee of two members whose TD and probabilities are ``td[m]`` and ``proba[m]``."""
    members = []
    for member_td, member_proba in zip(td, proba, strict=True):
        estimator = PlantedTD(member_td, member_proba)
        estimator.classes_ = np.arange(len(member_td[0]))
        members.append(ActiveLearner(estimator))
    return Committee(members, query_strategy=tidal_entropy)


def _ids(result):
    """The indices from a strategy's or a learner's return value, whichever modAL is installed."""
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.modal
class TestModAL:
    def test_modal_release_is_detected(self):
        release = tuple(int(part) for part in version("modAL-python").split(".")[:3])
        assert MODAL_RETURNS_METRICS == (release >= (0, 4, 2))

    @pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
    @pytest.mark.parametrize("n_instances", [1, 2, 5])
    def test_query_returns_indices_and_rows(self, data, strategy, n_instances):
        """n_instances=2 is the case that modAL 0.4.2 mis-reads if a strategy returns bare indices."""
        X, y = data
        learner = ActiveLearner(make_net(), strategy, X_training=X[:30], y_training=y[:30])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "strategy does not support metrics" or deprecation warning
            idx, rows = learner.query(X[30:], n_instances=n_instances, random_state=0)
        assert len(idx) == n_instances
        np.testing.assert_array_equal(rows, X[30:][idx])
        np.testing.assert_array_equal(idx, _ids(strategy(learner, X[30:], n_instances, random_state=0)))

    @pytest.mark.skipif(not MODAL_RETURNS_METRICS, reason="return_metrics arrived in modAL 0.4.2")
    def test_return_metrics(self, data):
        X, y = data
        learner = ActiveLearner(make_net(), tidal_entropy, X_training=X[:30], y_training=y[:30])
        idx, rows, metrics = learner.query(X[30:], n_instances=4, return_metrics=True)
        td = learner.estimator.predict_td(rows)
        np.testing.assert_allclose(metrics, -(td * np.log(td)).sum(axis=1), rtol=1e-5)  # the entropy by hand
        assert np.all(np.diff(metrics) <= 0)  # most uncertain first

    def test_tensor_pool(self, data):
        X, y = data
        net = make_net().fit(X[:30], y[:30])
        for strategy in (tidal_entropy, tidal_margin):
            from_tensor = _ids(strategy(net, torch.as_tensor(X[30:]), n_instances=5))
            np.testing.assert_array_equal(from_tensor, _ids(strategy(net, X[30:], n_instances=5)))

    @pytest.fixture
    def committee(self, data):
        X, y = data
        learners = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            learners.append(ActiveLearner(make_net(), X_training=X[:30], y_training=y[:30]))
        return Committee(learners, query_strategy=tidal_entropy)

    def test_committee_entropy_of_the_mean_td(self):
        # row 0: two confident members that disagree, the mean TD is uniform (entropy ln 2 = 0.69);
        # row 1: both at [0.6, 0.4] (0.67); row 2: both confident (0.33). The mean of the members'
        # entropies would rank row 1 first.
        td = [
            [[0.9, 0.1], [0.6, 0.4], [0.1, 0.9]],
            [[0.1, 0.9], [0.6, 0.4], [0.1, 0.9]],
        ]
        committee = planted_committee(td, td)
        idx = _ids(committee.query(ROW_IDS[:3], n_instances=2))
        np.testing.assert_array_equal(idx, [0, 1])

    def test_committee_margin_at_the_consensus_label(self):
        # mean TD: [0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1]; consensus labels
        # 0, 0, 0, 1 (member 0 alone would say 1 for row 0). Margins at them: -0.3, 0, 0.7, 0.3; at
        # the TD's own argmax row 0's would be +0.2.
        td = [
            [[0.3, 0.4, 0.3], [0.4, 0.4, 0.2], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1]],
            [[0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1]],
        ]
        proba = [
            [[0.45, 0.55, 0.0], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]],
            [[0.75, 0.25, 0.0], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]],
        ]
        committee = planted_committee(td, proba)
        np.testing.assert_array_equal(committee.predict(ROW_IDS), [0, 0, 0, 1])
        np.testing.assert_array_equal(_ids(tidal_margin(committee, ROW_IDS, n_instances=2)), [0, 1])

    def test_committee_with_a_member_without_predict_td(self, committee, data):
        X, y = data
        committee.learner_list.append(ActiveLearner(LogisticRegression(), X_training=X, y_training=y))
        with pytest.raises(TypeError, match="predict_td.*LogisticRegression"):
            tidal_entropy(committee, X)


def _public_callables():
    for name in tidal_modal.__all__:
        obj = getattr(tidal_modal, name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    yield f"{name}.{attr}", member
        else:
            yield name, obj


class TestPublicAPI:
    @pytest.mark.parametrize(("name", "func"), list(_public_callables()))
    def test_typed_and_documented(self, name, func):
        signature = inspect.signature(func)
        parameters = [p for p in signature.parameters.values() if p.name != "self"]
        untyped = [p.name for p in parameters if p.annotation is inspect.Parameter.empty]
        assert not untyped, f"{name}: parameters without a type hint: {untyped}"
        assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
        doc = inspect.getdoc(func)
        assert doc, f"{name} has no docstring"
        if "." not in name:  # a public function: numpydoc sections
            assert "Parameters\n---" in doc and "Returns\n---" in doc, name
