import pickle

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from tidal_modal import TiDALNetClassifier, TrajectoryRecorder
from tidal_modal.trajectory import Trajectory

from .models import MLP, OwnHead


class WeightsByHand(Callback):
    """Copies the classifier's last layer ``[weight | bias]`` at the start and after every epoch."""

    def on_train_begin(self, net, **kwargs):
        self.snapshots_ = [self._params(net)]

    def on_epoch_end(self, net, **kwargs):
        self.snapshots_.append(self._params(net))

    @staticmethod
    def _params(net):
        module = getattr(net.module_, "backbone", net.module_)
        return torch.cat([module.out.weight, module.out.bias[:, None]], dim=1).detach().clone()


def tidal_net(**kwargs):
    params = dict(module=MLP, max_epochs=4, lr=0.05, verbose=0, classes=list(range(10)))
    return TiDALNetClassifier(**{**params, **kwargs})


@pytest.fixture(scope="module")
def data(digits):
    X, y = digits
    return X[:150], y[:150]


class TestRecordedSteps:
    @pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
    def test_deltas_are_the_epoch_to_epoch_differences(self, data, optimizer):
        spy = WeightsByHand()
        net = tidal_net(optimizer=optimizer, callbacks=[spy]).fit(*data)
        hand = spy.snapshots_
        trajectory = net.trajectory_
        assert trajectory.layer == "out" and trajectory.epochs == [1, 2, 3, 4]
        torch.testing.assert_close(trajectory.start, hand[0], rtol=0, atol=0)
        for delta, before, after in zip(trajectory.deltas, hand[:-1], hand[1:], strict=True):
            torch.testing.assert_close(delta, after - before, rtol=0, atol=0)
            assert delta.abs().sum() > 0  # the layer did move
        torch.testing.assert_close(trajectory.weights()[-1], hand[-1])

    def test_every_k_epochs_and_the_end_of_the_fit(self, data):
        spy = WeightsByHand()
        net = tidal_net(max_epochs=5, callbacks=[spy], callbacks__trajectory__every=2).fit(*data)
        assert net.trajectory_.epochs == [2, 4, 5]
        hand = spy.snapshots_
        for delta, (a, b) in zip(net.trajectory_.deltas, [(0, 2), (2, 4), (4, 5)], strict=True):
            torch.testing.assert_close(delta, hand[b] - hand[a])

    def test_restarts_with_every_fit_and_warm_start(self, data):
        spy = WeightsByHand()
        net = tidal_net(warm_start=True, callbacks=[spy]).fit(*data)
        end_of_first = net.trajectory_.weights()[-1]
        net.set_params(max_epochs=2)
        net.fit(*data)
        assert net.trajectory_.epochs == [1, 2]
        torch.testing.assert_close(net.trajectory_.start, end_of_first)  # warm: starts where it ended
        net.partial_fit(*data)
        assert len(net.trajectory_) == 2 and net.trajectory_.epochs == [1, 2]

    def test_merged_segments_sum_their_steps(self, data):
        trajectory = tidal_net(max_epochs=5).fit(*data).trajectory_
        directions, ends = trajectory.directions(n_checkpoints=2, normalize=False)
        steps = torch.stack(trajectory.deltas)
        assert [len(g) for g in trajectory.segments(2)] == [2, 3]
        torch.testing.assert_close(directions[0], steps[:2].sum(0))
        torch.testing.assert_close(directions[1], steps[2:].sum(0))
        torch.testing.assert_close(ends[1], trajectory.weights()[-1])
        unit, _ = trajectory.directions(normalize=True)
        torch.testing.assert_close(torch.linalg.vector_norm(unit.flatten(1), dim=1), torch.ones(5))

    def test_off_when_the_callback_is_disabled(self, data):
        net = tidal_net(callbacks__trajectory=None).fit(*data)
        assert len(net.trajectory_) == 0  # the empty trajectory of a new module


class TestPlainSkorch:
    def test_one_callback_records_a_plain_net(self, data):
        net = NeuralNetClassifier(
            MLP,
            criterion=nn.CrossEntropyLoss,
            train_split=None,
            max_epochs=3,
            verbose=0,
            callbacks=[TrajectoryRecorder()],
        ).fit(*data)
        assert net.trajectory_.layer == "out" and len(net.trajectory_) == 3

    def test_named_layer(self, data):
        net = tidal_net(callbacks__trajectory__layer="body.0").fit(*data)
        assert net.trajectory_.start.shape == (32, 65)

    def test_unknown_layer_is_a_clear_error(self, data):
        with pytest.raises(ValueError, match=r"layer='nope'.*linear layers: \['body.0', 'out'\]"):
            tidal_net(callbacks__trajectory__layer="nope").fit(*data)

    def test_own_td_head_records_nothing_unless_named(self):
        X = np.random.RandomState(0).randn(30, 4).astype("float32")
        y = (X[:, 0] > 0).astype("int64")
        net = TiDALNetClassifier(OwnHead, max_epochs=2, verbose=0).fit(X, y)
        assert net.trajectory_ is None  # its last nn.Linear is its TD layer: ambiguous
        net = TiDALNetClassifier(OwnHead, max_epochs=2, verbose=0, callbacks__trajectory__layer="fc").fit(
            X, y
        )
        assert net.trajectory_.layer == "fc" and len(net.trajectory_) == 2


class TestPersistence:
    def test_pickle_round_trip(self, data):
        net = tidal_net().fit(*data)
        copy = pickle.loads(pickle.dumps(net))
        assert copy.trajectory_.epochs == net.trajectory_.epochs
        for a, b in zip(copy.trajectory_.deltas, net.trajectory_.deltas, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        copy.fit(*data)  # recording goes on after unpickling
        assert len(copy.trajectory_) == 4

    def test_save_params_and_load_params(self, data, tmp_path):
        net = tidal_net().fit(*data)
        net.save_params(f_params=tmp_path / "p.pt", f_trajectory=tmp_path / "t.pt")
        fresh = tidal_net().initialize()
        fresh.load_params(f_params=tmp_path / "p.pt", f_trajectory=tmp_path / "t.pt")
        state, loaded = net.trajectory_.state_dict(), fresh.trajectory_.state_dict()
        assert loaded["layer"] == "out" and loaded["epochs"].tolist() == [1, 2, 3, 4]
        torch.testing.assert_close(loaded["deltas"], state["deltas"], rtol=0, atol=0)
        torch.testing.assert_close(fresh.trajectory_.weights(), net.trajectory_.weights())

    def test_empty_trajectory_state_round_trips(self):
        empty = Trajectory()
        restored = Trajectory()
        restored.load_state_dict(empty.state_dict())
        assert restored.layer is None and len(restored) == 0
