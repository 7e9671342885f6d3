"""``curves.csv``: the benchmark's rows, appended and flushed cycle by cycle, resumable after a kill."""

import csv
import io
import os
from pathlib import Path

from tidal_modal.checkpoint import write_atomically

__all__ = ["COLUMNS", "CurveStore"]

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
