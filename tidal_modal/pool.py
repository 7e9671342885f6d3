"""Pools as the net and the strategies read them: row counts, lazy row subsets and stacks, batches.

Arrays (memory-mapped ones included) and tensors are read batch by batch by slicing, never
copied whole; a row subset of them stays a view until a batch of it is read, and a labeled set
that grows on top of a memory-mapped array (:func:`stack_rows`) stays a stack of its parts.
"""

import numpy as np
import torch
from scipy import sparse
from skorch.dataset import get_len
from skorch.utils import multi_indexing
from torch.utils.data import ConcatDataset, Dataset, Subset

__all__ = [
    "LabeledDataset",
    "RowStack",
    "RowSubset",
    "is_sliceable",
    "iter_slices",
    "num_rows",
    "select_rows",
    "stack_rows",
    "take_rows",
]


class RowSubset:
    """Rows ``rows`` of an array or tensor, gathered only when a slice of it is read.

    Parameters
    ----------
    data : ndarray, memmap or torch.Tensor
        The full pool.
    rows : ndarray of int
        Row indices into ``data``; kept sorted by the strategies so that a memory-mapped
        pool is read front to back.
    """

    def __init__(self, data, rows):
        self.data = data
        self.rows = np.asarray(rows)

    def __len__(self):
        return len(self.rows)

    @property
    def shape(self):
        return (len(self.rows), *self.data.shape[1:])

    @property
    def dtype(self):
        return self.data.dtype

    def __array__(self, dtype=None, copy=None):
        # code that wants a plain array (a user's own predict_td, a transformer) gets the rows
        return np.asarray(self[:], dtype=dtype)

    def __getitem__(self, key):
        rows = self.rows[key]
        if isinstance(self.data, torch.Tensor):
            rows = torch.as_tensor(rows, device=self.data.device)
        return self.data[rows]


class RowStack:
    """The rows of several numpy arrays one after another, gathered only when rows are read.

    What a labeled set becomes when rows are added to a memory-mapped one: the memmap stays on
    disk and only the added rows are held in memory, instead of a copy of the whole set per
    cycle. Reading rows (a slice, an int or an array of ints, as a training batch does)
    returns a new array of just those rows.

    Parameters
    ----------
    parts : sequence of ndarray (memmaps included) or RowStack
        With the same row shape and dtype; nested stacks are flattened.
    """

    def __init__(self, parts):
        self.parts = [p for part in parts for p in (part.parts if isinstance(part, RowStack) else [part])]
        shapes = {tuple(part.shape[1:]) for part in self.parts}
        if len(shapes) != 1:
            raise ValueError(f"Cannot stack rows of different shapes {sorted(shapes)}.")
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self):
        return int(self.offsets[-1])

    @property
    def shape(self):
        return (len(self), *self.parts[0].shape[1:])

    @property
    def dtype(self):
        return np.result_type(*self.parts)

    @property
    def ndim(self):
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            key = int(key) + (len(self) if key < 0 else 0)
            part = int(np.searchsorted(self.offsets, key, side="right")) - 1
            return np.array(self.parts[part][key - self.offsets[part]])  # writable, as torch wants
        rows = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        rows = np.where(rows < 0, rows + len(self), rows)
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for part in np.unique(part_of):
            mask = part_of == part
            out[mask] = self.parts[part][rows[mask] - self.offsets[part]]
        return out


