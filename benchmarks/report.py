"""Summaries and plots of ``curves.csv`` in the paper's terms.

The paper's metric is the relative accuracy improvement over random sampling,
``(acc - acc_random) / acc_random``, paired by seed (same initial set) and averaged over seeds.

Regenerate a results directory's ``summary.md`` and plots with
``python -m benchmarks.report benchmarks/results/digits``; compare strategies across directories
with ``python -m benchmarks.report benchmarks/results/* --compare tidal_entropy entropy``.

A report leads with the AULC ranking and each strategy's AULC difference, paired by seed, to the
best strategy without training dynamics and to random (:func:`paired_ranking`), and says in words
where the training-dynamics (TD) strategies landed (:func:`verdict`).
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
from .store import Provenance, library_tree

__all__ = [
    "aulc",
    "best_without_td",
    "comparison_table",
    "is_td",
    "paired_aulc",
    "paired_ranking",
    "paired_table",
    "plot_accuracy",
    "plot_paired_aulc",
    "plot_relative_improvement",
    "relative_improvement",
    "summary",
    "verdict",
    "write_report",
]

BASELINE = "random"

# strategies that score the training dynamics (TiDAL's TD head, DISAL's trajectory) rather than a
# snapshot of the classifier; a name's options after a colon do not count
TD_STRATEGIES = ("tidal_entropy", "tidal_margin", "tidal_batch", "disal")

# every figure's fonts (points), large enough to read at the saved size
FONTS = {
    "font.size": 12,
    "axes.titlesize": 12,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "figure.titlesize": 13,
}
DPI = 100


def is_td(strategy):
    """Whether ``strategy`` (a name, options after a colon allowed) scores training dynamics."""
    base = strategy.partition(":")[0]
    return base in TD_STRATEGIES or base.startswith("tidal")


def best_without_td(curves, baseline=BASELINE):
    """The strategy of highest mean AULC among those that are neither TD strategies nor ``baseline``
    (None if there is none)."""
    return next((s for s in _rank_order(curves) if not is_td(s) and s != baseline), None)


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


def _rank_order(curves, areas=None):
    """The strategies by mean AULC over seeds, best first."""
    areas = aulc(curves) if areas is None else areas
    return list(areas.groupby(level=0).mean().sort_values(ascending=False).index)


def ranking(curves):
    """Strategies ranked by mean AULC: rank, AULC and mean relative improvement over random
    (``mean ± std`` over seeds, in %), one row per strategy, best first."""
    rel = relative_improvement(curves)
    areas = aulc(curves)
    level = "strategy"
    table = pd.DataFrame({"AULC (%)": _mean_std(areas, level, 100)})
    if not rel.empty:
        per_run = rel[rel.cycle > 0].groupby(["strategy", "seed"]).rel_improvement.mean()
        table[f"mean relative improvement over {BASELINE} (%)"] = _mean_std(per_run, level, 100)
    order = _rank_order(curves, areas)
    table = table.reindex(order)
    table.insert(0, "rank", range(1, len(order) + 1))
    return table


def _references(curves, baseline=BASELINE):
    """The references of the paired differences: the best strategy without training dynamics, and
    ``baseline``; each only if it has runs (and is not the same strategy)."""
    best = best_without_td(curves, baseline)
    present = set(curves.strategy)
    return [ref for ref in dict.fromkeys([best, baseline]) if ref is not None and ref in present]


def _paired_all(curves, baseline=BASELINE, confidence=0.95):
    """``{reference: {strategy: paired_aulc(...)}}`` for every strategy but the reference itself."""
    return {
        ref: {s: paired_aulc(curves, s, ref, confidence) for s in curves.strategy.unique() if s != ref}
        for ref in _references(curves, baseline)
    }


def _interval_text(p):
    """``"+0.25 ± 0.45 [-0.10, +0.60]"`` (accuracy points) of one :func:`paired_aulc` result."""
    if not np.isfinite(p["low"]):
        return f"{p['mean']:+.2f} (one seed: no interval)"
    return f"{p['mean']:+.2f} ± {p['std']:.2f} [{p['low']:+.2f}, {p['high']:+.2f}]"


def paired_ranking(curves, baseline=BASELINE, confidence=0.95):
    """The AULC ranking with each strategy's AULC difference, paired by seed, to the best strategy
    without training dynamics and to ``baseline``.

    Returns
    -------
    DataFrame
        One row per strategy, best first: ``rank``, ``AULC (%)`` (mean ± std over seeds) and, per
        reference, ``vs REF (points)`` (the :func:`paired_aulc` difference in accuracy points:
        mean ± std [95% t-interval]) and ``wins vs REF`` (seeds won of the seeds with both runs).
    """
    table = ranking(curves)[["rank", "AULC (%)"]]
    for ref, results in _paired_all(curves, baseline, confidence).items():
        column = f"vs {ref} (points)"
        table[column] = [_interval_text(results[s]) if s in results else "(reference)" for s in table.index]
        table[f"wins vs {ref}"] = [
            f"{results[s]['wins']}/{results[s]['seeds']}" if s in results else "" for s in table.index
        ]
    return table


PAIRED_NOTE = (
    "Paired differences: a strategy's AULC minus the reference's on the same seed (same initial "
    "labels), in accuracy points: mean ± std over seeds [95% Student-t interval of the mean]; wins: "
    "the seeds on which the strategy's AULC is higher."
)


def _ordinal(n):
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _join(items):
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sides(results, names):
    """``names`` split by where the 95% interval of their difference lies: above 0, below 0, across."""
    ahead = [s for s in names if results[s]["low"] > 0]
    behind = [s for s in names if results[s]["high"] < 0]
    return ahead, behind, [s for s in names if s not in ahead and s not in behind]


def _short(p):
    """``"+0.25 [-0.10, +0.60]"``: a paired difference's mean and 95% interval (accuracy points)."""
    if not np.isfinite(p["low"]):
        return f"{p['mean']:+.2f}"
    return f"{p['mean']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}]"


