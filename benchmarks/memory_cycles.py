"""Memory of an active-learning loop over many cycles: linear in the pool, no per-cycle leak.

For each pool size a fresh process (``python -m benchmarks.memory_cycles --child ...``) runs
the README's loop alone, so that its resident memory is its own: a seeded synthetic pool of
float32 rows and its labels, a ``TiDALActiveLearner`` holding a warm-started
``TiDALNetClassifier`` with the benchmarks' MLP, fitted on an initial labeled set, then per
cycle ``learner.query(X_pool, n_instances=q, random_state=cycle)``, ``learner.teach(rows,
labels)`` and ``np.delete`` of the queried rows from the pool.

After every cycle (and a ``gc.collect()``) the process's resident memory is read (VmRSS in
``/proc/self/status``) twice: as the cycle leaves it, and after glibc's ``malloc_trim(0)`` has
given the heap's free memory back to the system (the live RSS). Arrays under glibc's largest
mmap threshold (32 MiB: the labeled set, the scores) are freed into the heap and reused from
it, so the first reading moves in steps of a few MiB that are no leak; the live one shows what
the process still holds. Before each phase of a cycle (query, teach, delete) the kernel's peak
is reset (``5`` written to ``/proc/self/clear_refs``) and read after it (VmHWM): the phase's
peak. Where the reset is not permitted, peaks are reported as missing. Next to the process's
view, the bytes that the learner's parts hold are counted (its labeled arrays, the net's TD
buffers, trajectory, optimizer state, parameters, and the history's batch records): a leak
shows in the process's memory, and these counts say whether the learner holds it.

Per size: the pool's MiB; RSS after the first and the last cycle; the least-squares slopes of
RSS and of live RSS over cycles 2..last, next to what the data themselves change per cycle
(the labeled set grows by ``q`` rows and their TD-buffer rows, the pool shrinks by ``q``
rows); the most the allocator keeps (RSS - live RSS); the largest peak of a cycle above the RSS
it started from, and that peak / the pool's MiB. Across sizes, the live RSS after cycle 1 and
the largest peak are fitted as ``a x pool MiB + b``. Memory linear in the pool means that these
lines fit with ``a`` about 1 (the pool itself; the copy that ``np.delete`` makes) and that the
live slope stays near the data's own change whatever the pool's size.

Prints a markdown table and writes ``memory_cycles.json`` and ``memory_cycles.md`` to
``--out-dir``.
"""

import argparse
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier

from .backbones import backbone_params
from .cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "memory"
MIB = 2**20
PHASES = ("query", "teach", "delete")
# the parts of the state that the learner adds to as it learns (its parameters stay as they are)
LEARNER_PARTS = ("labeled", "td_buffers", "trajectory", "optimizer")
CONFIG_KEYS = "n_features n_classes initial query_size cycles epochs batch_size threads seed".split()
# what memory linear in the pool means: each of these = a x pool MiB + b across sizes
ACROSS_SIZES = {
    "live RSS after cycle 1": "live_rss_first_mib",
    "largest cycle peak": "largest_cycle_peak_mib",
}
LABEL_BYTES = np.dtype(np.int64).itemsize
TD_BYTES = np.dtype(np.float32).itemsize  # the TD buffers' dtype: the float32 probabilities


# --- the loop, in its own process ----------------------------------------------------------


def read_status():
    """``VmRSS`` and ``VmHWM`` of this process, in MiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    return values


def reset_peak():
    """Reset the kernel's peak resident memory (VmHWM) to the current RSS; ``False`` if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def trim_heap():
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``); ``False`` without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def measured(fn, *args, **kwargs):
    """Call ``fn`` after a ``gc.collect()``: its result, the RSS before it, and its peak above
    that RSS (MiB; ``None`` where the peak cannot be reset)."""
    gc.collect()
    can_reset = reset_peak()
    before = read_status()["VmHWM" if can_reset else "VmRSS"]  # after a reset: the RSS at the reset
    result = fn(*args, **kwargs)
    peak = read_status()["VmHWM"] - before if can_reset else None
    return result, before, peak


def delete_rows(X_pool, y_pool, idx):
    """Remove the queried rows from the pool, as the README's loop does."""
    return np.delete(X_pool, idx, axis=0), np.delete(y_pool, idx)


