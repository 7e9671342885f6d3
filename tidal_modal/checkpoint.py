"""One file that holds a whole active learner, written atomically and readable by a new process.

A human's labels are the expensive part of active learning, so a labeling loop saves its learner
after every ``teach`` (:meth:`TiDALActiveLearner.save <tidal_modal.TiDALActiveLearner.save>`) and,
after a crash, starts again from the file (:meth:`TiDALActiveLearner.load
<tidal_modal.TiDALActiveLearner.load>`). A file is::

    TIDAL-MODAL LEARNER CHECKPOINT\\n    magic line
    {"format": 2, "tidal_modal": ...}\\n header: one line of JSON
    <payload>                           format 2: a zip archive; format 1: a pickle
    <length><SHA-256>TIDAL-MODAL-END    trailer: 8-byte big-endian length, 32-byte digest, marker

The header comes first, so that a file is identified, and the release that wrote it named,
without reading its payload (:func:`read_header`). The checksum comes last, so that the payload
is streamed straight to disk (a labeled set of images is not held twice in memory) and a damaged
or truncated payload is refused before anything in it is read.

**Format 2** (what ``save`` writes) loads without pickle. Its payload is an uncompressed zip
archive of JSON, ``.npy`` arrays and ``safetensors`` tensors::

    learner.json                      the learner, described in JSON (below)
    arrays/<n>-<where>.npy            numpy arrays: X_training, y_training, classes_inferred_,
                                      the training dynamics, numpy's random state, ...
    weights/<n>/<name>.safetensors    the state dict of each of a net's modules (module, td_head,
                                      criterion)
    tensors.safetensors               the other tensors: optimizer state, torch's random state, ...

``learner.json`` holds the learner's class and attributes; the net as its class, its constructor
parameters (``get_params``) and its fitted state (optimizer state, history, the callbacks'
state, ``classes_inferred_``, ``input_shape_``, the training dynamics and trajectory, ...).
Classes and functions (the module's class, the query strategy, the optimizer) are stored by
import path and imported again by ``load``; a module passed as an instance (an
``nn.Sequential`` of layers) is described by the classes and settings of its layers;
``functools.partial`` keeps its arguments. ``load`` reads arrays with ``allow_pickle=False`` and
tensors with ``safetensors``, imports the classes and functions the file names (a module
class must be a ``torch.nn.Module``, an optimizer a ``torch.optim.Optimizer``, ...), and builds
the net through its constructor and ``initialize``. It never unpickles, and opening a file runs
none of its content; the file does choose, as a configuration file would, which installed
functions the loaded learner calls later (its strategy at ``query``, a ``collate_fn`` at ``fit``).
What format 2 cannot describe, ``save`` refuses, before anything is written, with an error that
names it (see :func:`save_learner`).

**Format 1** (``save(path, allow_pickle=True)``, and every file of tidal_modal 0.1.0 and 0.2.0)
is a pickle of the learner and the random generators' states. Unpickling can run any code, so
``load`` reads it only with ``allow_pickle=True``: only for files you trust.

A save writes a temporary file next to the target, flushes it to disk (``fsync``), renames it
over the target (``os.replace``, atomic) and flushes the directory, so the target is at any moment
either the previous complete file or the new complete one, even if the process is killed or the
machine loses power. A save that raises removes its temporary file; a process killed during a
save can leave one (``.<name>.<pid>.<random>.tmp``) that is safe to delete.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from torch import nn
>>> from tidal_modal import TiDALActiveLearner, TiDALNetClassifier
>>> X_pool = np.random.RandomState(0).randn(200, 4).astype("float32")
>>> y_pool = (X_pool[:, 0] > 0).astype("int64")  # what a human would answer
>>> path = os.path.join(tempfile.mkdtemp(), "learner.ckpt")
>>> def make_learner():
...     module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
...     net = TiDALNetClassifier(module, max_epochs=2, verbose=0)
...     return TiDALActiveLearner(net, X_training=X_pool[:10], y_training=y_pool[:10])
>>> if os.path.exists(path):  # a restart: carry on from the last completed cycle
...     learner, state = TiDALActiveLearner.load(path, return_metadata=True)
... else:
...     learner, state = make_learner(), {"labeled": list(range(10))}
>>> while len(state["labeled"]) < 30:
...     unlabeled = np.setdiff1d(np.arange(len(X_pool)), state["labeled"])
...     idx, rows = learner.query(X_pool[unlabeled], n_instances=5, random_state=0)
...     learner.teach(rows, y_pool[unlabeled[idx]])
...     state["labeled"] += unlabeled[idx].tolist()
...     learner.save(path, metadata=state)  # the labels and the pool's bookkeeping, together
>>> header = read_header(path)
>>> header["format"], header["metadata"]["labeled"][-5:] == state["labeled"][-5:]
(2, True)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import platform
import random
import re
import secrets
import struct
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

__all__ = [
    "FORMAT_VERSION",
    "PICKLE_FORMAT",
    "CheckpointError",
    "check_metadata",
    "load_learner",
    "read_header",
    "save_learner",
    "write_atomically",
]

FORMAT_VERSION = 2  # the newest format, written by default: loads without pickle
PICKLE_FORMAT = 1  # save(..., allow_pickle=True), and the files of tidal_modal 0.1.0 and 0.2.0
MAGIC = b"TIDAL-MODAL LEARNER CHECKPOINT\n"
_END = b"TIDAL-MODAL-END"
_TRAILER = struct.Struct(">Q32s15s")  # payload length, SHA-256 of the payload, _END
# Pinned rather than HIGHEST_PROTOCOL, so that a file written by a newer Python stays readable
_PICKLE_PROTOCOL = 5
_DOCUMENT = "learner.json"
_TENSORS = "tensors.safetensors"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed date: the same learner gives the same archive
_CHUNK_BYTES = 16 << 20  # arrays are written in pieces of about this size


class CheckpointError(ValueError):
    """A file that is not a learner checkpoint, is damaged, needs a newer tidal_modal, or is a
    pickle that is loaded only with ``allow_pickle=True``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from tidal_modal import CheckpointError, TiDALActiveLearner
    >>> path = Path(tempfile.mkdtemp()) / "not-a-checkpoint.ckpt"
    >>> _ = path.write_text("hello")
    >>> try:
    ...     TiDALActiveLearner.load(path)
    ... except CheckpointError as error:
    ...     print("refused")
    refused
    """


def _library_version() -> str:
    from . import __version__  # at call time: the package imports this module before defining it

    return __version__


# --- random generators ----------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    """The states of the global generators that training and querying draw from.

    torch's (a net's initial weights and batch shuffling; CUDA's only once CUDA is in use,
    since asking for it would start CUDA), numpy's legacy global generator (modAL's own
    strategies and ``random_state=None``) and Python's :mod:`random`.
    """
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 -- the global generator is the one to save
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`_rng_state`; CUDA's if the devices match."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    cuda = state["torch_cuda"]
    if cuda is None:
        return
    if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    else:
        warnings.warn(
            f"The checkpoint holds the random states of {len(cuda)} CUDA device(s), this machine has "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}; CUDA's are not restored.",
            UserWarning,
            stacklevel=3,
        )


# --- metadata: JSON that reads back equal ------------------------------------------------------


def _metadata_problem(value: Any) -> tuple[str, str]:
    """``(what value is, how to fix it)`` for a value JSON would not give back equal."""
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__name__
    if isinstance(value, np.ndarray):
        return "a numpy array", "convert it with .tolist()"
    if isinstance(value, np.generic):
        return f"a numpy scalar ({name})", "convert it with .item(), int(...) or float(...)"
    if isinstance(value, torch.Tensor):
        return "a torch tensor", "convert it with .tolist()"
    if kind is tuple:
        return "a tuple", "JSON has no tuples (it would load as a list): give a list"
    if kind in (set, frozenset):
        return f"a {kind.__name__}", "JSON has no sets: give a list, e.g. sorted(...)"
    if isinstance(value, dict):
        return f"a {name} (a subclass of dict)", "it would load as a plain dict: give dict(...)"
    if isinstance(value, list):
        return f"a {name} (a subclass of list)", "it would load as a plain list: give list(...)"
    for base in (bool, int, float, str):
        if isinstance(value, base):
            plain = base.__name__
            return f"a {name} (a subclass of {plain})", f"it would load as a plain {plain}: give {plain}(...)"
    return f"a {name}", "give its data as dicts, lists, strings, numbers, booleans and None"


def check_metadata(metadata: Any) -> None:
    """Refuse ``metadata`` that JSON would not give back equal, naming where and how to fix it.

    Accepted: ``None``, ``bool``, ``int``, finite ``float``, ``str``, and ``list`` / ``dict``
    (with ``str`` keys) of them, exactly these types (no subclasses, no numpy scalars, no
    tuples: they would load as something else). Non-finite floats are refused too: JSON has no
    NaN or infinity. :meth:`TiDALActiveLearner.save <tidal_modal.TiDALActiveLearner.save>` calls
    this before anything is written.

    Raises
    ------
    TypeError
        A value of another type, or a dict key that is not a string: the message names its
        place, e.g. ``metadata['labeled'][3]``, and the conversion to apply.
    ValueError
        A NaN or infinite float, or a container that contains itself.

    Examples
    --------
    >>> check_metadata({"labeled": [3, 1, 4], "cycle": 2})
    >>> check_metadata({"cycle": (1, 2)})
    Traceback (most recent call last):
    ...
    TypeError: metadata must be JSON data that loads back equal: metadata['cycle'] is a tuple; ...
    """
    _check_metadata(metadata, "metadata", set())


def _check_metadata(value: Any, where: str, open_containers: set[int]) -> None:
    prefix = "metadata must be JSON data that loads back equal: "
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(
                f"{prefix}{where} is {value!r}, which JSON does not have (Python would write a "
                "non-standard token that other readers refuse). Give None or a string such as 'nan'."
            )
        return
    if kind not in (list, dict):
        what, fix = _metadata_problem(value)
        raise TypeError(f"{prefix}{where} is {what}; {fix}.")
    if id(value) in open_containers:
        raise ValueError(f"{prefix}{where} contains itself; JSON cannot hold a cycle.")
    open_containers.add(id(value))
    if kind is list:
        for i, item in enumerate(value):
            _check_metadata(item, f"{where}[{i}]", open_containers)
    else:
        for key, item in value.items():
            if type(key) is not str:
                if key is None or type(key) in (bool, int, float):
                    becomes = f"it would load as the string {next(iter(json.loads(json.dumps({key: 0}))))!r}"
                else:
                    becomes = "JSON cannot hold it"
                raise TypeError(
                    f"{prefix}{where} has the key {key!r} (a {type(key).__name__}): JSON keys are strings, "
                    f"so {becomes}. Use string keys, e.g. {str(key)!r}, or a list of [key, value] pairs."
                )
            _check_metadata(item, f"{where}[{key!r}]", open_containers)
    open_containers.discard(id(value))


# --- classes and functions by import path ---------------------------------------------------


class _Unsupported(Exception):
    """Something in a learner that format 2 cannot describe without pickle (internal)."""

    def __init__(self, where: str, what: str, fix: str = "", pickle_helps: bool = True) -> None:
        super().__init__(where, what, fix)
        self.where, self.what, self.fix, self.pickle_helps = where, what, fix, pickle_helps

    def error(self) -> TypeError:
        if self.where.startswith("learner.query_strategy"):
            return TypeError(
                f"The learner's query strategy ({self.where}) cannot be saved: it is {self.what}. A "
                "checkpoint stores a function by its module and name: define the strategy at the top level "
                "of a module that you import (not as a lambda, inside another function or in the script "
                "being run), and give it its settings with functools.partial(strategy, setting=...)."
                + (
                    " Or save with allow_pickle=True (a pickle, which loads only where the loading script "
                    "defines the strategy too)."
                    if self.pickle_helps
                    else ""
                )
            )
        if not self.pickle_helps:
            return TypeError(f"{self.where} cannot be saved: it is {self.what}; {self.fix}.")
        fix = f"{self.fix[0].upper()}{self.fix[1:]}; or save" if self.fix else "Save it"
        return TypeError(
            f"{self.where} cannot be saved without pickle: it is {self.what}. {fix} with "
            "allow_pickle=True, which writes the pickled format (format 1): load then needs "
            "allow_pickle=True too, and unpickling can run code, so load only files you trust."
        )


def _lookup(module_name: str, qualname: str) -> Any:
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _import_path(obj: Any, where: str) -> str:
    """``"module:qualname"`` of a class or function that importing it gives back, or refuse it."""
    module = getattr(obj, "__module__", None)
    names = [n for n in (getattr(obj, "__qualname__", None), getattr(obj, "__name__", None)) if n]
    shown = f"{module}.{names[0]}" if names else repr(obj)
    if not names or not isinstance(module, str):
        raise _Unsupported(
            where, f"{obj!r}, which has no import path", "give a class or function of a module"
        )
    if "<lambda>" in names[0]:
        raise _Unsupported(
            where,
            f"a lambda ({shown})",
            "a lambda has no name to import it by: define a function at the top level of a module",
            pickle_helps=False,
        )
    if "<locals>" in names[0]:
        raise _Unsupported(
            where,
            f"{shown}, defined inside a function",
            "define it at the top level of a module",
            pickle_helps=False,
        )
    if module == "__main__" or module.startswith("__main__."):
        raise _Unsupported(
            where,
            f"{names[0]}, defined in __main__ (the script being run), which another process cannot import",
            "define it in a module of your project and import it from there",
        )
    for name in names:
        with suppress(Exception):
            if _lookup(module, name) is obj:
                return f"{module}:{name}"
    raise _Unsupported(where, f"{shown}, which importing {module} does not give back")


def _resolve(path: str) -> Any:
    """The class or function ``"module:qualname"`` names (imported)."""
    module, _, qualname = str(path).partition(":")
    if not module or not qualname or module == "__main__" or module.startswith("__main__."):
        raise CheckpointError(f"the import path {path!r} is not one that save writes")
    try:
        return _lookup(module, qualname)
    except Exception as error:
        raise CheckpointError(
            f"cannot import {module}.{qualname} ({type(error).__name__}: {error})"
        ) from error


def _resolve_class(path: str, base: type | tuple[type, ...]) -> type:
    cls = _resolve(path)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        bases = base if isinstance(base, tuple) else (base,)
        expected = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)
        raise CheckpointError(f"{path} is not a subclass of {expected}, as its place in the file requires")
    return cls


# --- format 2: writing a learner as JSON, arrays and tensors ---------------------------------


def _role_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the net's parameter ``name`` in format 2 (``None``: it can).

    These are the parameters that ``initialize`` (or a fit) calls: a file may name only classes
    of the kind each place takes, so that loading one constructs nothing else.
    """
    from skorch.callbacks import Callback
    from torch.utils.data import DataLoader, Dataset

    def subclass(value: Any, base: type) -> bool:
        value = value.func if type(value) is functools.partial else value
        return isinstance(value, type) and issubclass(value, base)

    def callback(entry: Any) -> bool:
        if type(entry) is tuple and len(entry) == 2 and type(entry[0]) is str:
            entry = entry[1]
        return isinstance(entry, Callback) or subclass(entry, Callback)

    def module(value: Any) -> bool:
        return isinstance(value, nn.Module) or subclass(value, nn.Module)

    def dataset(value: Any) -> bool:
        return isinstance(value, Dataset) or subclass(value, Dataset)

    def callbacks(value: Any) -> bool:
        return value is None or value == "disable" or (type(value) is list and all(map(callback, value)))

    modules = (module, "a torch.nn.Module class or instance")
    loaders = (functools.partial(subclass, base=DataLoader), "a torch DataLoader class")
    roles = {
        "module": modules,
        "criterion": modules,
        "optimizer": (
            functools.partial(subclass, base=torch.optim.Optimizer),
            "a torch.optim.Optimizer class",
        ),
        "iterator_train": loaders,
        "iterator_valid": loaders,
        "dataset": (dataset, "a torch Dataset class or instance"),
        "callbacks": (
            callbacks,
            "None or a list of skorch callbacks (instances, classes or (name, callback) pairs)",
        ),
    }
    if name not in roles:
        return None
    accepts, expected = roles[name]
    return None if accepts(value) else expected


