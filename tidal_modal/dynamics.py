"""Training-dynamics bookkeeping: which row is which, and the running mean of its softmax."""

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import unpack_data
from torch.utils.data import Dataset, Subset, default_collate

from .pool import RowStack

__all__ = ["IndexedDataset", "IndexedTarget", "RowBatch", "TrainingDynamics", "collate_rows", "source_rows"]


class IndexedTarget(NamedTuple):
    """A row's target together with its dataset index (``default_collate`` batches both)."""

    y: Any
    index: Any


class IndexedDataset(Dataset):
    """Wrap a training dataset so that every item carries its row index: ``(X_i, IndexedTarget(y_i, i))``.

    Sample identity comes from the dataset index, never from the row's values, so duplicate
    rows keep separate dynamics and shuffled batches keep each row's index intact. The index
    is the row's position in the dataset the training rows come from: ``Subset`` layers (what
    skorch's ``ValidSplit`` returns) are looked through, so the training rows of a split keep
    their indices in the fit's data and the held-out rows get no dynamics.

    Items are unpacked with skorch's ``unpack_data``: a dataset that does not return ``(X, y)``
    gets skorch's own error.
    """

    def __init__(self, dataset):
        self.source, self.rows = source_rows(dataset)

    def __len__(self):
        return len(self.source) if self.rows is None else len(self.rows)

    def _row(self, i):
        return i if self.rows is None else int(self.rows[i])

    def __getitem__(self, i):
        row = self._row(i)
        item = self.source[row]
        # skorch checks the collated batch; a row that is not a tuple is one value, whatever its length
        Xi, yi = unpack_data(item if isinstance(item, (tuple, list)) else (item,))
        return Xi, IndexedTarget(yi, row)

    def __getitems__(self, indices):
        """Rows ``indices`` at once, as ``DataLoader`` fetches a batch.

        Rows of numeric arrays and tensors held by a plain skorch ``Dataset`` are gathered by one
        indexing operation into a :class:`RowBatch`, instead of skorch's ``__getitem__`` per
        row and ``default_collate``, which take a large share of a small network's training
        step. Any other dataset (a subclass may transform rows) is read row by row, as
        ``DataLoader`` would.
        """
        rows = [self._row(i) for i in indices]
        columns = _gather_rows(self.source, rows)
        if columns is None:
            return [self[i] for i in indices]
        return RowBatch(*columns, rows)


def source_rows(dataset):
    """``(source, rows)``: the dataset under any ``Subset`` layers of ``dataset``, and which of its
    rows ``dataset`` holds, in order (``None``: all of them)."""
    rows = None
    while isinstance(dataset, Subset):
        indices = np.asarray(dataset.indices, dtype=np.int64)
        rows = indices if rows is None else indices[rows]
        dataset = dataset.dataset
    return dataset, rows


def _is_numeric_array(data):
    if isinstance(data, torch.Tensor):
        return True
    return isinstance(data, (np.ndarray, RowStack)) and data.dtype.kind in "biufc"


def _gather_rows(dataset, indices):
    """``(X[indices], y[indices])`` of a plain skorch ``Dataset`` of arrays or tensors, else ``None``."""
    if type(dataset) is not SkorchDataset:
        return None
    X, y = dataset.X, dataset.y
    if not (_is_numeric_array(X) and _is_numeric_array(y)):
        return None
    rows = np.asarray(indices, dtype=np.int64)
    return tuple(
        data[torch.as_tensor(rows, device=data.device)] if isinstance(data, torch.Tensor) else data[rows]
        for data in (X, y)
    )


class RowBatch(Sequence):
    """A training batch gathered at once by :meth:`IndexedDataset.__getitems__`.

    It reads like the list of per-row items ``(X_i, IndexedTarget(y_i, i))`` that a
    ``collate_fn`` expects, so any ``collate_fn`` works; :func:`collate_rows` turns it into
    tensors without touching the rows one by one.
    """

    def __init__(self, X, y, index):
        self.X, self.y, self.index = X, y, index  # [batch, ...], [batch, ...], list of batch ints

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        return self.X[i], IndexedTarget(self.y[i], self.index[i])


