"""A fitted net survives pickling, save/load and checkpoints; queries are reproducible."""

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Checkpoint, LoadInitState, TrainEndCheckpoint
from skorch.exceptions import DeviceWarning
from torch import nn

from tidal_modal import TiDALNetClassifier

REPO = Path(__file__).resolve().parents[1]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, X):
        return self.seq(X)


def make_net(**kwargs):
    return TiDALNetClassifier(MLP, max_epochs=3, lr=0.1, optimizer__momentum=0.9, verbose=0, **kwargs)


@pytest.fixture(scope="module")
def data():
    X, y = make_blobs(n_samples=60, n_features=4, centers=3, random_state=2)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(data):
    torch.manual_seed(0)
    return make_net().fit(*data)


class TestPickle:
    def test_round_trip(self, fitted, data):
        loaded = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(loaded.predict_td(data[0]), fitted.predict_td(data[0]))
        np.testing.assert_array_equal(loaded.training_dynamics_, fitted.training_dynamics_)
        assert loaded.input_shape_ == (4,)
        with pytest.raises(ValueError, match="X has 3 features"):
            loaded.predict_td(data[0][:, :3])

    def test_training_goes_on_after_unpickling(self, data):
        """Weights, optimizer state (momentum) and all: the copy trains on exactly as the original."""
        torch.manual_seed(0)
        original = make_net().fit(*data)
        loaded = pickle.loads(pickle.dumps(original))
        assert_trains_on_alike(loaded, original, data)
        assert len(loaded.history) == 6

    def test_gpu_pickle_loads_on_a_cpu_only_machine(self, fitted, data, monkeypatch):
        """Simulated: the module's and optimizer's tensors are written as if they lived on cuda:0."""
        on_gpu = {p.untyped_storage().data_ptr() for p in fitted.module_.parameters()}
        on_gpu |= {
            t.untyped_storage().data_ptr()
            for state in fitted.optimizer_.state.values()
            for t in state.values()
            if isinstance(t, torch.Tensor)
        }
        real_tag = torch.serialization.location_tag

        def tag(storage):
            return "cuda:0" if storage.data_ptr() in on_gpu else real_tag(storage)

        monkeypatch.setattr(torch.serialization, "location_tag", tag)
        monkeypatch.setattr(fitted, "device", "cuda")
        blob = pickle.dumps(fitted)
        monkeypatch.undo()
        assert b"cuda:0" in blob
        with pytest.raises(RuntimeError, match="CUDA"):  # the simulation is faithful: plain loading fails
            torch.load(_save_module(fitted.module_, tag), weights_only=True)
        with pytest.warns(DeviceWarning):
            loaded = pickle.loads(blob)
        assert str(loaded.device) == "cpu"
        np.testing.assert_array_equal(loaded.predict_td(data[0]), fitted.predict_td(data[0]))

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
    def test_cuda_trained_net_loads_on_cpu(self, data, monkeypatch):
        torch.manual_seed(0)
        net = make_net(device="cuda").fit(*data)
        expected = net.predict_td(data[0]), net.training_dynamics_
        blob = pickle.dumps(net)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the machine that unpickles
        with pytest.warns(DeviceWarning):
            loaded = pickle.loads(blob)
        assert str(loaded.device) == "cpu"
        np.testing.assert_allclose(loaded.predict_td(data[0]), expected[0], atol=1e-5)
        np.testing.assert_allclose(loaded.training_dynamics_, expected[1], atol=1e-6)


