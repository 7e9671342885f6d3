"""Summaries and plots of ``curves.csv`` in the paper's terms.

The paper's metric is the relative accuracy improvement over random sampling,
``(acc - acc_random) / acc_random``, paired by seed (same initial set) and averaged over seeds.

Regenerate a results directory's ``summary.md`` and plots with
``python -m benchmarks.report benchmarks/results/digits``; compare strategies across directories
with ``python -m benchmarks.report benchmarks/results/* --compare tidal_entropy entropy``.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from .cli import HelpFormatter

__all__ = [
    "aulc",
    "comparison_table",
    "paired_aulc",
    "paired_table",
    "plot_accuracy",
    "plot_relative_improvement",
    "relative_improvement",
    "summary",
    "write_report",
]

BASELINE = "random"


def relative_improvement(curves, baseline=BASELINE):
    """Add ``rel_improvement``, each row's accuracy relative to the baseline's of the same seed and cycle.

    Parameters
    ----------
    curves : DataFrame
        Rows of ``curves.csv``.
    baseline : str

    Returns
    -------
    DataFrame
        The rows of seeds that have a baseline run, with ``rel_improvement`` (a fraction).
    """
    base = curves.loc[curves.strategy == baseline, ["seed", "cycle", "accuracy"]]
    merged = curves.merge(base.rename(columns={"accuracy": "baseline_accuracy"}), on=["seed", "cycle"])
    merged["rel_improvement"] = (merged.accuracy - merged.baseline_accuracy) / merged.baseline_accuracy
    return merged


def aulc(curves):
    """Area under each run's learning curve, normalised by the labeled range (a mean accuracy).

    Returns
    -------
    Series
        Indexed by ``(strategy, seed)``.
    """

    def area(run):
        run = run.sort_values("n_labeled")
        span = run.n_labeled.iloc[-1] - run.n_labeled.iloc[0]
        return np.trapezoid(run.accuracy, run.n_labeled) / span if span else run.accuracy.iloc[0]

    return curves.groupby(["strategy", "seed"])[["n_labeled", "accuracy"]].apply(area)


def _mean_std(values, by, scale):
    """``"mean ± std"`` text (sample std over seeds, 0 for one seed) of ``values`` grouped ``by``."""
    stats = values.groupby(by).agg(["mean", "std"])
    return (
        (scale * stats["mean"]).map("{:.2f}".format)
        + " ± "
        + (scale * stats["std"].fillna(0)).map("{:.2f}".format)
    )


def _by_budget(curves, column, scale):
    """Strategies x labeled counts table of ``mean ± std`` over seeds."""
    labels = curves.groupby("cycle").n_labeled.mean().round().astype(int)
    text = _mean_std(curves[column], [curves.strategy, curves.cycle], scale)
    wide = text.unstack("cycle")
    wide.columns = [str(labels[c]) for c in wide.columns]
    return wide


def ranking(curves):
    """Strategies ranked by mean AULC: rank, AULC and mean relative improvement over random
    (``mean ± std`` over seeds, in %), one row per strategy, best first."""
    rel = relative_improvement(curves)
    areas = aulc(curves)
    level = "strategy"
    table = pd.DataFrame({"AULC (%)": _mean_std(areas, level, 100)})
    if not rel.empty:
        per_run = rel[rel.cycle > 0].groupby(["strategy", "seed"]).rel_improvement.mean()
        table["mean rel. improvement (%)"] = _mean_std(per_run, level, 100)
    order = areas.groupby(level=0).mean().sort_values(ascending=False).index
    table = table.reindex(order)
    table.insert(0, "rank", range(1, len(order) + 1))
    return table


def summary(curves, config=None):
    """``summary.md`` text: accuracy and relative improvement per budget, AULC, a ranking and timings."""
    rel = relative_improvement(curves)
    table = ranking(curves)
    order = table.index
    seeds = sorted(curves.seed.unique())
    parts = [
        "# Benchmark summary",
        f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}). Columns are labeled-set sizes; values are "
        "mean ± std over seeds.",
    ]
    if config:
        parts.append("Configuration: " + ", ".join(f"`{k}={v}`" for k, v in config.items()))
    parts += ["## Test accuracy (%)", _by_budget(curves, "accuracy", 100).loc[order].to_markdown()]
    if not rel.empty:
        parts += [
            f"## Relative improvement over {BASELINE} (%)",
            "`(acc - acc_random) / acc_random`, paired by seed, then averaged (the paper's metric).",
            _by_budget(rel, "rel_improvement", 100).loc[order].to_markdown(),
        ]
    parts += [
        "## Ranking by area under the learning curve",
        "AULC: the learning curve's area divided by the labeled range (a mean accuracy). The mean "
        "relative improvement averages the cycles after the initial one.",
        table.to_markdown(),
        "## Time per run (seconds, mean over seeds)",
        "All fits of one run, and all its queries (scoring the pool and picking the rows).",
        curves.groupby(["strategy", "seed"])[["fit_seconds", "query_seconds"]]
        .sum()
        .groupby("strategy")
        .mean()
        .loc[order]
        .round(1)
        .to_markdown(),
        f"Total: {curves.fit_seconds.sum() / 60:.1f} min fitting, {curves.query_seconds.sum() / 60:.1f} min "
        "querying.",
    ]
    return "\n\n".join(parts) + "\n"


def _band_plot(curves, column, scale, ylabel, path, title):
    """One line per strategy of ``column``'s mean over seeds, with a ±std band.

    Random is dashed black and TiDAL's strategies are drawn thicker, so they stand out among eight.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    stats = curves.groupby(["strategy", "cycle"]).agg(
        x=("n_labeled", "mean"), mean=(column, "mean"), std=(column, "std")
    )
    for strategy, group in stats.groupby(level=0):
        x, mean, std = group.x.to_numpy(), scale * group["mean"].to_numpy(), scale * group["std"].fillna(0)
        style = {"marker": "o", "markersize": 3, "linewidth": 2.5 if strategy.startswith("tidal") else 1.2}
        if strategy == BASELINE:
            style = {"color": "black", "linestyle": "--"}
        (line,) = ax.plot(x, mean, label=strategy, **style)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.07)
    n_seeds = curves.seed.nunique()
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(ylabel)
    ax.set_title(
        f"{title}\nmean over {n_seeds} seed{'s' * (n_seeds > 1)}; bands: ± 1 std across seeds", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_accuracy(curves, path, title=""):
    """Test accuracy against the number of labeled samples, mean ± std band over seeds."""
    _band_plot(curves, "accuracy", 100, "test accuracy (%)", path, title)


def plot_relative_improvement(curves, path, title=""):
    """Relative improvement over random sampling (%), the paper's figure, mean ± std band over seeds."""
    _band_plot(
        relative_improvement(curves), "rel_improvement", 100, f"improvement over {BASELINE} (%)", path, title
    )


def plot_title(out_dir, config):
    """The results' name (the preset's directory) and budget: initial labels + query x cycles."""
    if not config:
        return Path(out_dir).name
    name = Path(out_dir).name
    name = config["dataset"] if name == config["dataset"] else f"{name} ({config['dataset']})"
    budget = config["initial_size"] + config["query_size"] * config["cycles"]
    return (
        f"{name}, {config.get('backbone', '')}: {config['initial_size']} + {config['query_size']} x "
        f"{config['cycles']} = {budget} labels"
    )


def write_report(out_dir):
    """Write ``summary.md``, ``accuracy.png`` and ``relative_improvement.png`` from ``out_dir/curves.csv``.

    Returns
    -------
    list of Path
        The files written (none if there are no rows yet).
    """
    out_dir = Path(out_dir)
    curves = pd.read_csv(out_dir / "curves.csv")
    if curves.empty:
        return []
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else None
    title = plot_title(out_dir, config)
    written = [out_dir / "summary.md", out_dir / "accuracy.png"]
    written[0].write_text(summary(curves, config))
    plot_accuracy(curves, written[1], title)
    if (curves.strategy == BASELINE).any():
        written.append(out_dir / "relative_improvement.png")
        plot_relative_improvement(curves, written[-1], title)
    return written


def comparison_table(out_dirs, strategies, n_budgets=3, baseline=BASELINE):
    """Markdown table of relative improvements over ``baseline`` across results directories.

    One row per (directory, strategy); columns are ``n_budgets`` evenly spaced query cycles
    (first to last) and the AULC difference to the baseline, all paired by seed.
    """
    lines = []
    for out_dir in map(Path, out_dirs):
        curves = pd.read_csv(out_dir / "curves.csv")
        rel = relative_improvement(curves[curves.strategy.isin([baseline, *strategies])], baseline)
        cycles = np.unique(np.linspace(1, curves.cycle.max(), n_budgets).round().astype(int))
        text = _mean_std(rel.rel_improvement, [rel.strategy, rel.cycle], 100).unstack("cycle")[cycles]
        areas = aulc(curves).unstack("strategy")
        delta = areas.sub(areas[baseline], axis=0).stack().rename("d")
        aulc_text = _mean_std(delta, "strategy", 100)
        labels = curves.groupby("cycle").n_labeled.mean().round().astype(int)
        for strategy in strategies:
            budgets = [f"{labels[c]}: {text.loc[strategy, c]}" for c in cycles]
            lines.append(
                f"| {out_dir.name} | {strategy} | " + " | ".join([*budgets, aulc_text[strategy]]) + " |"
            )
    header = [
        "results",
        "strategy",
        *[f"budget {i + 1} (labeled: % vs {baseline})" for i in range(n_budgets)],
        f"AULC - {baseline} (points)",
    ]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *lines])


