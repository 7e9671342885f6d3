"""benchmarks.scaling: the training measurement runs on two processes, and the calculation is right."""

import numpy as np
import pytest

from benchmarks import scaling, scaling_training

pytest.importorskip("accelerate")


def test_wall_time_divides_the_rows_by_the_workers_throughput():
    assert scaling.wall_time(1e8, 1000.0, 0.5, 1) == pytest.approx(1e5)  # one worker: its own rate
    assert scaling.wall_time(1e8, 1000.0, 0.5, 8) == pytest.approx(1e8 / (8 * 500))


def test_the_summary_holds_both_tables_and_the_calculation():
    training = [
        {"setting": "plain", "processes": 0, "samples_per_s": 100.0, "ratio_to_one_process": 1.0},
        {"setting": "two", "processes": 2, "samples_per_s": 180.0, "ratio_to_one_process": 1.8,
         "td_gather_share_of_epoch": 0.01, "td_gather_large_median_s": 0.02},
    ]  # fmt: skip
    dask = [
        {"setting": "in memory", "workers": 0, "rows_per_s": 1000.0, "ratio_to_one_worker": 1.0},
        {"setting": "1 worker(s)", "workers": 1, "rows_per_s": 1000.0, "ratio_to_one_worker": 1.0},
        {"setting": "2 worker(s)", "workers": 2, "rows_per_s": 1500.0, "ratio_to_one_worker": 1.5},
    ]
    meta = {"arguments": "", "machine": "m", "load_average_at_start": [0.1], "load_average_at_end": [0.2],
            "gather_rows": 10}  # fmt: skip
    text, efficiency = scaling.summary(training, dask, 1e8, [1, 10], meta)
    assert efficiency == pytest.approx(0.75)
    assert "| two | 180 | 1.80 | 1.00% |" in text
    assert "| 1 | 27.8 h |" in text  # 1e8 / 1000 rows/s
    assert "| 10 | 3.7 h |" in text  # 1e8 / (10 x 1000 x 0.75)


def test_two_training_processes_are_timed():
    results = scaling_training.measure([2], rows=64, epochs=2, batch_size=16, gather_rows=100)
    plain, two = results
    assert two["processes"] == 2 and len(two["epoch_s"]) == 1
    assert two["samples_per_s"] > 0 and plain["ratio_to_one_process"] == 1.0
    assert 0 < two["td_gather_share_of_epoch"] < 1 and len(two["td_gather_large_s"]) == 5


def test_raw_scaling_runs_two_processes_and_the_efficiencies_divide_by_it():
    raw = scaling.raw_scaling(iterations=50)
    assert raw["one_process_s"] > 0 and len(raw["two_processes_s"]) == 2
    assert raw["ratio"] == 2 * raw["one_process_s"] / max(raw["two_processes_s"])
    training = [{"processes": 2, "ratio_to_one_process": 1.6}]
    dask = [{"workers": 2, "ratio_to_one_worker": 1.8}]
    eff = scaling.efficiencies(training, dask, {"ratio": 2.0})
    assert eff == {"accelerate_training": pytest.approx(0.8), "dask_scoring": pytest.approx(0.9)}
    meta = {"arguments": "", "machine": "m", "load_average_at_start": [0.1], "load_average_at_end": [0.2],
            "gather_rows": 10}  # fmt: skip
    dask = [{"setting": "1", "workers": 1, "rows_per_s": 10.0, "ratio_to_one_worker": 1.0}, *dask]
    dask[1].update(setting="2", rows_per_s=18.0)
    text, _ = scaling.summary([], dask, 1e6, [1], meta, {"ratio": 2.0})
    assert "| Dask scoring | 1.80 | 0.90 |" in text


def test_the_workload_alone_runs_in_two_processes_and_the_engines_divide_by_it():
    workload = scaling.workload_scaling(scoring_batch=8, training_batch=4, seconds=0.05)
    for part in ("scoring", "training"):
        assert workload[part]["steps"] >= 10 and len(workload[part]["two_processes_s"]) == 2
        timing = workload[part]
        assert timing["ratio"] == 2 * timing["one_process_s"] / max(timing["two_processes_s"])
    training = [{"setting": "2", "processes": 2, "ratio_to_one_process": 1.6, "samples_per_s": 1.0}]
    dask = [{"setting": "1", "workers": 1, "rows_per_s": 10.0, "ratio_to_one_worker": 1.0},
            {"setting": "2", "workers": 2, "rows_per_s": 18.0, "ratio_to_one_worker": 1.8}]  # fmt: skip
    fixed = {"training": {"ratio": 1.7}, "scoring": {"ratio": 1.8}}
    eff = scaling.efficiencies(training, dask, {"ratio": 2.0}, fixed)
    assert eff["accelerate_training_vs_workload"] == pytest.approx(1.6 / 1.7)
    assert eff["dask_scoring_vs_workload"] == pytest.approx(1.0)
    meta = {"arguments": "", "machine": "m", "load_average_at_start": [0.1], "load_average_at_end": [0.2],
            "gather_rows": 10}  # fmt: skip
    text, _ = scaling.summary(training, dask, 1e6, [1], meta, {"ratio": 2.0}, fixed)
    assert "| Dask scoring | 1.80 | 1.80 | 1.00 |" in text
    assert "| Accelerate training | 1.70 | 1.60 | 0.94 |" in text


def test_dask_scoring_records_where_the_time_goes():
    from benchmarks import scaling_dask

    pytest.importorskip("distributed")
    results = scaling_dask.measure([1], rows=200, chunk_rows=100, n_instances=5, repeats=1)
    one = next(r for r in results if r["workers"] == 1)
    assert len(one["worker_cpu_s"]) == 1 and one["worker_cpu_s"][0] > 0
    assert 0 < one["worker_utilization"] < 2 and 0 <= one["main_process_share_of_a_core"] < 2
    meta = {"arguments": "", "machine": "m", "load_average_at_start": [0.1], "load_average_at_end": [0.2],
            "gather_rows": 10}  # fmt: skip
    fixed = {"training": {"ratio": 1.7}, "scoring": {"ratio": 1.8}}
    text, _ = scaling.summary([], results, 1e6, [1], meta, {"ratio": 2.0}, fixed)
    assert "| 1 worker(s) |" in text and "client + scheduler" in text


def test_rounds_divide_by_their_own_raw_ratio_and_report_the_medians():
    rounds = [
        {"raw": {"ratio": raw}, "efficiency": {"accelerate_training": acc / raw, "dask_scoring": dask / raw}}
        for raw, acc, dask in [(2.0, 1.9, 1.6), (1.6, 1.5, 1.6), (1.8, 1.6, 1.7)]
    ]
    text, medians = scaling.rounds_summary(rounds)
    assert medians["accelerate_training"] == pytest.approx(np.median([0.95, 1.5 / 1.6, 1.6 / 1.8]))
    assert medians["dask_scoring"] == pytest.approx(np.median([0.8, 1.0, 1.7 / 1.8]))
    assert "| 2 | 1.60 | 1.50 | 1.60 | 0.94 | 1.00 |" in text and "| median |" in text