def assert_trains_on_alike(copy, original, data):
    """One more ``partial_fit`` of each, from the same random state, ends at the same weights."""
    state = torch.get_rng_state()
    copy.partial_fit(*data)
    torch.set_rng_state(state)
    original.partial_fit(*data)
    for (name, p), q in zip(copy.module_.named_parameters(), original.module_.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def _save_module(module, tag):
    """A ``torch.save`` of a module's state with the storage locations given by ``tag``."""
    buffer = io.BytesIO()
    real_tag = torch.serialization.location_tag
    torch.serialization.location_tag = tag
    try:
        torch.save(module.state_dict(), buffer)
    finally:
        torch.serialization.location_tag = real_tag
    buffer.seek(0)
    return buffer


class TestSaveParams:
    def test_params_optimizer_and_history(self, fitted, data, tmp_path):
        files = {f"f_{name}": tmp_path / f"{name}.pt" for name in ("params", "optimizer", "history")}
        files["f_history"] = tmp_path / "history.json"
        fitted.save_params(**files)
        loaded = make_net().initialize()
        loaded.load_params(**files)
        # f_params holds the user's module; the TD head went next to it, and came back with it
        assert torch.load(files["f_params"]).keys() == fitted.module_.state_dict().keys()
        assert (tmp_path / "params.td_head.pt").is_file()
        np.testing.assert_array_equal(loaded.predict_td(data[0]), fitted.predict_td(data[0]))
        assert len(loaded.history) == len(fitted.history)

    def test_training_goes_on_after_loading(self, data, tmp_path):
        torch.manual_seed(0)
        original = make_net().fit(*data)
        files = {"f_params": tmp_path / "params.pt", "f_optimizer": tmp_path / "optimizer.pt"}
        original.save_params(**files)
        loaded = make_net().initialize()
        loaded.load_params(**files)
        assert_trains_on_alike(loaded, original, data)

    def test_gpu_saved_params_load_on_cpu(self, fitted, data, tmp_path):
        path = tmp_path / "params.pt"
        path.write_bytes(_save_module(fitted.module_, lambda storage: "cuda:0").getvalue())
        head = _save_module(fitted.td_head_, lambda storage: "cuda:0")
        (tmp_path / "params.td_head.pt").write_bytes(head.getvalue())
        loaded = make_net().initialize()
        loaded.load_params(f_params=path)  # skorch maps to net.device ('cpu')
        np.testing.assert_array_equal(loaded.predict_td(data[0]), fitted.predict_td(data[0]))

    def test_checkpoint_callback(self, data, tmp_path):
        torch.manual_seed(0)
        checkpoint = Checkpoint(monitor=None, dirname=tmp_path)
        net = make_net(callbacks=[checkpoint]).fit(*data)
        assert net.history[-1, "event_cp"]
        loaded = make_net().initialize()
        loaded.load_params(checkpoint=checkpoint)
        np.testing.assert_array_equal(loaded.predict_td(data[0]), net.predict_td(data[0]))


class TestTheHeadGoesWithTheModule:
    """No save or load path drops the TD head silently."""

    def test_f_params_alone_takes_the_head_along(self, fitted, data, tmp_path):
        fitted.save_params(f_params=tmp_path / "model.pt")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.td_head.pt"]
        loaded = make_net().initialize()
        loaded.load_params(f_params=str(tmp_path / "model.pt"))
        np.testing.assert_array_equal(loaded.predict_td(data[0]), fitted.predict_td(data[0]))

    def test_the_head_alone_goes_to_a_file_of_its_own(self, fitted, data, tmp_path):
        head = io.BytesIO()
        fitted.save_params(f_params=tmp_path / "p.pt", f_td_head=head)
        assert not (tmp_path / "p.td_head.pt").exists()
        loaded = make_net().initialize()
        head.seek(0)
        loaded.load_params(f_params=tmp_path / "p.pt", f_td_head=head)
        np.testing.assert_array_equal(loaded.predict_td(data[0]), fitted.predict_td(data[0]))

    def test_a_classifier_loaded_without_its_head_has_no_td(self, fitted, data, tmp_path):
        buffer = io.BytesIO()
        fitted.save_params(f_params=buffer)  # a file object: nowhere to put the head
        buffer.seek(0)
        loaded = make_net().fit(*data)  # a trained head, of other weights
        loaded.load_params(f_params=buffer)
        np.testing.assert_array_equal(loaded.predict_proba(data[0]), fitted.predict_proba(data[0]))
        with pytest.raises(NotFittedError, match=r"without the head.*f_td_head"):
            loaded.predict_td(data[0])
        fitted.save_params(f_params=tmp_path / "c.pt", f_td_head=None)  # the classifier alone
        assert not (tmp_path / "c.td_head.pt").exists()

    def test_load_init_state_and_train_end_checkpoint(self, data, tmp_path):
        torch.manual_seed(0)
        end = TrainEndCheckpoint(dirname=tmp_path)
        first = make_net(callbacks=[end]).fit(*data)
        assert (tmp_path / "train_end_params.td_head.pt").is_file()
        resumed = make_net(callbacks=[LoadInitState(end)]).set_params(max_epochs=0).fit(*data)
        np.testing.assert_array_equal(resumed.predict_td(data[0]), first.predict_td(data[0]))
        np.testing.assert_array_equal(resumed.predict_proba(data[0]), first.predict_proba(data[0]))


QUERY_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from sklearn.datasets import make_blobs
    from torch import nn
    from tidal_modal import TiDALNetClassifier, tidal_entropy, tidal_margin

    torch.manual_seed(0)
    X, y = make_blobs(n_samples=300, n_features=5, centers=3, cluster_std=4.0, random_state=0)
    X = X.astype(np.float32)
    module = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    net = TiDALNetClassifier(module, max_epochs=3, lr=0.1, verbose=0).fit(X[:60], y[:60])
    queries = {}
    for strategy in (tidal_entropy, tidal_margin):
        result = strategy(net, X[60:], n_instances=10, pool_subset=150,
                          random_tie_break=True, random_state=0)
        idx = result[0] if isinstance(result, tuple) else result
        queries[strategy.__name__] = np.asarray(idx).tolist()
    print(json.dumps(queries))
    """
)


class TestDeterminism:
    def test_same_seeds_same_queries_in_two_processes(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        runs = [
            subprocess.Popen([sys.executable, "-c", QUERY_SCRIPT], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]  # side by side, to halve the start-up time
        queries = [json.loads(run.communicate(timeout=120)[0]) for run in runs]
        assert [run.returncode for run in runs] == [0, 0]
        assert queries[0] == queries[1]
        assert all(len(set(idx)) == 10 for idx in queries[0].values())