def paired_aulc(curves, strategy, baseline=BASELINE, confidence=0.95):
    """AULC of ``strategy`` minus ``baseline``'s, paired by seed: a t-interval and who wins how often.

    Parameters
    ----------
    curves : DataFrame
        Rows of ``curves.csv``.
    strategy, baseline : str
    confidence : float
        Of the two-sided Student-t interval of the mean difference over seeds.

    Returns
    -------
    dict
        ``seeds`` (with both runs), ``mean``, ``std``, ``low``, ``high`` (accuracy points, i.e.
        AULC x 100) and ``wins`` / ``losses`` / ``ties`` of ``strategy`` over the seeds.
    """
    areas = aulc(curves[curves.strategy.isin([strategy, baseline])]).unstack("strategy")
    if strategy not in areas or baseline not in areas:
        raise ValueError(f"{strategy!r} and {baseline!r} must both have runs in these curves.")
    diff = 100 * (areas[strategy] - areas[baseline]).dropna()
    n = len(diff)
    mean, std = float(diff.mean()), float(diff.std()) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n)) if n > 1 else np.nan
    return {
        "seeds": n,
        "mean": mean,
        "std": std,
        "low": mean - half,
        "high": mean + half,
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
        "ties": int((diff == 0).sum()),
    }


def paired_table(out_dirs, strategies, baseline=BASELINE):
    """Markdown table of :func:`paired_aulc` of each strategy against ``baseline`` in each directory."""
    lines = [
        f"| results | strategy | seeds | AULC - {baseline} (points, mean ± std) | 95% interval "
        "| wins / losses |",
        "|---|---|---|---|---|---|",
    ]
    for out_dir in map(Path, out_dirs):
        curves = pd.read_csv(out_dir / "curves.csv")
        for strategy in strategies:
            p = paired_aulc(curves, strategy, baseline)
            mark = " *" if p["low"] > 0 or p["high"] < 0 else ""
            lines.append(
                f"| {out_dir.name} | {strategy} | {p['seeds']} | {p['mean']:.2f} ± {p['std']:.2f} "
                f"| [{p['low']:.2f}, {p['high']:.2f}]{mark} | {p['wins']} / {p['losses']} |"
            )
    return "\n".join(lines)


def build_parser():
    """The command line of ``python -m benchmarks.report``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Regenerate summary.md and plots of results directories, or compare them.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("out_dirs", nargs="+", help="directories holding curves.csv (and config.json)")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="STRATEGY",
        help="print a markdown table of these strategies' improvement over the baseline instead",
    )
    parser.add_argument(
        "--paired",
        nargs="+",
        metavar="STRATEGY",
        help="print each strategy's AULC difference to the baseline, paired by seed, with a 95%% "
        "t-interval (* when it excludes 0) and wins / losses over the seeds",
    )
    parser.add_argument(
        "--baseline", default=BASELINE, help="the strategy --compare / --paired measure against"
    )
    return parser


def main(argv=None):
    """Regenerate the reports of the given directories, or print a comparison table of them."""
    args = build_parser().parse_args(argv)
    if args.paired:
        print(paired_table(args.out_dirs, args.paired, baseline=args.baseline))
        return
    if args.compare:
        print(comparison_table(args.out_dirs, args.compare, baseline=args.baseline))
        return
    for out_dir in args.out_dirs:
        write_report(out_dir)


if __name__ == "__main__":
    main()