def tensor_bytes(tensors):
    """Bytes of the tensors among ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def held_bytes(learner, X_pool, y_pool):
    """Bytes held by each part of the loop's state, and the number of the history's batch records."""
    net = learner.estimator
    dynamics = getattr(net, "dynamics_", None)
    trajectory = net.trajectory_
    optimizer_state = net.optimizer_.state_dict()["state"].values()
    return {
        "labeled": int(learner.X_training.nbytes + learner.y_training.nbytes),
        "td_buffers": tensor_bytes([dynamics.sums, dynamics.counts]) if dynamics is not None else 0,
        "trajectory": tensor_bytes([trajectory.start, *trajectory.deltas]),
        "optimizer": tensor_bytes([t for state in optimizer_state for t in state.values()]),
        # the module's parameters and the TD head's
        "parameters": tensor_bytes(param for _, param in net.get_all_learnable_params()),
        "pool": int(X_pool.nbytes + y_pool.nbytes),
        "history_batches": sum(len(epoch["batches"]) for epoch in net.history_),
    }


def synthetic_data(n_rows, n_features, n_classes, rng):
    """Gaussian rows labeled by their largest one of the first ``n_classes`` features (something
    to learn, and no matrix product whose work buffers would add to the memory measured)."""
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    return X, X[:, :n_classes].argmax(axis=1).astype(np.int64)


def start_loop(config):
    """The learner, fitted on its initial labeled set, and the pool: the loop's state before cycle 1."""
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    rng = np.random.default_rng(config["seed"])
    n_features, n_classes = config["n_features"], config["n_classes"]
    X_pool, y_pool = synthetic_data(config["n_rows"], n_features, n_classes, rng)
    X0, y0 = synthetic_data(config["initial"], n_features, n_classes, rng)
    net = TiDALNetClassifier(
        **backbone_params("mlp", (n_features,), n_classes),
        classes=list(range(n_classes)),  # a small initial set may miss a class
        optimizer=torch.optim.SGD,  # the README's optimizer, whose momentum is state to keep
        optimizer__momentum=0.9,
        lr=0.05,
        max_epochs=config["epochs"],
        batch_size=config["batch_size"],
        warm_start=True,
        verbose=0,
    )
    return TiDALActiveLearner(net, X_training=X0, y_training=y0), X_pool, y_pool


def run_cycles(config, progress=False):
    """The README's loop on a synthetic pool of ``config["n_rows"]`` rows; memory after and during each cycle.

    Returns a dict of per-cycle lists (MiB): ``rss_mib`` after each cycle, ``live_rss_mib``
    after it and a ``malloc_trim`` (``None`` without glibc), ``cycle_peak_mib``
    (the cycle's peak above the RSS it started from), ``phase_peak_mib`` (each phase's peak
    above the RSS it started from), and ``held`` (:func:`held_bytes` after each cycle).
    """
    learner, X_pool, y_pool = start_loop(config)  # the only references to the pool: np.delete frees it
    gc.collect()
    trim_heap()
    result = {"rss_start_mib": read_status()["VmRSS"], "peak_reset": reset_peak()}
    result.update(rss_mib=[], live_rss_mib=[], cycle_peak_mib=[], held=[], seconds=[])
    result["phase_peak_mib"] = {phase: [] for phase in PHASES}
    # what exists now (torch's modules above all) is never garbage: exempt from the collections
    # before each reading, which would otherwise take a good part of a second each
    gc.freeze()
    try:
        for cycle in tqdm(range(config["cycles"]), desc=f"{config['n_rows']:,} rows", disable=not progress):
            start = time.perf_counter()
            (idx, rows), *query = measured(
                learner.query, X_pool, n_instances=config["query_size"], random_state=cycle
            )
            _, *teach = measured(learner.teach, rows, y_pool[idx])
            (X_pool, y_pool), *delete = measured(delete_rows, X_pool, y_pool, idx)
            del idx, rows
            gc.collect()
            result["rss_mib"].append(read_status()["VmRSS"])
            result["live_rss_mib"].append(read_status()["VmRSS"] if trim_heap() else None)
            result["seconds"].append(time.perf_counter() - start)
            phases = dict(zip(PHASES, (query, teach, delete), strict=True))  # [RSS before, peak above it]
            for phase, (_, peak) in phases.items():
                result["phase_peak_mib"][phase].append(peak)
            highest = [before + peak for before, peak in phases.values() if peak is not None]
            result["cycle_peak_mib"].append(max(highest) - query[0] if highest else None)
            result["held"].append(held_bytes(learner, X_pool, y_pool))
    finally:
        gc.unfreeze()
    return result


