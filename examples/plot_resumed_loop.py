"""
A labeling loop that survives a restart
=======================================

Labels cost a human's time, so a long active-learning loop saves its learner after every
``teach`` and, after a crash or a reboot, carries on from the file.
:meth:`TiDALActiveLearner.save <tidal_modal.TiDALActiveLearner.save>` writes the whole learner
(the net with its weights, optimizer state and TD head, the labeled data, the query strategy,
the random generators' states) and the pool's bookkeeping in one atomic write;
:meth:`TiDALActiveLearner.load <tidal_modal.TiDALActiveLearner.load>` reads it back. Here the
same loop on digits runs once without interruption and once with a "restart" half-way: the
learner object is thrown away and reloaded from its checkpoint. The figure shows the test
accuracy of both against the number of labels. What to look for: the resumed loop lies exactly
on the uninterrupted one, because ``load(..., restore_rng=True)`` also puts the random
generators (which shuffle the training batches) back where they were; a dotted line shows that a
resume without them takes a different path.
"""

# %%
# Data and learner
# ----------------
# The module is an ``nn.Sequential`` instance: everything in a checkpoint is pickled, so a
# module class of your own must be importable by the process that loads the file (define it in
# a module of your project, not in the script that runs the loop).

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy

X, y = load_digits(return_X_y=True)
X, y = (X / 16).astype(np.float32), y.astype(np.int64)
X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=500, stratify=y, random_state=0)
INITIAL, QUERY, CYCLES, RESTART_AFTER = 40, 20, 8, 4


def new_learner():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    net = TiDALNetClassifier(
        module,
        max_epochs=20,
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        batch_size=32,
        warm_start=True,
        verbose=0,
    )
    start = np.random.RandomState(0).choice(len(X_pool), INITIAL, replace=False)
    learner = TiDALActiveLearner(
        net, query_strategy=tidal_entropy, X_training=X_pool[start], y_training=y_pool[start]
    )
    return learner, {"labeled": start.tolist()}  # bookkeeping: the pool rows labeled so far


# %%
# One labeling cycle
# ------------------
# Query the unlabeled part of the pool, "ask the human" (here: read ``y_pool``), teach, and
# record which pool rows are now labeled. The learner and that record are saved together, so
# they cannot disagree after a crash.


def cycle(learner, state, checkpoint=None):
    unlabeled = np.setdiff1d(np.arange(len(X_pool)), state["labeled"])
    idx, rows = learner.query(X_pool[unlabeled], n_instances=QUERY)
    learner.teach(rows, y_pool[unlabeled[idx]])
    state["labeled"] += unlabeled[idx].tolist()
    if checkpoint is not None:
        learner.save(checkpoint, metadata=state)


# %%
# The uninterrupted loop
# ----------------------

learner, state = new_learner()
uninterrupted = [learner.score(X_test, y_test)]
for _ in range(CYCLES):
    cycle(learner, state)
    uninterrupted.append(learner.score(X_test, y_test))

# %%
# The same loop with a restart
# ----------------------------
# After ``RESTART_AFTER`` cycles the learner is deleted, as a crash would, and the global random
# generators are reseeded, as a new process would. ``load`` then brings back the learner and the
# bookkeeping; ``restore_rng=True`` the generators' states at the save. A second resume, without
# ``restore_rng``, shows what that option is for.

workdir = tempfile.mkdtemp()
checkpoint = os.path.join(workdir, "learner.ckpt")
learner, state = new_learner()
before_restart = [learner.score(X_test, y_test)]
for _ in range(RESTART_AFTER):
    cycle(learner, state, checkpoint)
    before_restart.append(learner.score(X_test, y_test))
del learner, state  # the crash

curves = {}
for restore_rng in (True, False):
    torch.manual_seed(0)  # a new process starts with its own generator states
    learner, state = TiDALActiveLearner.load(checkpoint, restore_rng=restore_rng, return_metadata=True)
    print(f"resumed with {len(state['labeled'])} labels (restore_rng={restore_rng})")
    resumed = list(before_restart)
    for _ in range(CYCLES - RESTART_AFTER):
        cycle(learner, state)  # a real loop would keep saving; here the checkpoint is reused
        resumed.append(learner.score(X_test, y_test))
    curves[restore_rng] = resumed
os.remove(checkpoint)
os.rmdir(workdir)

identical = np.array_equal(uninterrupted, curves[True])
print("resumed loop identical to the uninterrupted one:", identical)

# %%
# The figure
# ----------

labels = INITIAL + QUERY * np.arange(CYCLES + 1)
restart = INITIAL + QUERY * RESTART_AFTER
plt.rcParams.update({"font.size": 11})
fig, ax = plt.subplots(figsize=(8, 5))
ax.axvline(restart, color="0.5", lw=1, ls="--")
ax.text(restart - 3, 75, "saved, restarted\nand loaded here", color="0.35", fontsize=10, ha="right")
ax.plot(labels, 100 * np.array(uninterrupted), color="C0", lw=6, alpha=0.35, label="uninterrupted loop")
ax.plot(
    labels,
    100 * np.array(curves[True]),
    color="C0",
    marker="o",
    lw=1.5,
    label="resumed, load(restore_rng=True)",
)
ax.plot(
    labels[RESTART_AFTER:],
    100 * np.array(curves[False][RESTART_AFTER:]),
    color="C3",
    ls=":",
    marker=".",
    lw=1.5,
    label="resumed, load(restore_rng=False)",
)
ax.set_xlabel("labeled digits (rows)")
ax.set_ylabel("test accuracy (%)")
ax.set_title(
    "The resumed loop reproduces the uninterrupted one " + ("exactly" if identical else "(not exactly!)"),
    fontsize=12,
)
ax.grid(alpha=0.3)
ax.legend(loc="lower right", fontsize=10)
fig.tight_layout()
plt.show()
