import json
import tempfile
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import Subset, TensorDataset

from tidal_modal import TiDALNetClassifier, tidal_entropy, tidal_margin
from tidal_modal.pool import (
    LabeledDataset,
    RowStack,
    RowSubset,
    iter_slices,
    num_rows,
    select_rows,
    stack_rows,
    take_rows,
)
from tidal_modal.strategies import MODAL_RETURNS_METRICS

from .models import MLP


@contextmanager
def peak_allocation():
    """Peak bytes allocated inside the block, as ``{"numpy": ..., "torch": ...}`` (filled on exit).

    tracemalloc sees numpy's and Python's allocations but not torch's; torch's CPU allocator
    reports its own to the profiler, whose trace carries the running total.
    """
    peaks = {}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracemalloc.start()  # inside the profiler: its own Python bookkeeping on exit is not counted
        try:
            yield peaks
            peaks["numpy"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(str(Path(tmp) / "trace.json"))
        trace = json.loads((Path(tmp) / "trace.json").read_text())
    memory = sorted(
        (e["ts"], e["args"]["Bytes"], e["args"]["Total Allocated"])
        for e in trace["traceEvents"]
        if e.get("name") == "[memory]" and e["args"]["Device Type"] == 0  # 0: the CPU
    )
    before = memory[0][2] - memory[0][1] if memory else 0  # the running total when the block began
    peaks["torch"] = max((total for _, _, total in memory), default=before) - before


class TestRowSubset:
    def test_reads_only_the_requested_rows(self):
        data = np.arange(20.0).reshape(10, 2)
        subset = take_rows(data, np.array([1, 4, 7]))
        assert isinstance(subset, RowSubset) and subset.shape == (3, 2) and num_rows(subset) == 3
        np.testing.assert_array_equal(subset[1:], data[[4, 7]])
        np.testing.assert_array_equal(np.asarray(subset), data[[1, 4, 7]])

    def test_tensor_rows(self):
        data = torch.arange(12.0).reshape(6, 2)
        torch.testing.assert_close(take_rows(data, np.array([0, 5]))[:], data[[0, 5]])

    def test_other_pools_copy_only_the_rows(self):
        assert take_rows([[1], [2], [3]], np.array([2])) == [[3]]


class TestIterSlices:
    def test_batches_cover_the_pool_in_order(self):
        batches = list(iter_slices(np.arange(10), 4))
        assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]

    def test_read_only_memmap_batches_become_writable(self, tmp_path):
        np.save(tmp_path / "pool.npy", np.ones((5, 3), dtype=np.float32))
        pool = np.load(tmp_path / "pool.npy", mmap_mode="r")
        assert all(b.flags.writeable for b in iter_slices(pool, 2))


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    X, y = rng.randn(200, 16).astype(np.float32), rng.randint(0, 3, 200)
    return TiDALNetClassifier(
        MLP, module__n_features=16, module__n_classes=3, max_epochs=3, batch_size=32, verbose=0
    ).fit(X, y)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    data = np.random.RandomState(1).randn(1000, 16).astype(np.float32)
    path = tmp_path_factory.mktemp("pool") / "pool.npy"
    np.save(path, data)
    return data, np.load(path, mmap_mode="r")


def indices_of(result):
    return result[0] if MODAL_RETURNS_METRICS else result


class TestStreamingEqualsBatch:
    def test_predict_td_is_identical_for_every_kind_of_pool(self, fitted, pool):
        data, memmap = pool
        expected_td, expected_proba = fitted.predict_td(data, return_proba=True)
        for other in (memmap, torch.as_tensor(data), Dataset(data)):  # Dataset: skorch's own path
            td, proba = fitted.predict_td(other, return_proba=True)
            np.testing.assert_array_equal(td, expected_td)
            np.testing.assert_array_equal(proba, expected_proba)

    def test_chunked_pipeline_transform_matches_one_shot(self, fitted, pool, monkeypatch):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        from tidal_modal import measures

        data, _ = pool
        pipe = make_pipeline(FunctionTransformer(lambda X: X * 1.0), fitted)
        whole = indices_of(tidal_margin(pipe, data, 10))
        monkeypatch.setattr(measures, "TRANSFORM_CHUNK_ROWS", 96)  # 11 chunks, ragged last one
        np.testing.assert_array_equal(indices_of(tidal_margin(pipe, data, 10)), whole)

    @pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
    def test_queries_agree_with_and_without_pool_subset(self, fitted, pool, strategy):
        data, memmap = pool
        for kwargs in ({}, {"pool_subset": 300, "random_state": 4}):
            expected = indices_of(strategy(fitted, data, 7, **kwargs))
            for other in (memmap, torch.as_tensor(data), Dataset(data)):
                np.testing.assert_array_equal(indices_of(strategy(fitted, other, 7, **kwargs)), expected)

    def test_a_memmap_pool_is_never_copied_whole(self, tmp_path):
        net = TiDALNetClassifier(
            MLP, module__n_features=64, module__n_classes=3, max_epochs=1, batch_size=512, verbose=0
        ).fit(np.random.RandomState(0).randn(100, 64).astype(np.float32), np.arange(100) % 3)
        path = tmp_path / "big.npy"
        # 51 MB: a scoring batch (24 MiB of input and layer outputs at most) is far below it
        np.save(path, np.random.RandomState(2).randn(200_000, 64).astype(np.float32))
        memmap = np.load(path, mmap_mode="r")
        with peak_allocation() as peak:
            tidal_entropy(net, memmap, 5)
            tidal_margin(net, memmap, 5, pool_subset=80_000, random_state=0)
        # O(batch) reads plus [n]- and [n, C]-sized results: far below one copy of the pool
        assert peak["numpy"] + peak["torch"] < 0.25 * memmap.nbytes, peak

    def test_peak_allocation_sees_a_copy_made_by_torch(self):
        """The instrument of the memory tests: without it they would pass on a torch copy unseen."""
        pool = np.ones((50_000, 64), np.float32)
        with peak_allocation() as peak:
            torch.as_tensor(pool).clone()
        assert peak["torch"] >= pool.nbytes and peak["numpy"] < 0.01 * pool.nbytes, peak


