"""benchmarks.stopping: the oracle on known curves, and a replay that stores and reports."""

import numpy as np
import pandas as pd
import pytest

from benchmarks import stopping


def test_the_oracle_is_the_first_cycle_within_half_a_point_of_the_end():
    # climbs, then a plateau at 90% with single-cycle noise of +-1 point
    accuracy = [0.50, 0.70, 0.80, 0.86, 0.89, 0.90, 0.91, 0.89, 0.90, 0.91, 0.89]
    # the end: mean(0.90, 0.91, 0.89) = 0.90; smoothed cycle 4: mean(.86, .89, .90) = 0.8833,
    # cycle 5: mean(.89, .90, .91) = 0.90 >= 0.895
    assert stopping.oracle_cycle(accuracy) == 5
    # still climbing: the end is the mean of the last 3 cycles (0.7), reached by smoothed cycle 2
    assert stopping.oracle_cycle([0.5, 0.6, 0.7, 0.8]) == 2
    assert stopping.oracle_cycle([0.9] * 5) == 0


def run_rows(values, accuracy, labels_per_cycle=10):
    n = len(accuracy)
    return pd.DataFrame(
        {
            "seed": 0,
            "cycle": range(n),
            "n_labeled": [10 + labels_per_cycle * c for c in range(n)],
            "accuracy": accuracy,
            **values,
        }  # fmt: skip
    )


def test_outcomes_count_labels_and_accuracy_against_the_oracle():
    accuracy = [0.5, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9]
    nan = float("nan")
    values = {
        "kappa": [nan, 0.5, 0.9, 0.995, 0.995, 0.995, 1.0, 1.0],  # window 3 >= 0.99: cycle 5
        "uncertainty": [0.5, 0.3, 0.0005, 0.0001, 0.0001, 0.0, 0.0, 0.0],  # <= 0.001: cycle 2, early
        "td_disagreement": [0.2] * 8,  # never
    }
    rows = run_rows(values, accuracy)
    table = stopping.outcomes(rows, names=list(values)).set_index("criterion")
    oracle = stopping.oracle_cycle(accuracy)
    # smoothed cycle 3 is (.8 + .9 + .9) / 3 < 0.895, cycle 4 is 0.9
    assert oracle == 4 and (table["oracle_labels"] == 50).all()
    assert table.loc["kappa", "stop_labels"] == 60 and table.loc["kappa", "extra_labels"] == 10
    assert table.loc["kappa", "accuracy_lost"] == pytest.approx(0.0)
    assert table.loc["uncertainty", "extra_labels"] == -20
    assert table.loc["uncertainty", "accuracy_lost"] == pytest.approx(90 - 80)  # smoothed: (.7+.8+.9)/3
    assert not table.loc["td_disagreement", "fired"] and table.loc["td_disagreement", "stop_labels"] == 80


def test_a_replay_stores_each_seed_resumes_and_reports(tmp_path):
    rows = stopping.replay("digits-ir100", seeds=[0], extra_cycles=0, out_dir=tmp_path)
    path = tmp_path / "digits-ir100.csv"
    assert path.exists() and sorted(rows["cycle"]) == list(range(11))
    for name in [*stopping.CRITERIA, *stopping.VARIANTS]:
        values = rows[name].to_numpy(float)
        assert np.isfinite(values[1:]).all()
    before = path.read_text()
    again = stopping.replay("digits-ir100", seeds=[0], extra_cycles=0, out_dir=tmp_path)  # nothing to do
    assert path.read_text() == before and len(again) == len(rows)
    summary = stopping.write_report(tmp_path)
    text = summary.read_text()
    assert "### digits-ir100" in text and "| kappa |" in text and "Against kappa" in text
    assert (tmp_path / "digits-ir100.png").exists()