# --- the report ------------------------------------------------------------------------------


def least_squares_slope(values):
    """Slope of the least-squares line through ``values`` against ``0, 1, 2, ...``, and its
    standard error (``None`` for fewer than three values)."""
    y = np.asarray(values, dtype=float)
    x = np.arange(len(y)) - (len(y) - 1) / 2  # centred
    slope = float(x @ (y - y.mean()) / (x @ x))
    if len(y) < 3:
        return slope, None
    residuals = y - y.mean() - slope * x
    return slope, float(np.sqrt(residuals @ residuals / (len(y) - 2) / (x @ x)))


def summarize(n_rows, child, config):
    """One size's row of the report, from its child's per-cycle readings."""
    row_bytes = config["n_features"] * np.dtype(np.float32).itemsize
    q = config["query_size"]
    td_row_bytes = (config["n_classes"] + 1) * TD_BYTES  # a row of the sums and of the counts
    peaks = [p for p in child["cycle_peak_mib"] if p is not None]
    held = child["held"]
    learner_mib = [sum(h[k] for k in LEARNER_PARTS) / MIB for h in held]
    pool_mib = n_rows * row_bytes / MIB
    # cycle 1 also pays for first-time costs (code paged in, allocator pools): fit from cycle 2
    rss_slope, rss_slope_stderr = least_squares_slope(child["rss_mib"][1:])
    live = child["live_rss_mib"]
    live_slope, live_slope_stderr = (None, None) if None in live else least_squares_slope(live[1:])
    kept = None if None in live else max(np.subtract(child["rss_mib"], live))
    largest_peak = max(peaks) if peaks else None
    return {
        "n_rows": n_rows,
        "pool_mib": pool_mib,
        "rss_start_mib": child["rss_start_mib"],
        "rss_first_mib": child["rss_mib"][0],
        "rss_last_mib": child["rss_mib"][-1],
        "live_rss_first_mib": live[0],
        "rss_slope_mib_per_cycle": rss_slope,
        "rss_slope_stderr_mib": rss_slope_stderr,
        "live_rss_slope_mib_per_cycle": live_slope,
        "live_rss_slope_stderr_mib": live_slope_stderr,
        "largest_kept_by_allocator_mib": None if kept is None else float(kept),
        "labeled_growth_mib_per_cycle": q * (row_bytes + LABEL_BYTES + td_row_bytes) / MIB,
        "pool_shrink_mib_per_cycle": q * (row_bytes + LABEL_BYTES) / MIB,
        "learner_slope_mib_per_cycle": least_squares_slope(learner_mib[1:])[0],
        "largest_cycle_peak_mib": largest_peak,
        "peak_over_pool": None if largest_peak is None else largest_peak / pool_mib,
        "largest_phase_peak_mib": {
            phase: max((p for p in phase_peaks if p is not None), default=None)
            for phase, phase_peaks in child["phase_peak_mib"].items()
        },
        "history_batches_last": held[-1]["history_batches"],
        "seconds": float(np.sum(child["seconds"])),
        "cycles": child,
    }


def fit_across_sizes(sizes, key):
    """``sizes[i][key] = per_pool_mib * pool_mib + intercept_mib`` by least squares over the
    sizes; ``None`` for fewer than two sizes or a missing value."""
    values = [size[key] for size in sizes]
    if len(sizes) < 2 or None in values:
        return None
    per_pool_mib, intercept_mib = np.polyfit([size["pool_mib"] for size in sizes], values, 1)
    return {"per_pool_mib": float(per_pool_mib), "intercept_mib": float(intercept_mib)}


def run_child(n_rows, config):
    """Run the loop for ``n_rows`` in a fresh process; its JSON result."""
    child_config = json.dumps({**config, "n_rows": n_rows})
    cmd = [sys.executable, "-m", "benchmarks.memory_cycles", "--child", child_config]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def slope(row, name):
    """A slope of the report and its standard error, as ``+0.123 ± 0.045``."""
    value, stderr = row[f"{name}_slope_mib_per_cycle"], row[f"{name}_slope_stderr_mib"]
    return fmt(value, "+.3f") + ("" if stderr is None else f" ± {stderr:.3f}")


