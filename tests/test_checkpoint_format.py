"""Format 2 of learner checkpoints (tidal_modal.checkpoint): its layout, a load that runs no pickle,
what it refuses and why, files that name classes out of their place, and round trips of random
learners and metadata (Hypothesis)."""

import _pickle
import functools
import io
import json
import math
import pickle
import random
import struct
import sys
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from enum import IntEnum
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
import safetensors.torch
import skorch
import torch
from hypothesis import HealthCheck, given, settings
from modAL.uncertainty import margin_sampling
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit
from torch import nn

from tidal_modal import (
    CheckpointError,
    TiDALActiveLearner,
    TiDALNetClassifier,
    disal,
    tidal_entropy,
    tidal_margin,
)
from tidal_modal.checkpoint import MAGIC, check_metadata, read_header

from .models import MLP, OwnHead

pytestmark = pytest.mark.modal


def make_data(n=80, n_features=4, n_classes=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(dtype)
    y = (X[:, :n_classes].argmax(axis=1) + (rng.random(n) < 0.1)) % n_classes
    return X, y.astype(np.int64)


def sequential(n_features=4, n_classes=3):
    return nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, n_classes))


def payload(path):
    """The zip archive inside a checkpoint of format 2, and where it starts in the file."""
    data = Path(path).read_bytes()
    start = data.index(b"\n", len(MAGIC)) + 1
    return zipfile.ZipFile(io.BytesIO(data[start : -struct.calcsize(">Q32s15s")])), start


def rewrite_document(path, change):
    """Edit ``learner.json`` inside a checkpoint and write the checksum again: a file crafted to
    pass the checks, as someone could hand one over."""
    import hashlib

    archive, start = payload(path)
    document = json.loads(archive.read("learner.json"))
    change(document)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as new:
        for info in archive.infolist():
            data = json.dumps(document).encode() if info.filename == "learner.json" else archive.read(info)
            new.writestr(info.filename, data)
    body = out.getvalue()
    trailer = struct.pack(">Q32s15s", len(body), hashlib.sha256(body).digest(), b"TIDAL-MODAL-END")
    Path(path).write_bytes(Path(path).read_bytes()[:start] + body + trailer)


def find(value, tag):
    """Every ``{tag: ...}`` entry in a decoded ``learner.json``."""
    if isinstance(value, dict):
        if set(value) == {tag}:
            yield value
        for item in value.values():
            yield from find(item, tag)
    elif isinstance(value, list):
        for item in value:
            yield from find(item, tag)


# --- learners of several kinds --------------------------------------------------------------


def hook(module, args, output):  # a forward hook of the user's, at the top level of a module
    return output


def learner_of(kind, tmp_path):
    """A fitted learner of ``kind``, and the pool it queries."""
    X, y = make_data()
    common = {"classes": [0, 1, 2], "max_epochs": 3, "lr": 0.1, "verbose": 0}
    X_training = X[:30]
    if kind == "sequential":
        net = TiDALNetClassifier(sequential(), **common)
    elif kind == "module-class":  # Adam's state, a callback with state, a validation split
        net = TiDALNetClassifier(
            MLP,
            module__n_features=4,
            module__hidden=8,
            module__n_classes=3,
            optimizer=torch.optim.Adam,
            callbacks=[("stop", EarlyStopping(patience=2, load_best=True))],
            train_split=ValidSplit(0.25, random_state=0),
            **{**common, "max_epochs": 6},
        )
    elif kind == "memmap":  # rows added to a memory-mapped labeled set are held in a RowStack
        np.save(tmp_path / "X.npy", X[:30])
        X_training = np.load(tmp_path / "X.npy", mmap_mode="r")
        net = TiDALNetClassifier(sequential(), **common)
    elif kind == "tensor":
        X, X_training = torch.from_numpy(X), torch.from_numpy(X[:30])
        net = TiDALNetClassifier(sequential(), **common)
    elif kind == "own-head":  # the module's own TD head: the net has no td_head_
        net = TiDALNetClassifier(OwnHead, module__n_features=4, module__n_classes=3, **common)
    elif kind == "unfitted":
        net = TiDALNetClassifier(sequential(), **common)
        return TiDALActiveLearner(net, tidal_margin), X, y
    learner = TiDALActiveLearner(net, tidal_margin, X_training=X_training, y_training=y[:30])
    learner.teach(X[30:40], y[30:40])
    return learner, X, y


