"""When to stop labeling: the stopping criteria replayed on the presets' loops, against the oracle.

Each seed of a preset runs its ``tidal_entropy`` loop (the preset's settings, ``--extra-cycles``
past its budget, so that the accuracy's plateau is in view) and, after every fit, measures each
criterion of :mod:`tidal_modal.stopping` on a fixed stop set (a random sample of the unlabeled
pool, drawn once per seed; its rows may still be queried), next to the test accuracy. Variants
from training dynamics are measured next to them (``VARIANTS``).

The report compares where each criterion would have stopped with the *oracle* stopping point:
the first cycle whose accuracy (smoothed over 3 cycles) is within 0.5 points of the accuracy the
run ends at (the mean of its last 3 cycles), so that labeling on gains no more than that. Per
criterion and preset, paired by seed: the labels it would have spent beyond the oracle's
(negative: it stopped early) and the accuracy lost by stopping there against the run's end
(smoothed, in points; more than 0.5 means it stopped too early). Rows are stored seed by seed;
a killed run resumes.

Run ``python -m benchmarks.stopping`` for every committed preset (about an hour on one core),
``--preset NAME`` (repeatable) for some, ``--report`` to rewrite the summary from stored rows.
"""

import argparse
import dataclasses
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import cohen_kappa_score  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tidal_modal import td_entropy  # noqa: E402
from tidal_modal.checkpoint import write_atomically  # noqa: E402
from tidal_modal.stopping import OverallUncertainty, StabilizingPredictions, TDDisagreement  # noqa: E402

from .cli import HelpFormatter  # noqa: E402
from .datasets import load_dataset  # noqa: E402
from .protocol import ALConfig, run_active_learning  # noqa: E402
from .report import _t_half  # noqa: E402
from .run import PRESETS  # noqa: E402

__all__ = [
    "CRITERIA",
    "DECIDERS",
    "VARIANTS",
    "main",
    "oracle_cycle",
    "outcomes",
    "replay",
    "stop_cycles",
    "summarize",
    "sweep",
]

RESULTS = Path(__file__).parent / "results" / "stopping"
STRATEGY = "tidal_entropy"
STOP_SET_SIZE = 500  # at most; at most half the initial pool on the small digits pools
GAIN_POINTS = 0.5  # the oracle: no later gain of more than this many accuracy points
SMOOTHING = 3  # cycles averaged around each cycle's accuracy (one test row is 0.2 points on digits)
COMMITTED = [name for name in PRESETS if name != "cifar10"]

# the library's criteria, at their documented defaults
CRITERIA = {
    "kappa": StabilizingPredictions,
    "uncertainty": OverallUncertainty,
    "td_disagreement": TDDisagreement,
}


_NO_ROWS = [[0.0]]  # decide() reads only a criterion's threshold and window, never its stop set

# variants from training dynamics, screened next to the library's criteria (not public), all
# scale-free and decided by the library's rule for a value of their kind: td_kappa, stabilizing
# predictions on the TD head's argmax (kappa >= 0.99 over 3 cycles); td_rank, the Spearman
# correlation of the stop set's predicted TD entropy between cycles (the ranking of what is
# uncertain settles: >= 0.95 over 3 cycles); td_share, the share of the stop set whose predicted
# TD entropy exceeds the 0.9 quantile of the labeled rows' recorded TD entropy (<= 0.05 over 2
# cycles: the stop set looks no harder than the labeled rows)
VARIANTS = {
    "td_kappa": StabilizingPredictions(_NO_ROWS, threshold=0.99, window=3),
    "td_rank": StabilizingPredictions(_NO_ROWS, threshold=0.95, window=3),
    "td_share": TDDisagreement(_NO_ROWS, threshold=0.05, window=2),
}
# what decides each recorded column: the library's criteria at their defaults, then the variants
DECIDERS = {**{name: make(_NO_ROWS) for name, make in CRITERIA.items()}, **VARIANTS}


