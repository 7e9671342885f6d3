"""The report of the study "make training dynamics pay": ``python -m benchmarks.td_pays DIR...``.

For every TD strategy in each results directory (made by ``benchmarks/run_td_pays.sh`` or a
preset run), its AULC paired by seed against (1) its classifier twin, the same selection code on
the classifier's probabilities, which says whether TD carries the gain, and (2) the best strategy
that does not use TD in that directory (by mean AULC; ranked batches included), which says
whether it pays to use it. Writes ``study.md`` next to the directories' common parent.
"""

import argparse
from pathlib import Path

import pandas as pd

from .cli import HelpFormatter
from .report import BASELINE, aulc, best_without_td, is_td, paired_aulc, provenance_note

__all__ = [
    "TWINS", "headline_table", "main", "ranking_table", "report", "study_rows", "study_table", "twin_of"
]  # fmt: skip

# a TD strategy -> the same selection rule on the classifier's probabilities
TWINS = {
    "tidal_entropy": "entropy",
    "tidal_margin": "margin",
    "tidal_batch": "classifier_batch",
    "tidal_balanced": "balanced",
    "tidal_balanced_batch": "balanced_batch",
    "tidal_space_batch": "proba_space_batch",
    "tidal_modal_batch": "uncertainty_batch",
    "tidal_modal_batch:measure=td_least_confidence": "uncertainty_batch",
    "tidal_combined": "margin",
    "tidal_disagreement": "uncertainty",
}


def twin_of(strategy):
    """The twin of a TD strategy, options included (``tidal_batch:embedding=input`` ->
    ``classifier_batch:embedding=input``); ``None`` for a strategy without one."""
    if strategy in TWINS:
        return TWINS[strategy]
    base, _, options = strategy.partition(":")
    return f"{TWINS[base]}:{options}" if base in TWINS and options else None


def study_rows(curves, name):
    """One dict per TD strategy of ``curves``: its mean AULC and its paired differences."""
    means = 100 * aulc(curves).groupby("strategy").mean()
    best = best_without_td(curves)
    rows = []
    for strategy in means.sort_values(ascending=False).index:
        if not is_td(strategy):
            continue
        row = {"results": name, "strategy": strategy, "aulc": means[strategy], "best": best}
        twin = twin_of(strategy)
        row["twin"] = twin if twin in means else None
        row["vs_twin"] = paired_aulc(curves, strategy, twin) if row["twin"] else None
        row["vs_best"] = paired_aulc(curves, strategy, best) if best else None
        row["vs_random"] = paired_aulc(curves, strategy, BASELINE) if BASELINE in means else None
        rows.append(row)
    return rows


def _cell(p):
    if p is None:
        return "–"
    mark = " *" if p["low"] > 0 or p["high"] < 0 else ""
    return f"{p['mean']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}]{mark}, {p['wins']}/{p['seeds']}"


def study_table(out_dirs):
    """Markdown: every TD strategy of each directory against its twin and the best non-TD strategy."""
    lines = [
        "| results | TD strategy | AULC | - its twin (95% CI, wins) | - best without TD (95% CI, wins) "
        "| best without TD |",
        "|---|---|---|---|---|---|",
    ]
    for out_dir in map(Path, out_dirs):
        curves = pd.read_csv(out_dir / "curves.csv")
        for row in study_rows(curves, out_dir.name):
            twin = f" ({row['twin']})" if row["twin"] else ""
            lines.append(
                f"| {row['results']} | {row['strategy']} | {row['aulc']:.2f} | {_cell(row['vs_twin'])}{twin} "
                f"| {_cell(row['vs_best'])} | {row['best']} |"
            )
    return "\n".join(lines)


def headline_table(out_dirs):
    """Markdown: per directory, the best strategy without TD, the best TD strategy and TiDAL
    entropy, with the TD strategies' AULC minus the best's without TD, paired by seed."""
    lines = [
        "| results | best without TD (AULC) | best TD strategy (AULC) | its AULC - best without TD "
        "| TiDAL entropy - best without TD |",
        "|---|---|---|---|---|",
    ]
    for out_dir in map(Path, out_dirs):
        curves = pd.read_csv(out_dir / "curves.csv")
        means = 100 * aulc(curves).groupby("strategy").mean()
        best = best_without_td(curves)
        td = max((s for s in means.index if is_td(s)), key=lambda s: means[s])
        tidal = _cell(paired_aulc(curves, "tidal_entropy", best)) if "tidal_entropy" in means else "–"
        lines.append(
            f"| {out_dir.name} | {best} ({means[best]:.2f}) | {td} ({means[td]:.2f}) "
            f"| {_cell(paired_aulc(curves, td, best))} | {tidal} |"
        )
    return "\n".join(lines)


def ranking_table(out_dir):
    """Markdown: every strategy of one directory by mean AULC, with its difference to the best
    strategy without TD, paired by seed."""
    curves = pd.read_csv(Path(out_dir) / "curves.csv")
    means = 100 * aulc(curves).groupby("strategy").agg(["mean", "std"])
    best = best_without_td(curves)
    lines = [
        f"| strategy | uses TD | AULC (mean ± std) | - {best} (95% CI, wins) |",
        "|---|---|---|---|",
    ]
    for strategy, (mean, std) in means.sort_values("mean", ascending=False).iterrows():
        versus = "–" if strategy == best else _cell(paired_aulc(curves, strategy, best))
        td = "yes" if is_td(strategy) else ""
        lines.append(f"| {strategy} | {td} | {mean:.2f} ± {std:.2f} | {versus} |")
    return "\n".join(lines)


def report(out_dirs):
    """The study's markdown: the summary table, then each directory's ranking."""
    parts = [
        "# Make training dynamics pay: the study\n",
        "AULC in accuracy points; differences paired by seed with a 95% Student-t interval (* when it "
        "excludes 0) and the seeds the TD strategy won. A TD strategy's *twin* runs the same "
        "selection code on the classifier's probabilities. *Best without TD* is the strategy of "
        "highest mean AULC among those that do not read the TD head (ranked batches included), "
        "picked on the same runs, which favours it.\n",
        study_table(out_dirs),
        "\n## Per directory: the best TD strategy against the best without TD\n",
        headline_table(out_dirs),
    ]
    for out_dir in map(Path, out_dirs):
        # the code that made the runs, as each summary.md says it
        note = provenance_note(out_dir, pd.read_csv(out_dir / "curves.csv"))
        parts += [f"\n## {out_dir.name}\n{note}", ranking_table(out_dir)]
    return "\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.td_pays",
        description=__doc__.split("\n\n")[1],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("out_dirs", nargs="+", type=Path, help="results directories holding curves.csv")
    parser.add_argument("--out", type=Path, help="where to write the markdown (default: print it)")
    parser.add_argument(
        "--headline", action="store_true", help="only the table of the best TD strategy per directory"
    )
    args = parser.parse_args(argv)
    text = headline_table(args.out_dirs) + "\n" if args.headline else report(args.out_dirs)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
