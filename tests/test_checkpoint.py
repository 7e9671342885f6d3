"""A learner saved to one file atomically and loaded back whole, here or in another process
(tidal_modal.checkpoint, TiDALActiveLearner.save / load), in format 2 (the default, loaded without
pickle) and in format 1 (allow_pickle=True). tests/test_checkpoint_format.py tests format 2's
layout, what it refuses, and its round trips."""

import functools
import json
import os
import pickle
import random
import re
import sys
import time
import types

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from torch import nn

import tidal_modal
from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy, tidal_margin
from tidal_modal.checkpoint import FORMAT_VERSION, MAGIC, PICKLE_FORMAT, CheckpointError, read_header

from .killing import ForkServer

pytestmark = pytest.mark.modal

FORMATS = pytest.mark.parametrize("allow_pickle", [False, True], ids=["format2", "pickle"])


@pytest.fixture
def data():
    X, y = make_blobs(n_samples=120, n_features=4, centers=3, random_state=1)
    return X.astype(np.float32), y


def make_net(**kwargs):
    module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    return TiDALNetClassifier(module, classes=[0, 1, 2], max_epochs=3, lr=0.1, verbose=0, **kwargs)


def make_learner(data, estimator=None, strategy=tidal_margin, cls=TiDALActiveLearner):
    X, y = data
    return cls(estimator or make_net(), strategy, X_training=X[:30], y_training=y[:30])


def query(learner, X_pool):
    """Indices that depend on ``random_state`` (a random pool subset, random tie breaks)."""
    result = learner.query(X_pool, n_instances=5, pool_subset=40, random_tie_break=True, random_state=0)
    return result[0]


def rewrite_header(path, **changes):
    """Change fields of a checkpoint's header in place (the checksum covers the payload only)."""
    data = path.read_bytes()
    end = data.index(b"\n", len(MAGIC)) + 1
    header = {**json.loads(data[len(MAGIC) : end]), **changes}
    path.write_bytes(data[: len(MAGIC)] + json.dumps(header).encode() + b"\n" + data[end:])


class SubLearner(TiDALActiveLearner):
    pass


class TestRoundTrip:
    @pytest.mark.parametrize(
        "pipeline, allow_pickle",
        [(False, False), (False, True), (True, True)],
        ids=["net-format2", "net-pickle", "scaler+net-pickle"],  # a Pipeline needs pickle
    )
    def test_loaded_learner_is_the_saved_one(self, data, tmp_path, pipeline, allow_pickle):
        X, y = data
        estimator = make_pipeline(StandardScaler(), make_net()) if pipeline else make_net()
        learner = make_learner(data, estimator)
        learner.teach(X[30:40], y[30:40])
        learner.save(tmp_path / "learner.ckpt", allow_pickle=allow_pickle)
        assert read_header(tmp_path / "learner.ckpt")["format"] == (
            PICKLE_FORMAT if allow_pickle else FORMAT_VERSION
        )
        loaded = TiDALActiveLearner.load(tmp_path / "learner.ckpt", allow_pickle=allow_pickle)

        assert type(loaded) is TiDALActiveLearner and loaded.estimator is not learner.estimator
        np.testing.assert_array_equal(loaded.X_training, X[:40])
        np.testing.assert_array_equal(loaded.y_training, y[:40])
        assert loaded.query_strategy is tidal_margin
        np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
        np.testing.assert_array_equal(query(loaded, X[40:]), query(learner, X[40:]))
        if pipeline:
            np.testing.assert_array_equal(loaded.estimator[0].mean_, learner.estimator[0].mean_)
        loaded.teach(X[40:45], y[40:45])  # the loop goes on
        assert len(loaded.y_training) == 45

    @FORMATS
    def test_partial_strategy_keeps_its_settings(self, data, tmp_path, allow_pickle):
        strategy = functools.partial(tidal_entropy, pool_subset=40, random_tie_break=True)
        make_learner(data, strategy=strategy).save(tmp_path / "learner.ckpt", allow_pickle=allow_pickle)
        loaded = TiDALActiveLearner.load(tmp_path / "learner.ckpt", allow_pickle=allow_pickle).query_strategy
        assert loaded.func is tidal_entropy and loaded.keywords == strategy.keywords

    def test_header_names_the_release_and_keeps_the_metadata(self, data, tmp_path):
        path = tmp_path / "learner.ckpt"
        make_learner(data).save(path, metadata={"labeled": [3, 1, 4], "cycle": 2})
        header = read_header(path)
        assert header["tidal_modal"] == tidal_modal.__version__ and header["format"] == 2
        assert header["learner"] == "tidal_modal.learner.TiDALActiveLearner"
        learner, metadata = TiDALActiveLearner.load(path, return_metadata=True)
        assert metadata == {"labeled": [3, 1, 4], "cycle": 2} == header["metadata"]

    @FORMATS
    def test_a_subclass_loads_its_own_and_refuses_the_base_class(self, data, tmp_path, allow_pickle):
        make_learner(data, cls=SubLearner).save(tmp_path / "sub.ckpt", allow_pickle=allow_pickle)
        assert type(SubLearner.load(tmp_path / "sub.ckpt", allow_pickle=allow_pickle)) is SubLearner
        make_learner(data).save(tmp_path / "base.ckpt", allow_pickle=allow_pickle)
        with pytest.raises(CheckpointError, match="holds a tidal_modal.learner.TiDALActiveLearner, not a"):
            SubLearner.load(tmp_path / "base.ckpt", allow_pickle=allow_pickle)


