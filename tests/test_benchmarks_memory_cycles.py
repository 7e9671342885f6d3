"""The memory-cycles benchmark: its readings from a real child process, and a planted leak it shows."""

import json

import numpy as np
import pytest
import torch

from benchmarks import memory_cycles
from tidal_modal import TiDALActiveLearner

N_ROWS, N_FEATURES, INITIAL, QUERY, CYCLES = 400, 784, 40, 20, 4
ROW_BYTES = N_FEATURES * 4 + 8  # a float32 row and its int64 label


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run of the whole benchmark: a child process per size, as the committed run."""
    out_dir = tmp_path_factory.mktemp("memory")
    argv = ["--sizes", str(N_ROWS), "--initial", str(INITIAL), "--query-size", str(QUERY)]
    result = memory_cycles.main([*argv, "--cycles", str(CYCLES), "--out-dir", str(out_dir)])
    return result, out_dir


@pytest.fixture(scope="module")
def size(run):
    (size,) = run[0]["sizes"]
    return size


class TestMemoryCycles:
    def test_one_reading_and_one_peak_per_cycle(self, size):
        cycles = size["cycles"]
        lists = ("rss_mib", "live_rss_mib", "cycle_peak_mib", "held")
        assert [len(cycles[name]) for name in lists] == [CYCLES] * len(lists)
        assert all(len(peaks) == CYCLES for peaks in cycles["phase_peak_mib"].values())
        assert size["rss_first_mib"] == cycles["rss_mib"][0] and size["rss_last_mib"] == cycles["rss_mib"][-1]
        assert 100 < min(cycles["rss_mib"]) < 2000  # MiB of a process that imported torch

    def test_peaks_are_above_the_rss_each_phase_and_cycle_started_from(self, size):
        cycles = size["cycles"]
        if not cycles["peak_reset"]:
            pytest.skip("/proc/self/clear_refs is not writable here")
        query = np.asarray(cycles["phase_peak_mib"]["query"])
        assert (np.asarray(list(cycles["phase_peak_mib"].values())) >= 0).all()
        # the query phase starts the cycle, so the cycle's peak is at least the query's
        assert (np.asarray(cycles["cycle_peak_mib"]) >= query).all()
        assert size["largest_cycle_peak_mib"] == max(cycles["cycle_peak_mib"])
        assert size["peak_over_pool"] == pytest.approx(size["largest_cycle_peak_mib"] / size["pool_mib"])

    def test_pool_mib_and_the_data_change_per_cycle(self, size):
        assert size["pool_mib"] == N_ROWS * N_FEATURES * 4 / 2**20
        assert size["pool_shrink_mib_per_cycle"] == pytest.approx(QUERY * ROW_BYTES / 2**20)
        td_row = 11 * 4  # float32 sums over 10 classes, and a count
        assert size["labeled_growth_mib_per_cycle"] == pytest.approx(QUERY * (ROW_BYTES + td_row) / 2**20)

    @pytest.mark.parametrize("name", ["rss", "live_rss"])
    def test_slopes_are_least_squares_fits_from_cycle_2(self, size, name):
        readings = size["cycles"][f"{name}_mib"][1:]
        (slope, _), cov = np.polyfit(np.arange(2, CYCLES + 1), readings, 1, cov=True)
        assert size[f"{name}_slope_mib_per_cycle"] == pytest.approx(slope, abs=1e-9)
        assert size[f"{name}_slope_stderr_mib"] == pytest.approx(np.sqrt(cov[0, 0]), abs=1e-9)

    def test_malloc_trim_only_gives_memory_back(self, size):
        rss, live = np.asarray(size["cycles"]["rss_mib"]), np.asarray(size["cycles"]["live_rss_mib"])
        assert (live <= rss + 0.5).all()  # read right after rss: nothing allocated between
        assert size["largest_kept_by_allocator_mib"] == pytest.approx((rss - live).max())

    def test_the_learner_holds_exactly_the_labeled_rows_and_their_td(self, size):
        held = size["cycles"]["held"]
        for cycle, parts in enumerate(held, start=1):
            labeled = INITIAL + cycle * QUERY
            assert parts["labeled"] == labeled * ROW_BYTES
            assert parts["td_buffers"] == labeled * 11 * 4
            assert parts["pool"] == (N_ROWS - cycle * QUERY) * ROW_BYTES
        # constant: one momentum buffer per parameter, a trajectory of one epoch per fit
        assert len({(parts["trajectory"], parts["parameters"], parts["optimizer"]) for parts in held}) == 1
        assert held[0]["optimizer"] == held[0]["parameters"] > 0
        assert [parts["history_batches"] for parts in held] == [2, 3, 4, 5]  # one epoch of one batch a fit
        assert size["learner_slope_mib_per_cycle"] == pytest.approx(size["labeled_growth_mib_per_cycle"])

    def test_one_size_gives_no_fit_across_sizes(self, run):
        assert run[0]["across_sizes"] == {key: None for key in memory_cycles.ACROSS_SIZES.values()}

    def test_writes_json_and_markdown(self, run):
        result, out_dir = run
        assert json.loads((out_dir / "memory_cycles.json").read_text()) == result
        table = (out_dir / "memory_cycles.md").read_text()
        assert "| pool rows | pool MiB |" in table
        assert f"| {N_ROWS} | {N_ROWS * N_FEATURES * 4 / 2**20:.1f} |" in table


def test_fit_across_sizes_recovers_a_planted_line():
    sizes = [{"pool_mib": pool, "largest_cycle_peak_mib": 1.5 * pool + 9.0} for pool in (60, 120, 240)]
    fit = memory_cycles.fit_across_sizes(sizes, "largest_cycle_peak_mib")
    assert fit == pytest.approx({"per_pool_mib": 1.5, "intercept_mib": 9.0})
    assert memory_cycles.fit_across_sizes(sizes[:1], "largest_cycle_peak_mib") is None
    sizes[1]["largest_cycle_peak_mib"] = None  # peaks unavailable
    assert memory_cycles.fit_across_sizes(sizes, "largest_cycle_peak_mib") is None


@pytest.fixture
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # run_cycles sets them for the whole process


def test_a_pool_copy_kept_per_cycle_shows_in_the_live_rss_slope(monkeypatch, torch_threads):
    """Plant the answer: a query that keeps a copy of the pool grows live RSS by about a pool per cycle."""
    n_rows = 3000
    config = dict(
        n_rows=n_rows, n_features=N_FEATURES, n_classes=10, initial=INITIAL, query_size=QUERY,
        cycles=3, epochs=1, batch_size=128, threads=1, seed=0,
    )  # fmt: skip
    pool_mib = n_rows * N_FEATURES * 4 / 2**20  # about 9 MiB

    def slope():
        child = memory_cycles.run_cycles(config)
        # live RSS: a pool under glibc's largest mmap threshold is freed into the heap, where RSS
        # keeps it until something reuses it or malloc_trim gives it back
        return memory_cycles.summarize(n_rows, child, config)["live_rss_slope_mib_per_cycle"]

    assert abs(slope()) < 0.1 * pool_mib
    kept, query = [], TiDALActiveLearner.query

    def leaky_query(self, X_pool, *args, **kwargs):
        kept.append(X_pool.copy())
        return query(self, X_pool, *args, **kwargs)

    monkeypatch.setattr(TiDALActiveLearner, "query", leaky_query)
    assert slope() > 0.8 * pool_mib
    assert len(kept) == 3
