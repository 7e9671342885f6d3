"""A TiDAL active-learning loop on scikit-learn's digits: modAL + skorch + tidal-modal.

Run ``python examples/digits_loop.py``; it prints the test accuracy after every cycle for
TiDAL entropy sampling, DISAL (dynamic influence along the training trajectory, which the net
records by default) and random sampling, from the same start.
"""

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, disal, tidal_entropy


class MLP(nn.Module):
    def __init__(self, n_features=64, hidden=128, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(self.body(x))


def random_sampling(classifier, X_pool, n_instances=1, random_state=None):
    return np.random.RandomState(random_state).choice(len(X_pool), n_instances, replace=False)


def run(strategy, cycles=8, initial=50, query=50, epochs=40, seed=0):
    """Return the test accuracy after the initial fit and after each cycle."""
    X, y = load_digits(return_X_y=True)
    X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    start = np.random.RandomState(seed).choice(len(X_pool), initial, replace=False)
    torch.manual_seed(seed)  # the same initial weights for every strategy
    net = TiDALNetClassifier(
        MLP,
        max_epochs=epochs,
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        warm_start=True,  # keep training the same weights across cycles, as the paper does
        verbose=0,
    )
    learner = TiDALActiveLearner(
        estimator=make_pipeline(StandardScaler(), net),
        query_strategy=strategy,
        X_training=X_pool[start],
        y_training=y_pool[start],
    )
    X_pool, y_pool = np.delete(X_pool, start, axis=0), np.delete(y_pool, start)
    accuracy = [learner.score(X_test, y_test)]
    for cycle in range(cycles):
        idx, _ = learner.query(X_pool, n_instances=query, random_state=seed * 1000 + cycle)
        learner.teach(X_pool[idx], y_pool[idx])
        X_pool, y_pool = np.delete(X_pool, idx, axis=0), np.delete(y_pool, idx)
        accuracy.append(learner.score(X_test, y_test))
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--initial", type=int, default=50)
    parser.add_argument("--query", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = dict(
        cycles=args.cycles, initial=args.initial, query=args.query, epochs=args.epochs, seed=args.seed
    )
    curves = {
        name: run(strategy, **settings)
        for name, strategy in [
            ("tidal_entropy", tidal_entropy),
            ("disal", disal),
            ("random", random_sampling),
        ]
    }
    print(f"{'labeled':>8}" + "".join(f"  {name:>13}" for name in curves))
    for cycle, row in enumerate(zip(*curves.values(), strict=True)):
        print(f"{args.initial + cycle * args.query:>8}" + "".join(f"  {acc:>13.3f}" for acc in row))
    return curves


if __name__ == "__main__":
    main()