class TestRandomState:
    @FORMATS
    def test_restored_generators_resume_the_random_streams(self, data, tmp_path, allow_pickle):
        X, y = data
        learner = make_learner(data, make_net(warm_start=True))
        learner.save(tmp_path / "learner.ckpt", allow_pickle=allow_pickle)
        learner.teach(X[30:40], y[30:40])  # shuffles its batches with torch's generator
        expected = learner.estimator.module_.state_dict(), np.random.rand()  # noqa: NPY002

        torch.manual_seed(1), np.random.seed(1)  # noqa: NPY002 -- a restarted process's generators
        loaded = TiDALActiveLearner.load(
            tmp_path / "learner.ckpt", restore_rng=True, allow_pickle=allow_pickle
        )
        loaded.teach(X[30:40], y[30:40])
        params = loaded.estimator.module_.state_dict()
        assert all(torch.equal(params[k], v) for k, v in expected[0].items())
        assert np.random.rand() == expected[1]  # noqa: NPY002

    @FORMATS
    def test_by_default_the_generators_are_left_alone(self, data, tmp_path, allow_pickle):
        """Format 2 builds the net's modules anew (drawing initial weights) before loading their
        weights: on forked generators."""
        make_learner(data).save(tmp_path / "learner.ckpt", allow_pickle=allow_pickle)
        torch.manual_seed(1), random.seed(1), np.random.seed(1)  # noqa: NPY002
        before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1]  # noqa: NPY002
        TiDALActiveLearner.load(tmp_path / "learner.ckpt", allow_pickle=allow_pickle)
        assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
        np.testing.assert_array_equal(np.random.get_state()[1], before[2])  # noqa: NPY002


def raise_(error, *args):
    raise error


def local_strategy():
    def strategy(classifier, X_pool, n_instances=1):
        return np.arange(n_instances)

    return strategy


