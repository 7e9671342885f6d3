"""Data-parallel training through Accelerate: training samples/s against the number of processes.

The training part of ``benchmarks.scaling``. An ``AcceleratedTiDALNetClassifier`` with the
benchmarks' SmallCNN trains on random 28x28 images (random labels: the throughput, not the
accuracy, is measured) on 1, 2, ... CPU processes started by ``torchrun`` (gloo backend,
loopback only, one torch thread each); each process trains ``--batch-size`` rows per step, so
2 processes take steps of twice the rows (as data parallelism does). A plain
``TiDALNetClassifier`` in one process with one thread is the baseline. samples/s is the training
rows over the median epoch time of the main process, the first epoch left out (warm-up); the
ratio is against the baseline. Each run also times the per-epoch gathering of the training
dynamics (one all-reduce of ``rows x (classes + 1)`` floats): within the fit, and for a buffer of
``--gather-rows`` rows, to show what it costs on a large training set.

On a machine whose cores other work shares, the ratio says what that machine gave.
"""

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tidal_modal import TiDALNetClassifier

from .backbones import SmallCNN
from .cli import HelpFormatter

DEFAULT_OUT_DIR = Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "scaling"
IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = 10
REPO = Path(__file__).resolve().parents[1]


def training_data(rows, seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(rows, int(np.prod(IMAGE_SHAPE))).astype(np.float32), rng.randint(0, N_CLASSES, rows)


def net_params(epochs, batch_size):
    return dict(
        module__image_shape=IMAGE_SHAPE,
        module__n_classes=N_CLASSES,
        max_epochs=epochs,
        batch_size=batch_size,
        optimizer=torch.optim.SGD,
        lr=0.01,
        verbose=0,
    )


def epoch_times(history):
    """Seconds of each epoch after the first."""
    return [float(d) for d in history[1:, "dur"]]


def single_process(rows, epochs, batch_size, seed=0):
    """Epoch times of a plain TiDALNetClassifier in this process (one thread)."""
    X, y = training_data(rows, seed)
    torch.manual_seed(seed)
    net = TiDALNetClassifier(SmallCNN, **net_params(epochs, batch_size)).fit(X, y)
    return epoch_times(net.history)


def worker(args):
    """One process of a data-parallel fit (under torchrun); the main one writes the timings."""
    from accelerate import Accelerator

    from tidal_modal.accelerate import AcceleratedTiDALNetClassifier, DistributedTrainingDynamics

    class TimedNet(AcceleratedTiDALNetClassifier):
        def on_epoch_end(self, net, **kwargs):
            start = time.perf_counter()
            super().on_epoch_end(net, **kwargs)  # gathers the epoch's training dynamics
            self.history.record("td_gather_s", time.perf_counter() - start)

    accelerator = Accelerator(cpu=True)
    X, y = training_data(args.rows, args.seed)
    torch.manual_seed(args.seed)
    net = TimedNet(SmallCNN, accelerator=accelerator, **net_params(args.epochs, args.batch_size)).fit(X, y)
    # the gathering alone, on a large training set's buffer
    dynamics = DistributedTrainingDynamics(args.gather_rows, accelerator)
    dynamics.update(torch.arange(args.gather_rows), torch.full((args.gather_rows, N_CLASSES), 0.1))
    gather = []
    for _ in range(5):
        accelerator.wait_for_everyone()
        start = time.perf_counter()
        dynamics.end_epoch()
        gather.append(time.perf_counter() - start)
    if accelerator.is_main_process:
        result = {
            "processes": accelerator.num_processes,
            "epoch_s": epoch_times(net.history),
            "td_gather_in_fit_s": [float(t) for t in net.history[1:, "td_gather_s"]],
            "td_gather_large_s": gather,
        }
        Path(args.result).write_text(json.dumps(result))
    # Tear the process group down while Python still runs: left to the interpreter's exit, the
    # DDP-wrapped module's gloo threads can call into Python after finalization has begun, which
    # aborts the process ("terminate called without an active exception") after its work is done.
    accelerator.wait_for_everyone()
    del net, dynamics
    gc.collect()
    torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_parallel(processes, rows, epochs, batch_size, gather_rows, seed=0):
    """Timings of a fit on ``processes`` processes started by torchrun."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "benchmarks.scaling_training",
            "--worker", "--rows", str(rows), "--epochs", str(epochs), "--batch-size", str(batch_size),
            "--gather-rows", str(gather_rows), "--seed", str(seed), "--result", str(result),
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            raise RuntimeError(f"torchrun failed:\n{done.stderr[-4000:]}")
        return json.loads(result.read_text())


def measure(processes, rows, epochs, batch_size, gather_rows, seed=0):
    """samples/s of one plain process and of ``processes`` data-parallel processes each."""
    torch.set_num_threads(1)
    results = [{"setting": "TiDALNetClassifier, 1 process", "processes": 0,
                "epoch_s": single_process(rows, epochs, batch_size, seed)}]  # fmt: skip
    for n in processes:
        timing = data_parallel(n, rows, epochs, batch_size, gather_rows, seed)
        results.append({"setting": f"Accelerate, {n} process(es)", **timing})
    for result in results:
        result["median_epoch_s"] = float(np.median(result["epoch_s"]))
        result["samples_per_s"] = rows / result["median_epoch_s"]
        if "td_gather_in_fit_s" in result:
            result["td_gather_share_of_epoch"] = (
                float(np.median(result["td_gather_in_fit_s"])) / result["median_epoch_s"]
            )
            result["td_gather_large_median_s"] = float(np.median(result["td_gather_large_s"]))
    base = results[0]["samples_per_s"]
    for result in results:
        result["ratio_to_one_process"] = result["samples_per_s"] / base
    return results


def build_parser():
    """The command line of ``python -m benchmarks.scaling_training``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling_training",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="training processes to try")
    parser.add_argument("--rows", type=int, default=4096, help="training rows (28x28 images)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first is not timed)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per step and process")
    parser.add_argument(
        "--gather-rows", type=int, default=1_000_000, help="rows of the TD buffer whose gathering is timed"
    )
    parser.add_argument("--seed", type=int, default=0, help="data and weights")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write the results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    results = measure(args.processes, args.rows, args.epochs, args.batch_size, args.gather_rows, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "training.json").write_text(json.dumps({"results": results}, indent=2) + "\n")
    for r in results:
        print(f"{r['setting']:>32}: {r['samples_per_s']:,.0f} samples/s, x{r['ratio_to_one_process']:.2f}")
    return results


if __name__ == "__main__":
    main()
