import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from modAL.batch import ranked_batch as modal_ranked_batch
from scipy.stats import rankdata
from sklearn.base import clone

from benchmarks.backbones import MLP
from benchmarks.variants import (
    VARIANTS,
    _normalized_entropy,
    balanced_batch_query,
    balanced_query,
    combined_query,
    disagreement_query,
    minority_first,
    modal_batch_query,
    space_batch_query,
)
from tidal_modal import TiDALActiveLearner, TiDALNetClassifier
from tidal_modal.batch import ranked_batch
from tidal_modal.strategies import MODAL_RETURNS_METRICS


def indices_of(result):
    return np.asarray(result[0] if MODAL_RETURNS_METRICS else result)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(120, 4).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


@pytest.fixture(scope="module")
def learner(data):
    X, y = data
    torch.manual_seed(0)
    net = TiDALNetClassifier(
        MLP, module__n_features=4, module__n_classes=3, module__hidden=16, module__dropout=0.0,
        max_epochs=5, batch_size=16, verbose=0,
    )  # fmt: skip
    # class 2 is rare in the labeled rows: 2 of 30
    labeled = np.concatenate([np.flatnonzero(y[:80] != 2)[:28], np.flatnonzero(y[:80] == 2)[:2]])
    return TiDALActiveLearner(net, X_training=X[labeled], y_training=y[labeled])


def td_and_proba(learner, X):
    return learner.estimator.predict_td(X, return_proba=True)


class TestMinorityFirst:
    def test_the_rarest_class_first_then_in_turns(self):
        predicted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
        order = minority_first(predicted, np.array([4.0, 2.0, 2.0]), 6, lambda rows, picked: rows[0])
        assert predicted[order].tolist() == [1, 2, 1, 2, 0, 1]
        assert order.tolist() == [3, 6, 4, 7, 0, 5]

    def test_an_exhausted_class_is_skipped(self):
        order = minority_first(np.array([1, 0, 0]), np.array([0.0, 5.0]), 3, lambda rows, picked: rows[0])
        assert order.tolist() == [1, 2, 0]

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.integers(0, 3), min_size=1, max_size=30),
        st.lists(st.integers(0, 6), min_size=4, max_size=4),
        st.data(),
    )
    def test_the_batch_fills_the_classes_like_water(self, predicted, counts, data):
        """Water-filling: a class got a row only if, before that row, it had no more than any
        class that still had candidates at the end."""
        predicted, counts = np.array(predicted), np.array(counts, dtype=float)
        n = data.draw(st.integers(1, len(predicted)))
        order = minority_first(predicted, counts, n, lambda rows, picked: rows[-1])
        assert len(set(order.tolist())) == n
        got = np.bincount(predicted[order], minlength=4)
        available = np.bincount(predicted, minlength=4)
        for a in range(4):
            for b in range(4):
                if got[a] and got[b] < available[b]:
                    assert counts[a] + got[a] - 1 <= counts[b] + got[b]


class TestBalanced:
    @pytest.mark.parametrize("source", ["td", "classifier"])
    def test_the_first_pick_is_from_the_rarest_predicted_class(self, learner, data, source):
        X, _ = data
        pool = X[80:]
        td, proba = td_and_proba(learner, pool)
        dist = td if source == "td" else proba
        predicted = dist.argmax(axis=1)
        counts = np.bincount(learner.y_training, minlength=3)
        rarest = min(set(predicted.tolist()), key=lambda c: (counts[c], c))
        chosen = indices_of(balanced_query(learner, pool, 4, source=source))
        assert predicted[chosen[0]] == rarest
        in_class = np.flatnonzero(predicted == rarest)
        assert chosen[0] == in_class[np.argmax(_normalized_entropy(dist[in_class]))]

    def test_td_and_its_twin_read_different_distributions(self, learner, data, monkeypatch):
        """The twin runs the same code on the probabilities: swap what predict_td returns and the
        TD variant picks what the twin picked."""
        X, _ = data
        pool = X[80:]
        twin = indices_of(balanced_query(learner, pool, 5, source="classifier"))
        net = learner.estimator
        original = net.predict_td

        def swapped(X, return_proba=False):
            td, proba = original(X, return_proba=True)
            return (proba, td) if return_proba else proba

        monkeypatch.setattr(net, "predict_td", swapped)
        np.testing.assert_array_equal(indices_of(balanced_query(learner, pool, 5, source="td")), twin)

    def test_the_batch_variant_spreads_copies_of_a_row(self, learner, data, monkeypatch):
        """Classes in turns (equal counts); a row of the most predicted class, copied 6 times: the
        batch takes two rows of that class, at most one of them a copy."""
        from benchmarks import variants

        monkeypatch.setattr(variants, "_labeled_counts", lambda classifier, n: np.zeros(n))
        X, _ = data
        pool = X[80:]
        predicted = td_and_proba(learner, pool)[0].argmax(axis=1)
        common = np.bincount(predicted).argmax()
        row = np.flatnonzero(predicted == common)[0]
        copies = np.concatenate([np.repeat(pool[row : row + 1], 6, axis=0), pool])
        chosen = indices_of(balanced_batch_query(learner, copies, 6, source="td"))
        from_common = np.concatenate([np.full(6, common), predicted])[chosen] == common
        assert from_common.sum() >= 2
        assert (chosen < 6).sum() + (chosen == 6 + row).sum() <= 1

    @pytest.mark.parametrize("strategy", [balanced_query, balanced_batch_query, space_batch_query])
    def test_an_unknown_source_is_refused(self, learner, data, strategy):
        with pytest.raises(ValueError, match="source must be one of"):
            strategy(learner, data[0][80:], 2, source="logits")