def _against(ref, results, names, n_seeds, label=""):
    """``"against REF, a +1.00 [...] is ahead, b ... and c ... are behind"``: the TD strategies'
    paired differences to ``ref``, grouped by where their 95% intervals lie."""
    ahead, behind, level = _sides(results, names)
    groups = []
    for group, verb in [
        (behind, ("is behind", "are behind")),
        (ahead, ("is ahead", "are ahead")),
        (level, (f"cannot be told from it with {n_seeds} seeds",) * 2),
    ]:
        if group:
            all_of = " all" if len(group) == len(names) > 2 and group is not level else ""
            verb = verb[0] if len(group) == 1 else verb[1].replace("are", "are" + all_of, 1)
            groups.append(f"{_join([f'{s} {_short(results[s])}' for s in group])} {verb}")
    return f"against {ref}{label}, " + ", ".join(groups)


def verdict(curves, name="these data", baseline=BASELINE, confidence=0.95):
    """Where the TD strategies landed, in words computed from the paired AULC differences.

    Up to four sentences: whether the seeds tell the top of the ranking apart, the TD strategies'
    ranks, their paired differences (95% intervals) to the best strategy without training dynamics
    and to ``baseline``, and what that means. Empty without TD strategies and references.
    """
    order = _rank_order(curves)
    paired = _paired_all(curves, baseline, confidence)
    best = best_without_td(curves, baseline)
    n_seeds = curves.seed.nunique()
    sentences = []
    others = [s for s in order if s not in (best, baseline) and not is_td(s)]
    if best in paired and order[0] == best and others and n_seeds > 1:
        level = _sides(paired[best], others)[2]
        sentences.append(
            f"{best} ranks first, but the {n_seeds} seeds cannot tell it from {_join(level)} "
            "(their paired 95% intervals include 0)."
            if level
            else f"{best} ranks first, ahead of every other strategy without training dynamics "
            "(paired 95% intervals exclude 0)."
        )
    td = [s for s in order if is_td(s)]
    if not td:
        return " ".join(sentences)
    ranks = _join([f"{_ordinal(order.index(s) + 1)} ({s})" for s in td])
    where = ""
    if baseline in order:
        below = [s for s in td if order.index(s) > order.index(baseline)]
        block = order[order.index(baseline) - len(td) : order.index(baseline)]
        if below:
            where = f"; {_join(below)} below {baseline}"
        elif set(block) == set(td) and len(td) < len(order) - 1:
            where = f", just above {baseline}"
    subject = "The training-dynamics (TD) strateg" + ("y" if len(td) == 1 else "ies")
    sentences.append(f"{subject} rank{'s' * (len(td) == 1)} {ranks} of {len(order)}{where}.")
    if n_seeds < 2:
        sentences.append("With one seed there are no intervals, so no verdict.")
        return " ".join(sentences)
    clauses = [
        _against(ref, paired[ref], td, n_seeds, ", the best without training dynamics" if ref == best else "")
        for ref in paired
    ]
    if clauses:
        sentences.append("Paired by seed, in AULC points: " + "; ".join(clauses) + ".")
    if best in paired:
        ahead, behind, _ = _sides(paired[best], td)
        if len(behind) == len(td):
            meaning = f"scoring a snapshot of the classifier ({best}) beats every TD strategy"
        elif len(ahead) == len(td):
            meaning = f"training dynamics pay off: every TD strategy is ahead of {best}"
        elif ahead:
            meaning = f"training dynamics pay off only for {_join(ahead)}"
        else:
            meaning = f"no TD strategy beats {best}, the best snapshot strategy"
        sentences.append(f"On {name}, {meaning}.")
    return " ".join(sentences)