KINDS = ["sequential", "module-class", "memmap", "tensor", "own-head", "unfitted"]


def forbid_pickle(monkeypatch):
    """Make every way of unpickling raise, torch.load included unless it is weights_only."""

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled during a load of format 2")

    class Refused:
        def __init__(self, *args, **kwargs):
            refuse()

    for module in (pickle, _pickle):
        for name in ("load", "loads"):
            monkeypatch.setattr(module, name, refuse)
        monkeypatch.setattr(module, "Unpickler", Refused)
    monkeypatch.setattr(pickle, "_Unpickler", Refused)
    monkeypatch.setattr(pickle, "_load", refuse)
    monkeypatch.setattr(pickle, "_loads", refuse)
    torch_load = torch.load

    def weights_only_load(*args, weights_only=None, **kwargs):
        if weights_only is not True:
            refuse()
        return torch_load(*args, weights_only=True, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    monkeypatch.setattr(torch.serialization, "load", weights_only_load)
    monkeypatch.setattr(TiDALNetClassifier, "__setstate__", refuse)
    monkeypatch.setattr(skorch.NeuralNet, "__setstate__", refuse)
    read_array = np.lib.format.read_array

    def read_array_without_pickle(*args, allow_pickle=False, **kwargs):
        assert allow_pickle is False
        return read_array(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(np.lib.format, "read_array", read_array_without_pickle)


def assert_same_value(a, b, where="value"):
    """Equal all the way down: tensors and arrays by value (NaN equal to NaN), types alike."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.nan_to_num(), b.nan_to_num()), (
            where
        )
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: {list(a)} != {list(b)}"
        for key in a:
            assert_same_value(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, z) in enumerate(zip(a, b, strict=True)):
            assert_same_value(x, z, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def untimed(value):
    """A history or a callback's attributes without the clock's readings (``dur``, epoch start)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in ("dur", "epoch_start_time_")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def assert_same_learner(loaded, learner, X, y, timed=True):
    """The loaded learner answers as the saved one; ``timed``: also with the same clock readings."""
    clock = (lambda value: value) if timed else untimed
    assert type(loaded) is type(learner) and loaded.query_strategy is learner.query_strategy
    for name in ("X_training", "y_training"):
        saved, back = getattr(learner, name), getattr(loaded, name)
        if saved is None:
            assert back is None
            continue
        saved, back = np.asarray(saved), np.asarray(back)
        assert back.dtype == saved.dtype
        np.testing.assert_array_equal(back, saved)
    net, back = learner.estimator, loaded.estimator
    assert back.initialized_ == net.initialized_
    if not net.initialized_:
        return
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
    if net.td_head_ is not None:
        np.testing.assert_array_equal(back.predict_td(X), net.predict_td(X))
    else:
        assert back.td_head_ is None and back.td_taps_ == []
    pool = X[40:]
    kwargs = {"n_instances": 5, "pool_subset": 30, "random_tie_break": True, "random_state": 0}
    np.testing.assert_array_equal(loaded.query(pool, **kwargs)[0], learner.query(pool, **kwargs)[0])
    assert_same_value(clock(list(back.history)), clock(list(net.history)), "history")
    assert_same_value(back.optimizer_.state_dict(), net.optimizer_.state_dict(), "optimizer")
    assert_same_value(back.training_dynamics_, net.training_dynamics_, "training dynamics")
    assert type(back.trajectory_) is type(net.trajectory_)
    if net.trajectory_ is not None:
        assert_same_value(back.trajectory_.state_dict(), net.trajectory_.state_dict(), "trajectory")
    for (name, callback), (name_back, callback_back) in zip(net.callbacks_, back.callbacks_, strict=True):
        assert name == name_back and type(callback) is type(callback_back)
        assert_same_value(clock(vars(callback_back)), clock(vars(callback)), f"callback {name}")
    for key in ("classes_inferred_", "input_shape_", "n_features_in_", "embeds_input_"):
        assert_same_value(getattr(back, key, None), getattr(net, key, None), key)


def assert_same_training(loaded, learner, X, y):
    """Both learners trained on the same rows with the same random draws end up equal."""
    for each in (learner, loaded):
        torch.manual_seed(3)
        each.teach(X[40:50], y[40:50])
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
    assert_same_learner(loaded, learner, X, y, timed=False)


class TestLayout:
    def test_the_payload_is_a_zip_of_json_npy_and_safetensors(self, tmp_path):
        learner, X, y = learner_of("sequential", tmp_path)
        learner.save(tmp_path / "learner.ckpt", metadata={"cycle": 1})
        archive, _ = payload(tmp_path / "learner.ckpt")
        names = archive.namelist()
        assert names[0] == "learner.json" and "tensors.safetensors" in names
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        document = json.loads(archive.read("learner.json"))
        assert document["learner"]["class"] == "tidal_modal.learner:TiDALActiveLearner"
        net = document["learner"]["attributes"]["estimator"]["$net"]
        assert net["class"] == "tidal_modal.net:TiDALNetClassifier"
        assert net["params"]["optimizer"] == {"$import": "torch.optim.sgd:SGD"}
        assert learner.estimator.module is learner.estimator.module_  # described once, weights apart
        assert net["params"]["module"]["$module"]["class"] == "torch.nn.modules.container:Sequential"
        assert not any("key" in entry["$parameter"] for entry in find(net["params"], "$parameter"))
        x_member = document["learner"]["attributes"]["X_training"]["$npy"]
        with archive.open(x_member) as file:
            np.testing.assert_array_equal(np.lib.format.read_array(file, allow_pickle=False), X[:40])
        for name in ("module", "td_head"):
            saved = safetensors.torch.load(archive.read(net["weights"][name]))
            expected = getattr(learner.estimator, f"{name}_").state_dict()
            assert saved.keys() == expected.keys()
            assert all(torch.equal(saved[key], value) for key, value in expected.items())

    def test_the_same_learner_gives_the_same_payload(self, tmp_path):
        learner, _, _ = learner_of("sequential", tmp_path)
        for name in ("a.ckpt", "b.ckpt"):
            torch.manual_seed(0), np.random.seed(0), random.seed(0)  # noqa: NPY002 -- the saved states
            learner.save(tmp_path / name)
        a, b = (payload(tmp_path / name)[0].fp.getvalue() for name in ("a.ckpt", "b.ckpt"))
        assert a == b


class TestLoadRunsNoPickle:
    @pytest.mark.parametrize("kind", KINDS)
    def test_load_runs_no_pickle_and_gives_the_same_learner(self, tmp_path, monkeypatch, kind):
        learner, X, y = learner_of(kind, tmp_path)
        learner.save(tmp_path / "learner.ckpt")
        with monkeypatch.context() as patched:
            forbid_pickle(patched)
            loaded = TiDALActiveLearner.load(tmp_path / "learner.ckpt", restore_rng=True)
            assert_same_learner(loaded, learner, X, y)
        if kind == "unfitted":
            for each in (learner, loaded):
                torch.manual_seed(3)
                each.fit(X[:30], y[:30])
        assert_same_training(loaded, learner, X, y)

    def test_the_forbidding_catches_a_pickle(self, tmp_path, monkeypatch):
        """The patches of the test above do stop an unpickling load."""
        learner, _, _ = learner_of("sequential", tmp_path)
        learner.save(tmp_path / "learner.ckpt", allow_pickle=True)
        forbid_pickle(monkeypatch)
        with pytest.raises((AssertionError, CheckpointError), match="unpickled during a load"):
            TiDALActiveLearner.load(tmp_path / "learner.ckpt", allow_pickle=True)

    def test_a_memmap_learner_loads_its_rows_into_memory(self, tmp_path):
        learner, X, _ = learner_of("memmap", tmp_path)
        assert type(learner.X_training).__name__ == "RowStack"
        learner.save(tmp_path / "learner.ckpt")
        loaded = TiDALActiveLearner.load(tmp_path / "learner.ckpt")
        assert type(loaded.X_training) is np.ndarray and loaded.X_training.flags.writeable
        np.testing.assert_array_equal(loaded.X_training, X[:40])


# --- what format 2 refuses ------------------------------------------------------------------

MainNet = type("MainNet", (MLP,), {"__module__": "__main__"})  # as if defined in the script run


def local_module_class():
    class Local(MLP):
        pass

    return Local


def strategy_in_main(classifier, X_pool, n_instances=1, **kwargs):
    return np.arange(n_instances)


strategy_in_main.__module__ = "__main__"


def refused_learner(case):
    X, y = make_data()
    common = {"classes": [0, 1, 2], "max_epochs": 2, "verbose": 0}
    strategy = tidal_margin
    if case == "pipeline":
        estimator = make_pipeline(StandardScaler(), TiDALNetClassifier(sequential(), **common))
    elif case == "class-in-main":
        estimator = TiDALNetClassifier(MainNet, module__n_features=4, module__n_classes=3, **common)
    elif case == "local-class":
        estimator = TiDALNetClassifier(
            local_module_class(), module__n_features=4, module__n_classes=3, **common
        )
    elif case == "strategy-in-main":
        estimator, strategy = TiDALNetClassifier(sequential(), **common), strategy_in_main
    elif case == "lr-scheduler":
        scheduler = LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=2)
        estimator = TiDALNetClassifier(sequential(), callbacks=[scheduler], **common)
    elif case == "module-with-hook":
        module = sequential()
        module[0].register_forward_hook(hook)
        estimator = TiDALNetClassifier(module, **common)
    return TiDALActiveLearner(estimator, strategy, X_training=X[:30], y_training=y[:30])


REFUSED = {
    "pipeline": r"learner\.estimator cannot be saved without pickle: it is a scikit-learn Pipeline",
    "class-in-main": r"learner\.estimator\.module cannot be saved without pickle: it is MainNet, defined "
    r"in __main__ \(the script being run\), which another process cannot import\. Define it in a module",
    "local-class": r"learner\.estimator\.module cannot be saved: it is .*Local, defined inside a function; "
    r"define it at the top level of a module\.$",
    "strategy-in-main": r"query strategy \(learner\.query_strategy\) cannot be saved: it is "
    r"strategy_in_main, defined in __main__.*functools\.partial",
    "lr-scheduler": r"learner\.estimator\.callbacks\[0\] cannot be saved without pickle: it is a "
    r"skorch\.callbacks\.lr_scheduler\.LRScheduler whose attributes are not its constructor's parameters "
    r"\(step_size\)",
    "module-with-hook": r"learner\.estimator\.module\.0 \(Linear\) cannot be saved without pickle: it is a "
    r"module with hooks registered on it \(_forward_hooks",
}


class TestRefused:
    @pytest.mark.parametrize("case", REFUSED)
    def test_refused_before_anything_is_written_naming_what_and_why(self, tmp_path, monkeypatch, case):
        # as in a script that defines them: pickle finds them in __main__ (in this process only)
        monkeypatch.setattr(sys.modules["__main__"], "MainNet", MainNet, raising=False)
        monkeypatch.setattr(sys.modules["__main__"], "strategy_in_main", strategy_in_main, raising=False)
        path = tmp_path / "learner.ckpt"
        path.write_bytes(b"the previous checkpoint")
        learner = refused_learner(case)
        with pytest.raises(TypeError, match=REFUSED[case]) as error:
            learner.save(path)
        assert path.read_bytes() == b"the previous checkpoint" and list(tmp_path.iterdir()) == [path]
        message = str(error.value)
        if case == "local-class":
            assert "allow_pickle" not in message  # pickle cannot save it either
            return
        if case != "strategy-in-main":
            assert "with allow_pickle=True, which writes the pickled format (format 1)" in message
        learner.save(path, allow_pickle=True)
        assert read_header(path)["format"] == 1
        with pytest.raises(CheckpointError, match=r"load it with load\(path, allow_pickle=True\)"):
            TiDALActiveLearner.load(path)
        X, _ = make_data()
        loaded = TiDALActiveLearner.load(path, allow_pickle=True)
        np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))

    def test_a_lambda_in_the_nets_parameters_is_named(self, tmp_path):
        X, y = make_data()
        net = TiDALNetClassifier(sequential(), max_epochs=1, verbose=0, predict_nonlinearity=lambda x: x)
        learner = TiDALActiveLearner(net, X_training=X[:20], y_training=y[:20])
        with pytest.raises(
            TypeError, match=r"learner\.estimator\.predict_nonlinearity cannot be saved: it is a lambda"
        ):
            learner.save(tmp_path / "learner.ckpt")
        assert list(tmp_path.iterdir()) == []


