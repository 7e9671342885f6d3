import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from benchmarks import report, run
from benchmarks.baselines import STRATEGIES

from .test_benchmarks_datasets import write_batch

RESULTS = run.RESULTS


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


def test_tiny_end_to_end_run(tmp_path, capsys):
    argv = [
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
    run.main(argv)
    with open(tmp_path / "curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["strategy"], r["cycle"]) for r in rows) == sorted(
        (s, c) for s in run.DEFAULT_STRATEGIES for c in "01"
    )
    assert {int(r["n_labeled"]) for r in rows if r["cycle"] == "1"} == {25}
    assert json.loads((tmp_path / "config.json").read_text())["dataset"] == "digits-ir10"
    sizes = json.loads((tmp_path / "dataset.json").read_text())
    assert sizes["test_class_counts"] == [50] * 10 and sum(sizes["pool_class_counts"]) == sizes["pool"]
    summary = (tmp_path / "summary.md").read_text()
    assert "## Relative improvement over random" in summary and "tidal_entropy" in summary
    for plot in ["accuracy.png", "relative_improvement.png"]:
        assert (tmp_path / plot).stat().st_size > 10_000
    # the terminal ends with the ranking, paired differences, where TiDAL landed and where the report is
    out = capsys.readouterr().out
    headline = out[out.index("Strategies ranked by area under the learning curve (AULC") :]
    assert "mean ± std over 1 seeds" in " ".join(headline.split())
    rows = [line.split("|") for line in headline.splitlines() if line.startswith("| ")][1:]
    ranked = {row[1].strip(): float(row[3].split("±")[0]) for row in rows}
    # one seed, two cycles: the AULC is the mean of the two accuracies
    aulc = 100 * pd.read_csv(tmp_path / "curves.csv").groupby("strategy").accuracy.mean()
    assert ranked == pytest.approx(aulc.round(2).to_dict(), abs=0.006)
    assert list(ranked.values()) == sorted(ranked.values(), reverse=True)
    assert "| vs random (points)" in headline and "(one seed: no interval)" in headline
    assert "The training-dynamics (TD) strategies rank" in headline and "With one seed" in headline
    for name in ["summary.md", "accuracy.png", "relative_improvement.png", "paired_aulc.png"]:
        assert str(tmp_path / name) in headline
    # a second call finds every run stored: it says so, trains nothing and rewrites the report
    (tmp_path / "summary.md").unlink()
    run.main(argv)
    out = " ".join(capsys.readouterr().out.split())
    assert "0 runs to do" in out
    assert (
        f"All 11 runs (11 strategies x 1 seeds) are already stored in {tmp_path} (from an earlier run): "
        "nothing to train" in out
    )
    assert "--out-dir NEW_FOLDER" in out and (tmp_path / "summary.md").exists()
    assert len(pd.read_csv(tmp_path / "curves.csv")) == 2 * len(run.DEFAULT_STRATEGIES)


def test_a_preset_with_its_committed_runs_says_how_to_rerun(tmp_path, monkeypatch, capsys):
    """``--preset digits`` over the committed digits runs: nothing to train, a report from them."""
    monkeypatch.setattr(run, "RESULTS", tmp_path)  # a copy, so that the committed report stays
    (tmp_path / "digits").mkdir()
    for name in ["curves.csv", "config.json"]:
        shutil.copy(RESULTS / "digits" / name, tmp_path / "digits" / name)
    run.main(["--preset", "digits"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 runs to do" in out
    assert f"are already stored in {tmp_path / 'digits'} (the committed results of this preset)" in out
    assert "python -m benchmarks.run --preset digits --out-dir NEW_FOLDER" in out
    # the ending: ranking with paired differences and the verdict, computed from the stored runs
    curves = pd.read_csv(tmp_path / "digits" / "curves.csv")
    assert " ".join(report.verdict(curves, "digits").split()) in out
    assert "wins vs random" in out and "The training-dynamics (TD) strategies rank" in out


def test_all_stored_message():
    args = run.parse_args(["--seeds", "0", "1", "--strategies", "random", "margin"])
    text = run.all_stored(args)
    assert text.startswith("All 4 runs (2 strategies x 2 seeds) are already stored in")
    assert "(from an earlier run)" in text and "python -m benchmarks.run --out-dir NEW_FOLDER" in text
    text = run.all_stored(run.parse_args(["--preset", "digits"]))
    assert "(the committed results of this preset)" in text and "--preset digits --out-dir" in text


def test_cifar_resnet_end_to_end(tmp_path):
    rng = np.random.RandomState(0)
    for i in range(1, 6):
        write_batch(tmp_path / f"data_batch_{i}", 8, b"labels", 10, rng)
    write_batch(tmp_path / "test_batch", 10, b"labels", 10, rng)
    out = tmp_path / "out"
    run.main(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--backbone", "resnet18", "--seeds", "0",
              "--strategies", "tidal_margin", "bald", "--cycles", "1", "--epochs", "1",
              "--initial-size", "10", "--query-size", "4", "--mc-draws", "2", "--epoch-progress",
              "--out-dir", str(out)])  # fmt: skip
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 4 and set(curves.n_labeled) == {10, 14}


@pytest.mark.parametrize("preset", ["mnist5k-paper", "mnist5k-ir10-paper", "mnist5k-ir100-paper"])
def test_paper_presets_take_the_recipe(preset, tmp_path):
    config = run.config_from_args(run.parse_args(["--preset", preset]))
    for _ in range(2):  # the written config.json reads back as the same configuration: a resume works
        run._check_config(tmp_path, config)
    config = config.to_dict()
    assert {k: config[k] for k in ["backbone", "optimizer", "lr", "momentum", "weight_decay"]} == {
        "backbone": "cnn-bn", "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4
    }  # fmt: skip
    assert config["lr_milestones"] == [0.8] and config["epochs"] == 100 and config["dropout"] == 0.0
    assert config["shift"] > 0 and "flip" not in config and config["cover_classes"] is True


def test_tiny_paper_preset_end_to_end(tmp_path, monkeypatch):
    """A TD strategy, BALD with scoring-time dropout, and random; the report is tested above."""
    monkeypatch.setattr(run, "write_report", lambda out_dir: [])
    run.main(["--preset", "mnist5k-ir100-paper", "--seeds", "0", "--cycles", "1", "--epochs", "2",
              "--initial-size", "12", "--query-size", "4", "--mc-draws", "2",
              "--strategies", "random", "tidal_margin", "bald", "--out-dir", str(tmp_path)])  # fmt: skip
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert sorted(curves.strategy) == sorted(["random", "tidal_margin", "bald"] * 2)
    assert set(curves.n_labeled) == {12, 16} and curves.accuracy.between(0, 1).all()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["epochs"] == 2 and config["optimizer"] == "sgd" and config["mc_dropout"] == 0.3


@pytest.mark.parametrize(
    "preset",
    ["digits", "digits-ir10", "digits-ir100", "mnist5k", "mnist5k-ir10", "mnist5k-ir100"]
    + ["mnist5k-paper", "mnist5k-ir10-paper", "mnist5k-ir100-paper"],
)
def test_presets_match_their_committed_results(preset):
    """``--preset NAME`` must resume, not contradict, benchmarks/results/NAME (README quotes it)."""
    args = run.parse_args(["--preset", preset])
    config = run.config_from_args(args)
    committed = json.loads((run.RESULTS / preset / "config.json").read_text())
    assert config.to_dict() == committed
    seeds = set(pd.read_csv(run.RESULTS / preset / "curves.csv").seed)
    assert seeds == set(args.seeds)


class TestStrategyOptions:
    def test_options_after_a_colon_reach_the_strategy(self):
        from benchmarks.baselines import get_strategy

        strategy = get_strategy("disal:target=td,sign=signed,normalize=false,n_checkpoints=5")
        assert strategy.keywords == dict(target="td", sign="signed", normalize=False, n_checkpoints=5)
        assert get_strategy("disal") is STRATEGIES["disal"]

    @pytest.mark.parametrize(
        "name, match", [("nope", "unknown strategy 'nope'"), ("disal:colour=red", "'colour=red' is not")]
    )
    def test_unknown_names_and_options_are_refused_by_the_command_line(self, name, match, capsys):
        with pytest.raises(SystemExit):
            run.parse_args(["--strategies", name])
        assert match in capsys.readouterr().err
