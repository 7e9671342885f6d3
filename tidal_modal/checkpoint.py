"""One file that holds a whole active learner, written atomically and readable by a new process.

A human's labels are the expensive part of active learning, so a labeling loop saves its learner
after every ``teach`` (:meth:`TiDALActiveLearner.save <tidal_modal.TiDALActiveLearner.save>`) and,
after a crash, starts again from the file (:meth:`TiDALActiveLearner.load
<tidal_modal.TiDALActiveLearner.load>`). A file (format 1) is::

    TIDAL-MODAL LEARNER CHECKPOINT\\n    magic line
    {"format": 1, "tidal_modal": ...}\\n header: one line of JSON
    <pickle>                            payload: the learner and the random generators' states
    <length><SHA-256>TIDAL-MODAL-END    trailer: 8-byte big-endian length, 32-byte digest, marker

The header comes first, so that a file is identified, and the release that wrote it named,
without unpickling anything (:func:`read_header`). The checksum comes last, so that the payload
is pickled straight to disk (a labeled set of images is not held twice in memory) and a damaged
or truncated payload is refused before it is unpickled.

A save writes a temporary file next to the target, flushes it to disk (``fsync``), renames it
over the target (``os.replace``, atomic) and flushes the directory, so the target is at any moment
either the previous complete file or the new complete one, even if the process is killed or the
machine loses power. A save that raises removes its temporary file; a process killed during a
save can leave one (``.<name>.<pid>.<random>.tmp``) that is safe to delete.

The payload is a pickle: load only files you trust, as with :func:`pickle.load`.

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
>>> read_header(path)["metadata"]["labeled"][-5:] == state["labeled"][-5:]
True
"""

import hashlib
import json
import os
import pickle
import platform
import random
import secrets
import struct
import warnings
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "load_learner",
    "read_header",
    "save_learner",
    "write_atomically",
]

FORMAT_VERSION = 1
MAGIC = b"TIDAL-MODAL LEARNER CHECKPOINT\n"
_END = b"TIDAL-MODAL-END"
_TRAILER = struct.Struct(">Q32s15s")  # payload length, SHA-256 of the payload, _END
# Pinned rather than HIGHEST_PROTOCOL, so that a file written by a newer Python stays readable
_PICKLE_PROTOCOL = 5


class CheckpointError(ValueError):
    """A file that is not a learner checkpoint, is damaged, or needs a newer tidal_modal.

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


def _header(learner: Any, metadata: Any) -> bytes:
    header = {
        "format": FORMAT_VERSION,
        "tidal_modal": _library_version(),
        "learner": f"{type(learner).__module__}.{type(learner).__qualname__}",
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "metadata": metadata,
    }
    try:
        return json.dumps(header).encode() + b"\n"  # without indent, JSON has no newline
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"metadata must be JSON data (dicts, lists, strings, numbers, booleans, None): {error}. "
            "Convert arrays with .tolist()."
        ) from error


class _HashingWriter:
    """A file's ``write`` that also counts and hashes what passes through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.file.write(data)


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


def save_learner(learner: Any, path: str | os.PathLike, *, metadata: Any = None) -> None:
    """Write ``learner`` and the global random states to ``path`` atomically.

    Parameters
    ----------
    learner : modAL learner
        Pickled whole: its estimator, ``X_training`` / ``y_training`` and ``query_strategy``.
    path : str or path-like
    metadata : JSON data, default=None
        Stored in the header, e.g. the indices of the pool rows labeled so far.

    Raises
    ------
    TypeError
        If the query strategy cannot be pickled (a lambda, a local function) or ``metadata``
        is not JSON data: before anything is written. If another part of the learner cannot be
        pickled, the error is raised during the write, and ``path`` stays as it was.
    """
    _check_strategy(learner.query_strategy)
    header = _header(learner, metadata)
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
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(
            f"{path} is a tidal_modal learner checkpoint whose header is damaged ({error}); "
            "the release that wrote it is unknown."
        ) from error
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a learner checkpoint of format {version}, written by tidal_modal "
            f"{header.get('tidal_modal')}; this tidal_modal ({_library_version()}) reads formats up to "
            f"{FORMAT_VERSION}. Upgrade tidal_modal to load it."
        )
    return header


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a checkpoint, read without unpickling anything.

    Returns
    -------
    dict
        ``format``, ``tidal_modal`` (the release that wrote the file), ``learner`` (its class),
        ``saved_at`` (UTC), the ``python`` / ``numpy`` / ``torch`` versions, and the
        ``metadata`` given to ``save``.

    Raises
    ------
    CheckpointError
        If the file is not a checkpoint (the message says what it looks like), its header is
        damaged, or it is of a newer format than this release reads.
    """
    with open(path, "rb") as file:
        return _read_header(file, path)


def _check_payload(file: BinaryIO, path: str | os.PathLike, header: dict[str, Any]) -> None:
    """Refuse a truncated or damaged payload; leaves ``file`` at the payload's start."""
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
    while length:
        block = file.read(min(length, 1 << 20))
        sha256.update(block)
        length -= len(block)
    if sha256.digest() != digest:
        raise corrupt("its contents do not match the checksum written with them")
    file.seek(start)


def load_learner(
    path: str | os.PathLike, cls: type = object, *, restore_rng: bool = False
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

    Returns
    -------
    learner : cls
    header : dict
        As :func:`read_header` returns it.

    Raises
    ------
    CheckpointError
        If the file is not a checkpoint, is damaged, is of a newer format, cannot be unpickled
        by this release, or holds no ``cls``; the message names the release that wrote it.
    """
    with open(path, "rb") as file:
        header = _read_header(file, path)
        _check_payload(file, path, header)
        try:
            payload = pickle.load(file)
        except MemoryError:
            raise
        except Exception as error:
            raise CheckpointError(
                f"{path} is a learner checkpoint written by tidal_modal {header.get('tidal_modal')}, "
                f"which this tidal_modal ({_library_version()}) cannot unpickle: "
                f"{type(error).__name__}: {error}"
            ) from error
    learner = payload["learner"]
    if not isinstance(learner, cls):
        expected = f"{cls.__module__}.{cls.__qualname__}"
        raise CheckpointError(f"{path} holds a {header['learner']}, not a {expected}.")
    if restore_rng:
        _set_rng_state(payload["rng"])
    return learner, header