# --- a file that names what it should not ---------------------------------------------------


def set_module_class(path_in_file):
    """The class of the module instance (an ``nn.Sequential``)."""

    def change(document):
        module = document["learner"]["attributes"]["estimator"]["$net"]["params"]["module"]
        module["$module"]["class"] = path_in_file

    return change


def set_module_param(path_in_file):
    """The module given as a class (``module=MLP``)."""

    def change(document):
        document["learner"]["attributes"]["estimator"]["$net"]["params"]["module"] = {"$import": path_in_file}

    return change


def set_callback_class(path_in_file):
    def change(document):
        (entry,) = (e for e in find(document, "$object") if "EarlyStopping" in e["$object"]["class"])
        entry["$object"]["class"] = path_in_file

    return change


def add_callback(path_in_file):
    def change(document):
        document["learner"]["attributes"]["estimator"]["$net"]["params"]["callbacks"].append(
            {"$tuple": ["extra", {"$import": path_in_file}]}
        )

    return change


def set_net_class(path_in_file):
    def change(document):
        document["learner"]["attributes"]["estimator"]["$net"]["class"] = path_in_file

    return change


def set_strategy(path_in_file):
    def change(document):
        document["learner"]["attributes"]["query_strategy"] = {"$import": path_in_file}

    return change


