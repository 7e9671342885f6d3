"""Scaling out, measured: ``python -m benchmarks.scaling``.

Two measurements in one run, on this machine:

1. training samples/s of a TiDAL net against the number of data-parallel processes
   (:mod:`benchmarks.scaling_training`: skorch + Accelerate, gloo on CPU);
2. pool-scoring rows/s against the number of Dask workers (:mod:`benchmarks.scaling_dask`).

Each is written as by its own module (``training.json``; ``dask.json``, ``dask.csv``), and
together as ``scaling.json``, ``scaling.png`` and ``summary.md``, which also holds a
calculation of the wall time to score ``--target-rows`` rows on N workers from the measured
throughput of one worker and the measured efficiency of two. Run it on an otherwise idle machine:
on a shared one the ratios say what the machine gave.
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import scaling_dask, scaling_training
from .cli import HelpFormatter
from .store import run_meta

DEFAULT_OUT_DIR = Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "scaling"


def wall_time(target_rows, rows_per_s_one, efficiency, workers):
    """Seconds to score ``target_rows`` on ``workers`` workers of ``rows_per_s_one`` rows/s each;
    several workers give ``efficiency`` of that each (as measured at two)."""
    return target_rows / (workers * rows_per_s_one * (efficiency if workers > 1 else 1.0))


def _spin(iterations):
    """Seconds of a fixed single-thread torch workload (matmuls of a 256 x 256 matrix)."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=generator) / 16
    start = time.perf_counter()
    for _ in range(iterations):
        a = torch.tanh(a @ a)
    return time.perf_counter() - start


def _cnn_work(part, repeats, batch_size):
    """Seconds of the engines' own work without an engine, on one torch thread: the SmallCNN's
    ``no_grad`` forward over random 28x28 images (``part="scoring"``, batches as a worker scores
    them), or its plain training steps (``part="training"``: forward, backward, SGD step)."""
    from .backbones import SmallCNN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = SmallCNN(image_shape=(1, 28, 28), n_classes=10)
    x = torch.rand(batch_size, 28 * 28)
    y = torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
    start = time.perf_counter()
    for _ in range(repeats):
        if part == "scoring":
            with torch.no_grad():
                module.eval()(x)
        else:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module.train()(x), y).backward()
            optimizer.step()
    return time.perf_counter() - start


def process_pair():
    """A pool of two fresh processes (spawned: no state of this one's torch)."""
    return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))


def _two_at_once(fn, *args, warmup_args=None):
    """``fn(*args)``'s throughput in two processes at once over one alone."""
    with process_pair() as pool:
        list(pool.map(fn, *[[a] * 2 for a in (warmup_args or args)]))  # start both processes, warm up
        return one_then_two(pool, fn, *args)


def one_then_two(pool, fn, *args):
    """``fn(*args)`` (which times itself) in one of ``pool``'s two processes, then in both at
    once: the seconds, and the throughput of two over one."""
    one = pool.submit(fn, *args).result()
    both = list(pool.map(fn, *[[a] * 2 for a in args]))
    return {"one_process_s": one, "two_processes_s": both, "ratio": 2 * one / max(both)}


