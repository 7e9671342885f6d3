"""What TiDAL costs over plain training and plain scoring, and how pool scoring scales.

Measures, side by side in one run (in each of ``--repeats`` repeats every side runs once, in a
shuffled order, with the garbage collector off; a ratio is the median of its per-repeat ratios):

- training: ``TiDALNetClassifier.fit`` / skorch ``NeuralNetClassifier.fit``, same backbone,
  data, epochs and batch size (an MLP on vectors, a small CNN on 28x28 images). TiDAL fetches
  training rows a batch at a time, skorch row by row; TiDAL made to read rows one by one like
  skorch gives the like-for-like ratio. In between, the head's floor: plain skorch training the
  backbone *with* the TD head and the KL term (to a constant target) but recording no training
  dynamics, which splits the like-for-like overhead into the head's own cost and the cost of
  our bookkeeping;
- query: ``tidal_entropy`` (and ``tidal_margin``) / modAL's ``entropy_sampling`` on the same
  fitted net and pool, and / a bare ``torch.no_grad()`` eval-mode forward pass of the backbone
  over the same pool in the same batch size (the floor); also / the same bare pass through
  backbone and TD head (the floor of any TiDAL scoring);
- FLOPs: the matmul and convolution FLOPs (forward and backward) of every side, counted by
  torch's ``FlopCounterMode``. Their ratios bound the TD head's matmul work from below on any
  machine: no implementation of the paper's head does fewer;
- DISAL: fit with the trajectory recorded (``TiDALNetClassifier``'s default) / the same fit
  without it (``callbacks__trajectory=None``), and a ``disal`` query / the bare forward pass
  through backbone and TD head (the pass that ``disal`` scores from);
- selection: partial top-k (``select_top_k``) vs a full sort;
- scaling: scoring memory-mapped pools of 784 features of growing size, each in a fresh
  process: time and peak memory growth. Peak memory is the process's anonymous memory
  (RssAnon, sampled), which excludes the page cache that reading a memmap maps in.

Writes ``overhead.json``, ``overhead.md`` and ``scaling.png`` under ``--output-dir``.
"""

import argparse
import gc
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from modAL.uncertainty import entropy_sampling
from skorch import NeuralNetClassifier
from torch import nn
from torch.nn import functional as F
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from tidal_modal import TiDALNetClassifier, disal, tidal_entropy, tidal_margin
from tidal_modal.modules import TDHead, attach_taps, capturing
from tidal_modal.strategies import select_top_k

from .backbones import MLP, SmallCNN
from .cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "fit": 1.10,
    "query_vs_entropy_sampling": 1.05,
    "query_vs_bare_forward": 1.15,
    "disal_fit_vs_no_recording": 1.05,
    "disal_query_vs_bare_forward_with_head": 1.10,
    "disal_vs_fastest_floor": 1.10,
    "query_vs_fastest_floor": 1.05,
}
# batch sizes of the scoring floor: the fastest bare forward pass through module and head over
# these is the physical floor of scoring a pool, whatever batch a strategy uses
FLOOR_BATCH_SIZES = (64, 128, 512, 1024, 4096)
PARTS = ("fit", "query", "disal", "selection", "scaling")
N_FEATURES, N_CLASSES, BATCH_SIZE = 784, 10, 128


# The benchmarks' own backbones (flat rows in; the CNN reshapes them to 1x28x28 images), and
# the MLP at growing widths: the TD head's cost grows with the width of the features it reads,
# the backbone's with its square, so the head's share falls as the MLP widens.
BACKBONES = {
    "mlp": (MLP, {"n_features": N_FEATURES, "n_classes": N_CLASSES}),
    **{
        f"mlp-{width}": (MLP, {"n_features": N_FEATURES, "n_classes": N_CLASSES, "hidden": width})
        for width in (512, 1024, 2048)
    },
    "cnn": (SmallCNN, {"image_shape": (1, 28, 28), "n_classes": N_CLASSES}),
}
# (backbone, td_hidden) pairs of the fit measurement: the paper's head width on every backbone,
# and a narrower head next to the small MLP
FIT_RUNS = [("mlp", 128), ("mlp", 32), ("mlp-512", 128), ("mlp-1024", 128), ("mlp-2048", 128), ("cnn", 128)]


