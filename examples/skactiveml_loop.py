"""TiDAL and DISAL in scikit-activeml's pool-based loop on scikit-learn's digits.

Run ``python examples/skactiveml_loop.py`` (needs ``pip install "tidal-modal[skactiveml]"``). In
scikit-activeml's idiom the whole pool is one ``y`` in which unlabeled samples are
``MISSING_LABEL``; every cycle a query strategy picks samples, their labels are filled in, and
the classifier is refitted on ``(X, y)``. The classifier is scikit-activeml's
``SklearnClassifier`` holding a ``TiDALNetClassifier``, so scikit-activeml's own strategies
take it too. Prints the test accuracy after every cycle for TiDAL (entropy and margin), DISAL,
scikit-activeml's uncertainty sampling (entropy of the classifier's probabilities) and random
sampling, all from the same random start.
"""

import argparse

import numpy as np
import torch
from skactiveml.classifier import SklearnClassifier
from skactiveml.pool import RandomSampling, UncertaintySampling
from skactiveml.utils import MISSING_LABEL
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from tidal_modal import TiDALNetClassifier
from tidal_modal.skactiveml import DISALSampling, TiDALSampling


class MLP(nn.Module):
    def __init__(self, n_features=64, hidden=128, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(self.body(x))


def strategies(seed):
    return {
        "tidal_entropy": TiDALSampling(method="entropy", random_state=seed),
        "tidal_margin": TiDALSampling(method="margin_sampling", random_state=seed),
        "disal": DISALSampling(random_state=seed),
        "entropy": UncertaintySampling(method="entropy", random_state=seed),
        "random": RandomSampling(random_state=seed),
    }


def run(qs, cycles=6, initial=50, query=50, epochs=40, seed=0):
    """Return the test accuracy after the initial fit and after each cycle."""
    X, y_true = load_digits(return_X_y=True)
    X, X_test, y_true, y_test = train_test_split(X, y_true, test_size=0.3, stratify=y_true, random_state=seed)
    torch.manual_seed(seed)  # the same initial weights for every strategy
    net = TiDALNetClassifier(
        MLP, max_epochs=epochs, lr=0.05, optimizer=torch.optim.SGD, optimizer__momentum=0.9, verbose=0
    )
    # SklearnClassifier fits the net on the labeled samples only and knows all ten classes
    clf = SklearnClassifier(make_pipeline(StandardScaler(), net), classes=np.arange(10), random_state=seed)

    y = np.full(len(y_true), MISSING_LABEL)
    start = RandomSampling(random_state=seed).query(X, y, batch_size=initial)
    y[start] = y_true[start]
    clf.fit(X, y)
    accuracy = [clf.score(X_test, y_test)]
    for _ in range(cycles):
        # the loop fits the classifier itself, so the query need not fit a clone
        if isinstance(qs, RandomSampling):
            idx = qs.query(X, y, batch_size=query)
        else:
            idx = qs.query(X, y, clf, fit_clf=False, batch_size=query)
        y[idx] = y_true[idx]
        clf.fit(X, y)
        accuracy.append(clf.score(X_test, y_test))
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--initial", type=int, default=50)
    parser.add_argument("--query", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = dict(
        cycles=args.cycles, initial=args.initial, query=args.query, epochs=args.epochs, seed=args.seed
    )
    curves = {name: run(qs, **settings) for name, qs in strategies(args.seed).items()}
    print(f"{'labeled':>8}" + "".join(f"  {name:>13}" for name in curves))
    for cycle, row in enumerate(zip(*curves.values(), strict=True)):
        print(f"{args.initial + cycle * args.query:>8}" + "".join(f"  {acc:>13.3f}" for acc in row))
    return curves


if __name__ == "__main__":
    main()
