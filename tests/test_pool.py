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

from tidal_modal import TiDALNetClassifier, tidal_entropy, tidal_margin
from tidal_modal.pool import RowSubset, iter_slices, num_rows, take_rows
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
        np.save(path, np.random.RandomState(2).randn(50_000, 64).astype(np.float32))  # 12.8 MB
        memmap = np.load(path, mmap_mode="r")
        with peak_allocation() as peak:
            tidal_entropy(net, memmap, 5)
            tidal_margin(net, memmap, 5, pool_subset=20_000, random_state=0)
        # O(batch) reads plus [n]- and [n, C]-sized results: far below one copy of the pool
        assert peak["numpy"] + peak["torch"] < 0.25 * memmap.nbytes, peak

    def test_peak_allocation_sees_a_copy_made_by_torch(self):
        """The instrument of the memory tests: without it they would pass on a torch copy unseen."""
        pool = np.ones((50_000, 64), np.float32)
        with peak_allocation() as peak:
            torch.as_tensor(pool).clone()
        assert peak["torch"] >= pool.nbytes and peak["numpy"] < 0.01 * pool.nbytes, peak