class TestCraftedFiles:
    @pytest.mark.parametrize(
        "kind, change, message",
        [
            (
                "sequential",
                set_module_class("os:system"),
                r"os:system is not a subclass of torch\.nn\.modules",
            ),
            (
                "sequential",
                set_module_class("collections:OrderedDict"),
                "collections:OrderedDict is not a sub",
            ),
            (
                "module-class",
                set_module_param("os:system"),
                r"the net's module is <.*>, not a torch\.nn\.Module",
            ),
            (
                "module-class",
                set_callback_class("subprocess:Popen"),
                r"subprocess:Popen is not a subclass of skor",
            ),
            (
                "module-class",
                add_callback("subprocess:Popen"),
                r"the net's callbacks is .*, not None or a list of",
            ),
            (
                "sequential",
                set_net_class("builtins:dict"),
                r"builtins:dict is not a subclass of skorch\.net\.Neu",
            ),
            (
                "sequential",
                set_strategy("__main__:anything"),
                r"the import path '__main__:anything' is not one ",
            ),
            ("sequential", set_strategy("os:environ"), r"os:environ is neither a class nor a function"),
        ],
        ids=[
            "function-as-module",
            "class-as-module",
            "function-as-module-class",
            "popen-as-callback",
            "popen-class-as-callback",
            "dict-as-net",
            "main",
            "not-callable",
        ],
    )
    def test_a_class_out_of_its_place_is_refused_before_it_is_called(
        self, tmp_path, monkeypatch, kind, change, message
    ):
        learner, _, _ = learner_of(kind, tmp_path)
        learner.save(tmp_path / "learner.ckpt")
        rewrite_document(tmp_path / "learner.ckpt", change)
        import os
        import subprocess

        def called(*args, **kwargs):
            raise AssertionError("called what the file named")

        monkeypatch.setattr(os, "system", called)
        monkeypatch.setattr(subprocess.Popen, "__init__", called)
        prefix = r"which this tidal_modal .* cannot load: CheckpointError: "
        with pytest.raises(CheckpointError, match=prefix + message):
            TiDALActiveLearner.load(tmp_path / "learner.ckpt")

    def test_an_unknown_entry_is_refused(self, tmp_path):
        learner, _, _ = learner_of("sequential", tmp_path)
        learner.save(tmp_path / "learner.ckpt")

        def change(document):
            document["learner"]["attributes"]["on_transformed"] = {"$reduce": ["os", "system"]}

        rewrite_document(tmp_path / "learner.ckpt", change)
        with pytest.raises(
            CheckpointError, match=r"unknown entry '\$reduce' \(written by a newer tidal_modal\?\)"
        ):
            TiDALActiveLearner.load(tmp_path / "learner.ckpt")