def net_params(name, epochs):
    """The skorch parameters of both nets; plain skorch gets TiDAL's defaults, so that only the
    TD head and its bookkeeping differ."""
    module, module_params = BACKBONES[name]
    return dict(
        module=module,
        **{f"module__{key}": value for key, value in module_params.items()},
        criterion=nn.CrossEntropyLoss,
        train_split=None,
        iterator_train__shuffle=True,
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=0.01,
        verbose=0,
    )


def forward_with_head(module, head, taps, x):
    """``(logits, td_logits)`` of the batch ``x``: ``module`` with its taps switched on, then the
    TD head on the features they caught, as :meth:`TiDALNetClassifier.infer_td` computes them."""
    with capturing(taps):
        logits = module(x)
        return logits, head([tap.features for tap in taps], logits.shape[1])


class BackboneWithHead(nn.Module):
    """A benchmark backbone with TiDAL's TD head attached; returns ``(logits, td_logits)``.

    The head reads the input of the backbone's last ``nn.Linear`` through the same taps as in
    :class:`~tidal_modal.TiDALNetClassifier` (its default ``td_layers``). Trained by plain skorch
    with :class:`HeadLoss`, it pays for the head's forward and backward and for the KL term, but
    records no training dynamics: the floor of any TiDAL training.
    """

    def __init__(self, name, td_hidden=128):
        super().__init__()
        module, module_params = BACKBONES[name]
        self.backbone = module(**module_params)
        self.taps = attach_taps(self.backbone)
        # the lazy head gets its shapes from the first training batch, as in TiDALNetClassifier
        self.td_head = TDHead(len(self.taps), hidden=td_hidden)

    def forward(self, x):
        return forward_with_head(self.backbone, self.td_head, self.taps, x)


class HeadLoss(nn.Module):
    """``CE(logits, y) + KL(uniform || TD head)``: TiDAL's loss with a constant TD target."""

    def forward(self, y_pred, y_true):
        logits, td_logits = y_pred
        target = torch.full_like(td_logits, 1.0 / td_logits.shape[1])
        td_loss = F.kl_div(F.log_softmax(td_logits, dim=1), target, reduction="batchmean")
        return F.cross_entropy(logits, y_true) + td_loss


def head_floor_params(name, epochs, td_hidden):
    params = net_params(name, epochs)
    params.update(module=BackboneWithHead, criterion=HeadLoss, module__name=name, module__td_hidden=td_hidden)
    for key in BACKBONES[name][1]:
        del params[f"module__{key}"]
    return params


def timed(fn, *args, **kwargs):
    """Seconds one call takes, with the garbage collector off (as ``timeit`` does)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        fn(*args, **kwargs)
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def interleaved(runs, repeats, seed=0):
    """Time every run of ``runs`` (name -> callable) once per repeat, in a shuffled order.

    Interleaving spreads slow drifts of the machine over all runs alike, and shuffling keeps
    any one run from always following another (whose caches or allocations it would inherit).
    """
    rng = np.random.RandomState(seed)
    names = list(runs)
    times = {name: [] for name in names}
    for _ in range(repeats):
        for i in rng.permutation(len(names)):
            times[names[i]].append(timed(runs[names[i]]))
    return times


def random_data(n, seed):
    rng = np.random.RandomState(seed)
    return rng.randn(n, N_FEATURES).astype(np.float32), rng.randint(0, N_CLASSES, n)


def median_ratio(numerator, denominator):
    """Median over repeats of the ratio within each repeat: the two sides of a ratio ran minutes
    apart at most, so a machine that slows down for a while slows both."""
    return float(np.median(np.asarray(numerator) / np.asarray(denominator)))


def count_flops(fn):
    """Matmul and convolution FLOPs (forward and backward) of one call of ``fn``.

    ``FlopCounterMode`` counts the ops that dominate a network's cost and ignores element-wise
    ones: what the TD head adds to them is the least work that any implementation of it adds.
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure_fit(name, repeats, n_train, epochs, td_hidden=128):
    X, y = random_data(n_train, seed=0)
    nets = {
        "plain": lambda: NeuralNetClassifier(**net_params(name, epochs)),
        "floor": lambda: NeuralNetClassifier(**head_floor_params(name, epochs, td_hidden)),
        "tidal": lambda: TiDALNetClassifier(td_hidden=td_hidden, **net_params(name, epochs)),
        # skorch's row-by-row loading: like for like with the other two sides
        "tidal_rows": lambda: TiDALNetClassifier(
            td_hidden=td_hidden, iterator_train__collate_fn=default_collate, **net_params(name, epochs)
        ),
    }

    def fit(key):
        torch.manual_seed(0)
        nets[key]().fit(X, y)

    times = interleaved({key: partial(fit, key) for key in nets}, repeats)
    flops = {key: count_flops(partial(fit, key)) for key in nets}
    plain, floor, tidal, tidal_rows = (times[key] for key in nets)
    return {
        "backbone": name,
        "td_hidden": td_hidden,
        "n_train": n_train,
        "epochs": epochs,
        "plain_s": float(np.median(plain)),
        "head_floor_s": float(np.median(floor)),
        "tidal_s": float(np.median(tidal)),
        "tidal_rows_s": float(np.median(tidal_rows)),
        "ratio": median_ratio(tidal, plain),
        "like_for_like_ratio": median_ratio(tidal_rows, plain),
        "head_floor_ratio": median_ratio(floor, plain),
        "like_for_like_vs_head_floor": median_ratio(tidal_rows, floor),
        "flops": flops,
        "flop_ratio": flops["tidal"] / flops["plain"],
        "times": times,
    }


