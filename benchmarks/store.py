"""``curves.csv``: the benchmark's rows, appended and flushed cycle by cycle, resumable after a kill."""

import csv
import os
from pathlib import Path

__all__ = ["COLUMNS", "CurveStore"]

COLUMNS = ("strategy", "seed", "cycle", "n_labeled", "accuracy", "fit_seconds", "query_seconds")


class CurveStore:
    """Append-only CSV of one row per (strategy, seed, cycle).

    A (strategy, seed) run is complete when it has all ``n_cycles + 1`` rows. Opening the store
    drops the rows of incomplete runs (a run killed mid-way is redone from scratch) and keeps
    every complete one, so re-running into the same file never duplicates or loses rows.

    Parameters
    ----------
    path : str or Path
    n_cycles : int
        Queries per run; a run has rows for cycles ``0 .. n_cycles``.
    """

    def __init__(self, path, n_cycles):
        self.path = Path(path)
        self.n_cycles = n_cycles
        rows = self._read()
        runs = {}
        for row in rows:
            runs.setdefault((row["strategy"], int(row["seed"])), set()).add(int(row["cycle"]))
        self.completed = {run for run, cycles in runs.items() if cycles == set(range(n_cycles + 1))}
        kept = [row for row in rows if (row["strategy"], int(row["seed"])) in self.completed]
        if len(kept) != len(rows) or not self.path.exists():
            self._rewrite(kept)

    def _read(self):
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows):
        # write a temporary file and swap it in, so that a kill here cannot lose the kept rows
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row):
        """Append one row and flush it to disk; mark the run complete after its last cycle."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
            f.flush()
            os.fsync(f.fileno())
        if row["cycle"] == self.n_cycles:
            self.completed.add((row["strategy"], int(row["seed"])))