# --- metadata: whatever JSON gives back equal, and nothing else ---------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


class Colour(IntEnum):
    RED = 1


not_json = st.sampled_from(
    [
        (1, 2),
        np.int64(1),
        np.float64(0.5),
        np.bool_(True),
        np.arange(2),
        {1: "a"},
        {None: 1},
        {True: 1},
        {(1, 2): 3},
        {1, 2},
        frozenset(),
        float("nan"),
        float("inf"),
        -float("inf"),
        OrderedDict(a=1),
        Colour.RED,
        torch.tensor(1.0),
        b"bytes",
        1j,
    ]
)
# one bad value or more, somewhere among good ones
with_bad_values = st.recursive(
    not_json,
    lambda bad: (
        st.builds(
            lambda good, value, i: [*good[:i], value, *good[i:]],
            st.lists(json_values, max_size=3),
            bad,
            st.integers(0, 3),
        )
        | st.builds(
            lambda good, key, value: {**good, key: value},
            st.dictionaries(st.text(max_size=5), json_values, max_size=3),
            st.text(max_size=5),
            bad,
        )
    ),
    max_leaves=4,
)


def same(a, b):
    """Equal, and of the same types all the way down (1 == 1.0 == True, but not here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


@pytest.fixture(scope="module")
def small_learner():
    X, y = make_data(n=20)
    net = TiDALNetClassifier(sequential(), classes=[0, 1, 2], max_epochs=1, verbose=0)
    return TiDALActiveLearner(net, X_training=X, y_training=y)


class TestMetadata:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(metadata=json_values, allow_pickle=st.booleans())
    def test_json_metadata_loads_back_equal(self, small_learner, metadata, allow_pickle):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "learner.ckpt"
            small_learner.save(path, metadata=metadata, allow_pickle=allow_pickle)
            assert same(read_header(path)["metadata"], metadata)
            _, loaded = TiDALActiveLearner.load(path, return_metadata=True, allow_pickle=allow_pickle)
            assert same(loaded, metadata)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(metadata=with_bad_values, allow_pickle=st.booleans())
    def test_other_metadata_is_refused_and_the_file_stays(self, small_learner, metadata, allow_pickle):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "learner.ckpt"
            small_learner.save(path, metadata={"kept": True}, allow_pickle=allow_pickle)
            before = path.read_bytes()
            with pytest.raises(
                (TypeError, ValueError), match=r"^metadata must be JSON data that loads back equal: metadata"
            ):
                small_learner.save(path, metadata=metadata, allow_pickle=allow_pickle)
            assert path.read_bytes() == before and list(Path(folder).iterdir()) == [path]

    def test_the_message_names_the_place_and_the_fix(self):
        with pytest.raises(
            TypeError, match=r"metadata\['runs'\]\[1\]\['seed'\] is a numpy scalar \(numpy\.int64\)"
        ):
            check_metadata({"runs": [{"seed": 1}, {"seed": np.int64(2)}]})
        with pytest.raises(
            TypeError, match=r"metadata\['by_cycle'\] has the key 3 \(a int\).*load as the string '3'"
        ):
            check_metadata({"by_cycle": {3: [1, 2]}})
        cycle = []
        cycle.append(cycle)
        with pytest.raises(ValueError, match=r"metadata\[0\] contains itself"):
            check_metadata(cycle)
        shared = [1]
        check_metadata({"a": shared, "b": shared})  # the same list twice is no cycle


# --- round trips of random learners ------------------------------------------------------------

STRATEGIES = {
    "tidal_entropy": tidal_entropy,
    "tidal_margin": tidal_margin,
    "partial": functools.partial(tidal_entropy, random_tie_break=True),
    "disal": disal,  # reads the trajectory
    "modal-margin": margin_sampling,  # modAL's own
}


@settings(max_examples=25, deadline=None)
@given(
    n_labeled=st.integers(4, 24),
    n_classes=st.integers(2, 3),
    seed=st.integers(0, 2**16),
    strategy=st.sampled_from(sorted(STRATEGIES)),
    dtype=st.sampled_from([np.float32, np.float64]),
    teach=st.booleans(),
    warm_start=st.booleans(),
    metadata=json_values,
    allow_pickle=st.booleans(),
)
def test_a_saved_learner_loads_back_the_same(
    n_labeled, n_classes, seed, strategy, dtype, teach, warm_start, metadata, allow_pickle
):
    X, y = make_data(n=n_labeled + 40, n_classes=n_classes, seed=seed, dtype=dtype)
    torch.manual_seed(seed)
    net = TiDALNetClassifier(
        sequential(n_classes=n_classes), max_epochs=2, lr=0.1, warm_start=warm_start, verbose=0
    )
    learner = TiDALActiveLearner(
        net, STRATEGIES[strategy], X_training=X[:n_labeled], y_training=y[:n_labeled]
    )
    pool = X[n_labeled:]
    kwargs = {} if strategy == "modal-margin" else {"random_state": 0, "random_tie_break": True}
    if teach:
        idx, rows = learner.query(pool, n_instances=3, **kwargs)
        learner.teach(rows, y[n_labeled:][idx])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "learner.ckpt"
        learner.save(path, metadata=metadata, allow_pickle=allow_pickle)
        loaded, back = TiDALActiveLearner.load(path, return_metadata=True, allow_pickle=allow_pickle)
    assert same(back, metadata)
    assert loaded.query_strategy == learner.query_strategy or strategy == "partial"
    for name in ("X_training", "y_training"):
        saved, restored = getattr(learner, name), getattr(loaded, name)
        assert restored.dtype == saved.dtype
        np.testing.assert_array_equal(restored, saved)
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
    next_query = [each.query(pool, n_instances=3, **kwargs)[0] for each in (learner, loaded)]
    np.testing.assert_array_equal(*next_query)
    for each in (learner, loaded):  # and the loop goes on alike
        torch.manual_seed(seed)
        each.teach(pool[:2], y[n_labeled : n_labeled + 2])
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))


# --- devices ---------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_a_learner_on_the_gpu_loads_on_the_gpu(tmp_path):
    X, y = make_data()
    net = TiDALNetClassifier(
        sequential(), classes=[0, 1, 2], max_epochs=2, optimizer=torch.optim.Adam, device="cuda", verbose=0
    )
    learner = TiDALActiveLearner(net, X_training=X[:30], y_training=y[:30])
    learner.save(tmp_path / "learner.ckpt")
    loaded = TiDALActiveLearner.load(tmp_path / "learner.ckpt", restore_rng=True)
    back = loaded.estimator
    assert back.module_[0].weight.device.type == "cuda" and back.td_head_.weight.device.type == "cuda"
    state = next(iter(back.optimizer_.state_dict()["state"].values()))
    assert state["exp_avg"].device.type == "cuda"
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
    np.testing.assert_array_equal(back.predict_td(X), net.predict_td(X))


@pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a GPU does")
def test_a_learner_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    learner, X, _ = learner_of("module-class", tmp_path)
    learner.save(tmp_path / "learner.ckpt")

    def on_the_gpu(document):  # what a save on a GPU writes
        document["learner"]["attributes"]["estimator"]["$net"]["params"]["device"] = "cuda"
        for entry in find(document, "$tensor"):
            entry["$tensor"]["device"] = "cuda:0"

    rewrite_document(tmp_path / "learner.ckpt", on_the_gpu)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = TiDALActiveLearner.load(tmp_path / "learner.ckpt")
    assert sorted(str(w.message)[:60] for w in caught) == [  # one warning each
        "Tensors saved on cuda:0 are loaded on the CPU: this machine ",
        "The net was saved with device='cuda', this machine has no CU",
    ]
    assert loaded.estimator.device == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))
