import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from benchmarks.report import (
    FONTS,
    aulc,
    best_without_td,
    comparison_table,
    is_td,
    paired_aulc,
    paired_ranking,
    paired_table,
    plot_accuracy,
    plot_paired_aulc,
    plot_relative_improvement,
    plot_title,
    relative_improvement,
    summary,
    verdict,
    write_report,
)


@pytest.fixture
def curves():
    # two seeds, two cycles; "a" beats random by 10% on seed 0 and loses 10% on seed 1
    rows = [
        ("random", 0, 0, 10, 0.5), ("random", 0, 1, 20, 0.6),
        ("random", 1, 0, 10, 0.4), ("random", 1, 1, 20, 0.5),
        ("a", 0, 0, 10, 0.5), ("a", 0, 1, 20, 0.66),
        ("a", 1, 0, 10, 0.4), ("a", 1, 1, 20, 0.45),
        ("b", 0, 0, 10, 0.5), ("b", 0, 1, 20, 0.72),
        ("b", 1, 0, 10, 0.4), ("b", 1, 1, 20, 0.55),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["strategy", "seed", "cycle", "n_labeled", "accuracy"])
    return frame.assign(fit_seconds=1.5, query_seconds=0.5 * frame.cycle)


class TestMetrics:
    def test_relative_improvement_is_paired_by_seed(self, curves):
        rel = relative_improvement(curves).set_index(["strategy", "seed", "cycle"]).rel_improvement
        assert rel["a", 0, 1] == pytest.approx(0.1)
        assert rel["a", 1, 1] == pytest.approx(-0.1)
        # paired mean is 0; the ratio of unpaired means would be 0.555 / 0.55 - 1 = +0.9%
        assert rel.loc["a", :, 1].mean() == pytest.approx(0.0)
        assert (rel.loc["random"] == 0).all()

    def test_aulc_is_the_mean_height_of_the_curve(self, curves):
        areas = aulc(curves)
        assert areas["random", 0] == pytest.approx(0.55)
        assert areas["a", 1] == pytest.approx(0.425)

    def test_summary_ranks_by_aulc_and_reports_paired_improvement(self, curves):
        text = summary(curves, {"dataset": "toy"})
        ranking = text[text.index("## Ranking") :]
        assert ranking.index("| b ") < ranking.index("| a ") < ranking.index("| random ")
        rel_table = text[text.index("## Relative improvement") : text.index("## AULC and mean relative")]
        a_row = next(line for line in rel_table.splitlines() if line.startswith("| a "))
        assert "0.00 ± 14.14" in a_row  # mean of +10% and -10%, sample std
        assert "`dataset=toy`" in text
        # per run: two fits of 1.5 s and one query of 0.5 s
        time_table = text[text.index("## Time per run") :]
        b_row = next(line for line in time_table.splitlines() if line.startswith("| b "))
        assert [cell.strip() for cell in b_row.strip("|").split("|")] == ["b", "3", "0.5"]


class TestPlots:
    def test_agg_backend(self):
        assert matplotlib.get_backend().lower() == "agg"

    @pytest.mark.parametrize("plot", [plot_accuracy, plot_relative_improvement, plot_paired_aulc])
    def test_plots_render_to_png(self, plot, curves, tmp_path):
        path = tmp_path / "plot.png"
        plot(curves, path, title="toy")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(path).shape
        assert width >= 800 and height >= 300

    def test_fonts_are_readable_at_the_saved_size(self):
        assert min(v for k, v in FONTS.items() if k != "figure.titlesize") >= 11

    def test_write_report_writes_the_paired_plot(self, store, tmp_path):
        store.to_csv(tmp_path / "curves.csv", index=False)
        written = write_report(tmp_path)
        assert [p.name for p in written] == [
            "summary.md", "accuracy.png", "relative_improvement.png", "paired_aulc.png"
        ]  # fmt: skip
        text = (tmp_path / "summary.md").read_text()
        assert text.index("## Ranking by area under the learning curve, paired by seed") < text.index(
            "## Test accuracy"
        )
        assert "The training-dynamics (TD) strategies rank 3rd" in text