@functools.cache
def _module_internals() -> frozenset:
    """The attributes every ``nn.Module`` has (registries of parameters, buffers, hooks)."""
    return frozenset(vars(nn.Module()))


def _stateful_classes() -> tuple[type, ...]:
    from .dynamics import TrainingDynamics
    from .trajectory import Trajectory

    return (TrainingDynamics, Trajectory)


def _object_classes() -> tuple[type, ...]:
    """Classes whose instances are saved by constructor parameters (and ``*_`` state)."""
    from skorch.callbacks import Callback
    from skorch.dataset import ValidSplit

    return (Callback, ValidSplit)


def _what(value: Any) -> str:
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__module__.startswith("sklearn") and hasattr(value, "get_params"):
        return (
            f"a scikit-learn {kind.__name__}, whose parts and fitted attributes only pickle can save "
            "(format 2 saves a TiDALNetClassifier as the estimator, or another skorch net)"
        )
    if kind.__module__.startswith("pandas"):
        return f"a pandas {kind.__name__} (format 2 saves numpy arrays and torch tensors)"
    if isinstance(value, types.MethodType):
        return f"a bound method ({value!r})"
    return f"a {name} object, which only pickle can save"


class _Encoder:
    """Turns a learner into JSON, with its arrays and tensors set aside for their own members."""

    def __init__(self) -> None:
        self.arrays: list[tuple[str, Any]] = []  # (member, ndarray or RowStack)
        self.groups: dict[str, dict[str, torch.Tensor]] = {_TENSORS: {}}  # member -> safetensors dict
        self.ids: dict[int, int] = {}  # id(object) -> its number in the file
        self.objects: list[Any] = []  # the numbered objects, alive while encoding
        self.open: set[int] = set()  # objects being encoded (a reference to one is a cycle)
        self.placeholders: set[int] = set()  # tensors saved in a module's state dict
        self.names: set[str] = set()

    def _member(self, where: str, suffix: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", where.removeprefix("learner.")).strip("_.")[:80] or "value"
        name = f"arrays/{len(self.names):04d}-{stem}{suffix}"
        self.names.add(name)
        return name

    def _number(self, obj: Any) -> int:
        self.ids[id(obj)] = number = len(self.objects)
        self.objects.append(obj)
        return number

    def _seen(self, obj: Any, where: str) -> dict | None:
        number = self.ids.get(id(obj))
        if number is None:
            return None
        if id(obj) in self.open:
            raise _Unsupported(where, "a reference back to an object that contains it (a cycle)")
        return {"$ref": number}

    def encode(self, value: Any, where: str) -> Any:
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if kind is list:
            return [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if kind is tuple:
            return {"$tuple": [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]}
        if kind is dict:
            if all(type(key) is str and not key.startswith("$") for key in value):
                return {key: self.encode(item, f"{where}[{key!r}]") for key, item in value.items()}
            return {"$items": self._items(value, where)}
        if kind is OrderedDict:
            return {"$odict": self._items(value, where)}
        if kind in (set, frozenset):
            items = [self.encode(item, f"{where} (an element)") for item in value]
            return {f"${kind.__name__}": sorted(items, key=lambda item: json.dumps(item, sort_keys=True))}
        if isinstance(value, np.generic):
            if value.dtype.kind in "biuf":
                return {"$npscalar": [value.dtype.str, self.encode(value.item(), where)]}
            return {"$npscalar": [value.dtype.str, self._array(np.asarray(value), where)]}
        if kind in (np.ndarray, np.memmap) or _is_row_stack(value):
            return self._array(value, where)
        if isinstance(value, torch.Tensor):
            return self._tensor(value, where)
        if kind is torch.dtype:
            return {"$dtype": str(value).removeprefix("torch.")}
        if kind is torch.device:
            return {"$device": str(value)}
        if kind is functools.partial:
            return self._partial(value, where)
        if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, np.ufunc)):
            return {"$import": _import_path(value, where)}
        seen = self._seen(value, where)
        if seen is not None:
            return seen
        from skorch import NeuralNet
        from skorch.history import History

        if isinstance(value, NeuralNet):
            return self._net(value, where)
        if isinstance(value, nn.Module):
            return self._module(value, where)
        if isinstance(value, _stateful_classes()):
            return self._stateful(value, where)
        if kind is History:
            return {"$history": [self.encode(row, f"{where}[{i}]") for i, row in enumerate(value)]}
        if isinstance(value, _object_classes()):
            return self._object(value, where)
        raise _Unsupported(where, _what(value))

    def _items(self, mapping: dict, where: str) -> list:
        return [
            [self.encode(key, f"{where} (a key)"), self.encode(item, f"{where}[{key!r}]")]
            for key, item in mapping.items()
        ]

    def _array(self, value: Any, where: str) -> dict:
        if value.dtype.hasobject:
            raise _Unsupported(
                where,
                "a numpy array of Python objects (dtype=object)",
                "convert it to a numeric or string dtype",
            )
        name = self._member(where, ".npy")
        self.arrays.append((name, value))
        return {"$npy": name}

    def _tensor(self, value: torch.Tensor, where: str) -> dict:
        seen = self._seen(value, where)
        if seen is not None:
            return seen
        if isinstance(value, (UninitializedParameter, UninitializedBuffer)):
            raise _Unsupported(
                where, "a parameter of a lazy module that has not run yet", "fit the learner before saving"
            )
        parameter = type(value) is nn.Parameter
        if (
            not (parameter or type(value) is torch.Tensor)
            or value.layout != torch.strided
            or (value.is_quantized or value.device.type == "meta")
        ):
            raise _Unsupported(where, f"a tensor of type {type(value).__name__} / layout {value.layout}")
        number = self._number(value)
        spec: dict[str, Any] = {"id": number}
        if id(value) in self.placeholders:  # its values are in a module's state dict
            spec.update(shape=list(value.shape), dtype=str(value.dtype).removeprefix("torch."))
        else:
            spec["key"] = key = str(number)
            self.groups[_TENSORS][key] = value
        if parameter or value.requires_grad:
            spec["requires_grad"] = value.requires_grad
        if value.device.type != "cpu":
            spec["device"] = str(value.device)
        return {"$parameter" if parameter else "$tensor": spec}

    def _partial(self, value: functools.partial, where: str) -> dict:
        if vars(value):
            raise _Unsupported(where, "a functools.partial with attributes of its own")
        return {
            "$partial": {
                "func": self.encode(value.func, f"{where}.func"),
                "args": [self.encode(arg, f"{where}.args[{i}]") for i, arg in enumerate(value.args)],
                "keywords": self.encode(dict(value.keywords), f"{where}.keywords"),
            }
        }

    def _module(self, module: nn.Module, where: str) -> dict:
        """An ``nn.Module`` instance: its class, its layers' settings, its parameters and buffers."""
        from torch.nn.modules.lazy import LazyModuleMixin

        from .modules import FeatureTap

        kind = type(module).__name__
        if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
            raise _Unsupported(where, f"a lazy {kind} that has not run yet", "fit the learner before saving")
        state = vars(module)
        taps = {
            key
            for name in ("_forward_hooks", "_forward_pre_hooks")
            for key, hook in state.get(name, {}).items()
            if isinstance(hook, FeatureTap)
        }
        kept = {"training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_modules"}
        for key in _module_internals() - kept:
            value = state.get(key)
            if not value or isinstance(value, bool) or (isinstance(value, dict) and set(value) <= taps):
                continue  # empty registries; the TD head's taps, which the net attaches again
            raise _Unsupported(
                f"{where} ({kind})",
                f"a module with hooks registered on it ({key}: {list(value.values())!r})",
                "hooks are functions that only pickle can save: remove them before saving, or give the "
                "net the module's class (module=MyModule) and register them in its __init__",
            )
        number = self._number(module)
        self.open.add(id(module))
        spec = {
            "id": number,
            "class": _import_path(type(module), f"{where} (a {kind})"),
            "training": module.training,
            "parameters": [[n, self.encode(p, f"{where}.{n}")] for n, p in module._parameters.items()],
            "buffers": [[n, self.encode(b, f"{where}.{n}")] for n, b in module._buffers.items()],
            "non_persistent": sorted(module._non_persistent_buffers_set),
            "modules": [[n, self.encode(m, f"{where}.{n}")] for n, m in module._modules.items()],
            "attributes": [
                [key, self.encode(value, f"{where}.{key}")]
                for key, value in state.items()
                if key not in _module_internals()
            ],
        }
        self.open.discard(id(module))
        return {"$module": spec}

    def _stateful(self, value: Any, where: str) -> dict:
        """The training dynamics and the trajectory: their class and ``__getstate__``."""
        number = self._number(value)
        return {
            "$state": {
                "id": number,
                "class": _import_path(type(value), where),
                "state": self.encode(value.__getstate__(), where),
            }
        }

    def _object(self, value: Any, where: str) -> dict:
        """A skorch callback or ``ValidSplit``: its class and constructor parameters."""
        import inspect

        kind = type(value)
        names = [
            name
            for name, parameter in inspect.signature(kind.__init__).parameters.items()
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]
        state = vars(value)
        extra = [key for key in state if key not in names and not key.endswith("_")]
        missing = [name for name in names if name not in state]
        if extra or missing:
            raise _Unsupported(
                where,
                f"a {kind.__module__}.{kind.__qualname__} whose attributes are not its constructor's "
                f"parameters ({', '.join(extra + missing)})",
            )
        number = self._number(value)
        self.open.add(id(value))
        params = {name: self.encode(state[name], f"{where}.{name}") for name in names}
        self.open.discard(id(value))
        return {"$object": {"id": number, "class": _import_path(kind, where), "params": params}}

    def _net(self, net: Any, where: str) -> dict:
        """A skorch net: class, constructor parameters, and what ``initialize`` does not rebuild."""
        number = self._number(net)
        self.open.add(id(net))
        state = dict(vars(net))
        initialized = bool(state.get("initialized_", False))
        params = net.get_params(deep=False)
        params.pop("_params_to_validate", None)  # the constructor derives it from the parameters
        modules = [*state.get("_modules", []), *state.get("_criteria", [])]
        optimizers = list(state.get("_optimizers", []))
        weights: dict[str, str | None] = {}
        for name in modules if initialized else ():
            module = state.get(f"{name}_")
            if module is None:
                weights[name] = None
                continue
            if not isinstance(module, nn.Module):
                raise _Unsupported(f"{where}.{name}_", _what(module))
            tensors = module.state_dict(keep_vars=True)
            if any(isinstance(t, (UninitializedParameter, UninitializedBuffer)) for t in tensors.values()):
                weights[name] = "lazy"  # not run yet (the TD head before the first fit): built anew
                continue
            self.placeholders.update(id(t) for t in tensors.values())
            weights[name] = member = f"weights/{number}/{name}.safetensors"
            self.groups[member] = dict(tensors)
        for key, value in params.items():
            expected = _role_problem(key, value)
            if expected is not None:
                raise _Unsupported(f"{where}.{key}", f"{value!r}, where format 2 takes {expected}")
        spec: dict[str, Any] = {
            "id": number,
            "class": _import_path(type(net), where),
            "initialized": initialized,
            "params": {key: self.encode(value, f"{where}.{key}") for key, value in params.items()},
            "weights": weights,
            "optimizers": {},
            "callbacks": {},
        }
        for name in optimizers if initialized else ():
            optimizer = state.get(f"{name}_")
            spec["optimizers"][name] = (
                None if optimizer is None else self.encode(optimizer.state_dict(), f"{where}.{name}_")
            )
        for name, callback in state.get("callbacks_") or () if initialized else ():
            attributes = {key: value for key, value in vars(callback).items() if key.endswith("_")}
            spec["callbacks"][name] = self.encode(attributes, f"{where}.callbacks_[{name!r}]")
        spec["history"] = self.encode(state.get("history_"), f"{where}.history")
        rebuilt = {f"{name}_" for name in [*modules, *optimizers]} | _REBUILT
        spec["attributes"] = {
            key: self.encode(value, f"{where}.{key}")
            for key, value in state.items()
            if key not in params and key not in rebuilt
        }
        self.open.discard(id(net))
        return {"$net": spec}

    def learner(self, learner: Any) -> dict:
        kind = type(learner)
        self._number(learner)
        self.open.add(id(learner))
        return {
            "class": _import_path(kind, f"learner (a {kind.__qualname__})"),
            "attributes": {key: self.encode(value, f"learner.{key}") for key, value in vars(learner).items()},
        }


