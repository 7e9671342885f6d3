"""Pool scoring on Dask: rows/s of a TiDAL query against the number of worker processes.

The Dask part of ``benchmarks.scaling``. A ``TiDALNetClassifier`` with the benchmarks' SmallCNN
(fitted briefly on random 28x28 images) queries a pool of random images with ``tidal_entropy``:
once in memory in this process (one torch thread, as each worker has), then as a dask array on a
``LocalCluster`` of 1, 2, ... worker processes (one thread each, loopback only). The pool is
made and persisted on the workers first (the same rows as in memory) and a warm-up query
(checked against the in-memory one) sends them the net, so the timed queries measure scoring
and the top-k merge only. rows/s is the pool size over the median query time;
the ratio is against one worker. On a machine whose cores other work shares, the ratio says
what that machine gave, not what Dask can do.

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; that turns off glibc's
adaptive mmap threshold, and torch's convolutions then map and unmap their buffers on every
batch (2.3x slower on this machine). The workers here start without it, as the README advises;
``--dask-malloc-trim`` keeps Dask's default.

Writes JSON, CSV and a PNG plot to ``--out-dir``.
"""

import argparse
import csv
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tidal_modal import TiDALNetClassifier, tidal_entropy

from .backbones import SmallCNN
from .cli import HelpFormatter
from .overhead import timed
from .store import run_meta

DEFAULT_OUT_DIR = Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "scaling"
IMAGE_SHAPE = (1, 28, 28)


def fitted_net(seed=0):
    rng = np.random.RandomState(seed)
    X, y = rng.rand(256, int(np.prod(IMAGE_SHAPE))).astype(np.float32), rng.randint(0, 10, 256)
    torch.manual_seed(seed)
    net = TiDALNetClassifier(
        SmallCNN,
        module__image_shape=IMAGE_SHAPE,
        module__n_classes=10,
        classes=list(range(10)),
        max_epochs=1,
        batch_size=256,
        train_split=None,
        verbose=0,
    )
    return net.fit(X, y)


def _process_seconds():
    """CPU seconds of this process, all its threads (on a worker: through ``client.run``)."""
    import time

    return time.process_time()


def measure(workers, rows, chunk_rows, n_instances, repeats, malloc_trim=False, seed=0):
    """rows/s in memory and on a LocalCluster of each number of ``workers``."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    environ = {} if malloc_trim else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

    net = fitted_net(seed)
    rng = da.random.default_rng(seed + 1)
    pool = rng.random((rows, int(np.prod(IMAGE_SHAPE))), dtype=np.float32, chunks=(chunk_rows, -1))
    X = pool.compute(scheduler="threads")  # the same rows, made here for the in-memory run
    in_memory = [timed(tidal_entropy, net, X, n_instances) for _ in tqdm(range(repeats), desc="in memory")]
    results = [{"setting": "in memory", "workers": 0, "times_s": in_memory}]
    for n in workers:
        with (
            dask.config.set(environ),
            LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(n, timeout=120)
            on_workers = pool.persist()  # made on the workers, kept there
            wait(on_workers)
            expected = tidal_entropy(net, X, n_instances)
            np.testing.assert_array_equal(tidal_entropy(net, on_workers, n_instances), expected)  # warm-up
            times = []
            # where the time goes: each worker's CPU seconds (idle = waiting for tasks) and this
            # process's (the client, and the scheduler, which LocalCluster runs here)
            workers_before, main_before = client.run(_process_seconds), _process_seconds()
            for _ in tqdm(range(repeats), desc=f"{n} worker(s)"):
                times.append(timed(tidal_entropy, net, on_workers, n_instances))
            main_cpu = _process_seconds() - main_before
            worker_cpu = sorted(client.run(_process_seconds)[w] - workers_before[w] for w in workers_before)
        results.append({
            "setting": f"{n} worker(s)", "workers": n, "times_s": times,
            "worker_cpu_s": worker_cpu, "main_process_cpu_s": main_cpu,
            "worker_utilization": sum(worker_cpu) / (n * sum(times)),
            "main_process_share_of_a_core": main_cpu / sum(times),
        })  # fmt: skip
    for result in results:
        result["median_s"] = float(np.median(result["times_s"]))
        result["rows_per_s"] = rows / result["median_s"]
    one = next((r["rows_per_s"] for r in results if r["workers"] == 1), None)
    for result in results:
        result["ratio_to_one_worker"] = result["rows_per_s"] / one if one else None
    return results


def write(results, out_dir, meta):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dask.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    columns = ["setting", "workers", "median_s", "rows_per_s", "ratio_to_one_worker"]
    with open(out_dir / "dask.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on_dask = [r for r in results if r["workers"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["workers"] for r in on_dask], [r["rows_per_s"] for r in on_dask], "o-", label="Dask workers")
    ax.axhline(results[0]["rows_per_s"], color="grey", ls="--", label="in memory, 1 thread")
    ax.set(xlabel="worker processes (1 thread each)", ylabel="rows/s", title="TiDAL pool scoring on Dask")
    ax.set_xticks([r["workers"] for r in on_dask])
    ax.set_ylim(0, 1.15 * max(r["rows_per_s"] for r in results))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "dask.png", dpi=120)
    plt.close(fig)


def add_pool_arguments(parser):
    """The pool and the query: ``--rows``, ``--chunk-rows``, ``--n-instances`` (also
    ``benchmarks.scaling_paired``'s)."""
    parser.add_argument("--rows", type=int, default=8_000, help="pool rows (28x28 images)")
    parser.add_argument("--chunk-rows", type=int, default=500, help="rows per dask block")
    parser.add_argument("--n-instances", type=int, default=100, help="rows queried")


def build_parser():
    """The command line of ``python -m benchmarks.scaling_dask``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling_dask",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes to try")
    add_pool_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="timed queries per setting (median)")
    parser.add_argument(
        "--dask-malloc-trim", action="store_true", help="keep Dask's MALLOC_TRIM_THRESHOLD_ for the workers"
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write the results")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)  # as each worker: Dask's nanny starts them with OMP_NUM_THREADS=1
    load_at_start = os.getloadavg()
    results = measure(
        args.workers, args.rows, args.chunk_rows, args.n_instances, args.repeats, args.dask_malloc_trim
    )
    meta = {
        "worker_malloc_trim_threshold": "65536 (Dask's default)" if args.dask_malloc_trim else "unset",
        **run_meta(argv, load_at_start),
    }
    write(results, args.out_dir, meta)
    for r in results:
        ratio = "" if r["ratio_to_one_worker"] is None else f", x{r['ratio_to_one_worker']:.2f} of one worker"
        print(f"{r['setting']:>12}: {r['rows_per_s']:,.0f} rows/s (median {r['median_s']:.3f} s){ratio}")
    print(f"Written to {args.out_dir}")
    return results


if __name__ == "__main__":
    main()
