import pickle

import numpy as np
import pytest

from benchmarks.datasets import balanced_split, load_cifar, load_dataset, long_tail, long_tail_counts


class TestLongTail:
    def test_counts_follow_the_papers_formula(self):
        # floor(100 * 0.1 ** (c / 9)) computed by hand
        assert long_tail_counts(100, 10, 10).tolist() == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
        assert long_tail_counts(500, 10, 100).tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]

    def test_keeps_the_right_rows_of_each_class(self):
        y = np.repeat(np.arange(4), [50, 60, 70, 80])
        keep = long_tail(y, 10, random_state=0)
        assert len(np.unique(keep)) == len(keep)
        assert np.bincount(y[keep]).tolist() == long_tail_counts(50, 4, 10).tolist()

    @pytest.mark.parametrize("ir", [10, 100])
    def test_long_tail_digits_pool_and_balanced_test(self, ir):
        full = load_dataset("digits")
        data = load_dataset(f"digits-ir{ir}")
        counts = np.bincount(data.y_pool)
        n_max = np.bincount(full.y_pool).min()
        assert counts.tolist() == long_tail_counts(n_max, 10, ir).tolist()
        assert counts[0] == n_max and counts[-1] == n_max // ir
        np.testing.assert_array_equal(data.X_test, full.X_test)
        assert np.bincount(data.y_test).tolist() == [50] * 10


class TestSplits:
    def test_balanced_split_is_disjoint_and_balanced(self):
        y = np.repeat(np.arange(3), [10, 20, 30])
        pool, test = balanced_split(y, 4, random_state=0)
        assert np.bincount(y[test]).tolist() == [4, 4, 4]
        assert len(np.intersect1d(pool, test)) == 0
        assert len(pool) + len(test) == len(y)

    def test_digits_rows_are_float32_in_unit_range(self):
        data = load_dataset("digits")
        assert data.X_pool.dtype == np.float32 and data.X_pool.shape[1] == 64
        assert 0 <= data.X_pool.min() and data.X_pool.max() <= 1
        assert data.image_shape == (1, 8, 8) and data.n_classes == 10

    def test_unknown_name_is_refused(self):
        with pytest.raises(ValueError, match="Unknown dataset"):
            load_dataset("imagenet")


def write_batch(path, n, label_key, n_classes, rng):
    batch = {
        b"data": rng.randint(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: list(rng.randint(0, n_classes, n)),
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    return batch


class TestCifar:
    def test_reads_cifar10_batches(self, tmp_path):
        rng = np.random.RandomState(0)
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        train = [write_batch(folder / f"data_batch_{i}", 4, b"labels", 10, rng) for i in range(1, 6)]
        test = write_batch(folder / "test_batch", 3, b"labels", 10, rng)
        X, y, X_test, y_test = load_cifar(tmp_path, 10)
        assert X.shape == (20, 3072) and X.dtype == np.float32 and X_test.shape == (3, 3072)
        np.testing.assert_allclose(X[4:8], train[1][b"data"] / 255.0, rtol=1e-6)
        assert y.tolist() == sum((b[b"labels"] for b in train), [])
        assert y_test.tolist() == test[b"labels"] and y.dtype == np.int64

    def test_reads_cifar100_fine_labels_through_load_dataset(self, tmp_path):
        rng = np.random.RandomState(1)
        train = write_batch(tmp_path / "train", 6, b"fine_labels", 100, rng)
        write_batch(tmp_path / "test", 100, b"fine_labels", 100, rng)
        data = load_dataset("cifar100", data_dir=tmp_path)
        assert data.y_pool.tolist() == train[b"fine_labels"]
        assert data.image_shape == (3, 32, 32)
        np.testing.assert_allclose(
            data.X_pool.reshape(-1, 3, 32, 32)[2, 1], train[b"data"][2, 1024:2048].reshape(32, 32) / 255.0
        )

    def test_missing_files_are_named(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="data_batch_1"):
            load_cifar(tmp_path, 10)