# what a net's ``initialize`` builds again (besides its modules and optimizers), or the constructor
_REBUILT = frozenset(
    "_modules _criteria _optimizers _params_to_validate callbacks_ prefixes_ cuda_dependent_attributes_ "
    "init_context_ initialized_ virtual_params_ history_ td_taps_".split()
)


def _is_row_stack(value: Any) -> bool:
    from .pool import RowStack

    return type(value) is RowStack


def _array_parts(value: Any) -> list:
    """The arrays whose rows, one after another, make ``value`` (a RowStack's parts)."""
    return list(value.parts) if _is_row_stack(value) else [value]


def _write_npy(archive: zipfile.ZipFile, name: str, value: Any) -> None:
    """Write ``value`` as a ``.npy`` member, a few MB at a time (a memmap stays on disk)."""
    dtype, shape = np.dtype(value.dtype), tuple(int(n) for n in value.shape)
    header = io.BytesIO()
    fields = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(header, fields)
    except ValueError:  # a header too long for version 1.0
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, fields)
    size = len(header.getvalue()) + math.prod(shape) * dtype.itemsize
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    with archive.open(info, "w", force_zip64=size > zipfile.ZIP64_LIMIT) as member:
        member.write(header.getvalue())
        if not shape:
            member.write(np.ascontiguousarray(value, dtype=dtype).tobytes())
            return
        for part in _array_parts(value):
            row_bytes = max(dtype.itemsize * math.prod(shape[1:]), 1)
            step = max(_CHUNK_BYTES // row_bytes, 1)
            for start in range(0, len(part), step):
                chunk = np.ascontiguousarray(part[start : start + step], dtype=dtype)
                member.write(chunk.reshape(-1).view(np.uint8).data)


def _write_archive(file: BinaryIO, document: bytes, encoder: _Encoder) -> None:
    from safetensors.torch import save as save_tensors

    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr(zipfile.ZipInfo(_DOCUMENT, date_time=_ZIP_DATE), document)
        for name, value in encoder.arrays:
            _write_npy(archive, name, value)
        for name, tensors in encoder.groups.items():
            # copies on the CPU: safetensors wants contiguous tensors that share no memory
            data = save_tensors({k: t.detach().to("cpu", copy=True).contiguous() for k, t in tensors.items()})
            archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data)