class TestFailedSave:
    @FORMATS
    @pytest.mark.parametrize(
        "strategy", [lambda classifier, X_pool: [0], local_strategy()], ids=["lambda", "local-function"]
    )
    def test_unpicklable_strategy_is_refused_before_anything_is_written(
        self, data, tmp_path, strategy, allow_pickle
    ):
        path = tmp_path / "learner.ckpt"
        learner = make_learner(data)
        learner.save(path, allow_pickle=allow_pickle)
        before = path.read_bytes()
        learner.query_strategy = strategy
        with pytest.raises(TypeError, match=r"query strategy .* cannot be saved.*functools\.partial"):
            learner.save(path, allow_pickle=allow_pickle)
        assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
        with pytest.raises(TypeError, match="cannot be saved"):
            learner.save(tmp_path / "new.ckpt", allow_pickle=allow_pickle)
        assert list(tmp_path.iterdir()) == [path]

    @FORMATS
    @pytest.mark.parametrize(
        "metadata, error, message",
        [
            (
                {"labeled": np.arange(3)},
                TypeError,
                r"metadata\['labeled'\] is a numpy array; convert it with \.tolist\(\)",
            ),
            ({0: [1, 2]}, TypeError, r"metadata has the key 0 \(a int\).*load as the string '0'"),
            ({"a": [1, (2, 3)]}, TypeError, r"metadata\['a'\]\[1\] is a tuple.*give a list"),
            ({"n": np.int64(3)}, TypeError, r"metadata\['n'\] is a numpy scalar.*\.item\(\)"),
            ({"loss": float("nan")}, ValueError, r"metadata\['loss'\] is nan, which JSON does not have"),
        ],
        ids=["array", "int-key", "tuple", "numpy-scalar", "nan"],
    )
    def test_metadata_must_load_back_equal(self, data, tmp_path, allow_pickle, metadata, error, message):
        with pytest.raises(error, match=r"metadata must be JSON data that loads back equal: " + message):
            make_learner(data).save(tmp_path / "learner.ckpt", metadata=metadata, allow_pickle=allow_pickle)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        "fault, allow_pickle",
        [
            ("unpicklable-pipeline-step", True),  # a Pipeline is saved in format 1 only
            ("interrupt-before-fsync", True),
            ("rename-fails", True),
            ("interrupt-before-fsync", False),
            ("rename-fails", False),
            ("interrupt-while-writing", False),
        ],
    )
    def test_failed_save_leaves_the_previous_file_and_no_temporary_file(
        self, data, tmp_path, monkeypatch, fault, allow_pickle
    ):
        X, y = data
        path = tmp_path / "learner.ckpt"
        identity = FunctionTransformer()
        learner = make_learner(data, make_pipeline(identity, make_net()) if allow_pickle else None)
        learner.save(path, allow_pickle=allow_pickle)
        before = path.read_bytes()
        learner.teach(X[30:40], y[30:40])
        if fault == "unpicklable-pipeline-step":
            # AttributeError or PicklingError ("Can't pickle local object"), by Python version
            identity.func, error = (lambda X: X), (AttributeError, pickle.PicklingError)
        elif fault == "interrupt-before-fsync":
            monkeypatch.setattr(os, "fsync", functools.partial(raise_, KeyboardInterrupt))
            error = KeyboardInterrupt
        elif fault == "interrupt-while-writing":  # in the middle of the archive: after the arrays
            import safetensors.torch

            monkeypatch.setattr(safetensors.torch, "save", functools.partial(raise_, KeyboardInterrupt))
            error = KeyboardInterrupt
        else:
            monkeypatch.setattr(os, "replace", functools.partial(raise_, OSError("no space left")))
            error = OSError
        with pytest.raises(error):
            learner.save(path, allow_pickle=allow_pickle)
        assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
        assert len(TiDALActiveLearner.load(path, allow_pickle=allow_pickle).y_training) == 30