def _cycles_for(config, n_pool, extra):
    """The preset's cycles plus ``extra``, as many as leave a tenth of the pool unlabeled."""
    most = int((0.9 * n_pool - config.initial_size) // config.query_size)
    return max(config.cycles, min(config.cycles + extra, most))


class _Observer:
    """Measures every criterion and variant after each fit of one seed's loop."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed

    def __call__(self, learner, cycle, pool):
        if cycle == 0:
            size = min(STOP_SET_SIZE, len(pool) // 2)
            rows = np.sort(np.random.RandomState([self.seed, 3]).choice(pool, size, replace=False))
            self.X_stop = self.dataset.X_pool[rows]
            self.criteria = {name: make(self.X_stop) for name, make in CRITERIA.items()}
            self.previous = None
        values = {}
        for name, criterion in self.criteria.items():
            criterion.update(learner)
            values[name] = criterion.values_[-1]
        net = learner.estimator
        td = net.predict_td(self.X_stop)
        labels, entropy = td.argmax(axis=1), td_entropy(td)
        recorded = net.training_dynamics_
        recorded = td_entropy(recorded[~np.isnan(recorded).any(axis=1)])
        values["td_share"] = float(np.mean(entropy > np.quantile(recorded, 0.9)))
        if self.previous is None:
            values.update(td_kappa=math.nan, td_rank=math.nan)
        else:
            same = np.array_equal(labels, self.previous[0])
            values["td_kappa"] = 1.0 if same else float(cohen_kappa_score(self.previous[0], labels))
            values["td_rank"] = float(stats.spearmanr(self.previous[1], entropy).statistic)
        self.previous = labels, entropy
        return values


def replay(preset, seeds=None, extra_cycles=6, out_dir=RESULTS):
    """Run (or resume) the preset's replay; returns the stored rows of every seed done."""
    params = dict(PRESETS[preset])
    dataset = load_dataset(params["dataset"])
    seeds = params.get("seeds", [0]) if seeds is None else seeds
    fields = {f.name for f in dataclasses.fields(ALConfig)}
    config = ALConfig(**{k: v for k, v in params.items() if k in fields})
    config = dataclasses.replace(config, cycles=_cycles_for(config, len(dataset.y_pool), extra_cycles))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / f"{preset}.csv"
    stored = pd.read_csv(path) if path.exists() else pd.DataFrame()
    done = set(stored["seed"]) if len(stored) else set()
    for seed in tqdm([s for s in seeds if s not in done], desc=preset, unit="seed"):
        rows = list(run_active_learning(STRATEGY, seed, dataset, config, observe=_Observer(dataset, seed)))
        stored = pd.concat([stored, pd.DataFrame(rows).assign(preset=preset)], ignore_index=True)
        text = stored.to_csv(index=False)
        write_atomically(path, lambda f, text=text: f.write(text.encode()))  # a seed at a time
    return stored


def smoothed(accuracy):
    """Each cycle's accuracy averaged with its neighbours (:data:`SMOOTHING` cycles, centred)."""
    return (
        pd.Series(np.asarray(accuracy, float))
        .rolling(SMOOTHING, center=True, min_periods=1)
        .mean()
        .to_numpy()
    )


def final_accuracy(accuracy):
    """The accuracy a run ends at: the mean of its last :data:`SMOOTHING` cycles."""
    return float(np.mean(np.asarray(accuracy, float)[-SMOOTHING:]))


def oracle_cycle(accuracy, gain_points=GAIN_POINTS):
    """The first cycle whose smoothed accuracy is within ``gain_points`` of the run's end: after
    it, labeling on gains no more than that (against the noise of single cycles, both sides are
    averages)."""
    s, end = smoothed(accuracy) * 100, final_accuracy(accuracy) * 100
    return int(np.flatnonzero(s >= end - gain_points)[0]) if (s >= end - gain_points).any() else len(s) - 1


def stop_cycles(run, deciders):
    """Each criterion's first stopping cycle in one seed's rows (None: it never stopped);
    ``deciders`` maps a recorded column to the criterion that decides on it."""
    run = run.sort_values("cycle")
    result = {}
    for name, criterion in deciders.items():
        values = run[name].tolist()
        result[name] = next((c for c in range(len(values)) if criterion.decide(values[: c + 1]).stop), None)
    return result


def _interval(values):
    """Mean, standard deviation and 95% t-interval of ``values``."""
    values = np.asarray(values, float)
    n, mean = len(values), values.mean()
    std = values.std(ddof=1) if n > 1 else math.nan
    half = float(_t_half(std, n))
    return mean, std, mean - half, mean + half


def outcomes(rows, names=None, deciders=None):
    """One row per (seed, criterion): where it stopped, the oracle's point, labels and accuracy.

    ``deciders`` (default: :data:`DECIDERS`, those of ``names``) maps a recorded column to the
    criterion that decides on it, e.g. a library criterion at another threshold."""
    deciders = deciders or {name: DECIDERS[name] for name in names or DECIDERS}
    keys = [key for key in ("preset", "seed") if key in rows]
    out = []
    for key, run in rows.groupby(keys):
        run = run.sort_values("cycle")
        labels, s = run["n_labeled"].to_numpy(), smoothed(run["accuracy"]) * 100
        end = final_accuracy(run["accuracy"]) * 100
        oracle = oracle_cycle(run["accuracy"])
        for name, cycle in stop_cycles(run, deciders).items():
            fired = cycle is not None
            at = cycle if fired else len(run) - 1  # never stopped: the run's end, a lower bound
            out.append(
                dict(
                    seed=key[-1],
                    criterion=name,
                    fired=fired,
                    stop_labels=labels[at],
                    oracle_labels=labels[oracle],
                    extra_labels=labels[at] - labels[oracle],
                    accuracy_lost=end - s[at],
                )
            )
    return pd.DataFrame(out)


def criterion_table(table, with_std=True):
    """Markdown rows of :func:`outcomes`' table: per criterion, how often it stopped and too early,
    its labels beyond the oracle's and the accuracy it lost (mean, std, 95% interval over seeds)."""
    spread = " ± std" if with_std else ""
    lines = [
        f"| criterion | stopped | early (>{GAIN_POINTS} pt lost) | labels beyond the oracle: mean{spread} "
        f"[95% CI] | accuracy lost, points: mean{spread} [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name, group in table.groupby("criterion", sort=False):
        extra, lost = _interval(group["extra_labels"]), _interval(group["accuracy_lost"])
        extra_std, lost_std = (f" ± {extra[1]:.0f}", f" ± {lost[1]:.2f}") if with_std else ("", "")
        lines.append(
            f"| {name} | {group['fired'].sum()}/{len(group)} | {(group['accuracy_lost'] > GAIN_POINTS).sum()}"
            f"/{len(group)} | {extra[0]:+.0f}{extra_std} [{extra[2]:+.0f}, {extra[3]:+.0f}] "
            f"| {lost[0]:+.2f}{lost_std} [{lost[2]:+.2f}, {lost[3]:+.2f}] |"
        )
    return lines


def summarize(rows, preset):
    """Markdown table: per criterion, labels beyond the oracle's and accuracy lost, paired by seed."""
    table = outcomes(rows)
    n_seeds = table["seed"].nunique()
    oracle = table.drop_duplicates("seed")["oracle_labels"]
    lines = [
        f"### {preset}",
        "",
        f"{n_seeds} seeds; the oracle stops at {oracle.mean():.0f} labels on average "
        f"({oracle.min()}-{oracle.max()}); the runs end at {rows['n_labeled'].max()}.",
        "",
        *criterion_table(table),
    ]
    return "\n".join(lines) + "\n"


def plot(rows, preset, path):
    """The accuracy with the oracle's point, and each criterion's value against labels (a line
    per seed, a triangle where it stops, its threshold dashed): the library's criteria on the
    first row, the TD variants on the second."""
    names = list(DECIDERS)
    fig, axes = plt.subplots(2, 4, figsize=(13, 6), sharex=True)
    panels = dict(zip(names, [*axes[0, 1:], *axes[1, 1:]], strict=True))
    table = outcomes(rows)
    for seed, run in rows.groupby("seed"):
        run = run.sort_values("cycle")
        axes[0, 0].plot(run["n_labeled"], run["accuracy"] * 100, color="0.6", lw=0.8)
        oracle = oracle_cycle(run["accuracy"])
        axes[0, 0].plot(run["n_labeled"].iloc[oracle], run["accuracy"].iloc[oracle] * 100, "k|", ms=12)
        for name, ax in panels.items():
            ax.plot(run["n_labeled"], run[name], color="C0", lw=0.8, alpha=0.7)
            stop = table[(table.seed == seed) & (table.criterion == name)].iloc[0]
            if stop["fired"]:
                ax.plot(
                    stop["stop_labels"],
                    run[run["n_labeled"] == stop["stop_labels"]][name].iloc[0],
                    "rv",
                    ms=6,
                )
    axes[0, 0].set(title="test accuracy, | = oracle", ylabel="%", xlabel="labels")
    axes[0, 0].tick_params(labelbottom=True)
    for name, ax in panels.items():
        ax.axhline(DECIDERS[name].threshold, color="k", ls="--", lw=0.8)
        ax.set_title(f"{name}{' (variant)' if name in VARIANTS else ''}")
        if name in ("uncertainty", "td_disagreement"):
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_ylim(bottom=0)
    axes[1, 0].axis("off")
    axes[1, 0].text(
        0,
        0.5,
        "one line per seed\nv: where it stops\n- -: its threshold\n\nfirst row: tidal_modal.stopping\n"
        "second row: TD variants\n(benchmarks.stopping.VARIANTS)",
        va="center",
    )
    for ax in axes[1, 1:]:
        ax.set_xlabel("labels")
    fig.suptitle(f"{preset}: the {STRATEGY} loop, stopping criteria per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SWEEP = {
    "kappa": (0.95, 0.98, 0.99, 0.995),
    "uncertainty": (0.05, 0.01, 0.001, 0.0001),
    "td_disagreement": (0.01, 0.005, 0.002, 0.0),
}


def sweep(rows):
    """Each library criterion at other thresholds, decided on the recorded values."""
    parts = [
        outcomes(rows, deciders={name: CRITERIA[name](_NO_ROWS, threshold=threshold)}).assign(
            threshold=threshold
        )
        for name, thresholds in SWEEP.items()
        for threshold in thresholds
    ]
    return pd.concat(parts, ignore_index=True)


def write_report(out_dir=RESULTS):
    """``summary.md`` and a figure per preset from every stored replay."""
    out_dir = Path(out_dir)
    parts, everything, everything_rows = [], [], []
    for preset in COMMITTED:
        path = out_dir / f"{preset}.csv"
        if not path.exists():
            continue
        rows = pd.read_csv(path)
        parts.append(summarize(rows, preset))
        plot(rows, preset, out_dir / f"{preset}.png")
        everything.append(outcomes(rows).assign(preset=preset))
        everything_rows.append(rows.assign(preset=preset))
    if not parts:
        return None
    overall = pd.concat(everything)
    lines = [
        "# Stopping criteria against the oracle",
        "",
        f"`python -m benchmarks.stopping`: each preset's `{STRATEGY}` loop, past its budget; each "
        "criterion at its default (variants: `benchmarks.stopping.VARIANTS`). *labels beyond the "
        "oracle*: labels spent when it stops minus those at the oracle's point (the first cycle "
        f"whose 3-cycle accuracy is within {GAIN_POINTS} points of the run's end, the mean of its "
        "last 3 cycles); negative = stopped early. *accuracy lost*: the run's end minus the "
        "smoothed accuracy where it stops. A criterion that never stopped counts at the run's end.",
        "",
        "The defaults: kappa's are its authors' (2009); td_disagreement's was set on seed 0 of "
        "digits-ir10 and mnist5k-ir10 before this replay; uncertainty's, 0.001, was chosen from this "
        "replay's thresholds (below) after the first guess, 0.05, stopped too early on every preset, "
        "so its row is fitted on these data.",
        "",
        "## All presets (seeds pooled)",
        "",
        *criterion_table(overall, with_std=False),
    ]
    lines += [
        "",
        "## Against kappa, paired by seed",
        "",
        "Each criterion minus stabilizing predictions (kappa) in the same seed's loop, all presets' "
        "seeds pooled: labels spent (negative = stops sooner) and accuracy lost (negative = loses less).",
        "",
        "| criterion | labels vs kappa, mean [95% CI] | accuracy lost vs kappa, points, mean [95% CI] |",
        "|---|---|---|",
    ]
    kappa = overall[overall.criterion == "kappa"].set_index(["preset", "seed"])
    for name, group in overall.groupby("criterion", sort=False):
        if name == "kappa":
            continue
        group = group.set_index(["preset", "seed"])
        extra = _interval(group["stop_labels"] - kappa["stop_labels"])
        lost = _interval(group["accuracy_lost"] - kappa["accuracy_lost"])
        lines.append(
            f"| {name} | {extra[0]:+.0f} [{extra[2]:+.0f}, {extra[3]:+.0f}] "
            f"| {lost[0]:+.2f} [{lost[2]:+.2f}, {lost[3]:+.2f}] |"
        )
    swept = sweep(pd.concat(everything_rows))
    lines += [
        "",
        "## Other thresholds",
        "",
        "The library's criteria at other thresholds, decided on the same recorded values "
        "(`criterion.decide`), all presets' seeds pooled.",
        "",
        "| criterion | threshold | labels beyond the oracle, mean | stops early (>0.5 pt lost) "
        "| accuracy lost, points, mean |",
        "|---|---|---|---|---|",
    ]
    for (name, threshold), group in swept.groupby(["criterion", "threshold"], sort=False):
        lines.append(
            f"| {name} | {threshold:g} | {group['extra_labels'].mean():+.0f} | "
            f"{(group['accuracy_lost'] > GAIN_POINTS).sum()}/{len(group)} "
            f"| {group['accuracy_lost'].mean():+.2f} |"
        )
    text = "\n".join([*lines, "", "## Per preset", "", *parts])
    write_atomically(out_dir / "summary.md", lambda f: f.write(text.encode()))
    return out_dir / "summary.md"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stopping",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--preset", action="append", choices=COMMITTED, help="(default: every committed preset)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="(default: the preset's)")
    parser.add_argument("--extra-cycles", type=int, default=6, help="cycles past the preset's budget")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="only rewrite the summary and figures")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for preset in args.preset or COMMITTED:
            replay(preset, args.seeds, args.extra_cycles, args.out_dir)
            write_report(args.out_dir)
    path = write_report(args.out_dir)
    print(path.read_text() if path else f"no replays stored in {args.out_dir}")


if __name__ == "__main__":
    main()
