import numpy as np
import pytest
from modAL.models import ActiveLearner
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from tidal_modal import td_entropy, tidal_entropy, tidal_margin
from tidal_modal.strategies import MODAL_RETURNS_METRICS, select_top_k

pytestmark = pytest.mark.modal

N_CLASSES = 4


class PlantedTD(BaseEstimator):
    """A stub whose predicted TD and predicted label are read off each row.

    Row layout: ``[row id, td_0 .. td_3, classifier's label]``. It records which rows it scored.
    """

    def fit(self, X, y):
        return self

    def predict_td(self, X, return_proba=False):
        X = np.asarray(X)
        self.scored_ids_ = getattr(self, "scored_ids_", []) + [X[:, 0].astype(int)]
        td = X[:, 1 : 1 + N_CLASSES]
        if not return_proba:
            return td
        return td, np.eye(N_CLASSES)[X[:, 1 + N_CLASSES].astype(int)]


def confident(c):
    return [c] + [(1 - c) / 3] * 3


def planted_pool():
    """40 rows whose uncertainty order, for each strategy, is known by construction.

    - background rows: TD ``confident(0.94 - 0.001 i)`` with label 0; a lower confidence is
      more uncertain by both scores, so later background rows rank higher;
    - entropy plants at rows 7, 31, 2, 19, 25: TD mixed with the uniform distribution by
      t = 1.0, 0.9, ..., 0.6 (most to least entropy), label 0 (their TD argmax);
    - margin plants at rows 11, 3, 38, 22, 14: a TD peaked on class 0 (p0 = 0.9 ... 0.7,
      p1 = 0.04) but the *classifier* predicts class 1, so their margin p1 - p0 is the most
      negative for p0 = 0.9; their entropy lies between the other two groups'.
    """
    entropy_rows, margin_rows = [7, 31, 2, 19, 25], [11, 3, 38, 22, 14]
    td = np.array([confident(0.94 - 0.001 * i) for i in range(40)])
    label = np.zeros(40)
    for row, t in zip(entropy_rows, [1.0, 0.9, 0.8, 0.7, 0.6], strict=True):
        td[row] = t * 0.25 + (1 - t) * np.array(confident(0.94))
    for row, p0 in zip(margin_rows, [0.9, 0.85, 0.8, 0.75, 0.7], strict=True):
        td[row] = [p0, 0.04, (0.96 - p0) / 2, (0.96 - p0) / 2]
        label[row] = 1
    X = np.column_stack([np.arange(40), td, label])
    background = [i for i in range(39, -1, -1) if i not in entropy_rows + margin_rows]
    ranks = {
        tidal_entropy: entropy_rows + margin_rows[::-1] + background,
        tidal_margin: margin_rows + entropy_rows + background,
    }
    return X, ranks


def indices_of(result):
    return result[0] if MODAL_RETURNS_METRICS else result


class TestPlantedAnswers:
    @pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
    @pytest.mark.parametrize("n_instances", [1, 2, 5])
    def test_queries_the_planted_rows_through_an_active_learner(self, strategy, n_instances):
        X, ranks = planted_pool()
        learner = ActiveLearner(estimator=PlantedTD(), query_strategy=strategy)
        idx, rows = learner.query(X, n_instances=n_instances)
        assert list(idx) == ranks[strategy][:n_instances]
        np.testing.assert_array_equal(rows, X[idx])

    @pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
    @pytest.mark.parametrize("n_instances", [1, 2, 5])
    def test_pool_subset_scores_a_subset_and_indexes_the_full_pool(self, strategy, n_instances):
        X, ranks = planted_pool()
        learner = ActiveLearner(estimator=PlantedTD(), query_strategy=strategy)
        idx, _ = learner.query(X, n_instances=n_instances, pool_subset=15, random_state=3)
        scored = np.concatenate(learner.estimator.scored_ids_)
        assert len(scored) == len(set(scored)) == 15
        expected = [row for row in ranks[strategy] if row in set(scored)][:n_instances]
        assert list(idx) == expected

    def test_margin_uses_the_classifiers_label_not_the_td_argmax(self):
        X, _ = planted_pool()
        X[:, 1 + N_CLASSES] = X[:, 1 : 1 + N_CLASSES].argmax(axis=1)  # classifier agrees with TD
        assert 11 not in indices_of(tidal_margin(PlantedTD(), X, n_instances=5))

    def test_return_convention_of_installed_modal(self):
        X, ranks = planted_pool()
        result = tidal_entropy(PlantedTD(), X, n_instances=2)
        if MODAL_RETURNS_METRICS:
            idx, scores = result
            np.testing.assert_allclose(scores, td_entropy(X[idx, 1 : 1 + N_CLASSES]))
        else:
            idx = result
            assert isinstance(idx, np.ndarray)
        assert list(idx) == ranks[tidal_entropy][:2]