def summary(curves, config=None, name=None):
    """``summary.md`` text: the ranking with paired differences and a verdict first, then accuracy
    and relative improvement per budget, AULC with mean relative improvement, and timings."""
    rel = relative_improvement(curves)
    table = ranking(curves)
    order = table.index
    seeds = sorted(curves.seed.unique())
    name = name or (config or {}).get("dataset", "these data")
    parts = [
        "# Benchmark summary",
        f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}). Columns are labeled-set sizes; values are "
        "mean ± std over seeds.",
    ]
    if config:
        parts.append("Configuration: " + ", ".join(f"`{k}={v}`" for k, v in config.items()))
    parts += [
        "## Ranking by area under the learning curve, paired by seed",
        "AULC: the learning curve's area divided by the labeled range (a mean accuracy, in %). "
        + PAIRED_NOTE,
        paired_ranking(curves).to_markdown(),
    ]
    text = verdict(curves, name)
    if text:
        parts.append(text)
    parts += ["## Test accuracy (%)", _by_budget(curves, "accuracy", 100).loc[order].to_markdown()]
    if not rel.empty:
        parts += [
            f"## Relative improvement over {BASELINE} (%)",
            "`(acc - acc_random) / acc_random`, paired by seed, then averaged (the paper's metric).",
            _by_budget(rel, "rel_improvement", 100).loc[order].to_markdown(),
        ]
    parts += [
        f"## AULC and mean relative improvement over {BASELINE}",
        "The mean relative improvement averages the cycles after the initial one.",
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


# fixed colours, so that a strategy looks the same in every figure and preset: the TD strategies
# in warm colours, the snapshot strategies in cool ones, random black
COLOURS = {
    "random": "black",
    "tidal_entropy": "tab:red",
    "tidal_margin": "tab:orange",
    "disal": "tab:brown",
    "tidal_batch": "tab:pink",
    "margin": "tab:blue",
    "entropy": "tab:cyan",
    "uncertainty": "tab:purple",
    "coreset": "tab:green",
    "bald": "tab:olive",
    "uncertainty_batch": "teal",
    "classifier_batch": "darkslateblue",
}


def _colour(strategy, index):
    return COLOURS.get(strategy.partition(":")[0], f"C{index % 10}")


def _t_half(std, n, confidence=0.95):
    """Half width of the Student-t interval of a mean of ``n`` values (NaN for one value)."""
    n = np.asarray(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            n > 1, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * std / np.sqrt(n), np.nan
        )


def _small_multiples(curves, column, scale, ylabel, path, title, band, reference=None, skip=(), note=""):
    """One panel per strategy, in rank order: its mean over seeds with a band, the other strategies'
    means as thin grey lines behind it, and ``reference`` (a strategy, or a constant) dashed.

    ``band`` is ``"std"`` (± 1 std across seeds) or ``"ci"`` (95% t-interval of the mean).
    """
    order = [s for s in _rank_order(curves) if s not in skip]
    stat = curves.groupby(["strategy", "cycle"]).agg(
        x=("n_labeled", "mean"), mean=(column, "mean"), std=(column, "std"), n=(column, "size")
    )
    stat["std"] = stat["std"].fillna(0)
    half = stat["std"] if band == "std" else pd.Series(_t_half(stat["std"], stat["n"]), index=stat.index)
    ncols = min(3, len(order))
    nrows = -(-len(order) // ncols)
    with plt.rc_context(FONTS):
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(3.7 * ncols + 0.6, 2.9 * nrows + 1.1),
            sharex=True,
            sharey=True,
            squeeze=False,
        )
        for ax in axes.flat[len(order) :]:
            ax.set_visible(False)
        for index, (ax, strategy) in enumerate(zip(axes.flat, order, strict=False)):
            for other in order:
                if other != strategy:
                    g = stat.loc[other]
                    ax.plot(g.x, scale * g["mean"], color="0.8", linewidth=0.8, zorder=1)
            if isinstance(reference, str) and reference in stat.index and strategy != reference:
                g = stat.loc[reference]
                ax.plot(g.x, scale * g["mean"], color="black", linestyle="--", linewidth=1.2, zorder=2)
            elif reference is not None and not isinstance(reference, str):
                ax.axhline(reference, color="black", linestyle="--", linewidth=1.2, zorder=2)
            g, h = stat.loc[strategy], half.loc[strategy].fillna(0)
            colour = _colour(strategy, index)
            ax.fill_between(
                g.x, scale * (g["mean"] - h), scale * (g["mean"] + h), color=colour, alpha=0.2, linewidth=0
            )
            ax.plot(g.x, scale * g["mean"], color=colour, linewidth=2.2, marker="o", markersize=3, zorder=3)
            ax.set_title(
                f"{order.index(strategy) + 1}. {strategy}" + (" (TD)" if is_td(strategy) else ""),
                fontweight="bold" if is_td(strategy) else "normal",
            )
            ax.grid(alpha=0.3)
        for column in range(ncols):  # the lowest panel of each column shows the labeled counts
            lowest = axes[(len(order) - 1 - column) // ncols, column]
            lowest.xaxis.set_tick_params(labelbottom=True)
            lowest.set_xlabel("labeled samples")
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        n_seeds = curves.seed.nunique()
        spread = "± 1 std across seeds" if band == "std" else "95% t-interval of the mean"
        if isinstance(reference, str):
            spread += f"; dashed: {reference}"
        elif reference is not None:
            spread += "; dashed: no difference"
        fig.suptitle(
            f"{title}\n{note}mean over {n_seeds} seed{'s' * (n_seeds > 1)}, band: {spread}\n"
            "grey: the other strategies; panels in AULC rank order"
        )
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
        plt.close(fig)


def plot_accuracy(curves, path, title=""):
    """Test accuracy against the number of labeled samples: one panel per strategy (AULC rank
    order), mean ± std band over seeds, random dashed and the others grey behind."""
    reference = BASELINE if (curves.strategy == BASELINE).any() else None
    _small_multiples(curves, "accuracy", 100, "test accuracy (%)", path, title, "std", reference)


def plot_relative_improvement(curves, path, title=""):
    """Relative improvement over random sampling (%), the paper's metric, paired by seed: one panel per
    strategy (AULC rank order), the mean with its 95% t-interval band over seeds."""
    _small_multiples(
        relative_improvement(curves),
        "rel_improvement",
        100,
        f"relative improvement\nover {BASELINE} (%)",
        path,
        title,
        "ci",
        reference=0.0,
        skip=(BASELINE,),
        note=f"relative improvement (acc - acc_{BASELINE}) / acc_{BASELINE}, paired by seed "
        "(same initial set)\n",
    )


def plot_paired_aulc(curves, path, title="", baseline=BASELINE, confidence=0.95):
    """AULC difference to the best strategy without training dynamics and to ``baseline``, paired by
    seed (accuracy points): one row per strategy in rank order, the mean and its 95% t-interval."""
    order = _rank_order(curves)
    paired = _paired_all(curves, baseline, confidence)
    with plt.rc_context(FONTS):
        labels = [f"{i + 1}. {s}" for i, s in enumerate(order)]
        # room for the longest label next to a plot of the usual width; the legend below it
        width = max(9, 7 + 0.11 * max(len(label) for label in labels))
        fig, ax = plt.subplots(figsize=(width, 2.4 + 0.5 * len(order)))
        offsets = np.linspace(-0.15, 0.15, len(paired)) if len(paired) > 1 else [0.0]
        markers = ["o", "s"]
        for (ref, results), offset, marker in zip(
            paired.items(), offsets, markers[: len(paired)], strict=True
        ):
            rows = [(i, results[s]) for i, s in enumerate(order) if s in results]
            y = np.array([i for i, _ in rows]) + offset
            mean = np.array([p["mean"] for _, p in rows])
            low = np.array([p["low"] for _, p in rows])
            high = np.array([p["high"] for _, p in rows])
            colour = "black" if ref == baseline else "tab:blue"
            label = f"minus {ref}" + (" (best without training dynamics)" if ref != baseline else "")
            ax.errorbar(
                mean, y, xerr=np.nan_to_num([mean - low, high - mean]), fmt=marker, color=colour,
                capsize=3, markersize=6, linewidth=1.5, label=label,
            )  # fmt: skip
        ax.axvline(0, color="0.4", linewidth=1)
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels(labels)
        for tick, strategy in zip(ax.get_yticklabels(), order, strict=True):
            if is_td(strategy):
                tick.set_fontweight("bold")
                tick.set_color("tab:red")
        ax.invert_yaxis()
        ax.set_xlabel("AULC difference, paired by seed (absolute accuracy points)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -1.2 / (2.4 + 0.5 * len(order))), frameon=False)
        n_seeds = curves.seed.nunique()
        ax.set_title(
            f"{title}\nAULC difference: mean and 95% t-interval over {n_seeds} seeds; TD strategies in red"
        )
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
        plt.close(fig)


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


def provenance_note(out_dir, curves):
    """A paragraph naming the code that made the runs of ``curves`` (``provenance.json``): one
    library version when every run was made from committed code with the same ``tidal_modal``
    tree (the benchmarks' own code may differ between commits)."""
    runs = curves[["strategy", "seed"]].drop_duplicates().itertuples(index=False)
    versions = Provenance(Path(out_dir) / "provenance.json").versions(runs)
    libraries = {
        None if v is None or v["dirty"] else v.get("library") or library_tree(v["commit"]) for v in versions
    }
    if len(libraries) == 1 and None not in libraries:
        commits = _join(sorted({v["commit"][:10] for v in versions}))
        return (
            f"\nEvery run was made by one library version, tidal-modal {versions[0]['tidal_modal']} with "
            f"package tree {libraries.pop()[:10]} (commits {commits}), so every pairing is within it.\n"
        )
    described = []
    for version in versions:
        if version is None:
            described.append("an earlier version of the library (before provenance was recorded)")
        else:
            commit = (version["commit"] or "unknown")[:10]
            dirty = " with uncommitted changes" if version["dirty"] else ""
            described.append(f"tidal-modal {version['tidal_modal']} at commit {commit}{dirty}")
    return "\nThe runs were made by " + "; ".join(described) + ": a pairing may cross library versions.\n"


def write_report(out_dir):
    """Write ``summary.md``, ``accuracy.png``, and with random runs ``relative_improvement.png`` and
    ``paired_aulc.png``, from ``out_dir/curves.csv``.

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
    written[0].write_text(summary(curves, config, name=out_dir.name) + provenance_note(out_dir, curves))
    plot_accuracy(curves, written[1], title)
    if (curves.strategy == BASELINE).any():
        written.append(out_dir / "relative_improvement.png")
        plot_relative_improvement(curves, written[-1], title)
    if _references(curves):
        written.append(out_dir / "paired_aulc.png")
        plot_paired_aulc(curves, written[-1], title)
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
    half = float(_t_half(std, n, confidence))
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
