"""``curves.csv``: the benchmark's rows, appended and flushed cycle by cycle, resumable after a kill;
``provenance.json``: the code version that made each run."""

import csv
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from tidal_modal.checkpoint import write_atomically

__all__ = ["COLUMNS", "CurveStore", "Provenance", "code_version", "library_tree", "run_meta"]

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = ("strategy", "seed", "cycle", "n_labeled", "accuracy", "fit_seconds", "query_seconds")


class CurveStore:
    """Append-only CSV of one row per (strategy, seed, cycle).

    A (strategy, seed) run is complete when it has all ``n_cycles + 1`` rows. Opening the store
    drops the rows of incomplete runs (a run killed mid-way is redone from scratch) and keeps
    every complete one, so re-running into the same file never duplicates or loses rows. A last
    line without its line end (a write cut off by a crash) is dropped too: its values may be cut.

    Parameters
    ----------
    path : str or Path
    n_cycles : int
        Queries per run; a run has rows for cycles ``0 .. n_cycles``.
    """

    def __init__(self, path, n_cycles):
        self.path = Path(path)
        self.n_cycles = n_cycles
        rows, intact = self._read()
        runs = {}
        for row in rows:
            runs.setdefault((row["strategy"], int(row["seed"])), set()).add(int(row["cycle"]))
        self.completed = {run for run, cycles in runs.items() if cycles == set(range(n_cycles + 1))}
        kept = [row for row in rows if (row["strategy"], int(row["seed"])) in self.completed]
        if len(kept) != len(rows) or not intact:
            self._rewrite(kept)

    def _read(self):
        """The rows whose lines are complete, and whether the file is whole (ends with a line end)."""
        if not self.path.exists():
            return [], False
        with open(self.path, newline="") as f:
            text = f.read()
        complete, _, cut_off = text.rpartition("\n")
        return list(csv.DictReader(io.StringIO(complete + "\n"))), bool(text) and not cut_off

    def _rewrite(self, rows):
        # all at once (a temporary file swapped in), so that a kill here cannot lose the kept rows
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(self.path, lambda f: f.write(text.getvalue().encode()))

    def append(self, row):
        """Append one row and flush it to disk; mark the run complete after its last cycle."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
            f.flush()
            os.fsync(f.fileno())
        if row["cycle"] == self.n_cycles:
            self.completed.add((row["strategy"], int(row["seed"])))


def _git(*args):
    """``git args`` in this checkout, or ``None`` without git or outside a checkout."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def library_tree(commit):
    """The git tree of the ``tidal_modal`` package at ``commit``: equal trees, equal library code."""
    return _git("rev-parse", f"{commit}:tidal_modal") if commit else None


def code_version():
    """What made a run: the package's version, the git commit, the package's tree at that commit
    (:func:`library_tree`) and whether the library or the benchmarks had uncommitted changes
    (``None`` where there is no git checkout)."""
    import tidal_modal  # here: the store is read by tools that do not import the library

    commit = _git("rev-parse", "HEAD")
    # the code only: results written by the run itself do not count
    changes = _git("status", "--porcelain", "--", "tidal_modal", ":(glob)benchmarks/*.py") if commit else None
    return {
        "tidal_modal": tidal_modal.__version__,
        "commit": commit,
        "library": library_tree(commit),
        "dirty": bool(changes) if commit else None,
    }


def run_meta(argv, load_at_start):
    """Where a timed run ran: its arguments (``argv``, else the command line's), the machine, the
    load average at its start (``load_at_start``, ``os.getloadavg()`` then) and now, and torch's
    version."""
    import torch  # here, as tidal_modal in code_version

    return {
        "arguments": " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)",
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
    }


class Provenance:
    """``provenance.json`` next to ``curves.csv``: the code version (:func:`code_version`) that made
    each (strategy, seed) run, so that a table says which runs it pairs.

    Parameters
    ----------
    path : str or Path
    """

    def __init__(self, path):
        self.path = Path(path)
        self.runs = json.loads(self.path.read_text())["runs"] if self.path.exists() else {}

    def record(self, strategy, seed, version):
        """Record that ``version`` made the run (strategy, seed) and write the file."""
        self.runs[f"{strategy}|{seed}"] = version
        text = json.dumps({"runs": dict(sorted(self.runs.items()))}, indent=1) + "\n"
        write_atomically(self.path, lambda f: f.write(text.encode()))

    def versions(self, runs):
        """The distinct versions of ``runs`` ((strategy, seed) pairs); a run with no record (made
        before provenance was kept) counts as ``None``."""
        found = {json.dumps(self.runs.get(f"{s}|{seed}"), sort_keys=True) for s, seed in runs}
        return [json.loads(v) for v in sorted(found)]