def test_comparison_table_reads_results_directories(curves, tmp_path):
    (tmp_path / "toy").mkdir()
    curves.to_csv(tmp_path / "toy" / "curves.csv", index=False)
    table = comparison_table([tmp_path / "toy"], ["a", "b"], n_budgets=1).splitlines()
    assert len(table) == 4
    # b: +20% and +10% at 20 labels; AULC differences +6 and +2.5 points
    assert table[3] == "| toy | b | 20: 15.00 ± 7.07 | 4.25 ± 2.47 |"


class TestPaired:
    def test_interval_and_wins_from_a_hand_count(self, curves):
        # AULC = mean of the two points. a - random: seed 0 (0.58 - 0.55), seed 1 (0.425 - 0.45)
        p = paired_aulc(curves, "a")
        diffs = [3.0, -2.5]
        assert p["seeds"] == 2 and p["wins"] == 1 and p["losses"] == 1
        assert p["mean"] == pytest.approx(0.25) and p["std"] == pytest.approx(np.std(diffs, ddof=1))
        half = 12.706204736 * np.std(diffs, ddof=1) / np.sqrt(2)  # t(0.975, 1 dof)
        assert (p["low"], p["high"]) == pytest.approx((0.25 - half, 0.25 + half))

    def test_a_strategy_that_wins_every_seed(self, curves):
        p = paired_aulc(curves, "b")  # seed 0: 0.61 - 0.55, seed 1: 0.475 - 0.45
        assert (p["wins"], p["losses"], p["mean"]) == (2, 0, pytest.approx(4.25))
        assert p["low"] < p["mean"] < p["high"]

    def test_missing_strategy(self, curves):
        with pytest.raises(ValueError, match="'c' and 'random'"):
            paired_aulc(curves, "c")

    def test_table(self, curves, tmp_path):
        curves.to_csv(tmp_path / "curves.csv", index=False)
        table = paired_table([tmp_path], ["a", "b"])
        assert "| a | 2 | 0.25 ± 3.89 |" in table and "| 1 / 1 |" in table and "| 2 / 0 |" in table


def test_plot_titles_name_the_results_and_the_budget(tmp_path):
    config = {"dataset": "digits-ir10", "backbone": "mlp", "initial_size": 40, "query_size": 20, "cycles": 10}
    assert plot_title(tmp_path / "digits-ir10", config) == "digits-ir10, mlp: 40 + 20 x 10 = 240 labels"
    assert plot_title(tmp_path / "batch", config).startswith("batch (digits-ir10), mlp")
    assert plot_title(tmp_path / "old", None) == "old"


@pytest.fixture
def store():
    """Three seeds with flat learning curves (AULC = accuracy), so the AULC differences to random
    are set by hand, in points: margin +5, +6, +7; entropy +4, +6, +5; tidal_margin +1, +2, +3;
    tidal_entropy +0.5, +1.5, -0.5."""
    offsets = {
        "random": [0, 0, 0],
        "margin": [5, 6, 7],
        "entropy": [4, 6, 5],
        "tidal_margin": [1, 2, 3],
        "tidal_entropy": [0.5, 1.5, -0.5],
    }
    rows = [
        (strategy, seed, cycle, 10 + 5 * cycle, (80 + seed + offset[seed]) / 100)
        for strategy, offset in offsets.items()
        for seed in range(3)
        for cycle in range(3)
    ]
    frame = pd.DataFrame(rows, columns=["strategy", "seed", "cycle", "n_labeled", "accuracy"])
    return frame.assign(fit_seconds=1.0, query_seconds=0.1)


T_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