class TestLoadRefuses:
    @pytest.mark.parametrize(
        "content, what",
        [
            (b"", "an empty file"),
            (pickle.dumps({"net": 1}), "a pickle"),
            (b"PK\x03\x04archive", "a zip archive, as torch.save writes"),
            (b"strategy,seed,cycle\r\n", "a text file that begins 'strategy,seed"),
        ],
        ids=["empty", "pickle", "torch-save", "csv"],
    )
    def test_a_file_that_is_not_a_checkpoint_is_named(self, tmp_path, content, what):
        (tmp_path / "f").write_bytes(content)
        with pytest.raises(CheckpointError, match=f"is not a tidal_modal learner checkpoint: it is {what}"):
            TiDALActiveLearner.load(tmp_path / "f")

    def test_a_newer_format_names_the_release_that_wrote_it(self, data, tmp_path):
        path = tmp_path / "learner.ckpt"
        make_learner(data).save(path)
        rewrite_header(path, format=3, tidal_modal="9.0")
        with pytest.raises(
            CheckpointError, match=r"format 3, written by tidal_modal 9\.0.*up to 2\. Upgrade"
        ):
            TiDALActiveLearner.load(path)

    def test_a_pickle_is_loaded_only_with_allow_pickle(self, data, tmp_path, monkeypatch):
        path = tmp_path / "learner.ckpt"
        make_learner(data).save(path, allow_pickle=True)
        with monkeypatch.context() as patched:
            patched.setattr(pickle, "load", lambda file: pytest.fail("unpickled without allow_pickle"))
            with pytest.raises(
                CheckpointError,
                match=r"format 1, written by tidal_modal .*a pickle, and unpickling can run any code\. If "
                r"you trust the file, load it with load\(path, allow_pickle=True\)",
            ):
                TiDALActiveLearner.load(path)
        learner = TiDALActiveLearner.load(path, allow_pickle=True)
        learner.save(path)  # converted to format 2
        assert read_header(path)["format"] == 2 and len(TiDALActiveLearner.load(path).y_training) == 30

    @FORMATS
    @pytest.mark.parametrize("damage", ["cut-off", "cut-in-header", "flipped-byte", "appended"])
    def test_a_damaged_file_is_refused_before_unpickling(
        self, data, tmp_path, monkeypatch, damage, allow_pickle
    ):
        path = tmp_path / "learner.ckpt"
        make_learner(data).save(path, allow_pickle=allow_pickle)
        content = bytearray(path.read_bytes())
        if damage == "cut-off":
            content = content[: len(content) // 2]
        elif damage == "cut-in-header":
            content = content[: len(MAGIC) + 20]
        elif damage == "flipped-byte":
            content[len(content) // 2] ^= 0xFF
        else:
            content += b"more"
        path.write_bytes(content)
        monkeypatch.setattr(pickle, "load", lambda file: pytest.fail("unpickled a damaged file"))
        monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("read a damaged file"))
        release = re.escape(tidal_modal.__version__)
        message = (
            "header is damaged" if damage == "cut-in-header" else f"by tidal_modal {release} at .* damaged"
        )
        with pytest.raises(CheckpointError, match=message):
            TiDALActiveLearner.load(path, allow_pickle=allow_pickle)

    def test_an_unpicklable_payload_names_the_release_that_wrote_it(self, tmp_path, monkeypatch):
        """What a release that dropped a class the file refers to would meet."""
        gone = types.ModuleType("gone_module")
        gone.Learner = type("Learner", (), {"__module__": "gone_module"})
        monkeypatch.setitem(sys.modules, "gone_module", gone)
        learner = gone.Learner()
        learner.query_strategy = tidal_margin
        tidal_modal.checkpoint.save_learner(learner, tmp_path / "old.ckpt", allow_pickle=True)
        monkeypatch.delitem(sys.modules, "gone_module")
        rewrite_header(tmp_path / "old.ckpt", tidal_modal="0.0.9")
        with pytest.raises(
            CheckpointError, match=r"written by tidal_modal 0\.0\.9, which this tidal_modal .* ModuleNotFound"
        ):
            TiDALActiveLearner.load(tmp_path / "old.ckpt", allow_pickle=True)


# --- a labeling loop killed with SIGKILL ------------------------------------------------------

N_FEATURES, N_INITIAL, BATCH, STEPS = 2048, 1500, 300, 6  # 15-30 MB of labeled rows: a save takes a while
PROBE = slice(0, 8)


def kill_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_INITIAL + BATCH * STEPS, N_FEATURES), dtype=np.float32)
    return X, rng.integers(0, 3, len(X))


def kill_learner(X, y):
    module = nn.Sequential(nn.Linear(N_FEATURES, 8), nn.ReLU(), nn.Linear(8, 3))
    net = TiDALNetClassifier(
        module, classes=[0, 1, 2], td_hidden=8, max_epochs=1, batch_size=512, warm_start=True, verbose=0
    )
    return TiDALActiveLearner(net, X_training=X[:N_INITIAL], y_training=y[:N_INITIAL])


