import pandas as pd
import pytest

from benchmarks import td_pays
from benchmarks.store import Provenance


def curves(offsets, n_seeds=5):
    """Two-cycle runs whose AULC is ``0.5 + offset + noise(seed)`` (accuracy as a fraction)."""
    rows = []
    for strategy, offset in offsets.items():
        for seed in range(n_seeds):
            for cycle in range(2):
                accuracy = 0.5 + offset + 0.01 * seed + 0.001 * (seed % 2) * (offset > 0)
                rows.append(dict(strategy=strategy, seed=seed, cycle=cycle, n_labeled=10 + 10 * cycle,
                                 accuracy=accuracy, fit_seconds=0.0, query_seconds=0.0))  # fmt: skip
    return pd.DataFrame(rows)


def test_twins_carry_options():
    assert td_pays.twin_of("tidal_balanced") == "balanced"
    assert td_pays.twin_of("tidal_batch:embedding=input") == "classifier_batch:embedding=input"
    assert td_pays.twin_of("tidal_modal_batch:measure=td_least_confidence") == "uncertainty_batch"
    assert td_pays.twin_of("disal") is None


def test_each_td_strategy_is_paired_with_its_twin_and_the_best_without_td():
    data = curves(
        {"random": 0.0, "margin": 0.03, "uncertainty_batch": 0.05, "balanced": 0.02, "tidal_balanced": 0.04,
         "disal": 0.01}
    )  # fmt: skip
    rows = {row["strategy"]: row for row in td_pays.study_rows(data, "toy")}
    assert set(rows) == {"tidal_balanced", "disal"}
    balanced = rows["tidal_balanced"]
    assert balanced["best"] == "uncertainty_batch" and balanced["twin"] == "balanced"
    assert balanced["aulc"] == pytest.approx(100 * (0.54 + 0.02 + 0.0004), abs=0.01)
    assert balanced["vs_twin"]["mean"] == pytest.approx(2.0, abs=0.1) and balanced["vs_twin"]["wins"] == 5
    assert balanced["vs_best"]["mean"] == pytest.approx(-1.0, abs=0.1) and balanced["vs_best"]["wins"] == 0
    assert rows["disal"]["twin"] is None and rows["disal"]["vs_twin"] is None


def test_the_report_names_every_strategy_and_the_code(tmp_path):
    out = tmp_path / "toy"
    out.mkdir()
    curves({"random": 0.0, "margin": 0.03, "tidal_margin": 0.01}).to_csv(out / "curves.csv", index=False)
    record = Provenance(out / "provenance.json")
    for strategy in ["random", "margin", "tidal_margin"]:
        for seed in range(5):
            record.record(strategy, seed, {"tidal_modal": "1", "commit": "abc" * 14, "dirty": False})
    text = td_pays.report([out])
    assert "## toy\n\nThe runs were made by tidal-modal 1 at commit abcabcabca" in text
    line = next(line for line in text.splitlines() if line.startswith("| toy | tidal_margin"))
    assert "(margin)" in line and "*" in line  # two points behind margin on every seed
    ranking = text[text.index("## toy") :]
    assert [r.split("|")[1].strip() for r in ranking.splitlines() if r.startswith("| ")][1:] == [
        "margin", "tidal_margin", "random"
    ]  # fmt: skip
    td_pays.main([str(out), "--out", str(tmp_path / "study.md")])
    assert (tmp_path / "study.md").read_text() == text


def test_the_headline_names_the_best_with_and_without_td(tmp_path):
    out = tmp_path / "toy"
    out.mkdir()
    data = curves({"random": 0.0, "margin": 0.03, "tidal_entropy": 0.01, "tidal_margin": 0.02})
    data.to_csv(out / "curves.csv", index=False)
    table = td_pays.headline_table([out])
    row = table.splitlines()[2].split("|")
    assert row[1].strip() == "toy" and row[2].strip().startswith("margin (")
    assert row[3].strip().startswith("tidal_margin (") and row[4].strip().startswith("-1.00 [")
    assert row[5].strip().startswith("-2.00 [")
    td_pays.main([str(out), "--headline", "--out", str(tmp_path / "h.md")])
    assert (tmp_path / "h.md").read_text() == table + "\n"
