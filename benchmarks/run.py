"""Compare TiDAL with uncertainty, core-set, BALD and random sampling: ``python -m benchmarks.run``.

Runs the paper's active-learning loop for every strategy and seed, appends one row per cycle to
``curves.csv`` in the output directory, and writes ``summary.md`` and plots there. Re-running into
the same directory resumes: finished (strategy, seed) runs are skipped, a run that was cut off is
redone. The defaults (the ``digits`` preset's settings, 5 seeds) finish in a few minutes on a CPU.
"""

import argparse
import json
import textwrap
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tidal_modal.checkpoint import write_atomically

from .backbones import BACKBONES
from .baselines import STRATEGIES, get_strategy
from .cli import HelpFormatter
from .datasets import load_dataset
from .protocol import ALConfig, run_active_learning
from .recipe import OPTIMIZERS, PAPER_RECIPE
from .report import PAIRED_NOTE, paired_ranking, verdict, write_report
from .store import CurveStore, Provenance, code_version

__all__ = ["PRESETS", "main"]

RESULTS = Path(__file__).parent / "results"
WIDTH = 100  # the terminal's paragraphs are wrapped at this many characters

# the strategies the paper compares (less-confidence "uncertainty" is left out), and DISAL
PAPER_STRATEGIES = [
    "random", "entropy", "margin", "tidal_entropy", "tidal_margin", "bald", "coreset", "disal"
]  # fmt: skip

# Budgets start past the cold-start regime (where no uncertainty method beats random) and end
# well before the pool runs out; the committed results in benchmarks/results/<preset>/ used these.
PRESETS = {
    "digits": dict(dataset="digits", seeds=list(range(10))),  # the defaults, with more seeds
    "digits-ir10": dict(
        dataset="digits-ir10", initial_size=40, query_size=20, cycles=10, seeds=list(range(10))
    ),
    "digits-ir100": dict(
        dataset="digits-ir100", initial_size=30, query_size=15, cycles=10, seeds=list(range(10))
    ),
    "mnist5k": dict(dataset="mnist5k", initial_size=100, query_size=100, cycles=8, seeds=list(range(10))),
    "mnist5k-ir10": dict(
        dataset="mnist5k-ir10", initial_size=100, query_size=50, cycles=10, seeds=list(range(10))
    ),
    "mnist5k-ir100": dict(
        dataset="mnist5k-ir100", initial_size=100, query_size=50, cycles=8, seeds=list(range(10))
    ),
    # The TiDAL authors' training recipe (benchmarks.recipe.PAPER_RECIPE: SGD with a step schedule,
    # 100 epochs per fit, shifted training batches, no dropout while training, every class in the
    # initial set) on a batch-norm CNN. The budgets span the climb of the accuracy (mnist5k-ir10:
    # 77% at 100 labels, 97% from about 225). Measured on one core of a 2-core machine: 0.35 ms
    # per labeled row and epoch (seed 0 of mnist5k-ir10-paper, 8 runs, in 9 minutes), up to 4x
    # that while other jobs share the cores. A preset of 8 strategies x 5 seeds takes 45-60
    # minutes at that rate (mnist5k-ir10-paper 45, -ir100-paper 60, mnist5k-paper 50, BALD's
    # 10 scoring passes over its larger pool included), up to ~3-4 hours on a busy machine;
    # runs resume, so a preset may take several sittings.
    "mnist5k-paper": dict(
        PAPER_RECIPE,
        dataset="mnist5k",
        initial_size=100,
        query_size=50,
        cycles=6,
        epochs=100,
        strategies=PAPER_STRATEGIES,
        seeds=list(range(5)),
    ),
    "mnist5k-ir10-paper": dict(
        PAPER_RECIPE,
        dataset="mnist5k-ir10",
        initial_size=100,
        query_size=25,
        cycles=8,
        epochs=100,
        strategies=PAPER_STRATEGIES,
        seeds=list(range(5)),
    ),
    "mnist5k-ir100-paper": dict(
        PAPER_RECIPE,
        dataset="mnist5k-ir100",
        initial_size=100,
        query_size=25,
        cycles=10,
        epochs=100,
        strategies=PAPER_STRATEGIES,
        seeds=list(range(5)),
    ),
    # the paper's CIFAR10 protocol (with Adam instead of SGD); needs a GPU and --data-dir
    "cifar10": dict(
        dataset="cifar10",
        backbone="resnet18",
        initial_size=1000,
        query_size=1000,
        cycles=9,
        epochs=200,
        batch_size=128,
        seeds=[0, 1, 2],
        epoch_progress=True,
    ),
}


