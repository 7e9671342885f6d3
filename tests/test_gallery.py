"""The documentation's gallery: every ``examples/plot_*.py`` runs and draws a figure with data."""

import runpy
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # before pyplot is imported: no window, no display needed
import matplotlib.pyplot as plt  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))


def test_the_gallery_has_its_examples():
    assert len(EXAMPLES) >= 6, [path.name for path in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_and_draws_a_figure(example, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    plt.close("all")
    try:
        with matplotlib.rc_context():  # the examples' rcParams do not leak into other tests
            runpy.run_path(str(example), run_name="__main__")
        figures = [plt.figure(number) for number in plt.get_fignums()]
        assert figures, f"{example.name} drew no figure"
        drawn = [ax for figure in figures for ax in figure.axes if ax.lines or ax.collections or ax.patches]
        assert drawn, f"{example.name} drew no data"
    finally:
        plt.close("all")
