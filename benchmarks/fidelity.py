"""The paper's fidelity analyses, measured here: ``python -m benchmarks.fidelity``.

1. Does the TD head learn the training dynamics? Per epoch, on the training rows:
   ``KL(actual TD || predicted TD)`` and ``KL(actual TD || classifier probabilities)``. The first
   should fall and end far below the second.
2. Does TD entropy find the minority classes of a long-tailed pool? After training on a random
   labeled part of the pool, the AUROC of separating minority-class from majority-class unlabeled
   rows by TD entropy versus by snapshot (classifier) entropy. On the same rows, the AUROC of
   telling the classifier's errors from its correct predictions by either entropy.

Both analyses train with one of two recipes (``--recipe``). ``default``: the benchmark's first
recipe (``ALConfig``'s defaults: Adam, an MLP with dropout, 30 epochs). ``paper``: the TiDAL
authors' recipe, as the ``*-paper`` presets of ``benchmarks.run`` train (``PAPER_RECIPE``: SGD with
momentum, weight decay and a step LR schedule, a batch-norm CNN without dropout, even batches,
training batches shifted at random, a labeled set with every class in it; 100 epochs). With
shifted batches the actual TD is a mean over the augmented views the net trained on, the paper's
definition, while the predicted TD and the classifier probabilities come from the un-augmented
rows in eval mode: the KL compares those with that mean over views.

Writes ``kl.csv``, ``kl.png``, ``auroc.csv``, ``entropy_hist.png`` and ``fidelity.json`` (the
headline numbers) to the output directory.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.special import entr, rel_entr  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from skorch.callbacks import Callback  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from tidal_modal import td_entropy  # noqa: E402

from .backbones import BACKBONES
from .cli import HelpFormatter
from .datasets import load_dataset  # noqa: E402
from .protocol import ALConfig, class_covering_indices, initial_indices, make_net  # noqa: E402
from .recipe import PAPER_RECIPE
from .run import PRESETS

__all__ = ["RECIPES", "TDFidelity", "kl_divergence", "minority_auroc", "main"]

# --recipe: the ALConfig values of each recipe, and the options' defaults under it
RECIPES = {"default": {}, "paper": PAPER_RECIPE}
RECIPE_DEFAULTS = {
    "default": {},
    # the backbone and the epochs per fit of the *-paper presets
    "paper": {"backbone": PAPER_RECIPE["backbone"], "epochs": PRESETS["mnist5k-paper"]["epochs"]},
}


def kl_divergence(p, q):
    """Mean over rows of ``KL(p_i || q_i)`` in nats; ``q`` is clipped away from 0."""
    return float(rel_entr(p, np.clip(q, 1e-12, None)).sum(axis=1).mean())


class TDFidelity(Callback):
    """After every epoch, record how far the predicted TD and the classifier are from the actual TD.

    The actual TD after epoch ``t`` is ``net.training_dynamics_``; predicted TD and classifier
    probabilities come from one eval-mode pass over the same training rows. Written to
    ``net.history`` as ``kl_td_head`` and ``kl_classifier``. With an augmenting training iterator
    (``--recipe paper``) the actual TD is a mean over the augmented views trained on, and the eval
    pass sees the rows un-augmented (``dataset_train.X``; prediction never augments).
    """

    def on_epoch_end(self, net, dataset_train=None, **kwargs):
        actual = net.training_dynamics_  # [n_train, n_classes], row i = dataset_train row i
        predicted, proba = net.predict_td(dataset_train.X, return_proba=True)
        net.history.record("kl_td_head", kl_divergence(actual, predicted))
        net.history.record("kl_classifier", kl_divergence(actual, proba))


def minority_auroc(y, scores, n_classes):
    """AUROC of telling minority rows (the tail half of the classes, ``c >= C // 2``) by ``scores``."""
    return roc_auc_score(y >= n_classes // 2, scores)


def fit_on_random_rows(dataset, config, n_labeled, seed, callbacks=None):
    """Fit a benchmark net on ``n_labeled`` random pool rows; return it and the unlabeled rows.

    The rows are drawn as the active-learning loop draws its initial set: with every class of the
    pool in them if ``config.cover_classes`` (the paper recipe), else purely at random.
    """
    if config.cover_classes:
        labeled = class_covering_indices(dataset.y_pool, n_labeled, seed)
    else:
        labeled = initial_indices(len(dataset.y_pool), n_labeled, seed)
    torch.manual_seed(seed)
    net = make_net(config, dataset, callbacks=callbacks).fit(dataset.X_pool[labeled], dataset.y_pool[labeled])
    return net, np.setdiff1d(np.arange(len(dataset.y_pool)), labeled)


def kl_run(dataset, config, n_labeled, seed):
    """KL curves of one fit on ``n_labeled`` random pool rows: a DataFrame with one row per epoch."""
    net, _ = fit_on_random_rows(dataset, config, n_labeled, seed, callbacks=[TDFidelity()])
    return pd.DataFrame(
        {"seed": seed, **{key: net.history[:, key] for key in ("epoch", "kl_td_head", "kl_classifier")}}
    )


def entropy_run(dataset, config, n_labeled, seed):
    """TD and snapshot entropy of the unlabeled rows after a fit on ``n_labeled`` random pool rows."""
    net, unlabeled = fit_on_random_rows(dataset, config, n_labeled, seed)
    td, proba = net.predict_td(dataset.X_pool[unlabeled], return_proba=True)
    return pd.DataFrame(
        {
            "seed": seed,
            "label": dataset.y_pool[unlabeled],
            "error": proba.argmax(axis=1) != dataset.y_pool[unlabeled],
            "td_entropy": td_entropy(td),
            "classifier_entropy": entr(proba).sum(axis=1),
        }
    )


def auroc_table(entropies, n_classes):
    """Per seed: AUROC of finding minority rows and the classifier's errors, by TD and snapshot entropy."""
    rows = []
    for run in entropies:
        row = {"seed": run.seed.iloc[0]}
        for score in ("td_entropy", "classifier_entropy"):
            row[f"minority_auroc_{score}"] = minority_auroc(run.label, run[score], n_classes)
            row[f"error_auroc_{score}"] = roc_auc_score(run.error, run[score])
        rows.append(row)
    return pd.DataFrame(rows)


def plot_kl(kl, path, title):
    """Both KL curves against the epoch, mean ± std over seeds, on a log scale."""
    stats = kl.groupby("epoch")[["kl_td_head", "kl_classifier"]].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for column, label in [
        ("kl_td_head", "predicted TD (TD head)"),
        ("kl_classifier", "classifier probabilities"),
    ]:
        mean, std = stats[column]["mean"], stats[column]["std"].fillna(0)
        ax.plot(stats.index, mean, label=label)
        ax.fill_between(stats.index, mean - std, mean + std, alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("KL(actual TD || ·), nats")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_entropy_hist(entropies, n_classes, path, title):
    """Histograms of TD and snapshot entropy, minority against majority classes."""
    minority = entropies.label >= n_classes // 2
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, column in zip(axes, ["td_entropy", "classifier_entropy"], strict=True):
        bins = np.linspace(0, entropies[column].max(), 30)
        ax.hist(entropies.loc[~minority, column], bins, alpha=0.6, density=True, label="majority classes")
        ax.hist(entropies.loc[minority, column], bins, alpha=0.6, density=True, label="minority classes")
        ax.set_xlabel(f"{column.replace('_', ' ')} (nats)")
    axes[0].set_ylabel("density")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mean_std(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def build_parser():
    """The command line of ``python -m benchmarks.fidelity``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fidelity",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--kl-dataset", default="mnist5k", help="dataset of the KL analysis")
    parser.add_argument("--kl-labeled", type=int, default=1000, help="training rows of the KL analysis")
    parser.add_argument(
        "--imbalanced-dataset", default="mnist5k-ir100", help="long-tail dataset of the AUROC"
    )
    parser.add_argument("--auroc-labeled", type=int, default=300, help="labeled pool rows before scoring")
    parser.add_argument(
        "--recipe",
        default="default",
        choices=sorted(RECIPES),
        help="training recipe: 'default', the benchmark's own (Adam, an MLP with dropout), or 'paper', "
        "the TiDAL authors' (benchmarks.recipe.PAPER_RECIPE, as the *-paper presets) (default: default)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=ALConfig.epochs,
        help=f"epochs per fit (default: {ALConfig.epochs}, "
        f"{RECIPE_DEFAULTS['paper']['epochs']} with --recipe paper)",
    )
    parser.add_argument(
        "--backbone",
        default=ALConfig.backbone,
        choices=sorted(BACKBONES),
        help=f"classifier (default: {ALConfig.backbone}, {RECIPE_DEFAULTS['paper']['backbone']} "
        "with --recipe paper)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(5)), help="one run per seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "fidelity",
        help="where the CSVs, plots and JSON go (the committed results: benchmarks/results/fidelity)",
    )
    return parser


def parse_args(argv=None):
    """Parse ``argv``; the recipe's defaults replace the options' own, explicit options win over both."""
    parser = build_parser()
    recipe = parser.parse_known_args(argv)[0].recipe
    parser.set_defaults(**RECIPE_DEFAULTS[recipe])
    return parser.parse_args(argv)


def make_config(args, dataset):
    """The :class:`~benchmarks.protocol.ALConfig` of one analysis: the recipe's values, then the options'."""
    return ALConfig(
        **{**RECIPES[args.recipe], "dataset": dataset, "backbone": args.backbone, "epochs": args.epochs}
    )


def main(argv=None):
    """Run both analyses and write their numbers and plots."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    # the plots of the default recipe keep their titles; the paper recipe's say so
    regime = "" if args.recipe == "default" else f" ({args.recipe} recipe, {args.backbone})"
    kl_data = load_dataset(args.kl_dataset)
    kl_config = make_config(args, args.kl_dataset)
    kl = pd.concat([kl_run(kl_data, kl_config, args.kl_labeled, s) for s in tqdm(args.seeds, desc="KL")])
    kl.to_csv(args.out_dir / "kl.csv", index=False, float_format="%.6g")
    plot_kl(kl, args.out_dir / "kl.png", f"{args.kl_dataset}, {args.kl_labeled} training rows{regime}")

    imb = load_dataset(args.imbalanced_dataset)
    imb_config = make_config(args, args.imbalanced_dataset)
    entropies = [entropy_run(imb, imb_config, args.auroc_labeled, s) for s in tqdm(args.seeds, desc="AUROC")]
    auroc = auroc_table(entropies, imb.n_classes)
    auroc.to_csv(args.out_dir / "auroc.csv", index=False, float_format="%.4f")
    plot_entropy_hist(
        entropies[0], imb.n_classes, args.out_dir / "entropy_hist.png",
        f"{args.imbalanced_dataset}: unlabeled rows after {args.auroc_labeled} labels "
        f"(seed {args.seeds[0]}){regime}",
    )  # fmt: skip

    last = kl[kl.epoch == kl.epoch.max()]
    first = kl[kl.epoch == 1]
    headline = {
        "command": " ".join(["python -m benchmarks.fidelity", *(sys.argv[1:] if argv is None else argv)]),
        "arguments": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out_dir"
        },
        "kl_td_head_first_epoch": _mean_std(first.kl_td_head),
        "kl_td_head_last_epoch": _mean_std(last.kl_td_head),
        "kl_classifier_first_epoch": _mean_std(first.kl_classifier),
        "kl_classifier_last_epoch": _mean_std(last.kl_classifier),
        **{column: _mean_std(auroc[column]) for column in auroc.columns if column != "seed"},
    }
    if RECIPES[args.recipe]:  # what the recipe meant when these numbers were measured
        headline["recipe_values"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in RECIPES[args.recipe].items()
        }
    (args.out_dir / "fidelity.json").write_text(json.dumps(headline, indent=2) + "\n")
    print(json.dumps(headline, indent=2))


if __name__ == "__main__":
    main()
