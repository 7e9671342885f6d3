"""Pool scoring throughput on a device: rows/s of the floor and of the strategies.

``python -m benchmarks.gpu_scoring --device cuda`` (what ``benchmarks/gpu_check.sh`` runs on a
borrowed GPU): for the benchmarks' MLP and CNN, a pool held in CPU memory (as a labeling loop
holds it) is scored

- by the *floor*: a bare ``no_grad`` forward pass through module and TD head, batch by batch,
  with the copy to the device, at several batch sizes;
- by ``tidal_entropy`` at the net's scoring batch size, in the module's precision and with
  ``scoring_dtype="bfloat16"`` (autocast; scores in float32).

Each time is the median of ``--repeats`` runs, after a warm-up; the device is synchronised
before every clock read. Writes ``gpu_scoring.json`` and ``gpu_scoring.md`` to ``--out-dir``.
On a CPU (``--device cpu``, the tests) it measures the same quantities, smaller.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tidal_modal import TiDALNetClassifier, tidal_entropy

from .cli import HelpFormatter
from .overhead import BACKBONES, forward_with_head, net_params, random_data

DEFAULT_OUT_DIR = Path("benchmarks/results/gpu")


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def floor_pass(net, pool, batch_size, device):
    """The bare forward pass through module and head over ``pool`` (on the CPU), copies included."""
    module, head, taps = net.module_.eval(), net.td_head_.eval(), net.td_taps_
    with torch.no_grad():
        for start in range(0, len(pool), batch_size):
            x = torch.as_tensor(pool[start : start + batch_size])
            if torch.device(device).type == "cuda":
                x = x.pin_memory().to(device, non_blocking=True)
            forward_with_head(module, head, taps, x)


def measure(name, device, n_pool, batch_sizes, repeats):
    X, y = random_data(2000, seed=0)
    torch.manual_seed(0)
    net = TiDALNetClassifier(**{**net_params(name, epochs=1), "device": device}).fit(X, y)
    pool, _ = random_data(n_pool, seed=1)
    result = {"backbone": name, "n_pool": n_pool, "scoring_batch_size": net.scoring_batch_size(pool)}
    floors = {b: timed(lambda b=b: floor_pass(net, pool, b, device), device, repeats) for b in batch_sizes}
    result["floor_s"] = {str(b): t for b, t in floors.items()}
    result["fastest_floor_s"] = min(floors.values())
    result["tidal_entropy_s"] = timed(lambda: tidal_entropy(net, pool, 100), device, repeats)
    low = net.set_params(scoring_dtype="bfloat16")
    result["tidal_entropy_bf16_s"] = timed(lambda: tidal_entropy(low, pool, 100), device, repeats)
    net.set_params(scoring_dtype=None)
    for key in ("fastest_floor", "tidal_entropy", "tidal_entropy_bf16"):
        result[f"{key}_rows_per_s"] = n_pool / result[f"{key}_s"]
    result["tidal_entropy_vs_fastest_floor"] = result["tidal_entropy_s"] / result["fastest_floor_s"]
    return result


def markdown(results, environment):
    sizes = list(results[0]["floor_s"]) if results else []
    lines = [
        "# Pool scoring on a device",
        "",
        f"{environment['device_name']}; torch {environment['torch']}. The pool is held in CPU memory; "
        "times include the copies to the device. Medians after a warm-up.",
        "",
        "| backbone | pool | scoring batch | " + " | ".join(f"floor at {b} s" for b in sizes)
        + " | tidal_entropy s | tidal_entropy / fastest floor | rows/s | rows/s, bfloat16 |",
        "|---|---|---|" + "---|" * len(sizes) + "---|---|---|---|",
    ]
    for r in results:
        floors = " | ".join(f"{r['floor_s'][b]:.3f}" for b in sizes)
        lines.append(
            f"| {r['backbone']} | {r['n_pool']:,} | {r['scoring_batch_size']} | {floors} "
            f"| {r['tidal_entropy_s']:.3f} | {r['tidal_entropy_vs_fastest_floor']:.2f} "
            f"| {r['tidal_entropy_rows_per_s']:,.0f} | {r['tidal_entropy_bf16_rows_per_s']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_scoring",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--device", default="cuda", help="torch device to score on")
    parser.add_argument("--n-pool", type=int, default=200_000, help="pool rows (784 float32 features)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[512, 2048, 8192, 32768], help="floor batch sizes"
    )
    parser.add_argument("--backbones", nargs="+", default=["mlp", "mlp-2048", "cnn"], choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write the results")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device here")
    environment = {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
    }
    results = [
        measure(name, args.device, args.n_pool, args.batch_sizes, args.repeats) for name in args.backbones
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    arguments = vars(args) | {"out_dir": str(args.out_dir)}
    payload = {"arguments": arguments, "environment": environment, "results": results}
    (args.out_dir / "gpu_scoring.json").write_text(json.dumps(payload, indent=2) + "\n")
    report = markdown(results, environment)
    (args.out_dir / "gpu_scoring.md").write_text(report)
    print(report)
    return results


if __name__ == "__main__":
    main()
