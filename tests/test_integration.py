"""A whole active-learning loop: TiDALActiveLearner (modAL's) around a Pipeline ending in our net."""

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy, tidal_margin

from .models import MLP

pytestmark = pytest.mark.modal


@pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
def test_pipeline_in_active_learner_queries_the_rows_it_gets_wrong(digits, strategy):
    X, y = digits
    rng = np.random.RandomState(0)
    order = rng.permutation(len(X))
    test, initial, pool = order[:500], order[500:560], order[560:]
    net = TiDALNetClassifier(
        MLP,
        module__hidden=64,
        max_epochs=25,
        lr=0.05,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        warm_start=True,
        verbose=0,
    )
    learner = TiDALActiveLearner(
        estimator=make_pipeline(StandardScaler(), net),
        query_strategy=strategy,
        X_training=X[initial].astype(np.float64),  # the scaler hands the net float64
        y_training=y[initial],
    )
    X_pool, y_pool = X[pool].astype(np.float64), y[pool]
    accuracy = [learner.score(X[test], y[test])]
    queried_wrong, expected_wrong = 0, 0.0
    for cycle in range(5):
        idx, rows = learner.query(X_pool, n_instances=40, pool_subset=600, random_state=cycle)
        assert len(set(idx)) == 40
        np.testing.assert_array_equal(rows, X_pool[idx])
        wrong = learner.predict(X_pool) != y_pool
        queried_wrong += wrong[idx].sum()
        expected_wrong += 40 * wrong.mean()  # what 40 random rows would hold on average
        learner.teach(X_pool[idx], y_pool[idx])
        X_pool, y_pool = np.delete(X_pool, idx, axis=0), np.delete(y_pool, idx)
        accuracy.append(learner.score(X[test], y[test]))
    assert len(learner.y_training) == 60 + 5 * 40
    assert net.training_dynamics_.shape == (260, 10)  # the last fit recorded every labeled row
    # The strategy's own claim: it queries the rows the model gets wrong, over twice as many as
    # random rows hold (73 and 72 of 200 against 26 and 17 expected; random sampling: 23 against 20).
    # Accuracy rises too (0.80 -> 0.92 and 0.96), as it does with random sampling (0.93).
    assert queried_wrong > 2 * expected_wrong, (queried_wrong, expected_wrong)
    assert accuracy[-1] > accuracy[0] + 0.05, accuracy