def stack_rows(first, second):
    """``second``'s rows after ``first``'s, in ``first``'s type: a learner's growing labeled set.

    numpy arrays are concatenated, except a memory-mapped one, which is kept on disk as the
    first part of a :class:`RowStack`; tensors are concatenated on ``first``'s device; pandas
    objects with ``pandas.concat`` (``second`` converted to ``first``'s columns if needed);
    lists are extended; torch Datasets are chained with ``ConcatDataset``; sparse matrices are
    stacked by scipy.

    Raises
    ------
    TypeError
        For a type that cannot be stacked, naming it.
    """
    if first is None:
        return second
    if isinstance(first, (np.memmap, RowStack)):
        return RowStack([first, np.asarray(second, dtype=first.dtype)])
    if isinstance(first, np.ndarray):
        second = second.cpu().numpy() if isinstance(second, torch.Tensor) else np.asarray(second)
        return np.concatenate([first, second.astype(first.dtype, copy=False)])
    if isinstance(first, torch.Tensor):
        second = second if isinstance(second, torch.Tensor) else torch.as_tensor(np.asarray(second))
        return torch.cat([first, second.to(device=first.device, dtype=first.dtype)])
    if type(first).__module__.startswith("pandas"):
        import pandas as pd  # only reached with pandas data

        if not isinstance(second, (pd.DataFrame, pd.Series)):
            second = (
                pd.DataFrame(np.asarray(second), columns=first.columns)
                if isinstance(first, pd.DataFrame)
                else pd.Series(np.asarray(second), name=first.name)
            )
        return pd.concat([first, second])
    if isinstance(first, list):
        return first + list(second)
    if isinstance(first, Dataset):
        return ConcatDataset([first, second])
    if sparse.issparse(first):
        return sparse.vstack([first, second], format=first.format)
    raise TypeError(
        f"Cannot add rows to training data of type {type(first).__name__}; use a numpy array, a "
        "memory-mapped array, a torch tensor, a pandas DataFrame, a list or a torch Dataset."
    )


class LabeledDataset(Dataset):
    """The inputs of a torch Dataset with labels given apart: what a labeled set drawn from a
    Dataset pool is trained on (the labels come from a human, not from the pool).

    Parameters
    ----------
    dataset : torch Dataset
        Items are inputs, or tuples whose first element is the input (e.g. ``(image, unknown)``,
        skorch's convention); other elements are dropped.
    y : array-like or tensor of shape (len(dataset),)
        One label per item.
    """

    def __init__(self, dataset, y):
        if len(dataset) != len(y):
            raise ValueError(f"The Dataset has {len(dataset)} items but y has {len(y)} labels.")
        self.dataset, self.y = dataset, y

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return (item[0] if isinstance(item, (tuple, list)) else item), self.y[i]


def select_rows(X, indices):
    """Rows ``indices`` of ``X``, in ``X``'s type: an array's rows as an array (a memmap's or a
    :class:`RowStack`'s in memory), a tensor's as a tensor on its device, a DataFrame's as a
    DataFrame, a Dataset's as a ``Subset``, a list's as a list."""
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(indices, device=X.device)]
    if isinstance(X, Dataset):
        return Subset(X, indices.tolist())
    if isinstance(X, list):
        return [X[i] for i in indices]
    if hasattr(X, "iloc"):  # pandas
        return X.iloc[indices]
    return X[indices]


def is_sliceable(X):
    """Whether ``X`` can be read in batches by slicing (arrays, tensors, row subsets and stacks)."""
    return isinstance(X, (np.ndarray, torch.Tensor, RowSubset, RowStack))


def num_rows(X):
    """Number of rows of any pool the strategies accept."""
    if isinstance(X, (RowSubset, RowStack)):
        return len(X)
    if hasattr(X, "shape") and not isinstance(X, Dataset):
        return X.shape[0]
    return get_len(X)


def take_rows(X, rows):
    """Rows ``rows`` of ``X``: a lazy view for arrays, tensors and Datasets, a copy otherwise."""
    if isinstance(X, (np.ndarray, torch.Tensor, RowStack)):
        return RowSubset(X, rows)
    if isinstance(X, Dataset):
        return Subset(X, rows.tolist())
    if isinstance(X, list):  # skorch would read a list as several inputs
        return [X[i] for i in rows]
    return multi_indexing(X, rows)  # DataFrames, sparse matrices: only k rows are copied


def iter_slices(X, batch_size):
    """Yield consecutive batches ``X[i:i + batch_size]``; read-only memmap batches are copied.

    The copy is of one batch: torch refuses to share memory with a non-writable array.
    """
    n = num_rows(X)
    batch_size = n if batch_size in (-1, None) else batch_size
    for start in range(0, n, max(batch_size, 1)):
        batch = X[start : start + batch_size]
        if isinstance(batch, np.ndarray) and not batch.flags.writeable:
            batch = np.array(batch)
        yield batch