# --- format 2: reading ------------------------------------------------------------------------


class _Window:
    """A read-only, seekable view of ``length`` bytes of ``file`` from ``start`` (the payload)."""

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        self.file, self.start, self.length, self.position = file, start, length, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.length}[whence]
        self.position = min(max(base + offset, 0), self.length)
        return self.position

    def read(self, n: int = -1) -> bytes:
        n = self.length - self.position if n is None or n < 0 else min(n, self.length - self.position)
        self.file.seek(self.start + self.position)
        data = self.file.read(n)
        self.position += len(data)
        return data


class _Decoder:
    """Builds the learner back from ``learner.json`` and the archive's arrays and tensors."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.objects: dict[int, Any] = {}
        self._tensors: dict[str, torch.Tensor] | None = None
        self.missing_devices: set[str] = set()

    def _on_device(self, tensor: torch.Tensor, device: str | None) -> torch.Tensor:
        """``tensor`` moved to the device it was saved on, or left on the CPU (one warning)."""
        if device is None:
            return tensor
        try:
            return tensor.to(device)
        except (RuntimeError, AssertionError, ValueError):
            if device not in self.missing_devices:
                self.missing_devices.add(device)
                warnings.warn(
                    f"Tensors saved on {device} are loaded on the CPU: this machine has no such device.",
                    UserWarning,
                    stacklevel=2,
                )
            return tensor

    def tensors(self, member: str = _TENSORS) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_tensors

        if member != _TENSORS:
            return load_tensors(self.archive.read(member))
        if self._tensors is None:
            self._tensors = load_tensors(self.archive.read(_TENSORS))
        return self._tensors

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag.startswith("$"):
                handler = getattr(self, f"_{tag[1:]}", None)
                if handler is None:
                    raise CheckpointError(f"unknown entry {tag!r} (written by a newer tidal_modal?)")
                return handler(inner)
        return {key: self.decode(item) for key, item in value.items()}

    def _register(self, number: int, obj: Any) -> Any:
        self.objects[number] = obj
        return obj

    def _ref(self, number: int) -> Any:
        return self.objects[number]

    def _float(self, text: str) -> float:
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[text]

    def _tuple(self, items: list) -> tuple:
        return tuple(self.decode(items))

    def _items(self, items: list) -> dict:
        return {self.decode(key): self.decode(value) for key, value in items}

    def _odict(self, items: list) -> OrderedDict:
        return OrderedDict((self.decode(key), self.decode(value)) for key, value in items)

    def _set(self, items: list) -> set:
        return set(self.decode(items))

    def _frozenset(self, items: list) -> frozenset:
        return frozenset(self.decode(items))

    def _npscalar(self, spec: list) -> np.generic:
        dtype, value = np.dtype(spec[0]), self.decode(spec[1])
        return value[()] if isinstance(value, np.ndarray) else dtype.type(value)

    def _npy(self, member: str) -> np.ndarray:
        with self.archive.open(member) as file:
            return np.lib.format.read_array(file, allow_pickle=False)

    def _dtype(self, name: str) -> torch.dtype:
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{name!r} is not a torch dtype")
        return dtype

    def _device(self, name: str) -> torch.device:
        return torch.device(name)

    def _tensor_data(self, spec: dict) -> torch.Tensor:
        if "key" in spec:
            return self.tensors()[spec["key"]]
        return torch.zeros(spec["shape"], dtype=self._dtype(spec["dtype"]))  # filled by load_state_dict

    def _tensor(self, spec: dict) -> torch.Tensor:
        tensor = self._on_device(self._tensor_data(spec), spec.get("device"))
        if spec.get("requires_grad"):
            tensor.requires_grad_(True)
        return self._register(spec["id"], tensor)

    def _parameter(self, spec: dict) -> nn.Parameter:
        data = self._on_device(self._tensor_data(spec), spec.get("device"))
        return self._register(spec["id"], nn.Parameter(data, requires_grad=bool(spec["requires_grad"])))

    def _import(self, path: str) -> Any:
        obj = _resolve(path)
        if not callable(obj):
            raise CheckpointError(f"{path} is neither a class nor a function")
        return obj

    def _partial(self, spec: dict) -> functools.partial:
        func = self.decode(spec["func"])
        return functools.partial(func, *self.decode(spec["args"]), **self.decode(spec["keywords"]))

    def _history(self, rows: list) -> Any:
        from skorch.history import History

        return History(self.decode(rows))

    def _module(self, spec: dict) -> nn.Module:
        cls = _resolve_class(spec["class"], nn.Module)
        module = cls.__new__(cls)
        nn.Module.__init__(module)  # torch's empty registries; the class's own __init__ is not run
        self._register(spec["id"], module)
        module.training = bool(spec["training"])
        for name, value in spec["parameters"]:
            module._parameters[name] = self._typed(value, (nn.Parameter, type(None)))
        for name, value in spec["buffers"]:
            module._buffers[name] = self._typed(value, (torch.Tensor, type(None)))
        module._non_persistent_buffers_set = set(spec["non_persistent"])
        for name, value in spec["modules"]:
            module._modules[name] = self._typed(value, (nn.Module, type(None)))
        for name, value in spec["attributes"]:
            module.__dict__[name] = self.decode(value)
        return module

    def _typed(self, value: Any, kinds: tuple[type, ...]) -> Any:
        value = self.decode(value)
        if not isinstance(value, kinds):
            raise CheckpointError(f"found a {type(value).__name__} where a {kinds[0].__name__} belongs")
        return value

    def _state(self, spec: dict) -> Any:
        cls = _resolve_class(spec["class"], _stateful_classes())
        obj = self._register(spec["id"], cls.__new__(cls))
        obj.__setstate__(self.decode(spec["state"]))
        return obj

    def _object(self, spec: dict) -> Any:
        cls = _resolve_class(spec["class"], _object_classes())
        return self._register(spec["id"], cls(**self.decode(spec["params"])))

    def _net(self, spec: dict) -> Any:
        from skorch import NeuralNet

        cls = _resolve_class(spec["class"], NeuralNet)
        params = self.decode(spec["params"])
        for name, value in params.items():  # before anything is constructed
            expected = _role_problem(name, value)
            if expected is not None:
                raise CheckpointError(f"the net's {name} is {value!r}, not {expected}")
        device = params.get("device")
        if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(
                f"The net was saved with device={device!r}, this machine has no CUDA: it is loaded on "
                "the CPU (device='cpu').",
                UserWarning,
                stacklevel=2,
            )
            params["device"] = "cpu"
        optimizers = self.decode(spec["optimizers"])
        callbacks = self.decode(spec["callbacks"])
        history = self.decode(spec["history"])
        attributes = self.decode(spec["attributes"])
        # building the modules draws their initial weights: the caller's generators are left alone
        forked = torch.random.fork_rng(devices=[]) if spec["initialized"] else nullcontext()
        with forked:
            net = cls(**params)
            if spec["initialized"]:
                net.initialize()
        self._register(spec["id"], net)
        for name, member in spec["weights"].items():
            if member is None:
                vars(net)[f"{name}_"] = None
                if name == "td_head" and "td_taps_" in vars(net):  # a module with a TD head of its own
                    from .modules import detach_taps

                    detach_taps(net.module_)
                    vars(net)["td_taps_"] = []
            elif member != "lazy":
                getattr(net, f"{name}_").load_state_dict(self.tensors(member))
        for name, state in optimizers.items():
            if state is not None:
                getattr(net, f"{name}_").load_state_dict(state)
        if spec["initialized"]:
            for name, callback in net.callbacks_:
                vars(callback).update(callbacks.get(name, {}))
        if history is not None:
            vars(net)["history_"] = history
        vars(net).update(attributes)
        return net

    def learner(self, spec: dict, cls: type, path: str, header: dict) -> Any:
        kind = _resolve(spec["class"])
        if not (isinstance(kind, type) and issubclass(kind, cls)):
            expected = f"{cls.__module__}.{cls.__qualname__}"
            raise _WrongClass(f"{path} holds a {header['learner']}, not a {expected}.")
        learner = kind.__new__(kind)
        self._register(0, learner)
        vars(learner).update(self.decode(spec["attributes"]))
        return learner


class _WrongClass(CheckpointError):
    pass


# --- saving ---------------------------------------------------------------------------------


def _check_strategy(strategy: Callable) -> None:
    """Refuse, before anything is written, a query strategy that a new process could not load."""
    try:
        pickle.dumps(strategy, protocol=_PICKLE_PROTOCOL)
    except Exception as error:
        name = getattr(strategy, "__qualname__", None) or repr(strategy)
        raise TypeError(
            f"The learner's query strategy {name!r} cannot be saved ({type(error).__name__}: {error}). "
            "pickle stores a function by its module and name, which a lambda or a function defined "
            "inside another function does not have. Define the strategy at the top level of a module, "
            "and give it its settings with functools.partial(strategy, setting=...)."
        ) from error


def _header(learner: Any, metadata: Any, version: int) -> bytes:
    header = {
        "format": version,
        "tidal_modal": _library_version(),
        "learner": f"{type(learner).__module__}.{type(learner).__qualname__}",
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "metadata": metadata,
    }
    return json.dumps(header, allow_nan=False).encode() + b"\n"  # without indent, JSON has no newline


class _HashingWriter:
    """A file's ``write`` that also counts and hashes what passes through it (``tell``: the
    count, so that a zip archive can be written through it)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.file.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.file.flush()