def collate_rows(batch):
    """``default_collate``, with a :class:`RowBatch` converted whole (the same tensors, at once)."""
    if isinstance(batch, RowBatch):
        return [
            torch.as_tensor(batch.X),
            IndexedTarget(torch.as_tensor(batch.y), torch.as_tensor(batch.index)),
        ]
    return default_collate(batch)


class TrainingDynamics:
    """Per-row running mean of the softmax outputs seen during one fit (TiDAL's ``pbar``).

    ``pbar_i`` is the mean of the probabilities of every training forward pass that row ``i``
    took part in; with one pass per epoch that is the spec's
    ``pbar_i(t) = (pbar_i(t-1) * (t-1) + p_i(t)) / t``. Counting passes per row, rather than
    epochs, keeps the mean right with ``drop_last`` or custom samplers. The buffers live on the
    device of the probabilities, so an update is a few tensor ops and no host copy.

    Parameters
    ----------
    n_samples : int
        Number of rows in the (unsplit) training dataset; indices are ``0 .. n_samples - 1``.

    Examples
    --------
    >>> import torch
    >>> from tidal_modal.dynamics import TrainingDynamics
    >>> td = TrainingDynamics(2)
    >>> td.update(torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.5, 0.5]]))  # epoch 1
    tensor([[1.0000, 0.0000],
            [0.5000, 0.5000]])
    >>> td.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))  # epoch 2, row 0 only
    tensor([[0.5000, 0.5000]])
    """

    def __init__(self, n_samples):
        self.n_samples = n_samples
        self.sums = None  # [n_samples, n_classes], allocated by the first update
        self.counts = None  # [n_samples]

    @property
    def empty(self):
        """Whether no batch has been folded in yet (the fit's first batch is still to come)."""
        return self.sums is None

    def update(self, index, proba):
        """Fold one batch of probabilities in and return the updated means of its rows.

        Parameters
        ----------
        index : torch.Tensor of int, shape (batch,)
            Dataset indices of the rows (distinct within the batch).
        proba : torch.Tensor, shape (batch, n_classes)
            Softmax outputs of the training forward pass, detached.

        Returns
        -------
        torch.Tensor, shape (batch, n_classes)
            ``pbar`` of these rows, including this pass.
        """
        index, proba = self._prepare(index, proba)
        self.sums.index_add_(0, index, proba)
        self.counts.index_add_(0, index, torch.ones_like(index, dtype=proba.dtype))
        return self.sums[index] / self.counts[index].unsqueeze(1)

    def _prepare(self, index, proba):
        """``(index, proba)`` on the buffers' device and in their precision; the buffers are
        allocated by the first batch."""
        # at least float32: a mean over many epochs in half precision (autocast, Accelerate's
        # mixed precision) would lose the small updates of late epochs
        proba = proba.to(torch.promote_types(proba.dtype, torch.float32))
        if self.sums is None:
            self._allocate(proba)
        return index.to(proba.device, non_blocking=True), proba

    def _allocate(self, proba):
        self.sums = proba.new_zeros((self.n_samples, proba.shape[1]))
        self.counts = proba.new_zeros(self.n_samples)

    def snapshot(self):
        """A copy of the totals, for :meth:`restore` (e.g. the dynamics of an earlier epoch)."""
        return None if self.sums is None else (self.sums.clone(), self.counts.clone())

    def restore(self, snapshot):
        """Put back the totals that :meth:`snapshot` copied."""
        if snapshot is not None:
            self.sums, self.counts = (t.clone() for t in snapshot)

    def to_numpy(self):
        """``pbar`` of every row as a ``[n_samples, n_classes]`` array; NaN for rows never trained on."""
        if self.sums is None:
            raise ValueError("No training dynamics were recorded: the net has not trained on any batch.")
        return (self.sums / self.counts.unsqueeze(1)).cpu().numpy()  # 0 / 0 -> NaN

    def __getstate__(self):
        # skorch maps only its registered modules to the CPU when unpickling; ours go as arrays,
        # which unpickle without torch.load (and its map_location)
        state = self.__dict__.copy()
        for key in ("sums", "counts"):
            if state[key] is not None:
                state[key] = state[key].cpu().numpy()
        return state

    def __setstate__(self, state):
        for key in ("sums", "counts"):
            if isinstance(state.get(key), np.ndarray):
                state[key] = torch.from_numpy(state[key])
        self.__dict__.update(state)