def markdown(result):
    config, env = result["config"], result["environment"]
    lines = [
        "# Memory over active-learning cycles",
        "",
        f"`python -m benchmarks.memory_cycles {result['arguments']}` on {env['machine']}; torch "
        f"{env['torch']}, {config['threads']} thread(s). Each size in a fresh process: "
        f"{config['n_features']} float32 features, {config['n_classes']} classes, the mlp backbone, "
        f"{config['initial']} initial labels, {config['cycles']} cycles of query {config['query_size']} "
        f"+ teach ({config['epochs']} epoch(s), warm start) + np.delete. MiB are 2^20 bytes. RSS is "
        "VmRSS after each cycle, live RSS the same after malloc_trim(0) (free heap given back); "
        "slopes are least-squares slopes over cycles 2 to the last (± their standard error); the "
        "learner's state is what its labeled arrays, TD buffers, trajectory and optimizer state hold; "
        "kept by the allocator is RSS - live RSS; a peak is VmHWM above the RSS at the start of the "
        "cycle (or phase).",
        "",
        "| pool rows | pool MiB | RSS after cycle 1 | RSS after last | RSS slope MiB/cycle "
        "| live RSS slope MiB/cycle | labeled data +MiB/cycle | pool -MiB/cycle "
        "| learner's state MiB/cycle | most kept by the allocator MiB | largest cycle peak MiB "
        "| peak / pool | largest peak: query / teach / delete MiB | history's batch records |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["sizes"]:
        phases = " / ".join(fmt(r["largest_phase_peak_mib"][p]) for p in PHASES)
        lines.append(
            f"| {r['n_rows']:,} | {r['pool_mib']:.1f} | {r['rss_first_mib']:.1f} | {r['rss_last_mib']:.1f} "
            f"| {slope(r, 'rss')} | {slope(r, 'live_rss')} | {r['labeled_growth_mib_per_cycle']:.3f} "
            f"| {r['pool_shrink_mib_per_cycle']:.3f} | {r['learner_slope_mib_per_cycle']:+.3f} "
            f"| {fmt(r['largest_kept_by_allocator_mib'])} | {fmt(r['largest_cycle_peak_mib'])} "
            f"| {fmt(r['peak_over_pool'], '.2f')} | {phases} "
            f"| {r['history_batches_last']:,} |"
        )
    fits = {name: result["across_sizes"][key] for name, key in ACROSS_SIZES.items()}
    if all(fits.values()):
        described = [
            f"{name} = {fit['per_pool_mib']:.3f} x pool MiB + {fit['intercept_mib']:.1f} MiB"
            for name, fit in fits.items()
        ]
        lines += ["", f"Across sizes (least squares): {'; '.join(described)}."]
    return "\n".join(lines) + "\n"


def build_parser():
    """The command line of ``python -m benchmarks.memory_cycles``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_cycles",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 40_000, 80_000], help="pool rows")
    parser.add_argument("--n-features", type=int, default=784, help="float32 features per row")
    parser.add_argument("--n-classes", type=int, default=10, help="classes")
    parser.add_argument("--initial", type=int, default=500, help="initially labeled rows")
    parser.add_argument("--query-size", type=int, default=100, help="rows queried per cycle")
    parser.add_argument("--cycles", type=int, default=20, help="query + teach + delete cycles")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per teach (warm start)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the net")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="for the JSON and markdown")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON config: run one size, print JSON
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(run_cycles(json.loads(args.child), progress=True)))
        return None

    config = {key: getattr(args, key) for key in CONFIG_KEYS}
    result = {
        "arguments": " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "config": config,
        "sizes": [summarize(n, run_child(n, config), config) for n in args.sizes],
    }
    result["across_sizes"] = {key: fit_across_sizes(result["sizes"], key) for key in ACROSS_SIZES.values()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "memory_cycles.json").write_text(json.dumps(result, indent=2) + "\n")
    report = markdown(result)
    (args.out_dir / "memory_cycles.md").write_text(report)
    print(report)
    print(f"Written to {args.out_dir}")
    return result


if __name__ == "__main__":
    main()
