"""
The TD head learns each sample's training dynamics
==================================================

TiDAL ranks unlabeled samples by their *training dynamics* (TD): the running mean of the
model's softmax over the training epochs. The pool is never trained on, so its TD cannot be
recorded; a small *TD head* is trained next to the classifier to predict it. Here a
:class:`~tidal_modal.TiDALNetClassifier` is fitted on 400 digits, and for each of them the TD
recorded during training (``net.training_dynamics_``) is compared with the head's prediction
(``net.predict_td``). The figure plots, per digit, the recorded TD probability of its true class
against the head's prediction of it (blue) and against the final softmax's (grey). What to look
for: the blue points lie along the diagonal, the grey ones do not: the head predicts the
*history* of a sample, which the final snapshot, confident on nearly every training row, does
not show.
"""

# %%
# Fit a net on labeled digits
# ---------------------------
# Any PyTorch classifier returning logits works; the TD head reads the input of its last
# ``nn.Linear``. ``td_weight`` is the weight of the KL term that trains the head.

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.special import rel_entr
from sklearn.datasets import load_digits
from torch import nn

from tidal_modal import TiDALNetClassifier

X, y = load_digits(return_X_y=True)
X, y = (X / 16).astype(np.float32), y.astype(np.int64)
rows = np.random.RandomState(0).choice(len(X), 400, replace=False)
X_train, y_train = X[rows], y[rows]


class MLP(nn.Module):
    def __init__(self, n_features=64, hidden=128, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(self.body(x))


torch.manual_seed(0)
net = TiDALNetClassifier(
    MLP,
    max_epochs=40,
    lr=0.05,
    optimizer=torch.optim.SGD,
    optimizer__momentum=0.9,
    batch_size=32,
    td_weight=1.0,  # the paper's lambda
    verbose=0,
)
net.fit(X_train, y_train)

# %%
# Recorded against predicted training dynamics
# --------------------------------------------
# ``training_dynamics_`` holds the TD recorded for the rows of the last fit, in their order;
# ``predict_td`` runs the module and the head in one pass and returns the predicted TD (rows
# sum to 1), here with the classifier's probabilities from the same pass. The KL divergence
# ``KL(TD || prediction)`` is the term the head was trained to minimise.

recorded = net.training_dynamics_  # [400, 10]
predicted, snapshot = net.predict_td(X_train, return_proba=True)
eps = 1e-12
kl_head = rel_entr(recorded, predicted + eps).sum(axis=1)
kl_snapshot = rel_entr(recorded, snapshot + eps).sum(axis=1)
print(f"mean KL(recorded TD || TD head) = {kl_head.mean():.4f} nats")
print(f"mean KL(recorded TD || final softmax) = {kl_snapshot.mean():.4f} nats")

true = np.arange(len(y_train)), y_train
r = np.corrcoef(recorded[true], predicted[true])[0, 1]
print(f"correlation of recorded and predicted TD of the true class: {r:.3f}")

# %%
# The figure
# ----------
# One point per training digit; the diagonal is a perfect prediction.

plt.rcParams.update({"font.size": 11})
fig, ax = plt.subplots(figsize=(7, 5.5))
low = np.floor(10 * min(recorded[true].min(), predicted[true].min())) / 10  # leave out the empty corner
ax.plot([low, 1], [low, 1], color="black", lw=1, ls="--", label="perfect prediction")
ax.scatter(
    recorded[true],
    predicted[true],
    s=14,
    color="C0",
    alpha=0.7,
    label=f"TD head, net.predict_td (mean KL {kl_head.mean():.3f} nats)",
)
ax.scatter(
    recorded[true],
    snapshot[true],
    s=14,
    color="C7",
    alpha=0.5,
    marker="x",
    label=f"final softmax, net.predict_proba (mean KL {kl_snapshot.mean():.3f} nats)",
)
ax.set_xlim(low, 1.01)
ax.set_ylim(low, 1.01)
ax.set_xlabel("recorded TD: mean softmax of the true class over 40 epochs")
ax.set_ylabel("predicted probability of the true class")
ax.set_title(f"The TD head tracks each digit's training history (Pearson r = {r:.2f})", fontsize=12)
ax.grid(alpha=0.3)
ax.legend(loc="lower right", fontsize=10)
fig.tight_layout()
plt.show()