def bare_forward(module, pool):
    """A ``no_grad`` eval-mode forward pass of ``module`` over ``pool`` (its TD taps stay off)."""
    module.eval()
    with torch.no_grad():
        for start in range(0, len(pool), BATCH_SIZE):
            module(torch.as_tensor(pool[start : start + BATCH_SIZE]))


def bare_forward_with_head(net, pool, batch_size=BATCH_SIZE):
    """:func:`bare_forward` through a fitted net's module and its TD head (``module_``,
    ``td_head_`` and the taps between them), without skorch: the floor of any TiDAL scoring."""
    module, head, taps = net.module_, net.td_head_, net.td_taps_
    module.eval()
    head.eval()
    with torch.no_grad():
        for start in range(0, len(pool), batch_size):
            forward_with_head(module, head, taps, torch.as_tensor(pool[start : start + batch_size]))


def _difference(result):
    """The TD difference at the fastest floor's batch, ``-`` in results measured before it was."""
    key = "td_difference_at_fastest_batch"
    return f"{result[key]:.1e} (at {result['fastest_floor_batch']})" if key in result else "-"


def _optional(result, key):
    """A ratio of a newer run, ``-`` in results measured before it was."""
    return f"{result[key]:.3f}" if key in result else "-"


def timed_with_floors(runs, net, pool, repeats):
    """:func:`interleaved` times of ``runs`` (which hold ``bare_forward_with_head``) and of the
    floors of scoring ``pool`` with ``net``: the bare pass through module and head at each of
    :data:`FLOOR_BATCH_SIZES` rows per batch, and at the net's own scoring batch, which splits a
    ratio to the fastest floor into the batch rule's part (this floor / the fastest) and the
    query's own work around the pass. The floor at :data:`BATCH_SIZE` rows is
    ``bare_forward_with_head`` itself, timed once."""
    floors = {
        f"floor_{size}": (lambda size=size: bare_forward_with_head(net, pool, size))
        for size in FLOOR_BATCH_SIZES
        if size != BATCH_SIZE
    }
    scoring_batch = net.scoring_batch_size(pool)
    floors["floor_scoring_batch"] = lambda: bare_forward_with_head(net, pool, scoring_batch)
    times = interleaved({**runs, **floors}, repeats)
    if BATCH_SIZE in FLOOR_BATCH_SIZES:
        times[f"floor_{BATCH_SIZE}"] = times["bare_forward_with_head"]
    return times


