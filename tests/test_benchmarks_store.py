import csv
import io
import random
import sys
import time

import pytest

from benchmarks import run
from benchmarks.store import COLUMNS, CurveStore, Provenance, code_version, library_tree

from .killing import ForkServer


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


class TestCutOffLine:
    """A crash in the middle of an append can leave a last line without its line end."""

    @pytest.fixture
    def complete_run(self):
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows([row("random", 0, 0), row("random", 0, 1)])
        return text.getvalue()

    @pytest.mark.parametrize(
        "before, cut",
        [
            ("entropy,0,0,10,0.5,0.1,0.0\r\n", "entropy,0,1,15,0.5"),
            ("entropy,0,0,10,0.5,0.1,0.0\r\n", "entropy,0,1,15,0.5,0.1,0.0"),
            ("", "entropy,0,0,10,0.5,0.1,0.0"),
        ],
        ids=["short-last-cycle", "whole-looking-last-cycle", "first-cycle"],
    )
    def test_the_cut_off_row_and_its_run_are_dropped(self, tmp_path, complete_run, before, cut):
        """Even a row with every field: its last value may be cut (0.0 of 0.0123)."""
        path = tmp_path / "curves.csv"
        path.write_text(complete_run + before + cut, newline="")
        store = CurveStore(path, n_cycles=1)
        assert store.completed == {("random", 0)}
        assert path.read_bytes() == complete_run.encode()
        store.append(row("entropy", 0, 0))
        assert keys(read(path)) == [("random", 0, 0), ("random", 0, 1), ("entropy", 0, 0)]

    @pytest.mark.parametrize("content", ["", "strategy,se"], ids=["empty", "cut-header"])
    def test_a_file_without_a_whole_header_starts_over(self, tmp_path, content):
        path = tmp_path / "curves.csv"
        path.write_text(content)
        CurveStore(path, n_cycles=1).append(row("random", 0, 0))
        assert keys(read(path)) == [("random", 0, 0)]


# `python -m benchmarks.run`, forked after its slow imports and a first fit (torch imports for
# seconds on a first optimizer step), so that a test can kill and restart it many times
SETUP = """
import runpy
import numpy as np
import torch
torch.set_num_threads(1)  # before forking: a forked child cannot use its parent's thread pool
import benchmarks.baselines, benchmarks.datasets, benchmarks.protocol, benchmarks.report
from torch import nn
from tidal_modal import TiDALNetClassifier
X = np.random.RandomState(0).randn(8, 2).astype("float32")
TiDALNetClassifier(nn.Linear(2, 2), max_epochs=1, verbose=0).fit(X, np.arange(8) % 2)
"""
RUN = 'runpy.run_module("benchmarks.run", run_name="__main__", alter_sys=True)'
KILL_ARGS = ["--dataset", "digits", "--strategies", "random", "entropy", "--seeds", "0", "1",
             "--cycles", "2", "--epochs", "1", "--initial-size", "20", "--query-size", "10"]  # fmt: skip


def rows_on_disk(path):
    """The (strategy, seed, cycle) of the whole lines of ``path``; none if it is not there yet."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return keys(csv.DictReader(io.StringIO(f.read().rpartition("\n")[0] + "\n")))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fork are POSIX")
def test_a_run_killed_at_random_moments_ends_with_one_row_per_cycle(tmp_path):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "curves.csv"
    with ForkServer(SETUP, RUN) as runner:
        for _ in range(4):
            # kill it at a random moment after it has written 1 to 3 rows (more if it drops some)
            target = len(rows_on_disk(path)) + rng.randint(1, 3)
            runner.start(*KILL_ARGS, "--out-dir", tmp_path)
            while runner.running() and len(rows_on_disk(path)) < target:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.3))
            runner.kill()  # unless it ended first
            rows = rows_on_disk(path)
            assert len(rows) == len(set(rows)), f"duplicate rows after a kill (seed {seed}): {rows}"
        runner.start(*KILL_ARGS, "--out-dir", tmp_path)
        runner.wait()
    expected = [(s, seed, c) for s in ("random", "entropy") for seed in (0, 1) for c in range(3)]
    assert sorted(keys(read(path))) == sorted(expected), f"seed {seed}"


class TestProvenance:
    def test_a_run_records_the_code_that_made_it_and_the_summary_names_it(self, tmp_path, monkeypatch):
        version = {
            "tidal_modal": "9.9",
            "commit": "abcdef0123456789",
            "library": "0a1b2c3d4e5f",
            "dirty": False,
        }
        monkeypatch.setattr(run, "code_version", lambda: version)
        run.main([*ARGS, "--out-dir", str(tmp_path)])
        record = Provenance(tmp_path / "provenance.json")
        assert record.runs == {"entropy|0": version, "random|0": version}
        summary = (tmp_path / "summary.md").read_text()
        assert (
            "one library version, tidal-modal 9.9 with package tree 0a1b2c3d4e (commits abcdef0123)"
            in summary
        )

        # another commit with the same library: still one library version
        monkeypatch.setattr(run, "code_version", lambda: {**version, "commit": "1234567890ab"})
        run.main([*ARGS, "--seeds", "0", "1", "--strategies", "random", "--out-dir", str(tmp_path)])
        summary = (tmp_path / "summary.md").read_text()
        assert "(commits 1234567890 and abcdef0123), so every pairing is within it" in summary

        # uncommitted changes: the summary says that pairings may cross versions
        monkeypatch.setattr(run, "code_version", lambda: {**version, "commit": "fedcba9876", "dirty": True})
        run.main([*ARGS, "--seeds", "0", "1", "--out-dir", str(tmp_path)])
        assert Provenance(tmp_path / "provenance.json").runs["entropy|1"]["commit"] == "fedcba9876"
        summary = (tmp_path / "summary.md").read_text()
        assert "at commit fedcba9876 with uncommitted changes" in summary
        assert "a pairing may cross library versions" in summary

    def test_runs_made_before_provenance_count_as_unknown(self, tmp_path):
        record = Provenance(tmp_path / "provenance.json")
        record.record("random", 0, {"tidal_modal": "1", "commit": "c", "dirty": False})
        assert record.versions([("random", 0), ("entropy", 0)]) == [
            None, {"commit": "c", "dirty": False, "tidal_modal": "1"}
        ]  # fmt: skip

    def test_code_version_reads_this_checkout(self):
        import subprocess

        import tidal_modal

        version = code_version()
        assert version["tidal_modal"] == tidal_modal.__version__
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if head:  # a source checkout (CI clones one)
            assert version["commit"] == head and isinstance(version["dirty"], bool)
            assert version["library"] == library_tree(head) and len(version["library"]) == 40