class TestPairedRanking:
    def test_td_strategies(self):
        assert is_td("tidal_entropy") and is_td("disal:target=td,sign=signed") and is_td("tidal_batch")
        assert not any(map(is_td, ["random", "margin", "coreset", "bald", "entropy", "uncertainty"]))

    def test_best_without_td_skips_td_and_random(self, store):
        assert best_without_td(store) == "margin"
        assert best_without_td(store[store.strategy.isin(["random", "tidal_margin"])]) is None

    def test_differences_to_the_best_without_td_and_to_random(self, store):
        table = paired_ranking(store)
        assert list(table.index) == ["margin", "entropy", "tidal_margin", "tidal_entropy", "random"]
        assert list(table["rank"]) == [1, 2, 3, 4, 5]
        # tidal_entropy - margin: -4.5, -4.5, -7.5 points; mean -5.5, std sqrt(3)
        half = T_975_2 * np.sqrt(3) / np.sqrt(3)
        assert table.loc["tidal_entropy", "vs margin (points)"] == (
            f"-5.50 ± 1.73 [{-5.5 - half:+.2f}, {-5.5 + half:+.2f}]"
        )
        assert table.loc["tidal_margin", "vs margin (points)"] == "-4.00 ± 0.00 [-4.00, -4.00]"
        assert table.loc["margin", "vs margin (points)"] == "(reference)"
        # margin - random: 5, 6, 7; mean 6, std 1
        half = T_975_2 / np.sqrt(3)
        assert table.loc["margin", "vs random (points)"] == f"+6.00 ± 1.00 [{6 - half:+.2f}, {6 + half:+.2f}]"
        assert table.loc["margin", "wins vs random"] == "3/3"
        assert table.loc["tidal_entropy", "wins vs random"] == "2/3"
        assert table.loc["entropy", "wins vs margin"] == "0/3"  # -1, 0, -2: a tie is no win
        assert table.loc["random", "wins vs random"] == ""

    def test_the_numbers_are_paired_aulc(self, store):
        p = paired_aulc(store, "tidal_margin", "random")
        assert (p["mean"], p["std"], p["wins"]) == (pytest.approx(2.0), pytest.approx(1.0), 3)
        assert p["low"] == pytest.approx(2 - T_975_2 / np.sqrt(3))

    def test_verdict_says_where_the_td_strategies_landed(self, store):
        text = verdict(store, "toy")
        assert text.startswith(
            "margin ranks first, but the 3 seeds cannot tell it from entropy (their paired 95% intervals "
            "include 0)."
        )
        assert (
            "The training-dynamics (TD) strategies rank 3rd (tidal_margin) and 4th (tidal_entropy) of 5, "
            "just above random." in text
        )
        assert (
            "against margin, the best without training dynamics, tidal_margin -4.00 [-4.00, -4.00] and "
            "tidal_entropy -5.50 [-9.80, -1.20] are behind;" in text
        )
        assert (
            "against random, tidal_margin +2.00 [-0.48, +4.48] and tidal_entropy +0.50 [-1.98, +2.98] "
            "cannot be told from it with 3 seeds." in text
        )
        assert text.endswith("On toy, scoring a snapshot of the classifier (margin) beats every TD strategy.")

    def test_verdict_when_training_dynamics_win(self, store):
        better = store.copy()
        better.loc[better.strategy == "tidal_margin", "accuracy"] += 0.1  # 10 points up on every seed
        text = verdict(better, "toy")
        assert "rank 1st (tidal_margin) and 4th (tidal_entropy) of 5" in text
        assert "tidal_margin +6.00 [+6.00, +6.00] is ahead" in text
        assert text.endswith("On toy, training dynamics pay off only for tidal_margin.")

    def test_verdict_with_one_seed_gives_no_intervals(self, store):
        text = verdict(store[store.seed == 0], "toy")
        assert "With one seed there are no intervals, so no verdict." in text
        assert (
            "(one seed: no interval)"
            in paired_ranking(store[store.seed == 0]).loc["margin", "vs random (points)"]
        )

    def test_verdict_without_td_strategies(self, curves):
        assert "training-dynamics" not in verdict(curves)
