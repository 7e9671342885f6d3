"""Pools as the net and the strategies read them: row counts, lazy row subsets, batches.

Arrays (memory-mapped ones included) and tensors are read batch by batch by slicing, never
copied whole; a row subset of them stays a view until a batch of it is read.
"""

import numpy as np
import torch
from skorch.dataset import get_len
from skorch.utils import multi_indexing
from torch.utils.data import Dataset, Subset

__all__ = ["RowSubset", "is_sliceable", "iter_slices", "num_rows", "take_rows"]


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


def is_sliceable(X):
    """Whether ``X`` can be read in batches by slicing (arrays, tensors, row subsets of them)."""
    return isinstance(X, (np.ndarray, torch.Tensor, RowSubset))


def num_rows(X):
    """Number of rows of any pool the strategies accept."""
    if isinstance(X, RowSubset):
        return len(X)
    if hasattr(X, "shape") and not isinstance(X, Dataset):
        return X.shape[0]
    return get_len(X)


def take_rows(X, rows):
    """Rows ``rows`` of ``X``: a lazy view for arrays, tensors and Datasets, a copy otherwise."""
    if isinstance(X, (np.ndarray, torch.Tensor)):
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
