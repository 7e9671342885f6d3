import pickle

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset
from torch.utils.data import Subset, default_collate

from tidal_modal.dynamics import (
    IndexedDataset,
    IndexedTarget,
    RowBatch,
    TrainingDynamics,
    collate_rows,
    source_rows,
)


def assert_same_batch(actual, expected):
    """Equal values, dtypes and structure: ``[X, IndexedTarget(y, index)]`` of tensors."""
    assert type(actual) is type(expected) and type(actual[1]) is IndexedTarget
    for a, e in [(actual[0], expected[0]), *zip(actual[1], expected[1], strict=True)]:
        assert isinstance(a, torch.Tensor) and a.dtype == e.dtype and torch.equal(a, e)


class TestIndexedDataset:
    def test_items_carry_their_row_index(self):
        X, y = np.arange(10.0).reshape(5, 2), np.array([0, 1, 0, 1, 1])
        ds = IndexedDataset(Dataset(X, y))
        Xi, (yi, i) = ds[3]  # an IndexedTarget
        np.testing.assert_array_equal(Xi, X[3])
        assert (yi, i) == (1, 3)
        assert len(ds) == 5

    def test_subsets_keep_the_indices_of_the_data_they_come_from(self):
        # what skorch's ValidSplit gives as training set: its rows' TD belong to the fit's rows
        X, y = np.arange(20.0, dtype=np.float32).reshape(10, 2), np.arange(10)
        ds = IndexedDataset(Subset(Subset(Dataset(X, y), [9, 7, 5, 3, 1]), [4, 0, 2]))
        assert len(ds) == 3
        assert [ds[i][1] for i in range(3)] == [IndexedTarget(1, 1), IndexedTarget(9, 9), IndexedTarget(5, 5)]
        Xb, (yb, index) = collate_rows(ds.__getitems__([2, 1]))
        assert index.tolist() == yb.tolist() == [5, 9]
        np.testing.assert_array_equal(Xb.numpy(), X[[5, 9]])
        assert source_rows(Subset(Dataset(X, y), [3, 4]))[1].tolist() == [3, 4]

    def test_a_dataset_that_returns_one_value_gets_skorchs_error(self):
        ds = IndexedDataset(torch.utils.data.TensorDataset(torch.zeros(4, 3)))
        with pytest.raises(ValueError, match="returns 1 value"):
            ds[0]


class TestBatchFetch:
    """``DataLoader`` fetches a batch through ``__getitems__``; sliced rows equal collated rows."""

    @pytest.mark.parametrize(
        "X, y",
        [
            (np.arange(40.0, dtype=np.float32).reshape(10, 4), np.arange(10) % 3),
            (np.arange(40.0).reshape(10, 2, 2), (np.arange(10) % 2).astype(np.int32)),  # float64, images
            (np.arange(10, dtype=np.int64), np.arange(10.0, dtype=np.float32)),  # 1-D input
            (torch.arange(40.0).reshape(10, 4), torch.arange(10) % 3),
        ],
    )
    def test_sliced_batch_equals_default_collate_of_its_rows(self, X, y):
        ds = IndexedDataset(Dataset(X, y))
        indices = [7, 2, 9, 0]
        batch = ds.__getitems__(indices)
        assert isinstance(batch, RowBatch) and len(batch) == 4
        expected = default_collate([ds[i] for i in indices])
        assert_same_batch(collate_rows(batch), expected)
        assert_same_batch(default_collate(batch), expected)  # any collate_fn still sees rows

    def test_read_only_memmap_rows_are_copied_into_the_batch(self, tmp_path):
        np.save(tmp_path / "X.npy", np.arange(40.0, dtype=np.float32).reshape(10, 4))
        X = np.load(tmp_path / "X.npy", mmap_mode="r")
        ds = IndexedDataset(Dataset(X, np.zeros(10, dtype=np.int64)))
        Xb = collate_rows(ds.__getitems__([3, 1]))[0]
        Xb += 1  # a writable tensor of its own
        np.testing.assert_array_equal(X[[3, 1]], Xb.numpy() - 1)

    def test_subset_passes_its_own_indices_through(self):
        X, y = np.arange(20.0, dtype=np.float32).reshape(10, 2), np.arange(10)
        subset = Subset(IndexedDataset(Dataset(X, y)), [8, 5, 1])
        Xb, (yb, index) = collate_rows(subset.__getitems__([2, 0]))
        assert index.tolist() == [1, 8] and yb.tolist() == [1, 8]
        np.testing.assert_array_equal(Xb.numpy(), X[[1, 8]])

    def test_datasets_that_may_transform_rows_are_read_row_by_row(self):
        class Doubled(Dataset):
            def transform(self, X, y):
                return X * 2, y

        X, y = np.arange(20.0, dtype=np.float32).reshape(10, 2), np.arange(10)
        for ds in (IndexedDataset(Doubled(X, y)), IndexedDataset(Dataset(X.astype(object), y))):
            batch = ds.__getitems__([4, 6])
            assert isinstance(batch, list) and batch[0][1] == IndexedTarget(4, 4)
        Xb, _ = collate_rows(IndexedDataset(Doubled(X, y)).__getitems__([4, 6]))
        np.testing.assert_array_equal(Xb.numpy(), 2 * X[[4, 6]])


class TestTrainingDynamics:
    def test_running_mean_over_passes_matches_hand_computation(self):
        rng = np.random.RandomState(0)
        td = TrainingDynamics(n_samples=6)
        seen = {i: [] for i in range(6)}
        for _ in range(4):  # epochs, each a shuffled pass over rows 0..4 (row 5 never trained on)
            order = rng.permutation(5)
            for batch in np.array_split(order, 2):
                proba = torch.softmax(torch.randn(len(batch), 3), dim=1)
                target = td.update(torch.as_tensor(batch), proba)
                for row, p in zip(batch, proba, strict=True):
                    seen[row].append(p.numpy())
                expected = np.stack([np.mean(seen[row], axis=0) for row in batch])
                np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6)
        result = td.to_numpy()
        np.testing.assert_allclose(result[:5], [np.mean(seen[i], axis=0) for i in range(5)], rtol=1e-6)
        assert np.isnan(result[5]).all()

    def test_pickles_with_buffers_on_cpu(self):
        td = TrainingDynamics(n_samples=3)
        td.update(torch.tensor([0, 2]), torch.tensor([[0.2, 0.8], [0.6, 0.4]]))
        restored = pickle.loads(pickle.dumps(td))
        np.testing.assert_array_equal(restored.to_numpy(), td.to_numpy())