def against_fastest_floor(times, strategies):
    """Each strategy's ratio to the fastest floor (the fastest of :data:`FLOOR_BATCH_SIZES` in each
    repeat: the ratios pair runs made side by side) and to the floor at the scoring batch.
    ``times`` gains the per-repeat fastest floor."""
    fastest = np.min([times[f"floor_{size}"] for size in FLOOR_BATCH_SIZES], axis=0)
    times["fastest_floor"] = fastest.tolist()
    result = {
        "fastest_floor_s": float(np.median(fastest)),
        "fastest_floor_batch": min(FLOOR_BATCH_SIZES, key=lambda size: np.median(times[f"floor_{size}"])),
        "scoring_floor_vs_fastest_floor": median_ratio(times["floor_scoring_batch"], fastest),
    }
    for strategy in strategies:
        result[f"{strategy}_vs_fastest_floor"] = median_ratio(times[strategy], fastest)
        result[f"{strategy}_vs_scoring_floor"] = median_ratio(times[strategy], times["floor_scoring_batch"])
    return result


def td_difference(net, pool, batch_size):
    """Largest absolute difference between ``net``'s predicted TD of ``pool`` scored at its own
    batch and at ``batch_size`` rows: torch's kernels may round differently at different batch
    sizes, and then a batch chosen by timing (which varies from run to run) changes the scores'
    last bits, and a query's order among near ties, from one run to the next."""
    other = pickle.loads(pickle.dumps(net))
    other.iterator_valid__batch_size = batch_size
    return float(np.abs(other.predict_td(pool) - net.predict_td(pool)).max())


def measure_query(name, repeats, n_pool):
    X, y = random_data(2000, seed=0)
    torch.manual_seed(0)
    net = TiDALNetClassifier(**net_params(name, epochs=1)).fit(X, y)
    pool, _ = random_data(n_pool, seed=1)
    runs = {
        "bare_forward": lambda: bare_forward(net.module_, pool),
        "bare_forward_with_head": lambda: bare_forward_with_head(net, pool),
        "tidal_entropy": lambda: tidal_entropy(net, pool, 100),
        "tidal_margin": lambda: tidal_margin(net, pool, 100),
        "entropy_sampling": lambda: entropy_sampling(net, pool, 100),
    }
    times = timed_with_floors(runs, net, pool, repeats)
    flops = {key: count_flops(run) for key, run in runs.items()}
    result = {
        "backbone": name,
        "n_pool": n_pool,
        "batch_size": BATCH_SIZE,
        "scoring_batch_size": net.scoring_batch_size(pool),
        "times": times,
        "flops": flops,
    }
    result["head_flop_ratio"] = flops["bare_forward_with_head"] / flops["bare_forward"]
    result.update({f"{key}_s": float(np.median(t)) for key, t in times.items()})
    result.update(against_fastest_floor(times, ("tidal_entropy", "tidal_margin", "entropy_sampling")))
    result["td_difference_at_fastest_batch"] = td_difference(net, pool, result["fastest_floor_batch"])
    for strategy in ("tidal_entropy", "tidal_margin"):
        result[f"{strategy}_vs_entropy_sampling"] = median_ratio(times[strategy], times["entropy_sampling"])
        result[f"{strategy}_vs_bare_forward"] = median_ratio(times[strategy], times["bare_forward"])
        result[f"{strategy}_vs_bare_forward_with_head"] = median_ratio(
            times[strategy], times["bare_forward_with_head"]
        )
    return result


def measure_disal(name, repeats, n_train, epochs, n_pool):
    """DISAL's two costs: recording the trajectory during fit, and scoring a pool with ``disal``."""
    X, y = random_data(n_train, seed=0)
    params = net_params(name, epochs)

    def fit(record):
        torch.manual_seed(0)
        extra = {} if record else {"callbacks__trajectory": None}
        return TiDALNetClassifier(**params, **extra).fit(X, y)

    fit_times = interleaved({"recording": partial(fit, True), "no_recording": partial(fit, False)}, repeats)
    net = fit(True)
    pool, _ = random_data(n_pool, seed=1)
    query_times = timed_with_floors(
        {
            "bare_forward_with_head": lambda: bare_forward_with_head(net, pool),
            "disal": lambda: disal(net, pool, 100),
            "tidal_entropy": lambda: tidal_entropy(net, pool, 100),
        },
        net,
        pool,
        repeats,
    )
    result = {
        "backbone": name,
        "n_train": n_train,
        "epochs": epochs,
        "n_pool": n_pool,
        "checkpoints": len(net.trajectory_),
        "times": {**fit_times, **query_times},
        **{f"{key}_s": float(np.median(t)) for key, t in {**fit_times, **query_times}.items()},
        "fit_ratio": median_ratio(fit_times["recording"], fit_times["no_recording"]),
        "query_ratio": median_ratio(query_times["disal"], query_times["bare_forward_with_head"]),
        "disal_vs_tidal_entropy": median_ratio(query_times["disal"], query_times["tidal_entropy"]),
        "scoring_batch_size": net.scoring_batch_size(pool),
    }
    result.update(against_fastest_floor(result["times"], ("disal",)))
    return result


