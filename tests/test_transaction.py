"""A fit that raises leaves a fitted net as it was (tidal_modal.transaction)."""

import copy
from unittest.mock import Mock

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from tidal_modal import TiDALNetClassifier, transaction

from .models import MLP


class Flaky(MLP):
    """An MLP whose forward pass raises ``fail_eval`` / ``fail_train`` (when set) in that mode."""

    fail_eval = fail_train = None

    def forward(self, x):
        error = Flaky.fail_train if self.training else Flaky.fail_eval
        if error is not None:
            raise error
        return super().forward(x)


class FlakySGD(torch.optim.SGD):
    """SGD that raises once ``steps_before_failure`` more steps have been taken (``None``: never)."""

    steps_before_failure = None

    def step(self, closure=None):
        if FlakySGD.steps_before_failure == 0:
            raise RuntimeError("the optimizer failed")
        if FlakySGD.steps_before_failure is not None:
            FlakySGD.steps_before_failure -= 1
        return super().step(closure)


class Fault(Callback):
    """Raises ``error`` at the ``at``-th call of the event ``hook``; disarmed while ``hook`` is None."""

    def __init__(self, hook=None, at=1, error=None):
        self.hook, self.at, self.error = hook, at, error

    def initialize(self):
        self.calls_ = 0
        return self

    def _event(self, hook):
        if hook == self.hook:
            self.calls_ += 1
            if self.calls_ == self.at:
                raise self.error

    def on_train_begin(self, net, **kwargs):
        self._event("on_train_begin")

    def on_batch_end(self, net, **kwargs):
        self._event("on_batch_end")

    def on_epoch_end(self, net, **kwargs):
        self._event("on_epoch_end")

    def on_train_end(self, net, **kwargs):
        self._event("on_train_end")


@pytest.fixture
def data():
    X = np.random.RandomState(0).randn(30, 4).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def fitted_net(data, warm_start=False, **kwargs):
    """A net fitted for 2 epochs of 4 batches, with momentum (the optimizer has a state)."""
    kwargs.setdefault("module", Flaky)
    if kwargs["module"] is Flaky:
        kwargs.update(module__n_features=4, module__hidden=8, module__n_classes=2, module__dropout=0.2)
    net = TiDALNetClassifier(
        optimizer=FlakySGD,
        optimizer__momentum=0.9,
        lr=0.1,
        max_epochs=2,
        batch_size=8,
        td_hidden=8,
        warm_start=warm_start,
        callbacks=[("fault", Fault())],
        verbose=0,
        **kwargs,
    )
    return net.fit(*data)


def arm(net, hook, at, error):
    fault = dict(net.callbacks_)["fault"]
    fault.hook, fault.at, fault.error = hook, at, error


def state(net):
    """Everything a fit may change, as copies; and which objects the net holds."""
    return {
        "attributes": sorted(name for name in vars(net) if name.endswith("_")),
        "objects": {
            name: id(getattr(net, name)) for name in ("module_", "optimizer_", "history_", "dynamics_")
        },
        "module": copy.deepcopy(net.module_.state_dict()),  # the backbone and the TD head
        "optimizer": copy.deepcopy(net.optimizer_.state_dict()),
        "history": copy.deepcopy(list(net.history)),
        "training_dynamics": net.training_dynamics_.copy(),
        "trajectory": copy.deepcopy(net.trajectory_.state_dict()),
        "classes": net.classes_inferred_.copy(),
        "input_shape": (net.input_shape_, net.n_features_in_),
    }


def assert_same(actual, expected):
    """Equal containers, bitwise equal tensors and arrays."""
    assert type(actual) is type(expected)
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e)
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected, strict=True)
    else:
        assert actual == expected


FITS = {
    "fit": lambda net, X, y: net.fit(X, y),  # cold: re-initialises the module
    "warm-fit": lambda net, X, y: net.fit(X, y),
    "partial_fit": lambda net, X, y: net.partial_fit(X, y),
}


# Each fault arms itself on the fitted net and returns the data to fit and the error to expect.
def label_outside_the_classes(net, X, y, monkeypatch):
    y = y.copy()
    y[0] = 5
    return X, y, ValueError


def rows_of_another_shape(net, X, y, monkeypatch):
    return X[:, :3], y, ValueError


def out_of_memory_on_the_first_batch(net, X, y, monkeypatch):
    monkeypatch.setattr(Flaky, "fail_train", torch.OutOfMemoryError("CUDA out of memory"))
    return X, y, torch.OutOfMemoryError


def optimizer_fails_in_the_second_epoch(net, X, y, monkeypatch):
    monkeypatch.setattr(FlakySGD, "steps_before_failure", 5)
    return X, y, RuntimeError


def callback_fails_mid_epoch(net, X, y, monkeypatch):
    arm(net, "on_batch_end", at=6, error=RuntimeError("a callback failed"))
    return X, y, RuntimeError


