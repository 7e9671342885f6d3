"""Smoke test of the transaction-cost benchmark: it runs, times both sides and writes its JSON."""

import json

import numpy as np
import pytest

from benchmarks import transaction_cost
from tidal_modal import transaction


def test_transaction_cost_benchmark_writes_its_json(tmp_path, capsys):
    out = tmp_path / "cost.json"
    result = transaction_cost.main(
        ["--repeats", "2", "--n-train", "16", "--epochs", "1", "--output", str(out)]
    )
    times = {side: np.asarray(t) for side, t in result["times"].items()}
    assert [len(t) for t in times.values()] == [2, 2]
    assert result["ratio"] == pytest.approx(np.median(times["snapshot"] / times["no_snapshot"]))
    assert result["snapshot_s"] > 0 and result["history_epochs"] == 1 + 2 * 2  # warm-started fits
    assert json.loads(out.read_text())["ratio"] == result["ratio"]
    assert "fit with snapshot / without" in capsys.readouterr().out
    assert transaction.take_snapshot is not transaction_cost.no_op  # the patch was undone