def _fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (the rename) to disk; POSIX only (Windows cannot open one)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` by what ``write(file)`` writes, all at once or not at all.

    The data go to a temporary file in the same directory (a rename is atomic only within one
    file system), which is flushed to disk before it is renamed over ``path``; the directory
    is flushed after. If ``write`` or the rename raises, the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path).absolute()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open rather than mkstemp: mode 0o666 less the umask, as for any new file (mkstemp's is 0o600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _describe_learner(learner: Any) -> tuple[bytes, _Encoder]:
    """``learner.json`` of format 2 and the arrays and tensors it refers to; raises ``TypeError``
    naming what format 2 cannot hold."""
    try:
        import safetensors.torch  # noqa: F401 -- checked before anything is written
    except ImportError as error:
        raise ImportError(
            "Saving a learner needs the safetensors package (pip install safetensors), or "
            "save(path, allow_pickle=True) for the pickled format."
        ) from error
    encoder = _Encoder()
    try:
        document = {"learner": encoder.learner(learner), "rng": encoder.encode(_rng_state(), "random state")}
    except _Unsupported as unsupported:
        raise unsupported.error() from None
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode(), encoder


def save_learner(
    learner: Any, path: str | os.PathLike, *, metadata: Any = None, allow_pickle: bool = False
) -> None:
    """Write ``learner`` and the global random states to ``path`` atomically.

    Parameters
    ----------
    learner : modAL learner
        Its estimator, ``X_training`` / ``y_training``, ``query_strategy`` and other attributes.
    path : str or path-like
    metadata : JSON data, default=None
        Stored in the header, e.g. the indices of the pool rows labeled so far; it must load
        back equal (see :func:`check_metadata`).
    allow_pickle : bool, default=False
        Write format 1, a pickle of the learner, instead of format 2. Needed for what format 2
        cannot describe: a scikit-learn Pipeline or any estimator but a skorch net, a module
        or strategy defined in ``__main__``, a module instance with hooks, a callback whose
        attributes are not its constructor's parameters (``LRScheduler``), labeled data that are
        not numpy arrays or torch tensors (DataFrames, Datasets, sparse matrices).

    Raises
    ------
    TypeError
        Before anything is written: the query strategy cannot be saved (a lambda, a local
        function), ``metadata`` holds something JSON would not give back equal, or (without
        ``allow_pickle``) a part of the learner that format 2 cannot hold, named in the message
        (e.g. ``learner.estimator.module (a MyNet)``). With ``allow_pickle``, another part that
        cannot be pickled raises during the write, and ``path`` stays as it was.
    ValueError
        ``metadata`` holds a NaN or infinite float, or contains itself.
    """
    check_metadata(metadata)
    if allow_pickle:
        _check_strategy(learner.query_strategy)
        header = _header(learner, metadata, PICKLE_FORMAT)
        payload = {"learner": learner, "rng": _rng_state()}

        def write(file: BinaryIO) -> None:
            file.write(MAGIC + header)
            hashing = _HashingWriter(file)
            try:
                pickle.Pickler(hashing, protocol=_PICKLE_PROTOCOL).dump(payload)
            except Exception as error:
                error.add_note(f"(raised while pickling the learner; {path} is left as it was)")
                raise
            file.write(_TRAILER.pack(hashing.size, hashing.sha256.digest(), _END))

    else:
        document, encoder = _describe_learner(learner)
        header = _header(learner, metadata, FORMAT_VERSION)

        def write(file: BinaryIO) -> None:
            file.write(MAGIC + header)
            hashing = _HashingWriter(file)
            _write_archive(hashing, document, encoder)
            file.write(_TRAILER.pack(hashing.size, hashing.sha256.digest(), _END))

    write_atomically(path, write)


# --- loading --------------------------------------------------------------------------------


def _describe(head: bytes) -> str:
    """What a file that is not a checkpoint seems to be, from its first bytes."""
    if not head:
        return "an empty file"
    if head.startswith(b"\x80"):
        return "a pickle (e.g. of a net or of a learner; open it with pickle.load)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, as torch.save writes (e.g. a net's save_params files; see load_params)"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy array"
    try:
        return f"a text file that begins {head.decode()[:40]!r}"
    except UnicodeDecodeError:
        return f"binary data that begins {head[:16]!r}"


def _read_header(file: BinaryIO, path: str | os.PathLike) -> dict[str, Any]:
    head = file.read(len(MAGIC))
    if head != MAGIC:
        raise CheckpointError(f"{path} is not a tidal_modal learner checkpoint: it is {_describe(head)}.")
    line = file.readline()
    try:
        if not line.endswith(b"\n"):
            raise ValueError("the header line is cut off")
        header = json.loads(line)
        version = header["format"]
        if not isinstance(version, int) or isinstance(version, bool) or version < PICKLE_FORMAT:
            raise ValueError(f"format {version!r} is no format of tidal_modal")
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(
            f"{path} is a tidal_modal learner checkpoint whose header is damaged ({error}); "
            "the release that wrote it is unknown."
        ) from error
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a learner checkpoint of format {version}, written by tidal_modal "
            f"{header.get('tidal_modal')}; this tidal_modal ({_library_version()}) reads formats up to "
            f"{FORMAT_VERSION}. Upgrade tidal_modal to load it."
        )
    return header


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a checkpoint, read without reading its payload.

    Returns
    -------
    dict
        ``format`` (2: loads without pickle; 1: a pickle), ``tidal_modal`` (the release that
        wrote the file), ``learner`` (its class), ``saved_at`` (UTC), the ``python`` / ``numpy``
        / ``torch`` versions, and the ``metadata`` given to ``save``.

    Raises
    ------
    CheckpointError
        If the file is not a checkpoint (the message says what it looks like), its header is
        damaged, or it is of a newer format than this release reads.
    """
    with open(path, "rb") as file:
        return _read_header(file, path)


def _check_payload(file: BinaryIO, path: str | os.PathLike, header: dict[str, Any]) -> int:
    """Refuse a truncated or damaged payload; leaves ``file`` at the payload's start and returns
    the payload's length."""
    start = file.tell()
    size = os.fstat(file.fileno()).st_size

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(
            f"{path} is a learner checkpoint written by tidal_modal {header.get('tidal_modal')} "
            f"at {header.get('saved_at')}, but it is damaged: {why}."
        )

    if size < start + _TRAILER.size:
        raise corrupt(f"it ends after {size} bytes, before its payload is complete")
    file.seek(size - _TRAILER.size)
    length, digest, end = _TRAILER.unpack(file.read(_TRAILER.size))
    if end != _END:
        raise corrupt("its end marker is missing (the file was cut off or appended to)")
    if start + length + _TRAILER.size != size:
        raise corrupt(f"its payload has {size - start - _TRAILER.size} bytes, {length} were written")
    file.seek(start)
    sha256 = hashlib.sha256()
    remaining = length
    while remaining:
        block = file.read(min(remaining, 1 << 20))
        sha256.update(block)
        remaining -= len(block)
    if sha256.digest() != digest:
        raise corrupt("its contents do not match the checksum written with them")
    file.seek(start)
    return length


def _cannot_load(
    path: str | os.PathLike, header: dict[str, Any], error: BaseException, how: str
) -> CheckpointError:
    return CheckpointError(
        f"{path} is a learner checkpoint written by tidal_modal {header.get('tidal_modal')}, "
        f"which this tidal_modal ({_library_version()}) cannot {how}: {type(error).__name__}: {error}"
    )


def load_learner(
    path: str | os.PathLike, cls: type = object, *, restore_rng: bool = False, allow_pickle: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Read a learner saved by :func:`save_learner`.

    Parameters
    ----------
    path : str or path-like
    cls : type, default=object
        The class the learner must be an instance of.
    restore_rng : bool, default=False
        Also set the global random generators (Python's, numpy's, torch's and, if the devices
        match, CUDA's) to their states at the save.
    allow_pickle : bool, default=False
        Also read format 1, a pickle (``save(..., allow_pickle=True)``, and every file of
        tidal_modal 0.1.0 and 0.2.0). Unpickling can run any code: only for files you trust.
        Format 2 is read without pickle whatever this says.

    Returns
    -------
    learner : cls
    header : dict
        As :func:`read_header` returns it.

    Raises
    ------
    CheckpointError
        If the file is not a checkpoint, is damaged, is of a newer format, is a pickle and
        ``allow_pickle`` is false, cannot be read by this release, or holds no ``cls``; the
        message names the release that wrote it.
    """
    with open(path, "rb") as file:
        header = _read_header(file, path)
        if header["format"] == PICKLE_FORMAT and not allow_pickle:
            raise CheckpointError(
                f"{path} is a learner checkpoint of format 1, written by tidal_modal "
                f"{header.get('tidal_modal')} at {header.get('saved_at')}: a pickle, and unpickling can run "
                "any code. If you trust the file, load it with load(path, allow_pickle=True); save it "
                "again (without allow_pickle) to convert it to format 2, which loads without pickle."
            )
        length = _check_payload(file, path, header)
        if header["format"] == PICKLE_FORMAT:
            learner, rng = _load_pickle(file, path, header)
            if not isinstance(learner, cls):
                expected = f"{cls.__module__}.{cls.__qualname__}"
                raise CheckpointError(f"{path} holds a {header['learner']}, not a {expected}.")
        else:
            learner, rng = _load_archive(_Window(file, file.tell(), length), path, header, cls, restore_rng)
    if restore_rng:
        _set_rng_state(rng)
    return learner, header


def _load_pickle(file: BinaryIO, path: str | os.PathLike, header: dict[str, Any]) -> tuple[Any, Any]:
    try:
        payload = pickle.load(file)
    except MemoryError:
        raise
    except Exception as error:
        raise _cannot_load(path, header, error, "unpickle") from error
    return payload["learner"], payload["rng"]


def _load_archive(
    window: _Window, path: str | os.PathLike, header: dict[str, Any], cls: type, restore_rng: bool
) -> tuple[Any, Any]:
    try:
        with zipfile.ZipFile(window) as archive:
            document = json.loads(archive.read(_DOCUMENT))
            decoder = _Decoder(archive)
            learner = decoder.learner(document["learner"], cls, path, header)
            rng = decoder.decode(document["rng"]) if restore_rng else None
    except (MemoryError, _WrongClass):
        raise
    except Exception as error:
        raise _cannot_load(path, header, error, "load") from error
    return learner, rng