def callback_fails_after_the_last_epoch(net, X, y, monkeypatch):
    arm(net, "on_train_end", at=1, error=RuntimeError("a callback failed"))
    return X, y, RuntimeError


def interrupt_before_training(net, X, y, monkeypatch):
    arm(net, "on_train_begin", at=1, error=KeyboardInterrupt())
    return X, y, KeyboardInterrupt


def interrupt_after_the_last_epoch(net, X, y, monkeypatch):
    arm(net, "on_train_end", at=1, error=KeyboardInterrupt())
    return X, y, KeyboardInterrupt


FAULTS = [
    label_outside_the_classes,
    rows_of_another_shape,
    out_of_memory_on_the_first_batch,
    optimizer_fails_in_the_second_epoch,
    callback_fails_mid_epoch,
    callback_fails_after_the_last_epoch,
    interrupt_before_training,
    interrupt_after_the_last_epoch,
]


class TestFailedFit:
    @pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.__name__)
    @pytest.mark.parametrize("how", list(FITS))
    def test_leaves_the_net_as_it_was(self, data, how, fault, monkeypatch):
        net = fitted_net(data, warm_start=how == "warm-fit")
        before = state(net)
        proba = net.predict_proba(data[0])
        X, y, error = fault(net, *data, monkeypatch)
        with pytest.raises(error):
            FITS[how](net, X, y)
        assert_same(state(net), before)
        np.testing.assert_array_equal(net.predict_proba(data[0]), proba)

    def test_the_issues_refit_on_fewer_features_names_both_shapes(self):
        rng = np.random.RandomState(0)
        X, y = rng.randn(20, 64).astype(np.float32), np.arange(20) % 2
        net = TiDALNetClassifier(MLP, module__n_classes=2, max_epochs=1, verbose=0).fit(X, y)
        before = state(net)
        with pytest.raises(ValueError, match="X has 63 features, but TiDALNetClassifier is expecting 64"):
            net.fit(X[:, :63], y)
        assert_same(state(net), before)

    def test_a_module_instance_reused_by_the_refit_is_restored(self, data):
        # skorch re-initialises a module passed as an instance by reusing it: training changes it in place
        net = fitted_net(data, module=Flaky(n_features=4, hidden=8, n_classes=2))
        before = state(net)
        arm(net, "on_batch_end", at=6, error=RuntimeError("a callback failed"))
        with pytest.raises(RuntimeError):
            net.fit(*data)
        assert_same(state(net), before)

    def test_a_restored_net_trains_on_as_if_the_failed_fit_never_ran(self, data, monkeypatch):
        net = fitted_net(data)
        untouched = copy.deepcopy(net)
        arm(net, "on_batch_end", at=6, error=RuntimeError("a callback failed"))
        with pytest.raises(RuntimeError):
            net.partial_fit(*data)
        arm(net, None, 1, None)
        for each in (net, untouched):
            torch.manual_seed(1)  # the same shuffling and dropout
            each.partial_fit(*data)
        assert_same(state(net)["module"], state(untouched)["module"])
        assert_same(state(net)["optimizer"], state(untouched)["optimizer"])
        assert net.history[:, "train_loss"] == untouched.history[:, "train_loss"]


class TestKeyboardInterruptInTheLoop:
    @pytest.mark.parametrize("how", list(FITS))
    def test_stops_training_and_keeps_the_net_as_in_skorch(self, data, how):
        net = fitted_net(data, warm_start=how == "warm-fit")
        n_epochs, weights = len(net.history), copy.deepcopy(net.module_.state_dict())
        arm(net, "on_epoch_end", at=1, error=KeyboardInterrupt())  # skorch's EarlyStopping does this
        assert FITS[how](net, *data) is net
        new_epochs = 1 if how == "fit" else n_epochs + 1
        assert len(net.history) == new_epochs
        assert not torch.equal(weights["out.weight"], net.module_.out.weight)
        assert len(net.trajectory_) == 1  # on_train_end closed the fit


class TestCost:
    def test_one_snapshot_per_fit_of_a_fitted_net_none_before(self, data, monkeypatch):
        spy = Mock(wraps=transaction.take_snapshot)
        monkeypatch.setattr(transaction, "take_snapshot", spy)
        net = fitted_net(data, warm_start=True)  # a first fit has nothing to lose
        assert spy.call_count == 0
        net.fit(*data)  # fit calls partial_fit, which takes no second snapshot
        assert spy.call_count == 1
        net.partial_fit(*data)
        assert spy.call_count == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_on_cuda_the_snapshot_stays_on_the_device(data):
    net = fitted_net(data, device="cuda")
    _, states, _ = transaction.take_snapshot(net)
    assert {t.device.type for t in states["module_"].values()} == {"cuda"}
    before = state(net)
    arm(net, "on_batch_end", at=6, error=RuntimeError("a callback failed"))
    with pytest.raises(RuntimeError):
        net.partial_fit(*data)
    assert_same(state(net), before)