def raw_scaling(iterations=2000):
    """What the machine gives two processes of plain single-thread torch work: throughput of two
    at once over one alone (2.0 on two free cores). The engines' ratios are measured against it."""
    return _two_at_once(_spin, iterations, warmup_args=(iterations // 10,))


def workload_scaling(scoring_batch, training_batch, seconds=8.0):
    """The same two-process ratio for the engines' own work without an engine: the SmallCNN's
    forward passes (what a Dask worker computes) and its training steps (what an Accelerate
    process computes, less the all-reduce). A ratio below :func:`raw_scaling`'s is the cores'
    shared caches and memory bandwidth (the CNN's activations far exceed a core's cache), which
    no engine can win back; an engine's ratio below the workload's is the engine's own cost."""
    result = {}
    for part, batch in (("scoring", scoring_batch), ("training", training_batch)):
        per_step = _cnn_work(part, 5, batch) / 5
        steps = max(10, int(seconds / max(per_step, 1e-4)))
        result[part] = {**_two_at_once(_cnn_work, part, steps, batch, warmup_args=(part, 5, batch)),
                        "batch_size": batch, "steps": steps}  # fmt: skip
    return result


def hours(seconds):
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def efficiencies(training, dask, raw, workload=None):
    """Each engine's two-process (two-worker) ratio over the machine's raw one and, with
    ``workload``, over its own work's two-process ratio without the engine."""
    two_training = next((r for r in training if r.get("processes") == 2), None)
    two_dask = next((r for r in dask if r["workers"] == 2), None)
    result = {
        "accelerate_training": two_training["ratio_to_one_process"] / raw["ratio"] if two_training else None,
        "dask_scoring": two_dask["ratio_to_one_worker"] / raw["ratio"] if two_dask else None,
    }
    if workload is not None:
        result["accelerate_training_vs_workload"] = (
            two_training["ratio_to_one_process"] / workload["training"]["ratio"] if two_training else None
        )
        result["dask_scoring_vs_workload"] = (
            two_dask["ratio_to_one_worker"] / workload["scoring"]["ratio"] if two_dask else None
        )
    return result


def summary(training, dask, target_rows, workers, meta, raw=None, workload=None):
    """The Markdown summary: both tables, the efficiencies against the raw scaling, the calculation."""
    lines = [
        "# Scaling out, measured",
        "",
        f"`python -m benchmarks.scaling {meta['arguments']}` on {meta['machine']}; load average "
        f"{meta['load_average_at_start'][0]:.2f} at the start, "
        f"{meta['load_average_at_end'][0]:.2f} at the end.",
        "",
        "## Training (skorch + Accelerate, one torch thread per process)",
        "",
        "| setting | samples/s | ratio to one plain process | TD gathering, share of an epoch |",
        "|---|---:|---:|---:|",
    ]
    for r in training:
        share = r.get("td_gather_share_of_epoch")
        share = "-" if share is None else f"{100 * share:.2f}%"
        lines.append(
            f"| {r['setting']} | {r['samples_per_s']:,.0f} | {r['ratio_to_one_process']:.2f} | {share} |"
        )
    large = [r for r in training if "td_gather_large_median_s" in r]
    lines += [""] + [
        f"Gathering the TD of {meta['gather_rows']:,} rows (one all-reduce per epoch) on "
        f"{r['processes']} process(es): {1000 * r['td_gather_large_median_s']:.1f} ms."
        for r in large
    ]
    lines += [
        "",
        "## Pool scoring (Dask, one thread per worker)",
        "",
        "| setting | rows/s | ratio to one worker |",
        "|---|---:|---:|",
    ]
    for r in dask:
        ratio = "-" if r["ratio_to_one_worker"] is None else f"{r['ratio_to_one_worker']:.2f}"
        lines.append(f"| {r['setting']} | {r['rows_per_s']:,.0f} | {ratio} |")
    if raw is not None:
        eff = efficiencies(training, dask, raw)
        lines += [
            "",
            "## Against what the machine gives",
            "",
            f"Two processes of plain single-thread torch work (matmuls) run {raw['ratio']:.2f}x as fast as "
            "one, measured in the same run. Efficiency: an engine's ratio at two over that (target >= 0.93).",
            "",
            "| engine | ratio at two | efficiency |",
            "|---|---:|---:|",
        ]
        names = {"accelerate_training": "Accelerate training", "dask_scoring": "Dask scoring"}
        for key, name in names.items():
            if eff[key] is not None:
                lines.append(f"| {name} | {eff[key] * raw['ratio']:.2f} | {eff[key]:.2f} |")
    if raw is not None and workload is not None:
        eff = efficiencies(training, dask, raw, workload)
        parts = {
            "accelerate_training": ("Accelerate training", "training"),
            "dask_scoring": ("Dask scoring", "scoring"),
        }
        lines += [
            "",
            "## Where the rest goes: the work itself, without an engine",
            "",
            "The engines' own work, the SmallCNN's training steps and forward passes on one torch thread, "
            "in two processes at once against one alone, with no engine (no all-reduce, no scheduler), "
            "measured in the same run. The machine's raw ratio minus the workload's is what two processes "
            "of this network lose to the cores' shared caches and memory bandwidth; the workload's ratio "
            "minus the engine's is the engine's own cost (all-reduce, scheduling, shipping the net).",
            "",
            "| engine | the work alone, 2 processes | engine at two | engine's efficiency against its work |",
            "|---|---:|---:|---:|",
        ]
        for key, (name, part) in parts.items():
            if eff[key] is not None:
                lines.append(
                    f"| {name} | {workload[part]['ratio']:.2f} | {eff[key] * raw['ratio']:.2f} "
                    f"| {eff[key + '_vs_workload']:.2f} |"
                )
        profiled = [r for r in dask if "worker_cpu_s" in r]
        if profiled:
            lines += [
                "",
                "Where Dask's time goes, during the timed queries: the workers' CPU seconds (all their "
                "threads), their utilization (CPU seconds over workers x wall time; the rest is waiting "
                "for a task, or for the other worker at the end of a query) and this process's CPU "
                "(the client and the scheduler, which a LocalCluster runs here, on the same two cores).",
                "",
                "| setting | workers' CPU s | worker utilization | client + scheduler, share of a core |",
                "|---|---|---:|---:|",
            ]
            for r in profiled:
                cpu = ", ".join(f"{c:.2f}" for c in r["worker_cpu_s"])
                lines.append(
                    f"| {r['setting']} | {cpu} | {r['worker_utilization']:.2f} "
                    f"| {r['main_process_share_of_a_core']:.2f} |"
                )
    one = next(r for r in dask if r["workers"] == 1)
    two = next((r for r in dask if r["workers"] == 2), None)
    efficiency = two["rows_per_s"] / (2 * one["rows_per_s"]) if two else 1.0
    lines += [
        "",
        f"## Calculation: scoring {target_rows:.0e} rows",
        "",
        f"t = rows / (N x r1 x e), with r1 = {one['rows_per_s']:,.0f} rows/s (one CPU worker, measured "
        f"above) and e = {efficiency:.2f} (rows/s of two workers over twice one's, measured above), "
        "assumed to hold at N > 1 workers; the per-cycle `pool_subset` of the paper (10,000 rows) costs a "
        "fraction of this. For GPU workers put a GPU's measured r1 in the same formula.",
        "",
        "| CPU workers N | wall time |",
        "|---:|---:|",
    ]
    for n in workers:
        lines.append(f"| {n} | {hours(wall_time(target_rows, one['rows_per_s'], efficiency, n))} |")
    return "\n".join(lines) + "\n", efficiency


def plot(training, dask, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    accelerated = [r for r in training if r["processes"]]
    left.plot([r["processes"] for r in accelerated], [r["samples_per_s"] for r in accelerated], "o-",
              label="Accelerate processes")  # fmt: skip
    left.axhline(training[0]["samples_per_s"], color="grey", ls="--", label="plain net, 1 process")
    left.set(xlabel="training processes (1 thread each)", ylabel="samples/s", title="Training")
    left.set_xticks([r["processes"] for r in accelerated])
    left.set_ylim(0, 1.15 * max(r["samples_per_s"] for r in training))
    left.legend()
    on_dask = [r for r in dask if r["workers"]]
    right.plot(
        [r["workers"] for r in on_dask], [r["rows_per_s"] for r in on_dask], "o-", label="Dask workers"
    )
    right.axhline(dask[0]["rows_per_s"], color="grey", ls="--", label="in memory, 1 thread")
    right.set(xlabel="worker processes (1 thread each)", ylabel="rows/s", title="Pool scoring")
    right.set_xticks([r["workers"] for r in on_dask])
    right.set_ylim(0, 1.15 * max(r["rows_per_s"] for r in dask))
    right.legend()
    fig.suptitle("tidal_modal scaling on this machine (SmallCNN, 28x28 images)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_training_arguments(parser, engine=None):
    """The training workload: ``--train-rows``, ``--epochs``, ``--batch-size`` (also
    ``benchmarks.scaling_paired``'s, whose help names the ``engine`` they are for)."""
    for_engine = f" ({engine})" if engine else ""
    parser.add_argument("--train-rows", type=int, default=4096, help="training rows" + for_engine)
    parser.add_argument(
        "--epochs", type=int, default=4, help="epochs per fit (the first is not timed)" + for_engine
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="training rows per step and process" + for_engine
    )


def build_parser():
    """The command line of ``python -m benchmarks.scaling``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="training processes to try")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask workers to try")
    add_training_arguments(parser)
    parser.add_argument("--pool-rows", type=int, default=8_000, help="pool rows scored on Dask")
    parser.add_argument("--gather-rows", type=int, default=1_000_000, help="rows of the TD buffer gathered")
    parser.add_argument("--repeats", type=int, default=3, help="timed queries per Dask setting (median)")
    parser.add_argument("--target-rows", type=float, default=1e8, help="pool size of the calculation")
    parser.add_argument(
        "--calc-workers", type=int, nargs="+", default=[1, 8, 64], help="worker counts of the calculation"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure everything this many times; report each, and medians"
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write the results")
    return parser


def one_round(args):
    """Every measurement once, the machine's raw ratio first: ``(raw, workload, training, dask)``."""
    raw = raw_scaling()
    dask_defaults = scaling_dask.build_parser().parse_args([])  # block size and top-k as it has them
    # a worker scores at the net's scoring batch (the CNN's rows hold 345 KB: 72 rows on a CPU)
    workload = workload_scaling(
        scaling_dask.fitted_net().scoring_batch_size(torch.zeros(1, 28 * 28).numpy()), args.batch_size
    )
    training = scaling_training.measure(
        args.processes, args.train_rows, args.epochs, args.batch_size, args.gather_rows
    )
    torch.set_num_threads(1)
    dask = scaling_dask.measure(
        args.workers, args.pool_rows, dask_defaults.chunk_rows, dask_defaults.n_instances, args.repeats
    )
    return raw, workload, training, dask


def rounds_summary(rounds):
    """Markdown: each round's two-process ratios and efficiencies, and their medians.

    On a shared machine the raw two-process ratio moves between runs minutes apart; measured
    round by round, each engine's ratio is divided by the raw one of its own round, and the
    median over rounds is the efficiency to quote."""
    lines = [
        "## Round by round",
        "",
        "Each round measures everything once, in the same order; an efficiency divides an engine's "
        "ratio by the raw ratio of its own round. Target: the median efficiency >= 0.93.",
        "",
        "| round | raw | Accelerate | Dask | Accelerate efficiency | Dask efficiency |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for k, r in enumerate(rounds, 1):
        eff = r["efficiency"]
        raw = r["raw"]["ratio"]
        accelerate, dask = eff["accelerate_training"], eff["dask_scoring"]
        row = (raw, accelerate * raw, dask * raw, accelerate, dask)
        rows.append(row)
        lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    medians = np.median(np.array(rows), axis=0)
    lines.append("| median | " + " | ".join(f"**{v:.2f}**" for v in medians) + " |")
    return "\n".join(lines) + "\n", {"accelerate_training": medians[3], "dask_scoring": medians[4]}


def main(argv=None):
    args = build_parser().parse_args(argv)
    load_at_start = os.getloadavg()
    rounds = []
    for _ in range(args.rounds):
        raw, workload, training, dask = one_round(args)
        rounds.append({"raw": raw, "workload": workload, "training": training, "dask": dask,
                       "efficiency": efficiencies(training, dask, raw, workload)})  # fmt: skip
    meta = {
        **run_meta(argv, load_at_start),
        "gather_rows": args.gather_rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "training.json").write_text(json.dumps({**meta, "results": training}, indent=2) + "\n")
    scaling_dask.write(dask, args.out_dir, meta)
    text, efficiency = summary(training, dask, args.target_rows, args.calc_workers, meta, raw, workload)
    median_efficiency = None
    if len(rounds) > 1:
        text_rounds, median_efficiency = rounds_summary(rounds)
        head, sep, tail = text.partition("## Against what the machine gives")
        text = head + text_rounds + "\nThe tables above and below are the last round's.\n\n" + sep + tail
    (args.out_dir / "summary.md").write_text(text)
    (args.out_dir / "scaling.json").write_text(
        json.dumps(
            {**meta, "raw": raw, "workload": workload,
             "efficiency": efficiencies(training, dask, raw, workload),
             "training": training,
             "dask": dask, "dask_efficiency_at_two": efficiency,
             "rounds": rounds, "median_efficiency": median_efficiency},  # fmt: skip
            indent=2,
        )
        + "\n"
    )
    plot(training, dask, args.out_dir / "scaling.png")
    print(text)
    print(f"Written to {args.out_dir}")
    return training, dask


if __name__ == "__main__":
    main()
