"""
When to stop labeling: three stopping criteria next to the learning curve
=========================================================================

A labeling loop on scikit-learn's digits with TiDAL's entropy strategy, watched by the three
criteria of :mod:`tidal_modal.stopping` on a fixed *stop set* of unlabeled rows:
stabilizing predictions (Cohen's kappa between consecutive cycles' predicted labels),
overall uncertainty (the classifier's mean normalized entropy) and the TD disagreement (the
share of rows where the TD head's predicted class differs from the classifier's). The figure
shows the test accuracy against the labels, each criterion's value with its threshold, and
where each would have stopped (vertical lines on the learning curve). What to look for: the
accuracy flattens well before the loop ends; kappa climbs to its threshold about where it
flattens, and the TD disagreement drops to zero about then too; the overall uncertainty falls by
orders of magnitude, steadily, with no sign of where the accuracy flattened: whether it crosses
its threshold (here it does not) depends on how confident the training makes the net (the
benchmark, ``python -m benchmarks.stopping``, measures all three on every preset). One seed, so
a demonstration of the interface rather than a measurement.
"""

# %%
# Data, network and stop set
# --------------------------
# The stop set is drawn once from the unlabeled pool; its rows need no labels and may still be
# queried. A test set that the loop never sees measures the accuracy.

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy
from tidal_modal.stopping import OverallUncertainty, StabilizingPredictions, TDDisagreement

X, y = load_digits(return_X_y=True)
X, y = (X / 16).astype(np.float32), y.astype(np.int64)
X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=500, stratify=y, random_state=0)
rng = np.random.RandomState(0)
labeled = rng.choice(len(X_pool), 30, replace=False)
pool = np.setdiff1d(np.arange(len(X_pool)), labeled)
X_stop = X_pool[rng.choice(pool, 300, replace=False)]

torch.manual_seed(0)
net = TiDALNetClassifier(
    nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)),
    max_epochs=20,
    optimizer=torch.optim.Adam,
    lr=0.003,
    classes=list(range(10)),
    warm_start=True,
    verbose=0,
)
learner = TiDALActiveLearner(
    net, query_strategy=tidal_entropy, X_training=X_pool[labeled], y_training=y_pool[labeled]
)

# %%
# The loop
# --------
# One line per cycle updates every criterion; here the loop runs on to show where each would
# have stopped, where a real one would ``break`` at the first ``stop``.

criteria = {
    "stabilizing predictions (kappa)": StabilizingPredictions(X_stop),
    "overall uncertainty": OverallUncertainty(X_stop),
    "TD disagreement": TDDisagreement(X_stop),
}
labels, accuracy = [], []
for _ in range(24):
    for criterion in criteria.values():
        criterion.update(learner)
    labels.append(len(learner.y_training))
    accuracy.append(learner.score(X_test, y_test))
    idx, rows = learner.query(X_pool[pool], n_instances=15)
    learner.teach(rows, y_pool[pool[idx]])
    pool = np.delete(pool, idx)

for name, criterion in criteria.items():
    stops = [d.stop for d in criterion.decisions_]
    at = labels[stops.index(True)] if any(stops) else None
    print(f"{name}: stops at {at} labels" if at else f"{name}: never stopped")

# %%
# The figure
# ----------
# Each criterion's per-cycle value (``criterion.values_``), its threshold dashed and a triangle
# where it first says stop; a vertical line at the same number of labels on the learning curve.

fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
axes[0].plot(labels, 100 * np.array(accuracy), "k.-")
axes[0].set(title="test accuracy", xlabel="labels", ylabel="%")
styles = (("C0", "-"), ("C1", "--"), ("C2", ":"))  # kappa and TD may stop at the same cycle
for (name, criterion), ax, (colour, style) in zip(criteria.items(), axes[1:], styles, strict=True):
    ax.plot(labels, criterion.values_, ".-", color=colour)
    ax.axhline(criterion.threshold, color="k", ls="--", lw=0.8)
    stops = [d.stop for d in criterion.decisions_]
    if any(stops):
        first = stops.index(True)
        ax.plot(labels[first], criterion.values_[first], "v", color="red", ms=9)
        axes[0].axvline(labels[first], color=colour, ls=style, lw=2, alpha=0.8, label=f"{name}: stop")
    ax.set(title=name, xlabel="labels")
    if name != "stabilizing predictions (kappa)":
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0)
axes[0].legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()
