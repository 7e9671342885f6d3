"""
Two training-dynamics scores on one pool: DISAL against TiDAL
=============================================================

tidal-modal implements two ways of ranking a pool by training dynamics. TiDAL
(:func:`~tidal_modal.tidal_entropy`) scores a row by the entropy of its *predicted* training
dynamics. DISAL (:func:`~tidal_modal.disal`, our interpretation of its abstract) scores it by
its *dynamic influence*: how much its loss gradient lines up with the steps the classifier's last
layer took during training, recorded after every epoch by the net itself. Here both score the
same pool of digits after training on 60 labels. The figure plots one score against the other,
one point per unlabeled row, with the rows the classifier currently gets wrong in red, and
marks each strategy's batch of 30. What to look for: the two scores largely agree on which rows
are hard (the misclassified rows sit high on both), yet their batches differ in part, so the two
strategies are not interchangeable.
"""

# %%
# A net that records its trajectory
# ---------------------------------
# :class:`~tidal_modal.TiDALNetClassifier` records the last layer's trajectory by default (the
# ``TrajectoryRecorder`` callback), and trains the TD head, so one fit serves both strategies.

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from torch import nn

from tidal_modal import (
    TiDALActiveLearner,
    TiDALNetClassifier,
    classifier_dynamic_influence,
    classifier_td_entropy,
    disal,
    tidal_entropy,
)

X, y = load_digits(return_X_y=True)
X, y = (X / 16).astype(np.float32), y.astype(np.int64)
labeled = np.random.RandomState(0).choice(len(X), 60, replace=False)
X_pool, y_pool = np.delete(X, labeled, axis=0), np.delete(y, labeled)

torch.manual_seed(0)
module = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
net = TiDALNetClassifier(
    module,
    max_epochs=40,
    lr=0.05,
    optimizer=torch.optim.SGD,
    optimizer__momentum=0.9,
    batch_size=16,
    verbose=0,
)
learner = TiDALActiveLearner(net, query_strategy=tidal_entropy, X_training=X[labeled], y_training=y[labeled])
print(f"{len(net.trajectory_)} recorded steps of the last layer")

# %%
# Scores and batches
# ------------------
# The measures behind the strategies give every row's score; the strategies give the batches
# (the 30 highest scores of each).

td_entropy_scores = classifier_td_entropy(learner, X_pool)
influence = classifier_dynamic_influence(learner, X_pool)
idx_tidal, _ = learner.query(X_pool, n_instances=30)
learner.query_strategy = disal
idx_disal, _ = learner.query(X_pool, n_instances=30)

rho = spearmanr(td_entropy_scores, influence).statistic
shared = len(np.intersect1d(idx_tidal, idx_disal))
wrong = learner.predict(X_pool) != y_pool
print(f"Spearman rank correlation {rho:.2f}; the batches share {shared} of 30 rows")
print(f"misclassified rows: {wrong[idx_tidal].sum()} in the TiDAL batch, {wrong[idx_disal].sum()} in DISAL's")

# %%
# The figure
# ----------

plt.rcParams.update({"font.size": 11})
fig, ax = plt.subplots(figsize=(8, 5.5))
ax.scatter(
    td_entropy_scores[~wrong], influence[~wrong], s=8, color="0.65", label="pool row, classified correctly"
)
ax.scatter(td_entropy_scores[wrong], influence[wrong], s=10, color="C3", label="pool row, misclassified")
ax.scatter(
    td_entropy_scores[idx_tidal],
    influence[idx_tidal],
    s=110,
    facecolor="none",
    edgecolor="C0",
    lw=1.5,
    label=f"TiDAL batch of 30 ({wrong[idx_tidal].sum()} misclassified)",
)
ax.scatter(
    td_entropy_scores[idx_disal],
    influence[idx_disal],
    s=60,
    marker="D",
    facecolor="none",
    edgecolor="C2",
    lw=1.5,
    label=f"DISAL batch of 30 ({wrong[idx_disal].sum()} misclassified)",
)
ax.set_yscale("log")
ax.set_xlabel("TiDAL: entropy of the predicted training dynamics (nats)")
ax.set_ylabel("DISAL: dynamic influence (log scale)")
ax.set_title(
    f"DISAL and TiDAL rank the pool alike (Spearman ρ = {rho:.2f}),\n"
    f"but their batches of 30 share only {shared} rows",
    fontsize=12,
)
ax.grid(alpha=0.3)
ax.legend(loc="upper left", fontsize=10, framealpha=0.95)
fig.tight_layout()
plt.show()
