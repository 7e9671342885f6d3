"""
TD-aware batches spread over the feature space
==============================================

Querying a batch as the top *k* rows by TD entropy tends to pick near-duplicates: rows that sit
in the same uncertain region of the network's feature space and teach it the same thing.
:func:`tidal_modal.batch.tidal_ranked_batch` builds the batch greedily instead, trading each
row's TD-entropy rank against its distance to the labeled rows and to the rows already picked,
with distances measured in the network's own feature space. Both batches of 30 are drawn from the
same trained network, over a 2-D PCA of that feature space (the input of the last
``nn.Linear``). What to look for: the top-k picks (orange) bunch up in a few clusters, the ranked
batch (blue) covers the pool and more of its classes.
"""

# %%
# A net trained on a few labels
# -----------------------------
# 40 random labeled digits; the rest of the data set is the unlabeled pool.

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.spatial.distance import cdist
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy
from tidal_modal.batch import tidal_ranked_batch

X, y = load_digits(return_X_y=True)
X, y = (X / 16).astype(np.float32), y.astype(np.int64)
labeled = np.random.RandomState(0).choice(len(X), 40, replace=False)
X_pool, y_pool = np.delete(X, labeled, axis=0), np.delete(y, labeled)


class MLP(nn.Module):
    def __init__(self, n_features=64, hidden=128, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(self.body(x))


torch.manual_seed(0)
net = TiDALNetClassifier(
    MLP, max_epochs=40, lr=0.05, optimizer=torch.optim.SGD, optimizer__momentum=0.9, batch_size=16, verbose=0
)
learner = TiDALActiveLearner(net, query_strategy=tidal_entropy, X_training=X[labeled], y_training=y[labeled])

# %%
# Two queries from the same learner
# ---------------------------------
# First the plain top-k query by TD entropy, then the ranked batch. ``weight`` balances
# uncertainty (1: top-k) against diversity (0: farthest-first traversal); 0.5 is the default.

N = 30
topk, _ = learner.query(X_pool, n_instances=N)
learner.query_strategy = tidal_ranked_batch
ranked, _ = learner.query(X_pool, n_instances=N, weight=0.5)

# %%
# The network's feature space
# ---------------------------
# The features the ranked batch measures distances in are the input of the module's last
# ``nn.Linear`` (``net.module_`` is our own MLP). A forward pre-hook captures them during one
# prediction pass over the pool and the labeled rows.

features = []
hook = net.module_.out.register_forward_pre_hook(lambda module, inputs: features.append(inputs[0].detach()))
net.predict_proba(np.concatenate([X_pool, X[labeled]]))
hook.remove()
features = torch.cat(features).numpy()
pool_features, labeled_features = features[: len(X_pool)], features[len(X_pool) :]


def nearest_neighbour_distance(picks):
    """Mean distance, in the feature space, from each picked row to the nearest other pick."""
    distances = cdist(pool_features[picks], pool_features[picks])
    np.fill_diagonal(distances, np.inf)
    return distances.min(axis=1).mean()


for name, picks in [("top-k", topk), ("ranked batch", ranked)]:
    print(
        f"{name:>12}: {len(np.unique(y_pool[picks]))} classes, mean distance to the nearest other pick "
        f"{nearest_neighbour_distance(picks):.2f}"
    )

# %%
# The figure
# ----------
# PCA fitted on the pool's features; grey dots are the pool, black squares the labeled rows.

embedding = PCA(n_components=2, random_state=0).fit(pool_features)
pool_2d, labeled_2d = embedding.transform(pool_features), embedding.transform(labeled_features)

plt.rcParams.update({"font.size": 11})
fig, ax = plt.subplots(figsize=(8, 5.5))
ax.scatter(*pool_2d.T, s=6, color="0.8", label="unlabeled pool")
ax.scatter(*labeled_2d.T, s=30, marker="s", facecolor="none", edgecolor="black", label="labeled (40)")
ax.scatter(
    *pool_2d[topk].T,
    s=110,
    marker="X",
    color="C1",
    edgecolor="black",
    linewidth=0.5,
    label=f"top-{N} by TD entropy: {len(np.unique(y_pool[topk]))} classes",
)
ax.scatter(
    *pool_2d[ranked].T,
    s=70,
    marker="o",
    color="C0",
    edgecolor="black",
    linewidth=0.5,
    label=f"tidal_ranked_batch: {len(np.unique(y_pool[ranked]))} classes",
)
ax.set_xlabel("first principal component of the penultimate features")
ax.set_ylabel("second principal component")
ax.set_title(
    f"The ranked batch spreads out: its picks are {nearest_neighbour_distance(ranked):.1f} apart, "
    f"top-k's {nearest_neighbour_distance(topk):.1f}\n"
    "(mean distance to the nearest other pick, in feature space)",
    fontsize=12,
)
ax.legend(loc="lower right", fontsize=10, framealpha=0.9)
fig.tight_layout()
plt.show()
