"""What the transactional fit costs: a fit with its snapshot / the same fit without it.

A warm-started ``TiDALNetClassifier`` with the benchmarks' SmallCNN (Adam, so that the snapshot
also copies the optimizer's two moments) is fitted on random 28x28 images, once at first. Then
every repeat fits it again twice, in a shuffled order: once as usual, and once with
``tidal_modal.transaction.take_snapshot`` replaced by a no-op (no snapshot, nothing to restore).
The ratio is the median of the per-repeat ratios. The snapshot alone is also timed directly, a
sharper measure of the same cost than the difference of two noisy fits.

Prints the ratio and writes JSON to ``--output``.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from tqdm import tqdm

from tidal_modal import TiDALNetClassifier, transaction

from .backbones import SmallCNN
from .cli import HelpFormatter
from .overhead import median_ratio, timed

TARGET = 1.02
DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "transaction_cost.json"


def no_op(net):
    """``take_snapshot`` of a fit without a transaction: no snapshot, so nothing is restored."""


def measure(repeats, n_train, epochs, batch_size=64, seed=0):
    """Times of warm-started fits with and without the snapshot, and of the snapshot alone."""
    rng = np.random.RandomState(seed)
    X, y = rng.randn(n_train, 28 * 28).astype(np.float32), rng.randint(0, 10, n_train)
    torch.manual_seed(seed)
    net = TiDALNetClassifier(
        SmallCNN,
        module__image_shape=(1, 28, 28),
        module__n_classes=10,
        classes=list(range(10)),  # few random rows may miss a class
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=epochs,
        batch_size=batch_size,
        warm_start=True,
        verbose=0,
    ).fit(X, y)

    sides = {
        "snapshot": nullcontext,
        "no_snapshot": lambda: mock.patch.object(transaction, "take_snapshot", no_op),
    }
    times = {side: [] for side in sides}
    for _ in tqdm(range(repeats), desc="transaction cost"):
        for side in rng.permutation(list(sides)):
            with sides[side]():  # patched outside the timed call
                times[side].append(timed(net.fit, X, y))
    snapshot_s = float(np.median([timed(transaction.take_snapshot, net) for _ in range(max(repeats, 5))]))
    fit_s = float(np.median(times["no_snapshot"]))
    return {
        "n_train": n_train,
        "epochs": epochs,
        "batch_size": batch_size,
        "parameters": sum(p.numel() for _, p in net.get_all_learnable_params()),  # module and TD head
        "history_epochs": len(net.history),
        "times": times,
        "snapshot_fit_s": float(np.median(times["snapshot"])),
        "no_snapshot_fit_s": fit_s,
        "ratio": median_ratio(times["snapshot"], times["no_snapshot"]),
        "snapshot_s": snapshot_s,
        "snapshot_share": snapshot_s / fit_s,
    }


def build_parser():
    """The command line of ``python -m benchmarks.transaction_cost``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transaction_cost",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=7, help="fits per side (median)")
    parser.add_argument("--n-train", type=int, default=1000, help="training rows (28x28 images)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one: steadier times)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON file to write")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.repeats, args.n_train, args.epochs)
    result.update(
        arguments=" ".join(argv if argv is not None else sys.argv[1:]),
        environment={
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)",
            "torch": torch.__version__,
            "threads": args.threads,
        },
        target=TARGET,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    verdict = "meets" if result["ratio"] <= TARGET else "misses"
    print(
        f"fit with snapshot / without: {result['ratio']:.4f} ({verdict} <= {TARGET}); snapshot alone "
        f"{result['snapshot_s'] * 1e3:.2f} ms = {result['snapshot_share']:.2%} of a "
        f"{result['no_snapshot_fit_s']:.3f} s fit. Written to {args.output}"
    )
    return result


if __name__ == "__main__":
    main()