class TestStackRows:
    """The learner's growing labeled set, in the type it was given."""

    def test_a_memmap_stays_on_disk(self, tmp_path):
        disk = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=(6, 2))
        disk[:] = np.arange(12).reshape(6, 2)
        stack = stack_rows(stack_rows(disk, np.full((2, 2), -1.0)), [[7.0, 8.0]])
        assert isinstance(stack, RowStack) and stack.parts[0] is disk and len(stack.parts) == 3
        expected = np.concatenate([np.arange(12).reshape(6, 2), np.full((2, 2), -1.0), [[7.0, 8.0]]])
        assert stack.shape == (9, 2) and stack.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(stack), expected)
        for key in (slice(4, 8), [8, 0, 6, 5], np.array([-1, -3]), slice(None, None, -2)):
            np.testing.assert_array_equal(stack[key], expected[key])
        np.testing.assert_array_equal(stack[7], expected[7])
        assert stack[0].flags.writeable  # a single row is a copy torch can take

    def test_rows_of_another_shape(self, tmp_path):
        disk = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=(3, 2))
        with pytest.raises(ValueError, match="different shapes"):
            stack_rows(disk, np.zeros((1, 3)))

    def test_each_type_keeps_its_type(self):
        pd = pytest.importorskip("pandas")
        np.testing.assert_array_equal(stack_rows(np.eye(2), np.ones((1, 2))), [[1, 0], [0, 1], [1, 1]])
        tensor = stack_rows(torch.eye(2, dtype=torch.float64), np.ones((1, 2), dtype=np.float32))
        assert tensor.dtype == torch.float64 and tensor.tolist() == [[1, 0], [0, 1], [1, 1]]
        frame = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
        stacked = stack_rows(frame, np.array([[5, 6]]))
        assert list(stacked.columns) == ["a", "b"] and stacked.to_numpy().tolist() == [[1, 3], [2, 4], [5, 6]]
        assert stack_rows(pd.Series([1, 2]), [3]).tolist() == [1, 2, 3]
        assert stack_rows([1, 2], np.array([3])) == [1, 2, 3]
        data = TensorDataset(torch.arange(3))
        assert len(stack_rows(data, Subset(data, [0]))) == 4
        assert stack_rows(None, "anything") == "anything"
        with pytest.raises(TypeError, match="Cannot add rows to training data of type dict"):
            stack_rows({"a": 1}, {"a": 2})

    def test_select_rows_in_the_pool_type(self):
        pd = pytest.importorskip("pandas")
        idx = np.array([2, 0])
        assert select_rows(torch.arange(4), idx).tolist() == [2, 0]
        assert select_rows(pd.DataFrame({"a": range(4)}), idx)["a"].tolist() == [2, 0]
        assert select_rows(["w", "x", "y", "z"], idx) == ["y", "w"]
        subset = select_rows(TensorDataset(torch.arange(4)), idx)
        assert isinstance(subset, Subset) and subset.indices == [2, 0]

    def test_labeled_dataset(self):
        images = TensorDataset(torch.arange(3.0), torch.full((3,), -1))  # (x, unknown label)
        labeled = LabeledDataset(images, np.array([4, 5, 6]))
        assert [(float(x), int(y)) for x, y in (labeled[i] for i in range(3))] == [(0, 4), (1, 5), (2, 6)]
        with pytest.raises(ValueError, match="3 items but y has 2 labels"):
            LabeledDataset(images, [1, 2])