def measure_selection(repeats, n, k=1000):
    scores = np.random.RandomState(0).rand(n)
    partial = [timed(lambda: select_top_k(scores, k)) for _ in range(repeats)]
    full = [timed(lambda: np.argsort(-scores)[:k]) for _ in range(repeats)]
    return {"n": n, "k": k, "top_k_s": float(np.median(partial)), "full_sort_s": float(np.median(full))}


# --- scaling: one fresh process per pool size --------------------------------------------


def rss_anon_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("RssAnon not found in /proc/self/status (Linux only)")


class PeakSampler(threading.Thread):
    """Samples the process's anonymous memory every few milliseconds; keeps the peak."""

    def __init__(self, interval=0.005):
        super().__init__(daemon=True)
        self.interval, self.peak, self.stopped = interval, rss_anon_kib(), threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            self.peak = max(self.peak, rss_anon_kib())

    def stop(self):
        self.stopped.set()
        self.join()
        return max(self.peak, rss_anon_kib())


def score_memmap_worker(path, pool_subset):
    """Score the memmap at ``path`` once; print time and peak anonymous-memory growth as JSON."""
    torch.manual_seed(0)
    X, y = random_data(512, seed=0)
    net = TiDALNetClassifier(**net_params("mlp", epochs=1)).fit(X, y)
    pool = np.load(path, mmap_mode="r")
    tidal_entropy(net, pool[:BATCH_SIZE], 1)  # warm up outside the measurement
    baseline = rss_anon_kib()
    sampler = PeakSampler()
    sampler.start()
    seconds = timed(lambda: tidal_entropy(net, pool, 100, pool_subset=pool_subset, random_state=0))
    peak = sampler.stop()
    print(json.dumps({"seconds": seconds, "peak_growth_mib": (peak - baseline) / 1024}))


def write_memmap(path, n, chunk=100_000):
    pool = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, N_FEATURES))
    rng = np.random.default_rng(0)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        pool[start:stop] = rng.standard_normal((stop - start, N_FEATURES), dtype=np.float32)
    pool.flush()
    del pool


def measure_scaling(sizes, subset, threads, scratch_dir):
    rows = []
    with tempfile.TemporaryDirectory(dir=scratch_dir) as tmp:
        for n in tqdm(sizes, desc="scaling", leave=False):
            path = Path(tmp) / f"pool_{n}.npy"
            write_memmap(path, n)
            runs = [None] + ([subset] if subset and subset < n else [])
            for pool_subset in runs:
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.overhead",
                    "--threads",
                    str(threads),
                    "--worker",
                    str(path),
                ]
                if pool_subset:
                    cmd += ["--worker-subset", str(pool_subset)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT).stdout
                result = json.loads(out.strip().splitlines()[-1])
                pool_mib = n * N_FEATURES * 4 / 2**20
                rows.append(
                    {
                        "n": n,
                        "pool_subset": pool_subset,
                        "pool_mib": pool_mib,
                        "seconds": result["seconds"],
                        "rows_per_s": (pool_subset or n) / result["seconds"],
                        "peak_growth_mib": result["peak_growth_mib"],
                        "growth_bytes_per_row": result["peak_growth_mib"] * 2**20 / (pool_subset or n),
                    }
                )
            path.unlink()
    return rows


# --- reporting -------------------------------------------------------------------------------


def verdict(result, numerator, denominator, target):
    """``numerator / denominator`` of a result (median of per-repeat ratios) against its target,
    with the interquartile range of the per-repeat ratios."""
    times = result["times"]
    ratios = np.asarray(times[numerator]) / np.asarray(times[denominator])
    low, median, high = np.percentile(ratios, [25, 50, 75])
    return f"{median:.3f} ({'meets' if median <= target else 'misses'} <= {target}; IQR {low:.3f}-{high:.3f})"


