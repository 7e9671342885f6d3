"""When skorch's callbacks restore an earlier epoch's weights, the TD head, the training dynamics
and the trajectory follow them (tidal_modal.restoring)."""

import copy

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, Checkpoint, EarlyStopping
from skorch.dataset import ValidSplit

from tidal_modal import TiDALNetClassifier

from .models import MLP


class Record(Callback):
    """Everything of the net at the end of each epoch, keyed by epoch."""

    def initialize(self):
        self.epochs = {}
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs[net.history[-1, "epoch"]] = {
            "module": copy.deepcopy(net.module_.state_dict()),
            "head": copy.deepcopy(net.td_head_.state_dict()),
            "td": net.training_dynamics_,
            "trajectory": len(net.trajectory_),
        }


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(200, 4).astype(np.float32)
    y = ((X[:, 0] + 1.5 * rng.randn(200)) > 0).astype(np.int64)  # noisy: validation loss turns
    return X, y


def fit(data, restorer, **kwargs):
    torch.manual_seed(0)
    record = Record()
    params = dict(
        module__n_features=4,
        module__n_classes=2,
        module__hidden=64,
        max_epochs=40,
        lr=0.3,
        train_split=ValidSplit(0.3, random_state=0),
        callbacks=[record, restorer],  # the record sees each epoch before a stop
        verbose=0,
    )
    net = TiDALNetClassifier(MLP, **{**params, **kwargs}).fit(*data)
    return net, record.epochs


def assert_at_epoch(net, epochs, best):
    state = epochs[best]
    for key, value in net.module_.state_dict().items():
        torch.testing.assert_close(value, state["module"][key], rtol=0, atol=0)
    for key, value in net.td_head_.state_dict().items():
        torch.testing.assert_close(value, state["head"][key], rtol=0, atol=0)
    np.testing.assert_array_equal(net.training_dynamics_, state["td"])
    # the trajectory ends at the restored weights (its end is a sum of steps: equal up to rounding)
    assert net.trajectory_.epochs[-1] == best and len(net.trajectory_) == state["trajectory"]
    layer = net.module_.out
    end = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], dim=1)
    torch.testing.assert_close(net.trajectory_.weights()[-1], end, rtol=0, atol=1e-6)


def test_early_stopping_restores_head_td_and_trajectory(data):
    stopper = EarlyStopping(patience=3, load_best=True, monitor="valid_loss")
    net, epochs = fit(data, stopper)
    best = stopper.best_epoch_
    assert best < len(net.history)  # it did restore an earlier epoch
    assert_at_epoch(net, epochs, best)
    assert not hasattr(net, "restore_points_")  # nothing held after the fit


def test_checkpoint_load_best_restores_head_td_and_trajectory(data, tmp_path):
    checkpoint = Checkpoint(monitor="valid_loss_best", load_best=True, dirname=tmp_path)
    net, epochs = fit(data, checkpoint, max_epochs=15)
    best = [row["epoch"] for row in net.history if row["event_cp"]][-1]
    assert best < max(epochs)  # it did restore an earlier epoch (and its history, as skorch does)
    assert_at_epoch(net, epochs, best)


def test_without_load_best_nothing_moves(data):
    net, epochs = fit(data, EarlyStopping(patience=3, monitor="valid_loss"))
    assert_at_epoch(net, epochs, len(net.history))