SETUP = """
import os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)  # before forking: a forked child cannot use its parent's thread pool
from tests.test_checkpoint import BATCH, N_INITIAL, PROBE, STEPS, kill_data, kill_learner
from tidal_modal import TiDALActiveLearner
X, y = kill_data()
kill_learner(X, y)  # a first fit's one-off costs (seconds of torch imports), paid once
"""
# Teaches batch after batch from where the file left off, saving after each; the step and the
# probe rows' predictions go into the metadata. "slow-replace": a finished temporary file waits
# a minute before its rename. The third argument, "format2" or "pickle", is the format saved.
LOOP = """
path, mode, allow_pickle = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "pickle"
if mode == "slow-replace":
    replace = os.replace
    def slow_replace(src, dst):
        if Path(dst) == path.absolute():
            print("replacing", flush=True)
            time.sleep(60)
        replace(src, dst)
    os.replace = slow_replace

def save(step):
    probe = learner.predict_proba(X[PROBE]).tolist()
    learner.save(path, metadata={"step": step, "probe": probe}, allow_pickle=allow_pickle)

if path.exists():
    learner, state = TiDALActiveLearner.load(path, return_metadata=True, allow_pickle=allow_pickle)
    step = state["step"]
else:
    learner, step = kill_learner(X, y), 0
    save(0)
print("loaded", step, flush=True)
while step < STEPS:
    rows = slice(N_INITIAL + BATCH * step, N_INITIAL + BATCH * (step + 1))
    print("teach", step + 1, flush=True)
    start = time.perf_counter()
    learner.teach(X[rows], y[rows])
    taught = time.perf_counter() - start
    print("save", step + 1, flush=True)
    start = time.perf_counter()
    save(step + 1)
    step += 1
    print("saved", step, taught, time.perf_counter() - start, flush=True)
"""


def possible_steps(lines):
    """The checkpoints that a child killed after printing ``lines`` may have left: its last saved
    step, and the next one if it had begun to save it."""
    last = max(int(line.split()[1]) for line in lines if line.split()[0] in ("loaded", "saved"))
    return {last, last + 1} if f"save {last + 1}" in lines else {last}


def check_checkpoint(path, X, y, steps, seed, allow_pickle):
    """Load ``path`` and check that it is exactly the state after one of ``steps``, in the format
    saved; return that step."""
    assert read_header(path)["format"] == (PICKLE_FORMAT if allow_pickle else FORMAT_VERSION)
    learner, state = TiDALActiveLearner.load(path, return_metadata=True, allow_pickle=allow_pickle)
    step = state["step"]
    assert step in steps, f"step {step}, expected one of {steps} (seed {seed})"
    n = N_INITIAL + BATCH * step  # whole batches: never a part of one
    np.testing.assert_array_equal(learner.X_training, X[:n], err_msg=f"seed {seed}")
    np.testing.assert_array_equal(learner.y_training, y[:n], err_msg=f"seed {seed}")
    np.testing.assert_allclose(learner.predict_proba(X[PROBE]), state["probe"], rtol=1e-5, atol=1e-7)
    # a killed save may leave its temporary file, nothing else
    assert all(f == path or f.name.startswith(f".{path.name}.") for f in path.parent.iterdir())
    return step


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fork are POSIX")
@FORMATS
def test_a_killed_loop_leaves_the_state_before_or_after_a_step(tmp_path, allow_pickle):
    """SIGKILL at random moments of ``teach`` and of ``save``, and between a save's write and its
    rename; after each kill the file holds a whole step, and the loop, restarted from the file
    each time, ends with every batch taught once. In format 2 (a zip archive streamed to the
    temporary file) and in format 1 (a pickle)."""
    fmt = "pickle" if allow_pickle else "format2"
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "learner.ckpt"
    X, y = kill_data()
    with ForkServer(SETUP, LOOP) as loop:
        loop.start(path, "plain", fmt)
        _, _, taught, saved = loop.wait_for("saved 1")
        duration = {"teach ": float(taught), "save ": float(saved), "replacing": 0}
        for i, kill_in in enumerate(["teach ", "save ", "replacing", "teach ", "save ", "save "]):
            if i:  # a restart
                loop.start(path, "slow-replace" if kill_in == "replacing" else "plain", fmt)
            loop.wait_for(kill_in)
            time.sleep(rng.uniform(0, duration[kill_in]))
            loop.kill()
            steps = possible_steps(loop.lines)
            # held before its rename, the new file is complete but must not count yet
            expected = {min(steps)} if kill_in == "replacing" else steps
            check_checkpoint(path, X, y, expected, seed, allow_pickle)
        loop.start(path, "plain", fmt)
        loop.wait()
    assert check_checkpoint(path, X, y, {STEPS}, seed, allow_pickle) == STEPS
