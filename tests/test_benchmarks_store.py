import csv

import pytest

from benchmarks import run
from benchmarks.store import COLUMNS, CurveStore


def row(strategy, seed, cycle, accuracy=0.5):
    return {
        "strategy": strategy, "seed": seed, "cycle": cycle, "n_labeled": 10 + 5 * cycle,
        "accuracy": accuracy, "fit_seconds": 0.1, "query_seconds": 0.0,
    }  # fmt: skip


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def keys(rows):
    return [(r["strategy"], int(r["seed"]), int(r["cycle"])) for r in rows]


@pytest.fixture
def killed_run(tmp_path):
    """A curves.csv as a kill leaves it: one complete run, one cut off after cycle 0."""
    path = tmp_path / "curves.csv"
    store = CurveStore(path, n_cycles=1)
    for r in [row("random", 0, 0, 0.111), row("random", 0, 1, 0.222), row("entropy", 0, 0, 0.333)]:
        store.append(r)
    return path


class TestCurveStore:
    def test_appended_rows_are_on_disk_at_once(self, tmp_path):
        store = CurveStore(tmp_path / "curves.csv", n_cycles=2)
        store.append(row("random", 0, 0))
        assert keys(read(tmp_path / "curves.csv")) == [("random", 0, 0)]
        assert list(read(tmp_path / "curves.csv")[0]) == list(COLUMNS)
        assert store.completed == set()

    def test_reopening_keeps_complete_runs_and_drops_partial_ones(self, killed_run):
        store = CurveStore(killed_run, n_cycles=1)
        assert store.completed == {("random", 0)}
        assert keys(read(killed_run)) == [("random", 0, 0), ("random", 0, 1)]

    def test_last_cycle_completes_a_run(self, tmp_path):
        store = CurveStore(tmp_path / "curves.csv", n_cycles=1)
        store.append(row("random", 0, 0))
        store.append(row("random", 0, 1))
        assert store.completed == {("random", 0)}


ARGS = ["--dataset", "digits", "--strategies", "random", "entropy", "--seeds", "0", "--cycles", "1",
        "--epochs", "1", "--initial-size", "20", "--query-size", "10"]  # fmt: skip


class TestResume:
    def test_rerun_after_a_kill_redoes_only_the_cut_off_run(self, killed_run):
        out = killed_run.parent
        run.main([*ARGS, "--out-dir", str(out)])
        rows = read(killed_run)
        assert sorted(keys(rows)) == [
            ("entropy", 0, 0),
            ("entropy", 0, 1),
            ("random", 0, 0),
            ("random", 0, 1),
        ]
        # the complete run was not recomputed, the cut-off one was
        accuracy = {k: float(r["accuracy"]) for k, r in zip(keys(rows), rows, strict=True)}
        assert accuracy[("random", 0, 0)] == 0.111 and accuracy[("random", 0, 1)] == 0.222
        assert accuracy[("entropy", 0, 0)] != 0.333

        run.main([*ARGS, "--seeds", "0", "1", "--out-dir", str(out)])  # more seeds: only new runs
        rows = read(killed_run)
        assert len(rows) == len(set(keys(rows))) == 8

    def test_refuses_to_mix_configurations(self, tmp_path):
        run.main([*ARGS, "--out-dir", str(tmp_path)])
        with pytest.raises(SystemExit, match="epochs"):
            run.main([*ARGS, "--epochs", "2", "--out-dir", str(tmp_path)])
