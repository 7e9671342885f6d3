import numpy as np
import pytest

from benchmarks import scaling_paired


def planted(raw, one, two, workers=(1.0, 1.0), in_memory=1.0, main=0.1, workload=1.8):
    return scaling_paired._dask_ratios({
        "raw": {"ratio": raw},
        "workload": {"ratio": workload},
        "in_memory": {"s": in_memory},
        "one_worker": {"s": one, "worker_cpu_s": [one], "main_process_cpu_s": 0.0},
        "two_workers": {"s": two, "worker_cpu_s": sorted(workers), "main_process_cpu_s": main},
    })  # fmt: skip


def test_a_repeat_divides_its_dask_ratio_by_its_own_raw_ratio():
    repeat = planted(raw=1.6, one=2.0, two=1.25, workers=(0.5, 1.0), in_memory=1.5, workload=2.0)
    assert repeat["dask_ratio"] == pytest.approx(1.6)
    assert repeat["efficiency"] == pytest.approx(1.0)  # the same repeat's raw ratio, not another's
    assert repeat["efficiency_vs_workload"] == pytest.approx(0.8)
    assert repeat["two_workers_cpu_over_one"] == pytest.approx(0.75)
    assert repeat["one_worker_vs_in_memory"] == pytest.approx(0.75)
    assert repeat["two_workers_busiest_share"] == pytest.approx(0.8)
    assert repeat["two_workers_larger_part"] == pytest.approx(1.0 / 1.5)
    assert repeat["main_process_share_of_a_core"] == pytest.approx(0.08)


def test_the_summary_takes_medians_over_repeats_and_counts_those_at_the_target():
    # efficiencies 1.0, 0.8, 0.9, 0.95: a ratio of medians (median one / median two / median raw)
    # would give another value than the median of the paired ratios
    repeats = [
        planted(2.0, 2.0, 1.0),
        planted(1.5, 3.0, 2.5),
        planted(2.0, 1.8, 1.0),
        planted(1.6, 3.04, 2.0),
    ]
    efficiencies = [r["efficiency"] for r in repeats]
    np.testing.assert_allclose(efficiencies, [1.0, 0.8, 0.9, 0.95])
    summary = scaling_paired.summarize(repeats)
    assert summary["efficiency"]["median"] == pytest.approx(0.925)
    assert summary["efficiency"]["median"] != pytest.approx(np.median([2.0, 3.0, 1.8, 3.04]) / 1.5 / 1.8)
    assert summary["efficiency"]["q1"] == pytest.approx(np.percentile(efficiencies, 25))
    assert summary["share_at_target"] == 0.5 and summary["repeats"] == 4
    meta = {
        "arguments": "--repeats 4",
        "machine": "m",
        "load_average_at_start": [0.1],
        "load_average_at_end": [0.2],
    }
    median = f"{summary['efficiency']['median']:.2f}"
    setup = {"blocks_per_worker": {"1": [16], "2": [7, 9]}, "rebalanced": False, "scoring_batch": 72}
    rounds = [{"setup": setup, "summary": summary}, {"setup": setup, "summary": summary}]
    text = scaling_paired.markdown(summary, meta, rounds)
    assert "2 round(s) of 4 repeats" in text and "as `persist` placed them" in text
    assert f"| 2 | 7 and 9 | 1.80 | 1.80 | 1.66 | **{median} [" in text
    assert (
        f"| **Dask efficiency** (its ratio / the same repeat's raw ratio; target >= 0.93) | **{median} ["
        in text
    )
    assert "| repeats at the target | 50% |" in text


def test_every_repeat_times_the_raw_work_and_both_clusters_in_a_shuffled_order():
    pytest.importorskip("distributed")
    repeats, setup = scaling_paired.measure_dask(
        repeats=3, rows=400, chunk_rows=100, n_instances=5, spin_iterations=20, rebalance=True
    )
    assert setup["blocks_per_worker"] == {"1": [4], "2": [2, 2]} and setup["rebalanced"]
    assert len(repeats) == 3
    for repeat in repeats:
        assert sorted(repeat["order"]) == ["in_memory", "one_worker", "raw", "two_workers", "workload"]
        # each query ran on its own cluster: one worker's CPU, then two workers'
        assert (
            len(repeat["one_worker"]["worker_cpu_s"]) == 1 and len(repeat["two_workers"]["worker_cpu_s"]) == 2
        )
        assert all(cpu > 0 for cpu in repeat["two_workers"]["worker_cpu_s"])
        assert len(repeat["raw"]["two_processes_s"]) == 2 and repeat["efficiency"] > 0
        assert len(repeat["workload"]["two_processes_s"]) == 2 and repeat["efficiency_vs_workload"] > 0
    assert len({tuple(repeat["order"]) for repeat in repeats}) > 1  # shuffled (seeded: fixed orders)


def test_accelerate_divides_its_samples_per_second_ratio_by_the_same_repeat_raw_ratio():
    repeat = scaling_paired._accelerate_ratios({
        "raw": {"ratio": 1.8},
        "workload": {"ratio": 1.5},
        "one_process": {"epoch_s": [2.0, 2.2, 9.0]},  # the median epoch: a slow one does not count
        "two_processes": {"epoch_s": [1.0, 1.25, 1.1]},
    })  # fmt: skip
    assert repeat["accelerate_ratio"] == pytest.approx(2.0)  # samples/s of the same rows: 2.2 s / 1.1 s
    assert repeat["efficiency"] == pytest.approx(2.0 / 1.8)
    assert repeat["efficiency_vs_workload"] == pytest.approx(2.0 / 1.5)
    summary = scaling_paired.summarize([repeat])
    assert "dask_ratio" not in summary and summary["share_at_target"] == 1.0
    meta = {"arguments": "", "machine": "m", "load_average_at_start": [0.1], "load_average_at_end": [0.2]}
    setup = {"rows": 256, "epochs": 3, "batch_size": 64}
    text = scaling_paired.accelerate_markdown(summary, meta, [{"setup": setup, "summary": summary}])
    assert "| 1 | 1.80 | 1.50 | 2.00 | **1.11 [1.11, 1.11]** | 1.33 |" in text


def test_accelerate_repeats_time_a_plain_fit_and_a_two_process_fit():
    pytest.importorskip("accelerate")
    repeats, setup = scaling_paired.measure_accelerate(
        repeats=1, rows=128, epochs=2, batch_size=32, spin_iterations=20
    )
    (repeat,) = repeats
    assert sorted(repeat["order"]) == ["one_process", "raw", "two_processes", "workload"]
    assert len(repeat["one_process"]["epoch_s"]) == len(repeat["two_processes"]["epoch_s"]) == 1
    assert repeat["two_processes"]["processes"] == 2 and repeat["efficiency"] > 0
    assert setup["workload_steps"] >= 5