# the paper's strategies, less confidence, and the ranked batches on the classifier's uncertainty
# (modAL's and the library's), the fair baselines of any batch query; the study's variants
# (benchmarks.variants) and tidal_batch are run by benchmarks/run_td_pays.sh
DEFAULT_STRATEGIES = [
    "random", "uncertainty", "margin", "entropy", "coreset", "bald", "tidal_entropy", "tidal_margin", "disal",
    "uncertainty_batch", "classifier_batch",
]  # fmt: skip


def _strategy_name(name):
    try:
        get_strategy(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def build_parser():
    """The command line: one option per :class:`~benchmarks.protocol.ALConfig` field, plus the run's own."""
    defaults = {f.name: f.default for f in fields(ALConfig) if f.name != "dataset"}
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="named settings (explicit options override them; default: none, the options' own defaults)",
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits, mnist5k, cifar10 or cifar100, optionally with -ir10 / -ir100 (long-tail pool)",
    )
    parser.add_argument("--data-dir", help="folder with the CIFAR python batch files (CIFAR only)")
    parser.add_argument(
        "--backbone",
        default=defaults["backbone"],
        choices=sorted(BACKBONES),
        help="classifier: an MLP, a small CNN (28x28 or 8x8 images), the same at half width with batch "
        "norm (cnn-bn) or ResNet-18 (CIFAR)",
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=DEFAULT_STRATEGIES,
        type=_strategy_name,
        metavar="NAME",
        help=f"query strategies, from {', '.join(STRATEGIES)}; options after a colon, "
        "e.g. disal:target=td,sign=signed",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(5)), help="one run per seed")
    parser.add_argument(
        "--initial-size", type=int, default=defaults["initial_size"], help="random initial labels"
    )
    parser.add_argument("--query-size", type=int, default=defaults["query_size"], help="labels per cycle")
    parser.add_argument(
        "--cycles", type=int, default=defaults["cycles"], help="query cycles after the initial fit"
    )
    parser.add_argument("--epochs", type=int, default=defaults["epochs"], help="epochs per fit")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="training batch size")
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="learning rate")
    parser.add_argument(
        "--optimizer", default=defaults["optimizer"], choices=sorted(OPTIMIZERS), help="every fit's optimiser"
    )
    parser.add_argument("--momentum", type=float, default=defaults["momentum"], help="SGD momentum (0: none)")
    parser.add_argument("--weight-decay", type=float, default=defaults["weight_decay"], help="weight decay")
    parser.add_argument(
        "--lr-milestones",
        nargs="*",
        type=float,
        default=defaults["lr_milestones"],
        metavar="FRACTION",
        help="fractions of the epochs after which each fit's LR is multiplied by --lr-gamma "
        "(e.g. 0.8; default: none, a constant LR)",
    )
    parser.add_argument(
        "--lr-gamma", type=float, default=defaults["lr_gamma"], help="LR factor at each milestone"
    )
    parser.add_argument(
        "--shift",
        type=int,
        default=defaults["shift"],
        help="training batches are shifted by up to this many pixels (0: no augmentation)",
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=defaults["flip"],
        help="random left-right flips of training batches (not for digits)",
    )
    parser.add_argument(
        "--even-batches",
        action=argparse.BooleanOptionalAction,
        default=defaults["even_batches"],
        help="training batches of equal size instead of full ones and a remainder (for batch norm)",
    )
    parser.add_argument(
        "--cover-classes",
        action=argparse.BooleanOptionalAction,
        default=defaults["cover_classes"],
        help="an initial set with a row of every class of the pool (else purely random)",
    )
    parser.add_argument(
        "--pool-subset",
        type=int,
        default=defaults["pool_subset"],
        help="score a random subset of this many pool rows per query (default: the whole pool)",
    )
    parser.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        help="re-initialise the model every cycle (default: off, the model is kept across cycles "
        "as in the paper)",
    )
    parser.add_argument(
        "--td-weight", type=float, default=defaults["td_weight"], help="lambda of the TD loss"
    )
    parser.add_argument("--td-hidden", type=int, default=defaults["td_hidden"], help="width of the TD head")
    parser.add_argument(
        "--dropout", type=float, default=defaults["dropout"], help="backbone dropout while training"
    )
    parser.add_argument(
        "--mc-draws", type=int, default=defaults["mc_draws"], help="MC-dropout passes for BALD"
    )
    parser.add_argument(
        "--mc-dropout",
        type=float,
        default=defaults["mc_dropout"],
        help="BALD's dropout rate, only while it scores (default: --dropout)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--epoch-progress", action="store_true", help="a progress bar over each fit's epochs (default: off)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="results directory (default: benchmarks/results/<preset> with --preset, else "
        "benchmarks/results/_scratch/<dataset>)",
    )
    return parser


def parse_args(argv=None):
    """Parse ``argv``; a preset's values replace the defaults, and explicit options win over both."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = RESULTS / preset if preset else RESULTS / "_scratch" / args.dataset
    return args


def config_from_args(args):
    """The :class:`~benchmarks.protocol.ALConfig` of parsed arguments."""
    return ALConfig(**{f.name: getattr(args, f.name) for f in fields(ALConfig)})


def _check_config(out_dir, config):
    """Refuse to mix results of different configurations in one directory."""
    path = out_dir / "config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != config.to_dict():
            changed = sorted(k for k in config.to_dict() if previous.get(k) != config.to_dict()[k])
            raise SystemExit(
                f"{out_dir} holds results of another configuration (differs in {changed}); "
                "choose another --out-dir or delete that directory."
            )
    text = json.dumps(config.to_dict(), indent=2) + "\n"
    if not path.exists() or path.read_text() != text:  # a kill while writing must not leave it empty
        write_atomically(path, lambda f: f.write(text.encode()))


def _describe(out_dir, dataset):
    """Write ``dataset.json``: the sizes and class counts of the pool and the test set."""
    sizes = {
        "pool": len(dataset.y_pool),
        "test": len(dataset.y_test),
        "pool_class_counts": np.bincount(dataset.y_pool, minlength=dataset.n_classes).tolist(),
        "test_class_counts": np.bincount(dataset.y_test, minlength=dataset.n_classes).tolist(),
    }
    (out_dir / "dataset.json").write_text(json.dumps(sizes) + "\n")


def main(argv=None):
    """Run every (strategy, seed) not yet in the output directory, then write the summary and plots."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = config_from_args(args)
    dataset = load_dataset(args.dataset, args.data_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _check_config(args.out_dir, config)
    _describe(args.out_dir, dataset)
    store = CurveStore(args.out_dir / "curves.csv", config.cycles)
    provenance, version = Provenance(args.out_dir / "provenance.json"), code_version()
    runs = [(s, seed) for seed in args.seeds for s in args.strategies if (s, seed) not in store.completed]
    print(
        f"{args.dataset}: pool {len(dataset.y_pool)}, test {len(dataset.y_test)}; "
        f"{len(runs)} runs to do, results in {args.out_dir}"
    )
    if not runs:
        print(_wrap(all_stored(args)))
    for strategy, seed in tqdm(runs, desc="runs", unit="run", disable=not runs):
        cycles = run_active_learning(strategy, seed, dataset, config, args.device, args.epoch_progress)
        for row in tqdm(
            cycles, desc=f"{strategy} seed {seed}", total=config.cycles + 1, leave=False, unit="cycle"
        ):
            store.append(row)
        provenance.record(strategy, seed, version)
        if strategy == args.strategies[-1]:
            write_report(args.out_dir)  # an up-to-date summary after every seed
    written = write_report(args.out_dir)
    print(headline(args.out_dir, written))


def _wrap(text):
    """A paragraph for the terminal, wrapped at :data:`WIDTH`; paths and names are not broken."""
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def all_stored(args):
    """What to say when every (strategy, seed) run is already in the output directory."""
    n_runs = len(args.strategies) * len(args.seeds)
    committed = args.preset is not None and args.out_dir.resolve() == (RESULTS / args.preset).resolve()
    whose = "the committed results of this preset" if committed else "from an earlier run"
    command = f"python -m benchmarks.run{f' --preset {args.preset}' if args.preset else ''}"
    return (
        f"All {n_runs} runs ({len(args.strategies)} strategies x {len(args.seeds)} seeds) are already "
        f"stored in {args.out_dir} ({whose}): nothing to train, the summary and plots are rewritten "
        f"from the stored runs. To run them again, give a new folder: {command} --out-dir NEW_FOLDER "
        "(more --seeds or --strategies would add runs to this folder instead)."
    )


def headline(out_dir, written):
    """The terminal's last words: the ranking by AULC with paired differences, the verdict on the
    training-dynamics strategies, and where the report is."""
    out_dir = Path(out_dir)
    curves = pd.read_csv(out_dir / "curves.csv")
    if curves.empty:
        return f"No results in {out_dir} yet."
    n_seeds = curves.seed.nunique()
    table = paired_ranking(curves).to_markdown()
    files = "\n".join(f"  {path}" for path in written)
    intro = (
        "Strategies ranked by area under the learning curve (AULC, a mean accuracy in %; mean ± std "
        f"over {n_seeds} seeds). {PAIRED_NOTE}"
    )
    parts = [
        f"\n{_wrap(intro)}\n{table}",
        _wrap(verdict(curves, out_dir.name)),
        f"Summary and plots:\n{files}",
    ]
    return "\n\n".join(part for part in parts if part)


if __name__ == "__main__":
    main()
