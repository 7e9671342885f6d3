import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from benchmarks.report import (
    aulc,
    comparison_table,
    paired_aulc,
    paired_table,
    plot_accuracy,
    plot_relative_improvement,
    plot_title,
    relative_improvement,
    summary,
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
        rel_table = text[text.index("## Relative improvement") : text.index("## Ranking")]
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

    @pytest.mark.parametrize("plot", [plot_accuracy, plot_relative_improvement])
    def test_plots_render_to_png(self, plot, curves, tmp_path):
        path = tmp_path / "plot.png"
        plot(curves, path, title="toy")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(path).shape == (450, 700, 4)


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
