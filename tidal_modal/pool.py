"""Pools as the net and the strategies read them: row counts, lazy row subsets and stacks, batches.

Arrays (memory-mapped ones included) and tensors are read batch by batch by slicing, never
copied whole; a row subset of them stays a view until a batch of it is read, and a labeled set
that grows on top of a memory-mapped array (:func:`stack_rows`) stays a stack of its parts.
"""

from __future__ import annotations

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
    ValueError
        For rows of another shape than ``first``'s, a DataFrame with other columns than
        ``first``'s (the same columns in another order are aligned by name), or values that
        ``first``'s dtype cannot hold (fractions into integers, strings into numbers): nothing is
        rounded or converted silently.
    """
    if first is None:
        return second
    if isinstance(first, (np.memmap, RowStack, np.ndarray)):
        second = second.cpu().numpy() if isinstance(second, torch.Tensor) else np.asarray(second)
        _check_row_shape(first, second)
        second = _cast_rows(second, first.dtype)
        if isinstance(first, (np.memmap, RowStack)):
            return RowStack([first, second])
        return np.concatenate([first, second])
    if isinstance(first, torch.Tensor):
        second = second if isinstance(second, torch.Tensor) else torch.as_tensor(np.asarray(second))
        _check_row_shape(first, second)
        return torch.cat([first, _cast_rows(second.to(device=first.device), first.dtype)])
    if type(first).__module__.startswith("pandas"):
        import pandas as pd  # only reached with pandas data

        if isinstance(first, pd.DataFrame) and isinstance(second, pd.DataFrame):
            _check_same_columns(first, second)  # pandas.concat aligns them by name
        elif not isinstance(second, (pd.DataFrame, pd.Series)):
            second = np.asarray(second)
            if isinstance(first, pd.DataFrame):
                _check_row_shape(first, second)
                second = pd.DataFrame(second, columns=first.columns)
            else:
                second = pd.Series(second, name=first.name)
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


def _check_row_shape(first, second):
    """Refuse rows of another shape than the labeled data's before they are stacked."""
    if len(first.shape) == 1 and len(second.shape) == 2 and second.shape[1] > 1:
        raise ValueError(
            f"Cannot add labels of shape {tuple(second.shape)} to labels of shape {tuple(first.shape)}: "
            "one column per class (one-hot or soft labels?). Give one class index per row: "
            "y.argmax(axis=1)."
        )
    if tuple(second.shape[1:]) != tuple(first.shape[1:]) or len(second.shape) != len(first.shape):
        raise ValueError(
            f"Cannot add new data of shape {tuple(second.shape)} to labeled data of shape "
            f"{tuple(first.shape)}: the rows have different shapes ({tuple(second.shape[1:])} against "
            f"{tuple(first.shape[1:])}). Give the new rows the training data's columns and "
            "preprocessing (and one label per row)."
        )


def _cast_rows(second, dtype):
    """``second`` (an array or a tensor) in the labeled data's ``dtype``, refusing a cast that
    would change values (floats with a fraction into integers, numbers outside the range)."""
    if isinstance(second, torch.Tensor):
        if second.dtype == dtype:
            return second
        cast = second.to(dtype)
        safe = torch.can_cast(second.dtype, dtype) or torch.equal(cast.to(second.dtype), second)
    else:
        if second.dtype == dtype:
            return second
        try:
            cast = second.astype(dtype)
        except (ValueError, TypeError) as error:  # strings into numbers
            raise ValueError(
                f"The new rows hold values of dtype {second.dtype} (e.g. {second.ravel()[:3].tolist()}) "
                f"that cannot join labeled data of dtype {dtype}: {error}. Give them the training "
                "data's type (labels: class indices, e.g. from sklearn.preprocessing.LabelEncoder)."
            ) from error
        if second.dtype.kind in "OUS":  # converted values by value: nothing was rounded
            return cast
        safe = np.can_cast(second.dtype, dtype, "same_kind") or np.array_equal(
            cast.astype(second.dtype), second
        )
    if not safe:
        raise ValueError(
            f"The new rows are of dtype {second.dtype}, with values that the labeled data's dtype "
            f"{dtype} cannot hold (e.g. fractions in integer data). Give the new rows the training "
            "data's dtype, or convert the labeled data to a type that holds both."
        )
    return cast


def _check_same_columns(first, second):
    """Refuse a DataFrame of new rows whose columns are not the labeled DataFrame's (in any order)."""
    columns, new = list(first.columns), list(second.columns)
    if len(columns) == len(new) and set(columns) == set(new) and len(set(new)) == len(new):
        return
    missing = [c for c in columns if c not in set(new)]
    unexpected = [c for c in new if c not in set(columns)]
    what = "; ".join(
        part
        for part in (
            f"missing: {missing}" if missing else "",
            f"unexpected: {unexpected}" if unexpected else "",
        )
        if part
    )
    raise ValueError(
        f"The new rows' columns are not those of the labeled data ({what or 'repeated names'}). Give "
        f"them exactly the columns {columns} (in any order), preprocessed like the training data."
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
    """Number of rows of any pool the strategies accept.

    A list is rows, as the net reads it (skorch's ``get_len`` would count the items of its first
    row: a list of rows of 4 features would have 4 rows); a dict or a tuple holds several inputs.
    """
    if isinstance(X, (RowSubset, RowStack, list)):
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
