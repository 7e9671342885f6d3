"""Two-process efficiency of Dask and Accelerate, paired repeat by repeat.

``python -m benchmarks.scaling_paired [--engine accelerate]``.

``benchmarks.scaling`` measures the machine's raw two-process ratio and each engine's ratio once
per round, in sequence, minutes apart; on a VM whose speed drifts (the same query's time moves
by tens of percent within minutes here) those ratios mix the drift in. Here every time a
ratio compares is taken within seconds of the others, in each repeat, in a shuffled order:

- the raw ratio: plain single-thread torch work (``benchmarks.scaling``'s matmuls) in one
  process, then in two at once (a pool of two processes that stays up between repeats);
- the same ratio for the workers' own work without Dask: the net's ``no_grad`` forward passes
  at its scoring batch (``benchmarks.scaling``'s workload), so that what two busy cores cost
  that work is told apart from what Dask costs;
- ``tidal_entropy`` on the pool in memory in this process (one torch thread);
- the same query on a ``LocalCluster`` of one worker and on one of two workers (one thread
  each), both up for the whole run, the pool persisted on each.

With ``--engine accelerate`` the engine's part of a repeat is a plain fit in this process and
an Accelerate fit in two processes (``benchmarks.scaling_training``: torchrun, gloo), each timed by
its epochs after the first, and the workload is the same training steps without an engine.

A repeat's Dask efficiency is its two-worker ratio (one worker's time over two workers') over its
raw ratio; the result is the median over repeats, with the interquartile range and the share of
repeats that reach the target. Each query's worker CPU seconds (and so the busiest worker's
share) and this process's (the client, and the scheduler that ``LocalCluster`` runs here) say
where a repeat's time went. The clusters that are not being timed sit idle next to the timed
work, as a user's would. ``--rounds K`` does all of it K times, each round with processes of
its own (a new placement of the blocks on the workers, and of the processes on the cores): on
this VM rounds differ more than the repeats within one. ``--rebalance`` evens out the blocks
between the two workers (``Client.rebalance``) before a round's queries.

Writes ``paired.json`` and ``summary.md`` to ``--out-dir``.
"""

import argparse
import json
import logging
import os
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from tidal_modal import tidal_entropy

from . import scaling_dask, scaling_training
from .cli import HelpFormatter
from .overhead import timed
from .scaling import _cnn_work, _spin, add_training_arguments, one_then_two, process_pair
from .store import code_version, run_meta

DEFAULT_OUT_DIR = Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "scaling_paired"
TARGET = 0.93
# what a repeat's ratios are called, each engine's that it has
RATIOS = ("raw_ratio", "workload_ratio", "dask_ratio", "accelerate_ratio", "efficiency",
          "efficiency_vs_workload", "one_worker_vs_in_memory", "two_workers_cpu_over_one",
          "two_workers_busiest_share", "two_workers_larger_part", "main_process_share_of_a_core")  # fmt: skip


def _paired(runs, repeats, rng):
    """``repeats`` times, every one of ``runs`` once, in an order drawn from ``rng``: their results
    by name, and the order."""
    measured = []
    for _ in range(repeats):
        order = [list(runs)[i] for i in rng.permutation(len(runs))]
        measured.append({"order": order, **{name: runs[name]() for name in order}})
    return measured


