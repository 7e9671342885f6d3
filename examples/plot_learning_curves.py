"""
Learning curves: TiDAL against snapshot entropy and random sampling
===================================================================

A short pool-based active-learning loop on scikit-learn's digits, run five times (five seeds)
for each of three query strategies: TiDAL's entropy of the *predicted training dynamics*
(:func:`~tidal_modal.tidal_entropy`), modAL's entropy of the classifier's own softmax (a
*snapshot* of the model, :func:`modAL.uncertainty.entropy_sampling`) and random sampling. The
figure shows the test accuracy against the number of labels: a line per strategy for the mean
over the seeds and a band from the worst to the best seed. What to look for: both uncertainty
strategies pull ahead of random once about 140 digits are labeled, and on this *balanced* data
set the snapshot entropy stays slightly ahead of TiDAL, as in the library's 10-seed benchmark
(README, "Benchmark results"); the TiDAL paper reports its largest gains on class-imbalanced data
(see the minority-class example). Five seeds and eight small cycles make this a demonstration of
the loop, not a benchmark (``python -m benchmarks.run`` is one).
"""

# %%
# Data and network
# ----------------
# The features are scaled to [0, 1] and cast to float32 (the module's dtype); labels are class
# indices 0..9. A fixed, stratified test set measures every learner. The network is a small MLP;
# :class:`~tidal_modal.TiDALNetClassifier` attaches the TD head to the input of its last
# ``nn.Linear`` by itself.

import functools

import matplotlib.pyplot as plt
import numpy as np
import torch
from modAL.uncertainty import entropy_sampling
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy

X, y = load_digits(return_X_y=True)
X, y = (X / 16).astype(np.float32), y.astype(np.int64)
X_all, X_test, y_all, y_test = train_test_split(X, y, test_size=500, stratify=y, random_state=0)


class MLP(nn.Module):
    def __init__(self, n_features=64, hidden=128, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)  # the TD head reads this layer's input

    def forward(self, x):
        return self.out(self.body(x))


# %%
# The strategies
# --------------
# All three have modAL's signature ``(classifier, X_pool, n_instances)``. Random sampling is a
# function at the top level of a module with its own seeded generator, so that it is
# deterministic (and, like every strategy given to a learner that is saved, picklable).


def random_sampling(classifier, X_pool, n_instances=1, *, rng):
    return rng.choice(len(X_pool), n_instances, replace=False)


STRATEGIES = {
    "TiDAL: entropy of the predicted TD": lambda seed: tidal_entropy,
    "modAL: entropy of the softmax": lambda seed: entropy_sampling,
    "random": lambda seed: functools.partial(random_sampling, rng=np.random.RandomState(seed)),
}

# %%
# The loop
# --------
# For a given seed every strategy starts from the same 40 labeled rows and the same initial
# weights, so only the query differs. ``warm_start=True`` keeps training the same weights from
# cycle to cycle, as the TiDAL paper does; each cycle labels 20 rows of the pool.

INITIAL, QUERY, CYCLES, SEEDS = 40, 20, 8, (0, 1, 2, 3, 4)


def learning_curve(make_strategy, seed):
    start = np.random.RandomState(seed).choice(len(X_all), INITIAL, replace=False)
    X_pool, y_pool = np.delete(X_all, start, axis=0), np.delete(y_all, start)
    torch.manual_seed(seed)  # the same initial weights and shuffling for every strategy
    net = TiDALNetClassifier(
        MLP,
        max_epochs=20,
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        batch_size=32,
        warm_start=True,
        verbose=0,
    )
    learner = TiDALActiveLearner(
        net, query_strategy=make_strategy(seed), X_training=X_all[start], y_training=y_all[start]
    )
    labels, accuracy = [INITIAL], [learner.score(X_test, y_test)]
    for _ in range(CYCLES):
        idx, rows = learner.query(X_pool, n_instances=QUERY)
        learner.teach(rows, y_pool[idx])  # the "oracle" labels the rows
        X_pool, y_pool = np.delete(X_pool, idx, axis=0), np.delete(y_pool, idx)
        labels.append(len(learner.y_training))
        accuracy.append(learner.score(X_test, y_test))
    return np.array(labels), np.array(accuracy)


curves = {}
for name, make_strategy in STRATEGIES.items():
    runs = [learning_curve(make_strategy, seed) for seed in SEEDS]
    curves[name] = runs[0][0], np.stack([accuracy for _, accuracy in runs])
    print(f"{name:>36}: final accuracy {curves[name][1][:, -1].mean():.3f} (mean of {len(SEEDS)} seeds)")

# %%
# The figure
# ----------
# The mean over the seeds as a line, the range between the worst and the best seed as a band.

plt.rcParams.update({"font.size": 11})
fig, ax = plt.subplots(figsize=(8, 5))
colors = {"TiDAL: entropy of the predicted TD": "C0", "modAL: entropy of the softmax": "C1", "random": "C7"}
SHORT = {
    "TiDAL: entropy of the predicted TD": "TiDAL",
    "modAL: entropy of the softmax": "softmax entropy",
    "random": "random",
}
for name, (labels, accuracy) in curves.items():
    mean = 100 * accuracy.mean(axis=0)
    ax.plot(labels, mean, marker="o", color=colors[name], label=name)
    ax.fill_between(
        labels, 100 * accuracy.min(axis=0), 100 * accuracy.max(axis=0), color=colors[name], alpha=0.2
    )
final = {short: 100 * curves[name][1].mean(axis=0)[-1] for name, short in SHORT.items()}
ranking = " > ".join(f"{short} {final[short]:.1f}%" for short in sorted(final, key=final.get, reverse=True))
ax.set_title(f"Test accuracy after {labels[-1]} labels: {ranking}", fontsize=12)
ax.set_xlabel("labeled digits (rows)")
ax.set_ylabel("test accuracy (%)")
ax.grid(alpha=0.3)
ax.legend(title=f"query strategy (mean, min-max of {len(SEEDS)} seeds)", loc="lower right", fontsize=10)
fig.tight_layout()
plt.show()
