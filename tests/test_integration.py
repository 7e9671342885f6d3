"""A whole active-learning loop: modAL's ActiveLearner around a Pipeline ending in our net."""

import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tidal_modal import TiDALNetClassifier, tidal_entropy, tidal_margin

from .models import MLP

pytestmark = pytest.mark.modal


@pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
def test_pipeline_in_active_learner_improves_over_cycles(digits, strategy):
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
    learner = ActiveLearner(
        estimator=make_pipeline(StandardScaler(), net),
        query_strategy=strategy,
        X_training=X[initial].astype(np.float64),  # the scaler hands the net float64
        y_training=y[initial],
    )
    X_pool, y_pool = X[pool].astype(np.float64), y[pool]
    accuracy = [learner.score(X[test], y[test])]
    for cycle in range(5):
        idx, rows = learner.query(X_pool, n_instances=40, pool_subset=600, random_state=cycle)
        assert len(set(idx)) == 40
        np.testing.assert_array_equal(rows, X_pool[idx])
        learner.teach(X_pool[idx], y_pool[idx])
        X_pool, y_pool = np.delete(X_pool, idx, axis=0), np.delete(y_pool, idx)
        accuracy.append(learner.score(X[test], y[test]))
    assert len(learner.y_training) == 60 + 5 * 40
    assert accuracy[-1] > accuracy[0] + 0.05, accuracy
    assert net.training_dynamics_.shape == (260, 10) or learner.estimator[-1].training_dynamics_.shape == (
        260,
        10,
    )