def _workload_steps(executor, part, batch, spin_iterations):
    """Steps of the engine's own work (``_cnn_work(part, steps, batch)``) that take about as long
    as the raw work in one process; both of ``executor``'s processes are started and warmed up
    first."""
    list(executor.map(_spin, [spin_iterations // 10] * 2))
    per_step = executor.submit(_cnn_work, part, 5, batch).result() / 5
    return max(5, round(executor.submit(_spin, spin_iterations).result() / per_step))


def _against_raw_and_workload(repeat, ratio):
    """A repeat's engine ``ratio`` over its raw ratio (the efficiency) and over its workload's."""
    return {
        "raw_ratio": repeat["raw"]["ratio"],
        "efficiency": ratio / repeat["raw"]["ratio"],
        "workload_ratio": repeat["workload"]["ratio"],
        "efficiency_vs_workload": ratio / repeat["workload"]["ratio"],
    }


def _query(client, net, pool, n_instances):
    """Seconds of ``tidal_entropy`` on ``client``'s persisted ``pool``, with the CPU seconds of
    its workers and of this process during it."""
    workers_before = client.run(scaling_dask._process_seconds)
    main_before = time.process_time()
    with client.as_current():
        seconds = timed(tidal_entropy, net, pool, n_instances)
    main_cpu = time.process_time() - main_before
    after = client.run(scaling_dask._process_seconds)
    workers = sorted(after[w] - workers_before[w] for w in workers_before)
    return {"s": seconds, "worker_cpu_s": workers, "main_process_cpu_s": main_cpu}


def measure_dask(repeats, rows, chunk_rows, n_instances, spin_iterations, rebalance=False, seed=0):
    """Per-repeat times of the raw work, the workers' work without Dask, the in-memory query and
    the one- and two-worker queries; with ``rebalance``, the two workers' blocks are evened out
    (``Client.rebalance``) after the pool is persisted."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    torch.set_num_threads(1)  # as each worker: Dask's nanny starts them with OMP_NUM_THREADS=1
    net = scaling_dask.fitted_net(seed)
    pool = da.random.default_rng(seed + 1).random(
        (rows, int(np.prod(scaling_dask.IMAGE_SHAPE))), dtype=np.float32, chunks=(chunk_rows, -1)
    )
    X = pool.compute(scheduler="threads")
    expected = tidal_entropy(net, X, n_instances)
    # as the docs advise for torch under Dask (benchmarks.scaling_dask's docstring says why)
    environ = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    order_rng = np.random.default_rng(seed)
    with ExitStack() as stack:
        stack.enter_context(dask.config.set(environ))
        executor = stack.enter_context(process_pair())
        # the workers' work without Dask: the net's forward passes at its scoring batch
        batch = net.scoring_batch_size(X)
        steps = _workload_steps(executor, "scoring", batch, spin_iterations)
        clients, pools, placement = {}, {}, {}
        for n in (1, 2):
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
            client.wait_for_workers(n, timeout=120)
            with client.as_current():
                pools[n] = client.persist(pool)  # made on this cluster's workers, kept there
                wait(pools[n])
                if rebalance:
                    client.rebalance(pools[n])
                holders = client.who_has(pools[n]).values()
                # keyed as paired.json keys it, so that a summary can be rebuilt from the file
                placement[str(n)] = sorted(Counter(w for ws in holders for w in ws).values())
                # warm-up: the workers import torch and get the net
                np.testing.assert_array_equal(tidal_entropy(net, pools[n], n_instances), expected)
            clients[n] = client
        runs = {
            "raw": lambda: one_then_two(executor, _spin, spin_iterations),
            "workload": lambda: one_then_two(executor, _cnn_work, "scoring", steps, batch),
            "in_memory": lambda: {"s": timed(tidal_entropy, net, X, n_instances)},
            "one_worker": lambda: _query(clients[1], net, pools[1], n_instances),
            "two_workers": lambda: _query(clients[2], net, pools[2], n_instances),
        }
        measured = _paired(runs, repeats, order_rng)
    setup = {"blocks_per_worker": placement, "rebalanced": rebalance, "scoring_batch": batch,
             "workload_steps": steps}  # fmt: skip
    return [_dask_ratios(repeat) for repeat in measured], setup


def _dask_ratios(repeat):
    """One repeat's ratios: raw, Dask's two-worker ratio, its efficiency, and where time went."""
    one, two = repeat["one_worker"], repeat["two_workers"]
    dask_ratio = one["s"] / two["s"]
    busiest = max(two["worker_cpu_s"])
    return {
        **repeat,
        "dask_ratio": dask_ratio,
        # efficiency_vs_workload: against the workers' own work in two plain processes, Dask's part
        **_against_raw_and_workload(repeat, dask_ratio),
        # CPU seconds of the two workers together over one worker's: the same blocks' work
        "two_workers_cpu_over_one": sum(two["worker_cpu_s"]) / sum(one["worker_cpu_s"]),
        "one_worker_vs_in_memory": repeat["in_memory"]["s"] / one["s"],
        # the busiest worker's CPU seconds over the query's wall time: 1 means it never waited
        "two_workers_busiest_share": busiest / two["s"],
        # the two workers' CPU split: 0.5 is an even split of the blocks' work
        "two_workers_larger_part": busiest / sum(two["worker_cpu_s"]),
        "main_process_share_of_a_core": two["main_process_cpu_s"] / two["s"],
    }


def measure_accelerate(repeats, rows, epochs, batch_size, spin_iterations, seed=0):
    """Per-repeat epoch times of a plain fit in this process and of a two-process Accelerate fit,
    next to the raw work and the training steps without an engine in one process and in two."""
    torch.set_num_threads(1)
    order_rng = np.random.default_rng(seed)
    with process_pair() as executor:
        # the processes' work without an engine: the net's training steps
        steps = _workload_steps(executor, "training", batch_size, spin_iterations)
        runs = {
            "raw": lambda: one_then_two(executor, _spin, spin_iterations),
            "workload": lambda: one_then_two(executor, _cnn_work, "training", steps, batch_size),
            "one_process": lambda: {
                "epoch_s": scaling_training.single_process(rows, epochs, batch_size, seed)
            },
            # the TD of 1,000 rows gathered after the fit: the fit's own gathering is timed in it
            "two_processes": lambda: scaling_training.data_parallel(2, rows, epochs, batch_size, 1000, seed),
        }
        measured = _paired(runs, repeats, order_rng)
    setup = {"rows": rows, "epochs": epochs, "batch_size": batch_size, "workload_steps": steps}
    return [_accelerate_ratios(repeat) for repeat in measured], setup


def _accelerate_ratios(repeat):
    """One repeat's ratios: raw, Accelerate's two-process ratio (samples/s of two processes over
    one plain fit: the median epoch, the first not counted) and its efficiency."""
    ratio = float(np.median(repeat["one_process"]["epoch_s"]) / np.median(repeat["two_processes"]["epoch_s"]))
    return {**repeat, "accelerate_ratio": ratio, **_against_raw_and_workload(repeat, ratio)}


def summarize(repeats):
    """Medians and interquartile ranges over repeats, and the share of repeats at the target."""
    keys = [key for key in RATIOS if key in repeats[0]]
    result = {}
    for key in keys:
        values = np.array([r[key] for r in repeats])
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        result[key] = {"median": float(median), "q1": float(q1), "q3": float(q3)}
    result["repeats"] = len(repeats)
    result["share_at_target"] = float(np.mean([r["efficiency"] >= TARGET for r in repeats]))
    return result


def _cell(stats):
    """``median [q1, q3]``."""
    return f"{stats['median']:.2f} [{stats['q1']:.2f}, {stats['q3']:.2f}]"


def _together(summary, rows, engine):
    """The table of all repeats together: ``rows`` of ``(label, key)``, the engine's efficiency
    and the share of repeats at the target after the first three."""
    lines = ["", f"All {summary['repeats']} repeats together:", "", "| measure | value |", "|---|---:|"]
    lines += [f"| {label} | {_cell(summary[key])} |" for label, key in rows[:3]]
    lines += [
        f"| **{engine} efficiency** (its ratio / the same repeat's raw ratio; target >= {TARGET}) "
        f"| **{_cell(summary['efficiency'])}** |",
        f"| repeats at the target | {summary['share_at_target']:.0%} |",
    ]
    return lines + [f"| {label} | {_cell(summary[key])} |" for label, key in rows[3:]] + [""]


def _head(title, meta, rounds, how):
    """The page's title and its first paragraph: the command, the machine, and ``how`` each round
    and repeat ran."""
    return [
        f"# {title} against the raw two-process ratio, paired repeat by repeat",
        "",
        f"`python -m benchmarks.scaling_paired {meta['arguments']}` on {meta['machine']}; "
        f"load average {meta['load_average_at_start'][0]:.2f} at the start, "
        f"{meta['load_average_at_end'][0]:.2f} at the end. {len(rounds)} round(s) of "
        f"{rounds[0]['summary']['repeats']} repeats; {how}",
        "",
    ]


def accelerate_markdown(summary, meta, rounds):
    """The Accelerate summary as a Markdown page: each round's medians, then all repeats."""
    setup = rounds[0]["setup"]
    how = (
        "each round starts its own processes, and each repeat runs every measurement once, in a "
        "shuffled order."
    )
    lines = _head("Accelerate training", meta, rounds, how) + [
        f"A plain `TiDALNetClassifier` fit in this process and an Accelerate fit in two processes "
        f"(gloo), {setup['rows']} rows, {setup['epochs']} epochs (the first not counted), "
        f"{setup['batch_size']} rows per step and process; the workload is the same training steps "
        "without an engine. Median [interquartile range] over a round's repeats:",
        "",
        "| round | raw | workload | Accelerate | **Accelerate efficiency** | Accelerate / workload |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, r in enumerate(rounds, 1):
        s = r["summary"]
        lines.append(
            f"| {k} | {s['raw_ratio']['median']:.2f} | {s['workload_ratio']['median']:.2f} "
            f"| {s['accelerate_ratio']['median']:.2f} | **{_cell(s['efficiency'])}** "
            f"| {s['efficiency_vs_workload']['median']:.2f} |"
        )
    return "\n".join(lines + _together(summary, [
        ("raw two-process ratio (matmuls)", "raw_ratio"),
        ("the training steps without an engine, two processes over one", "workload_ratio"),
        ("Accelerate, two processes over one plain fit", "accelerate_ratio"),
        ("Accelerate's ratio / the same repeat's workload ratio", "efficiency_vs_workload"),
    ], "Accelerate"))  # fmt: skip


def markdown(summary, meta, rounds):
    """The Dask summary as a Markdown page: each round's medians, then all repeats together."""
    setup = rounds[0]["setup"]
    how = (
        "each round starts its own processes (two clusters and a pool of two plain processes), and "
        "in each repeat the raw work, the workload, the in-memory query and the one- and two-worker "
        f"queries ran once, in a shuffled order. Workers score in batches of {setup['scoring_batch']} "
        "rows; the pool's blocks lay on the two workers as "
        + ("`Client.rebalance` left them" if setup["rebalanced"] else "`persist` placed them")
        + ". Median [interquartile range] over a round's repeats:"
    )
    lines = _head("Dask scoring", meta, rounds, how) + [
        "| round | blocks per worker | raw | workload | Dask | **Dask efficiency** | Dask / workload "
        "| busiest worker's share of the CPU | two workers' CPU / one's |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in enumerate(rounds, 1):
        s = r["summary"]
        blocks = " and ".join(map(str, r["setup"]["blocks_per_worker"]["2"]))
        lines.append(
            f"| {k} | {blocks} | {s['raw_ratio']['median']:.2f} | {s['workload_ratio']['median']:.2f} "
            f"| {s['dask_ratio']['median']:.2f} | **{_cell(s['efficiency'])}** "
            f"| {s['efficiency_vs_workload']['median']:.2f} | {s['two_workers_larger_part']['median']:.2f} "
            f"| {s['two_workers_cpu_over_one']['median']:.2f} |"
        )
    return "\n".join(lines + _together(summary, [
        ("raw two-process ratio (matmuls)", "raw_ratio"),
        ("the workers' work without Dask (the net's forward passes), two processes over one",
         "workload_ratio"),
        ("Dask, two workers over one", "dask_ratio"),
        ("Dask's ratio / the same repeat's workload ratio (what is Dask's)", "efficiency_vs_workload"),
        ("one worker's rows/s / in memory's", "one_worker_vs_in_memory"),
        ("two workers' CPU seconds together / one worker's (the same blocks)", "two_workers_cpu_over_one"),
        ("two workers: the busiest one's CPU / wall time", "two_workers_busiest_share"),
        ("two workers: the busiest one's share of their CPU (0.50: even)", "two_workers_larger_part"),
        ("this process (client + scheduler), share of a core", "main_process_share_of_a_core"),
    ], "Dask"))  # fmt: skip


def build_parser():
    """The command line of ``python -m benchmarks.scaling_paired``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling_paired",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--engine", choices=["dask", "accelerate"], default="dask", help="the engine to measure"
    )
    parser.add_argument("--repeats", type=int, default=25, help="paired repeats per round")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds, each with processes of its own (a new placement)"
    )
    scaling_dask.add_pool_arguments(parser)
    parser.add_argument("--spin-iterations", type=int, default=2000, help="matmuls of the raw work")
    add_training_arguments(parser, engine="accelerate")
    parser.add_argument(
        "--rebalance", action="store_true", help="even out the persisted blocks between the two workers"
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write the results")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    load_at_start = os.getloadavg()
    rounds = []
    for _ in range(args.rounds):
        if args.engine == "dask":
            repeats, setup = measure_dask(
                args.repeats, args.rows, args.chunk_rows, args.n_instances, args.spin_iterations,
                args.rebalance,
            )  # fmt: skip
        else:
            repeats, setup = measure_accelerate(
                args.repeats, args.train_rows, args.epochs, args.batch_size, args.spin_iterations
            )
        rounds.append({"setup": setup, "summary": summarize(repeats), "repeats": repeats})
    meta = {**run_meta(argv, load_at_start), "code": code_version()}
    summary = summarize([repeat for r in rounds for repeat in r["repeats"]])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "paired.json").write_text(
        json.dumps({**meta, "summary": summary, "rounds": rounds}, indent=2) + "\n"
    )
    text = (markdown if args.engine == "dask" else accelerate_markdown)(summary, meta, rounds)
    (args.out_dir / "summary.md").write_text(text)
    print(text)
    print(f"Written to {args.out_dir}")
    return summary


if __name__ == "__main__":
    main()