class TestModalBatch:
    @pytest.mark.parametrize(
        "measure, score",
        [("td_entropy", _normalized_entropy), ("td_least_confidence", lambda td: 1 - td.max(axis=1))],
    )
    def test_it_is_modals_ranked_batch_on_the_td_measure(self, learner, data, measure, score):
        X, _ = data
        pool = X[80:]
        td, _ = td_and_proba(learner, pool)
        expected = modal_ranked_batch(learner, pool, score(td), 5, metric="euclidean", n_jobs=None)
        expected = expected[0] if isinstance(expected, tuple) else expected
        np.testing.assert_array_equal(
            indices_of(modal_batch_query(learner, pool, 5, measure=measure)), expected
        )

    def test_an_unknown_measure_is_refused(self, learner, data):
        with pytest.raises(ValueError, match="measure must be one of"):
            modal_batch_query(learner, data[0][80:], 2, measure="bald")


def test_combined_is_top_k_of_the_mean_rank(learner, data):
    X, _ = data
    pool = X[80:]
    td, proba = td_and_proba(learner, pool)
    top2 = np.sort(proba, axis=1)[:, -2:]
    mean_rank = rankdata(_normalized_entropy(td)) + rankdata(1 - (top2[:, 1] - top2[:, 0]))
    chosen = indices_of(combined_query(learner, pool, 5))
    assert set(mean_rank[chosen]) <= set(np.sort(mean_rank)[-5:]) and len(set(chosen.tolist())) == 5
    assert mean_rank[chosen].min() >= np.sort(mean_rank)[-5]


def test_disagreement_is_the_td_left_for_the_predicted_class(learner, data):
    X, _ = data
    pool = X[80:]
    td, proba = td_and_proba(learner, pool)
    score = 1 - td[np.arange(len(td)), proba.argmax(axis=1)]
    chosen = indices_of(disagreement_query(learner, pool, 4))
    np.testing.assert_array_equal(np.sort(score[chosen]), np.sort(score)[-4:])


@pytest.mark.parametrize("source", ["td", "classifier"])
def test_space_batch_measures_distance_between_distributions(learner, data, source):
    X, _ = data
    pool = X[80:]
    pick = 0 if source == "td" else 1
    dist = td_and_proba(learner, pool)[pick]
    labeled = td_and_proba(learner, learner.X_training)[pick]
    expected = ranked_batch(_normalized_entropy(dist), dist, labeled, 5, 0.5)
    np.testing.assert_array_equal(indices_of(space_batch_query(learner, pool, 5, source=source)), expected)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_queries_through_a_learner_and_names_its_source(name, learner, data):
    X, _ = data
    torch.manual_seed(0)
    fresh = TiDALActiveLearner(
        clone(learner.estimator), query_strategy=VARIANTS[name], X_training=learner.X_training,
        y_training=learner.y_training,
    )  # fmt: skip
    indices, rows = fresh.query(X[80:], n_instances=4)
    assert len(set(np.asarray(indices).tolist())) == 4
    np.testing.assert_array_equal(rows, X[80:][indices])
    source = getattr(VARIANTS[name], "keywords", {}).get("source", "td")
    assert name.startswith("tidal_") == (source == "td")
