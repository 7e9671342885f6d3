"""
Finding the rare classes: TD entropy against snapshot entropy
=============================================================

The TiDAL paper motivates training dynamics with class imbalance: samples of rare classes are
learned late and unsteadily, so their (predicted) training dynamics should stay uncertain where
a snapshot of the model may already look confident. Here digits 0-4 are frequent and digits
5-9 are ten times rarer; a :class:`~tidal_modal.TiDALNetClassifier` is trained on a random
labeled part, and each unlabeled row is scored by the entropy of its predicted TD
(:func:`~tidal_modal.td_entropy` of ``net.predict_td``, TiDAL's score) and by the entropy of the
classifier's softmax (``net.predict_proba``). The ROC curves show how well each score, used as a
detector, ranks the rows of the rare classes above those of the frequent ones (the area under a
curve, AUROC, is 1 for a perfect ranking and 0.5 for chance). What to look for: both scores rank
the rare classes far above chance, and on this pool TD entropy ranks them higher than the
snapshot entropy in each of five seeds (0.954 against 0.929 on average). The library's own
measurement on long-tailed MNIST with 300 labels (``python -m benchmarks.fidelity``) found the
two about equal (0.918 against 0.914), so how much TD entropy adds depends on the data and on the
labeled budget.
"""

# %%
# An imbalanced pool
# ------------------
# Keep every digit 0-4 and one in ten of the digits 5-9. A random 120 rows of it are labeled,
# the rest is the unlabeled pool whose rows we score.

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import entropy
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from tidal_modal import TiDALNetClassifier, td_entropy

X, y = load_digits(return_X_y=True)
X, y = (X / 16).astype(np.float32), y.astype(np.int64)
rng = np.random.RandomState(0)
keep = (y < 5) | (rng.rand(len(y)) < 0.1)
X, y = X[keep], y[keep]
print("rows per class:", np.bincount(y))

N_LABELED = 120


class MLP(nn.Module):
    def __init__(self, n_features=64, hidden=128, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(self.body(x))


# %%
# Score the pool with both entropies
# ----------------------------------
# ``predict_td(X, return_proba=True)`` returns the predicted TD and the classifier's
# probabilities from one forward pass. A row is *minority* if its true label is 5-9; the labels
# of the pool are used only to evaluate the scores. Five seeds (labeled set and weights) show
# how much the AUROC moves.


def pool_scores(seed):
    labeled = np.random.RandomState(seed).choice(len(X), N_LABELED, replace=False)
    pool = np.setdiff1d(np.arange(len(X)), labeled)
    torch.manual_seed(seed)
    net = TiDALNetClassifier(
        MLP,
        max_epochs=40,
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        batch_size=32,
        verbose=0,
    )
    net.fit(X[labeled], y[labeled])
    td, proba = net.predict_td(X[pool], return_proba=True)
    return y[pool] >= 5, {
        "TD entropy (TiDAL)": td_entropy(td),
        "softmax entropy (snapshot)": entropy(proba, axis=1),
    }


runs = [pool_scores(seed) for seed in range(5)]
auroc = {name: [roc_auc_score(minority, scores[name]) for minority, scores in runs] for name in runs[0][1]}
for name, values in auroc.items():
    print(f"{name}: AUROC {np.mean(values):.3f} +- {np.std(values):.3f} over {len(values)} seeds")

# %%
# The figure
# ----------
# The ROC curves of seed 0; the legend gives that seed's AUROC and the mean over the five seeds.

plt.rcParams.update({"font.size": 11})
fig, ax = plt.subplots(figsize=(8, 5.5))
minority, scores = runs[0]
for (name, score), color in zip(scores.items(), ["C0", "C1"], strict=True):
    fpr, tpr, _ = roc_curve(minority, score)
    values = auroc[name]
    ax.plot(
        100 * fpr,
        100 * tpr,
        color=color,
        lw=2,
        label=f"{name}: AUROC {values[0]:.3f} (5 seeds: {np.mean(values):.3f} ± {np.std(values):.3f})",
    )
ax.plot([0, 100], [0, 100], color="black", lw=1, ls="--", label="chance: AUROC 0.5")
ax.set_xlabel("frequent-class rows flagged (false positive rate, %)")
ax.set_ylabel("rare-class rows flagged (true positive rate, %)")
td, snapshot = auroc.values()
wins = sum(t > s for t, s in zip(td, snapshot, strict=True))
ax.set_title(
    f"TD entropy separates rare digits better than softmax entropy in {wins} of 5 seeds", fontsize=12
)
ax.grid(alpha=0.3)
ax.legend(loc="lower right", fontsize=10)
fig.tight_layout()
plt.show()