class TestEstimators:
    def test_pipeline_transforms_the_candidates_once(self):
        class Counting(TransformerMixin, BaseEstimator):
            def fit(self, X, y=None):
                return self

            def transform(self, X):
                self.calls_ = getattr(self, "calls_", []) + [len(X)]
                return X

        X, ranks = planted_pool()
        pipe = Pipeline([("prep", Counting()), ("td", PlantedTD())]).fit(X, None)
        pipe[0].calls_ = []  # forget the fit
        idx, _ = ActiveLearner(pipe, query_strategy=tidal_margin).query(X, n_instances=3, pool_subset=10)
        assert pipe[0].calls_ == [10]
        assert list(idx) == [row for row in ranks[tidal_margin] if row in pipe[1].scored_ids_[0]][:3]

    def test_estimator_without_predict_td_is_refused(self):
        forest = RandomForestClassifier(n_estimators=2).fit(np.eye(3), [0, 1, 2])
        learner = ActiveLearner(forest, query_strategy=tidal_entropy)
        with pytest.raises(TypeError, match="predict_td.*RandomForestClassifier"):
            learner.query(np.eye(3))


class TestDeterminism:
    def test_same_seed_same_query_other_seed_other_subset(self):
        X, _ = planted_pool()
        runs = [
            indices_of(tidal_entropy(PlantedTD(), X, 3, pool_subset=10, random_state=seed))
            for seed in (1, 1, 2)
        ]
        np.testing.assert_array_equal(runs[0], runs[1])
        assert not np.array_equal(runs[0], runs[2])

    def test_random_tie_break_is_seeded(self):
        X, _ = planted_pool()
        X[:, 1 : 1 + N_CLASSES] = 0.25  # all tied
        picks = [
            tuple(indices_of(tidal_entropy(PlantedTD(), X, 3, random_tie_break=True, random_state=s)))
            for s in (0, 0, 1, 2)
        ]
        assert picks[0] == picks[1]
        assert len(set(picks[1:])) > 1


class TestSelectTopK:
    def test_equals_full_sort_top_k(self):
        scores = np.random.RandomState(0).rand(1000)
        top = select_top_k(scores, 25)
        np.testing.assert_array_equal(top, np.argsort(-scores)[:25])

    @pytest.mark.parametrize("n_instances", [0, -1, 1.5, True, 11])
    def test_bad_n_instances(self, n_instances):
        with pytest.raises(ValueError, match="n_instances"):
            select_top_k(np.zeros(10), n_instances)

    @pytest.mark.parametrize("pool_subset", [0, 2.5, "10"])
    def test_bad_pool_subset(self, pool_subset):
        X, _ = planted_pool()
        with pytest.raises(ValueError, match="pool_subset"):
            tidal_entropy(PlantedTD(), X, 1, pool_subset=pool_subset)

    def test_more_instances_than_pool_subset(self):
        X, _ = planted_pool()
        with pytest.raises(ValueError, match="n_instances=5 is larger than the 4 candidates"):
            tidal_entropy(PlantedTD(), X, 5, pool_subset=4)


def test_non_finite_scores_are_an_error():
    X, _ = planted_pool()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        tidal_entropy(PlantedTD(), X, 1)
