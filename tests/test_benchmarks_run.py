import csv
import json

import pytest

from benchmarks import run
from benchmarks.baselines import STRATEGIES


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in [
        "--preset",
        "--dataset",
        "--strategies",
        "--seeds",
        "--initial-size",
        "--query-size",
        "--cycles",
        "--epochs",
        "--no-warm-start",
        "--device",
        "--out-dir",
    ]:
        assert option in out


class TestPresets:
    def test_preset_sets_defaults_and_options_override(self):
        args = run.parse_args(["--preset", "mnist5k-ir10", "--epochs", "3"])
        assert args.dataset == "mnist5k-ir10" and args.query_size == 50 and args.epochs == 3
        assert args.out_dir == run.RESULTS / "mnist5k-ir10"

    def test_without_preset_results_go_to_scratch(self):
        args = run.parse_args([])
        assert args.dataset == "digits" and args.out_dir == run.RESULTS / "_scratch" / "digits"


def test_tiny_end_to_end_run(tmp_path):
    run.main(
        [
            "--dataset",
            "digits-ir10",
            "--seeds",
            "0",
            "--cycles",
            "1",
            "--epochs",
            "1",
            "--initial-size",
            "20",
            "--query-size",
            "5",
            "--mc-draws",
            "2",
            "--out-dir",
            str(tmp_path),
        ]
    )
    with open(tmp_path / "curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["strategy"], r["cycle"]) for r in rows) == sorted(
        (s, c) for s in STRATEGIES for c in "01"
    )
    assert {int(r["n_labeled"]) for r in rows if r["cycle"] == "1"} == {25}
    assert json.loads((tmp_path / "config.json").read_text())["dataset"] == "digits-ir10"
    summary = (tmp_path / "summary.md").read_text()
    assert "## Relative improvement over random" in summary and "tidal_entropy" in summary
    for plot in ["accuracy.png", "relative_improvement.png"]:
        assert (tmp_path / plot).stat().st_size > 10_000