def markdown(results):
    env = results["environment"]
    lines = [
        "# TiDAL overhead",
        "",
        f"`python -m benchmarks.overhead {results['arguments']}` on {env['machine']}; "
        f"torch {env['torch']}, {env['threads']} thread(s). "
        f"Times are medians of {results['repeats']} repeats, ratios medians of per-repeat ratios; "
        "in each repeat every side runs once, in a shuffled order.",
        "",
        "## Training: TiDALNetClassifier.fit / NeuralNetClassifier.fit",
        "",
        "TiDAL fetches training rows a batch at a time, skorch row by row. *like for like*: "
        "TiDAL reading rows one by one as skorch does. *head floor*: plain skorch training the "
        "backbone with the TD head and the KL term (to a constant target), recording no training "
        "dynamics. like for like ~ head floor / plain x like for like / head floor: the head's own "
        "cost times our bookkeeping's. *FLOPs*: matmul and convolution FLOPs (forward and "
        "backward) counted by torch's `FlopCounterMode`; the head floor's count equals TiDAL's, so "
        "FLOPs TiDAL / plain is the least matmul work that the paper's head adds, on any machine.",
        "",
        "| backbone | td_hidden | rows | epochs | plain s | head floor s | TiDAL s | TiDAL / plain "
        "| like for like / plain | head floor / plain | like for like / head floor | FLOPs TiDAL / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("fit", []):
        lines.append(
            f"| {r['backbone']} | {r['td_hidden']} | {r['n_train']} | {r['epochs']} "
            f"| {r['plain_s']:.3f} | {r['head_floor_s']:.3f} | {r['tidal_s']:.3f} "
            f"| {verdict(r, 'tidal', 'plain', TARGETS['fit'])} "
            f"| {verdict(r, 'tidal_rows', 'plain', TARGETS['fit'])} | {r['head_floor_ratio']:.3f} "
            f"| {r['like_for_like_vs_head_floor']:.3f} | {r['flop_ratio']:.3f} |"
        )
    lines += [
        "",
        f"## Query (batch size {BATCH_SIZE}, top-100)",
        "",
        "*bare*: a `no_grad` eval-mode forward pass of the backbone over the pool; *bare + head*: "
        "the same through backbone and TD head, the floor of any TiDAL scoring. *FLOPs bare + head "
        "/ bare*: the head's share of one pass, in counted FLOPs (a tidal_* query counts those of "
        "bare + head, and one row more: the pass that sizes its batches).",
        "",
        "| backbone | pool | bare s | bare + head s | entropy_sampling s | tidal_entropy s "
        "| tidal_margin s | tidal_entropy / entropy_sampling | tidal_entropy / bare "
        "| tidal_entropy / bare + head | tidal_margin / entropy_sampling | tidal_margin / bare "
        "| tidal_margin / bare + head | FLOPs bare + head / bare |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("query", []):
        lines.append(
            f"| {r['backbone']} | {r['n_pool']} | {r['bare_forward_s']:.3f} "
            f"| {r['bare_forward_with_head_s']:.3f} | {r['entropy_sampling_s']:.3f} "
            f"| {r['tidal_entropy_s']:.3f} | {r['tidal_margin_s']:.3f} "
            f"| {verdict(r, 'tidal_entropy', 'entropy_sampling', TARGETS['query_vs_entropy_sampling'])} "
            f"| {verdict(r, 'tidal_entropy', 'bare_forward', TARGETS['query_vs_bare_forward'])} "
            f"| {r['tidal_entropy_vs_bare_forward_with_head']:.3f} "
            f"| {verdict(r, 'tidal_margin', 'entropy_sampling', TARGETS['query_vs_entropy_sampling'])} "
            f"| {verdict(r, 'tidal_margin', 'bare_forward', TARGETS['query_vs_bare_forward'])} "
            f"| {r['tidal_margin_vs_bare_forward_with_head']:.3f} | {r['head_flop_ratio']:.3f} |"
        )
    lines += [
        "",
        "### Against the fastest floor",
        "",
        "*floor at b*: the bare forward pass through module and TD head at b rows per batch; "
        "*fastest floor*: the fastest of them in each repeat, the physical floor of scoring a pool. "
        "The strategies score at the net's scoring batch size (`scoring_batch_size`: "
        "`iterator_valid__batch_size` if set, else 24 MiB of input and layer outputs, at most 4,096 "
        "rows). The last three columns split a strategy's ratio: "
        "*floor at the scoring batch / fastest floor* is the batch rule's share, *strategy / floor at "
        "the scoring batch* the query's own work around the pass (copying outputs, softmax, scores, "
        "top-k). *TD difference at the fastest batch*: the largest absolute difference between the "
        "predicted TD of the pool scored at the scoring batch and at the fastest floor's batch "
        "(torch's kernels round differently at different batch sizes).",
        "",
        "| backbone | scoring batch | " + " | ".join(f"floor at {b} s" for b in FLOOR_BATCH_SIZES)
        + " | tidal_entropy / fastest floor | tidal_margin / fastest floor "
        "| entropy_sampling / fastest floor | floor at the scoring batch / fastest floor "
        "| tidal_entropy / floor at the scoring batch | tidal_margin / floor at the scoring batch "
        "| TD difference at the fastest batch |",
        "|---|---|" + "---|" * len(FLOOR_BATCH_SIZES) + "---|---|---|---|---|---|---|",
    ]
    for r in results.get("query", []):
        if "fastest_floor_s" not in r:
            continue
        floors = " | ".join(_optional(r, f"floor_{b}_s") for b in FLOOR_BATCH_SIZES)
        target = TARGETS["query_vs_fastest_floor"]
        lines.append(
            f"| {r['backbone']} | {r['scoring_batch_size']} | {floors} "
            f"| {verdict(r, 'tidal_entropy', 'fastest_floor', target)} "
            f"| {verdict(r, 'tidal_margin', 'fastest_floor', target)} "
            f"| {verdict(r, 'entropy_sampling', 'fastest_floor', target)} "
            f"| {_optional(r, 'scoring_floor_vs_fastest_floor')} "
            f"| {_optional(r, 'tidal_entropy_vs_scoring_floor')} "
            f"| {_optional(r, 'tidal_margin_vs_scoring_floor')} "
            f"| {_difference(r)} |"
        )
    lines += [
        "",
        f"## DISAL (batch size {BATCH_SIZE}, top-100)",
        "",
        "*fit*: TiDALNetClassifier.fit recording the trajectory (its default) / the same fit with "
        "`callbacks__trajectory=None`. *query*: `disal` / a bare `no_grad` forward pass through "
        "backbone and TD head, the pass whose features and probabilities `disal` scores, at batch "
        f"size {BATCH_SIZE}; *fastest floor* and its split as in the query's table above.",
        "",
        "| backbone | rows | epochs | checkpoints | fit s | fit / no recording | pool | disal s "
        "| disal / bare + head | disal / tidal_entropy | scoring batch | disal / fastest floor "
        "| floor at the scoring batch / fastest floor | disal / floor at the scoring batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    query_target = TARGETS["disal_query_vs_bare_forward_with_head"]
    for r in results.get("disal", []):
        fastest = "-"  # in results measured before the floors were
        if "fastest_floor_s" in r:
            fastest = verdict(r, "disal", "fastest_floor", TARGETS["disal_vs_fastest_floor"])
        lines.append(
            f"| {r['backbone']} | {r['n_train']} | {r['epochs']} | {r['checkpoints']} "
            f"| {r['recording_s']:.3f} "
            f"| {verdict(r, 'recording', 'no_recording', TARGETS['disal_fit_vs_no_recording'])} "
            f"| {r['n_pool']} | {r['disal_s']:.3f} "
            f"| {verdict(r, 'disal', 'bare_forward_with_head', query_target)} "
            f"| {r['disal_vs_tidal_entropy']:.3f} | {r.get('scoring_batch_size', '-')} "
            f"| {fastest} "
            f"| {_optional(r, 'scoring_floor_vs_fastest_floor')} | {_optional(r, 'disal_vs_scoring_floor')} |"
        )
    s = results.get("selection")
    if s:
        lines += [
            "",
            "## Selection",
            "",
            f"Top-{s['k']} of {s['n']:,} scores: partial selection {s['top_k_s'] * 1e3:.1f} ms, "
            f"full sort {s['full_sort_s'] * 1e3:.1f} ms.",
        ]
    lines += [
        "",
        "## Scaling: tidal_entropy on a memory-mapped pool (784 float32 features, the mlp)",
        "",
        "| rows | pool_subset | pool MiB | seconds | rows/s | peak memory growth MiB "
        "| bytes per scored row |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results.get("scaling", []):
        lines.append(
            f"| {r['n']:,} | {r['pool_subset'] or '-'} | {r['pool_mib']:.0f} | {r['seconds']:.2f} "
            f"| {r['rows_per_s']:,.0f} | {r['peak_growth_mib']:.1f} | {r['growth_bytes_per_row']:.0f} |"
        )
    return "\n".join(_measured_sections(lines, results)) + "\n"


SECTION_PARTS = {"## Training": "fit", "## Query": "query", "## DISAL": "disal", "## Scaling": "scaling"}


def _measured_sections(lines, results):
    """The report's lines without the sections of parts that this run did not measure."""
    kept, keep = [], True
    for line in lines:
        if line.startswith("## "):
            part = next((p for prefix, p in SECTION_PARTS.items() if line.startswith(prefix)), None)
            keep = part is None or part in results
        if keep:
            kept.append(line)
    return kept


def plot_scaling(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r["pool_subset"] is None]
    n = [r["n"] for r in full]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(n, [r["seconds"] for r in full], "o-")
    left.set(xlabel="pool rows", ylabel="seconds", title="tidal_entropy time")
    right.loglog(n, [r["peak_growth_mib"] for r in full], "o-", label="peak memory growth")
    right.loglog(n, [r["pool_mib"] for r in full], "--", color="gray", label="pool size on disk")
    right.set(xlabel="pool rows", ylabel="MiB", title="peak anonymous memory growth")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser():
    """The command line of ``python -m benchmarks.overhead``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=9, help="repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one: steadier times)")
    parser.add_argument("--n-train", type=int, default=4000, help="rows for the fit measurement")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the fit measurement")
    parser.add_argument("--n-pool", type=int, default=20000, help="pool rows for the query measurement")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10**4, 10**5, 10**6], help="scaling sizes")
    parser.add_argument("--subset", type=int, default=10000, help="pool_subset also measured at each size")
    parser.add_argument(
        "--scratch-dir", default=None, help="where the memmap files go (default: a temporary directory)"
    )
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure (default: all)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "overhead",
        help="where JSON, table and plot go (the committed results: benchmarks/results/overhead)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-subset", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        return score_memmap_worker(args.worker, args.worker_subset)

    parts = set(args.parts)
    total = {"fit": len(FIT_RUNS), "query": len(BACKBONES), "disal": len(BACKBONES)}
    steps = tqdm(total=sum(total.get(part, 1) for part in parts), desc="overhead")
    results = {"repeats": args.repeats, "arguments": " ".join(argv if argv is not None else sys.argv[1:])}
    results["environment"] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)",
        "torch": torch.__version__,
        "threads": args.threads,
    }
    if "fit" in parts:
        results["fit"] = []
        for name, td_hidden in FIT_RUNS:
            results["fit"].append(measure_fit(name, args.repeats, args.n_train, args.epochs, td_hidden))
            steps.update()
    if "query" in parts:
        results["query"] = []
        for name in BACKBONES:
            results["query"].append(measure_query(name, args.repeats, args.n_pool))
            steps.update()
    if "disal" in parts:
        results["disal"] = []
        for name in BACKBONES:
            results["disal"].append(measure_disal(name, args.repeats, args.n_train, args.epochs, args.n_pool))
            steps.update()
    if "selection" in parts:
        results["selection"] = measure_selection(args.repeats, n=10**7)
        steps.update()
    if "scaling" in parts:
        results["scaling"] = measure_scaling(args.sizes, args.subset, args.threads, args.scratch_dir)
        steps.update()
    steps.close()

    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    (args.output_dir / "overhead.md").write_text(report)
    if results.get("scaling"):
        plot_scaling(results["scaling"], args.output_dir / "scaling.png")
    print(report)
    return results


if __name__ == "__main__":
    main()
