"""Nets and learners saved by earlier releases (tests/fixtures/v*/) load with today's code and
predict as they did; a file that cannot be loaded says which release wrote it."""

import json
import pickle
import re

import numpy as np
import pytest
import torch

import tidal_modal
from tidal_modal import CheckpointError, TiDALActiveLearner, TiDALNetClassifier, tidal_margin
from tidal_modal.checkpoint import read_header

from .fixtures.make_fixtures import HERE, NET, make_data, make_net

pytestmark = pytest.mark.modal

RELEASES = sorted(path.parent for path in HERE.glob("v*/manifest.json"))


@pytest.fixture(params=RELEASES, ids=[folder.name for folder in RELEASES])
def release(request):
    """A release's folder, its manifest, and the data its expected outputs were computed on."""
    folder = request.param
    manifest = json.loads((folder / "manifest.json").read_text())
    X = np.asarray(manifest["X"], dtype=np.float32)
    return folder, manifest, X, np.asarray(manifest["y"])


def test_todays_release_has_its_files():
    """make_fixtures.py was run for this release (run it once per release)."""
    assert HERE / f"v{tidal_modal.__version__}" in RELEASES


class TestFilesOfEarlierReleases:
    def test_pickled_net(self, release):
        folder, manifest, X, y = release
        net = pickle.loads((folder / "net.pkl").read_bytes())
        expected = manifest["expected"]["net"]
        np.testing.assert_allclose(net.predict_proba(X), expected["proba"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net.predict_td(X), expected["td"], rtol=1e-5, atol=1e-6)
        net.partial_fit(X, y)  # and it trains on
        assert len(net.history) == 2 * manifest["net"]["max_epochs"]

    def test_save_params_files(self, release):
        folder, manifest, X, y = release
        net = make_net(manifest["net"]).initialize()
        net.load_params(
            f_params=folder / "params.pt",
            f_optimizer=folder / "optimizer.pt",
            f_history=folder / "history.json",
        )
        expected = manifest["expected"]["net"]
        np.testing.assert_allclose(net.predict_proba(X), expected["proba"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net.predict_td(X), expected["td"], rtol=1e-5, atol=1e-6)
        assert len(net.history) == manifest["net"]["max_epochs"]

    def test_saved_learner(self, release):
        folder, manifest, X, y = release
        learner = TiDALActiveLearner.load(folder / "learner.ckpt", allow_pickle=True)  # either format
        expected = manifest["expected"]["learner"]
        assert learner.query_strategy is tidal_margin
        np.testing.assert_array_equal(learner.y_training, y[: expected["n_labeled"]])
        np.testing.assert_allclose(learner.predict_proba(X), expected["proba"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(learner.query(X[40:], n_instances=5)[0], expected["query"])

    def test_saved_learner_loads_without_pickle_once_in_format_2(self, release, tmp_path, monkeypatch):
        """0.1.0 saved learners as pickles (format 1): loading one says to pass allow_pickle=True,
        without unpickling anything, and saved again it is format 2. From 0.2.0 on, save writes
        format 2, which loads without pickle and predicts as it did."""
        folder, manifest, X, y = release
        source = folder / "learner.ckpt"
        if read_header(source)["format"] == 1:
            with monkeypatch.context() as patched:
                patched.setattr(pickle, "load", lambda file: pytest.fail("unpickled without allow_pickle"))
                message = (
                    rf"format 1, written by tidal_modal {re.escape(manifest['tidal_modal'])} at .*a pickle.* "
                    r"load it with load\(path, allow_pickle=True\)"
                )
                with pytest.raises(CheckpointError, match=message):
                    TiDALActiveLearner.load(source)
            TiDALActiveLearner.load(source, allow_pickle=True).save(tmp_path / "learner.ckpt")
            source = tmp_path / "learner.ckpt"
        assert read_header(source)["format"] == 2
        monkeypatch.setattr(pickle, "load", lambda file: pytest.fail("unpickled a file of format 2"))
        monkeypatch.setattr(pickle, "loads", lambda data: pytest.fail("unpickled a file of format 2"))
        learner = TiDALActiveLearner.load(source)
        expected = manifest["expected"]["learner"]
        assert learner.query_strategy is tidal_margin
        np.testing.assert_array_equal(learner.y_training, y[: expected["n_labeled"]])
        np.testing.assert_allclose(learner.predict_proba(X), expected["proba"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(learner.query(X[40:], n_instances=5)[0], expected["query"])
        learner.teach(X[40:45], y[40:45])  # and it trains on
        assert len(learner.y_training) == expected["n_labeled"] + 5


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return make_net(NET).fit(*make_data())


class TestReleaseRecord:
    def test_a_pickled_net_records_its_release(self, net):
        assert net.__getstate__()["_tidal_modal_version"] == tidal_modal.__version__
        assert "_tidal_modal_version" not in vars(pickle.loads(pickle.dumps(net)))

    @pytest.mark.parametrize("written_by", ["0.0.9", None], ids=["recorded", "before-the-record"])
    def test_a_net_that_cannot_be_unpickled_names_the_release_that_pickled_it(self, net, written_by):
        state = net.__getstate__()  # what pickle hands to __setstate__
        state["__cuda_dependent_attributes__"] = b"damaged"  # e.g. a module class that is gone
        if written_by is None:
            del state["_tidal_modal_version"]
        else:
            state["_tidal_modal_version"] = written_by
        with pytest.raises(Exception) as error:
            TiDALNetClassifier.__new__(TiDALNetClassifier).__setstate__(state)
        release = written_by or "0.1.0 or earlier"
        assert f"(pickled by tidal_modal {release}; this is tidal_modal {tidal_modal.__version__})" in (
            error.value.__notes__
        )
