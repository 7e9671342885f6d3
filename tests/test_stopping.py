"""Stopping criteria: on synthetic learners whose stopping point is known, and in real loops."""

import math

import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner, Committee
from modAL.uncertainty import uncertainty_sampling
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy
from tidal_modal.stopping import (
    OverallUncertainty,
    StabilizingPredictions,
    StoppingDecision,
    TDDisagreement,
)

from .models import MLP

N_STOP, N_CLASSES = 200, 4


class Scripted:
    """A fitted learner stand-in whose outputs on the stop set follow a script, one per cycle.

    ``labels[t]``: the labels it predicts in cycle ``t``; ``proba[t]``: its probabilities;
    ``td[t]``: its predicted TD. Each ``advance()`` is the next cycle's fit.
    """

    def __init__(self, labels=None, proba=None, td=None):
        self.labels, self.proba, self.td, self.t = labels, proba, td, 0

    def advance(self):
        self.t += 1
        return self

    def predict(self, X):
        return self.labels[self.t][: len(X)]

    def predict_proba(self, X):
        return self.proba[self.t][: len(X)]

    def predict_td(self, X, return_proba=False):
        td = self.td[self.t][: len(X)]
        return (td, self.predict_proba(X)) if return_proba else td


def changing_labels(changes):
    """Cycle by cycle, labels of which ``changes[t]`` rows differ from cycle ``t - 1``'s."""
    rng = np.random.RandomState(0)
    labels = [rng.randint(N_CLASSES, size=N_STOP)]
    for n in changes:
        new = labels[-1].copy()
        rows = rng.choice(N_STOP, n, replace=False)
        new[rows] = (new[rows] + 1) % N_CLASSES
        labels.append(new)
    return labels


def one_hot_like(labels, confidence):
    """Probabilities that put ``confidence`` on ``labels`` and spread the rest evenly."""
    proba = np.full((len(labels), N_CLASSES), (1 - confidence) / (N_CLASSES - 1))
    proba[np.arange(len(labels)), labels] = confidence
    return proba


X_STOP = np.zeros((N_STOP, 3))


def run(criterion, learner, cycles):
    decisions = []
    for _ in range(cycles):
        decisions.append(criterion.update(learner))
        learner.advance()
    return decisions


def first_stop(decisions):
    return next((t for t, d in enumerate(decisions) if d.stop), None)


class TestStabilizingPredictions:
    def test_stops_when_the_window_of_kappas_reaches_the_threshold(self):
        # 40, 20, 10 rows change, then none: kappa is 1 from cycle 4; window 3 -> stop at cycle 6
        learner = Scripted(labels=changing_labels([40, 20, 10, 0, 0, 0, 0, 0]))
        decisions = run(StabilizingPredictions(X_STOP), learner, 9)
        assert first_stop(decisions) == 6
        assert math.isnan(decisions[0].value) and decisions[6].value == 1.0
        assert all(not d.stop for d in decisions[:6])

    def test_one_changed_row_in_a_cycle_keeps_the_mean_below_099(self):
        changes = [30, 0, 0, 8, 0, 0, 0]  # 8 of 200 rows: kappa about 0.95
        decisions = run(StabilizingPredictions(X_STOP), Scripted(labels=changing_labels(changes)), 8)
        assert first_stop(decisions) == 7  # the window passes the changed cycle (4) first

    def test_identical_one_class_predictions_count_as_stable(self):
        learner = Scripted(labels=[np.zeros(N_STOP, int)] * 3)
        decisions = run(StabilizingPredictions(X_STOP, window=1), learner, 3)
        assert [d.value for d in decisions[1:]] == [1.0, 1.0] and decisions[1].stop

    def test_string_labels(self):
        labels = [np.array(["cat", "dog"] * 100)] * 3
        decisions = run(StabilizingPredictions(X_STOP, window=2), Scripted(labels=labels), 3)
        assert decisions[2] == StoppingDecision(True, 1.0)


class TestOverallUncertainty:
    def test_stops_at_the_first_cycle_at_or_below_the_threshold(self):
        confidences = [0.4, 0.7, 0.9, 0.99, 0.999]
        proba = [one_hot_like(np.zeros(N_STOP, int), c) for c in confidences]
        decisions = run(OverallUncertainty(X_STOP, threshold=0.1), Scripted(proba=proba), 5)
        values = [d.value for d in decisions]
        assert np.all(np.diff(values) < 0) and all(0 <= v <= 1 for v in values)
        assert values[0] > 0.1 >= values[3]
        assert first_stop(decisions) == int(np.argmax(np.array(values) <= 0.1))

    def test_uniform_probabilities_are_one(self):
        proba = [np.full((N_STOP, N_CLASSES), 1 / N_CLASSES)]
        assert OverallUncertainty(X_STOP).update(Scripted(proba=proba)).value == pytest.approx(1.0)

    def test_one_column_is_refused(self):
        with pytest.raises(ValueError, match="at least 2 classes"):
            OverallUncertainty(X_STOP).update(Scripted(proba=[np.ones((N_STOP, 1))]))


class TestTDDisagreement:
    def test_the_share_where_the_td_argmax_and_the_prediction_differ(self):
        predicted = np.zeros(N_STOP, int)
        shares = [0.2, 0.05, 0.01, 0.0, 0.0, 0.0]
        td, proba = [], []
        for share in shares:
            td_labels = predicted.copy()
            td_labels[: int(share * N_STOP)] = 1
            td.append(one_hot_like(td_labels, 0.6))
            proba.append(one_hot_like(predicted, 0.9))
        decisions = run(TDDisagreement(X_STOP), Scripted(td=td, proba=proba), len(shares))
        assert [d.value for d in decisions[2:]] == pytest.approx(
            [np.mean(shares[t - 2 : t + 1]) for t in range(2, len(shares))]
        )
        # window 3, threshold 0.002: the mean of (0.01, 0, 0) is 0.0033; of (0, 0, 0) it is 0
        assert first_stop(decisions) == 5

    def test_classes_must_match(self):
        learner = Scripted(td=[np.full((N_STOP, 3), 1 / 3)], proba=[np.full((N_STOP, 4), 0.25)])
        with pytest.raises(ValueError, match="must share the classes"):
            TDDisagreement(X_STOP).update(learner)

    def test_an_estimator_without_a_td_head_is_refused_with_the_fix(self):
        X = np.random.RandomState(0).randn(40, 2)
        clf = LogisticRegression().fit(X, X[:, 0] > 0)
        with pytest.raises(TypeError, match="predict_td"):
            TDDisagreement(X).update(clf)


class TestCriterionContract:
    @pytest.mark.parametrize(
        ("make", "match"),
        [
            (lambda: StabilizingPredictions(X_STOP, threshold=0), "threshold"),
            (lambda: StabilizingPredictions(X_STOP, threshold=1.5), "threshold"),
            (lambda: OverallUncertainty(X_STOP, threshold=-0.1), "threshold"),
            (lambda: TDDisagreement(X_STOP, threshold="low"), "threshold"),
            (lambda: StabilizingPredictions(X_STOP, window=0), "window"),
            (lambda: OverallUncertainty(X_STOP, window=1.5), "window"),
            (lambda: TDDisagreement(np.zeros((0, 3))), "X_stop must hold at least one row"),
            (lambda: StabilizingPredictions(None), "X_stop"),
        ],
    )
    def test_bad_parameters_are_refused_at_the_first_update(self, make, match):
        criterion = make()
        learner = Scripted(labels=[np.zeros(N_STOP, int)], proba=[np.full((N_STOP, 2), 0.5)])
        with pytest.raises(ValueError, match=match):
            criterion.update(learner)
        assert not hasattr(criterion, "values_")

    def test_numpy_thresholds_are_numbers(self):
        learner = Scripted(labels=[np.zeros(N_STOP, int)] * 2)
        criterion = StabilizingPredictions(X_STOP, threshold=np.float32(0.9), window=1)
        run(criterion, learner, 2)
        assert criterion.decisions_[-1].stop

    def test_a_failed_update_records_nothing(self):
        labels = changing_labels([10, 0])
        criterion = StabilizingPredictions(X_STOP, window=1)
        criterion.update(Scripted(labels=labels))

        class Broken:
            def predict(self, X):
                raise RuntimeError("the model server is down")

        before = (list(criterion.values_), list(criterion.decisions_), criterion._state.copy())
        with pytest.raises(RuntimeError):
            criterion.update(Broken())
        assert (criterion.values_, criterion.decisions_) == before[:2]
        np.testing.assert_array_equal(criterion._state, before[2])
        # the next cycle compares with the last cycle that succeeded
        assert criterion.update(Scripted(labels=labels).advance()).value < 1

    def test_decide_replays_recorded_values_with_other_thresholds(self):
        learner = Scripted(labels=changing_labels([40, 20, 10, 0, 0, 0, 0, 0]))
        criterion = StabilizingPredictions(X_STOP)
        decisions = run(criterion, learner, 9)
        replayed = [criterion.decide(criterion.values_[: t + 1]) for t in range(9)]
        assert replayed == decisions
        lenient = StabilizingPredictions(X_STOP, threshold=0.8, window=1)
        assert first_stop([lenient.decide(criterion.values_[: t + 1]) for t in range(9)]) < 6

    def test_reset_starts_a_new_loop(self):
        criterion = StabilizingPredictions(X_STOP, window=1)
        run(criterion, Scripted(labels=changing_labels([0, 0])), 3)
        assert criterion.reset() is criterion and not hasattr(criterion, "values_")
        assert math.isnan(criterion.update(Scripted(labels=changing_labels([0]))).value)

    def test_repr_names_the_parameters_not_the_rows(self):
        assert repr(TDDisagreement(X_STOP)) == "TDDisagreement(X_stop=<200 rows>, threshold=0.002, window=3)"
        assert repr(OverallUncertainty(None)) == "OverallUncertainty(X_stop=None, threshold=0.001, window=1)"


# --- real loops -------------------------------------------------------------------------


def tidal_net(**kwargs):
    return TiDALNetClassifier(
        MLP, max_epochs=8, lr=0.01, optimizer=torch.optim.Adam, classes=list(range(10)), verbose=0, **kwargs
    )


def criteria(X_stop):
    return [StabilizingPredictions(X_stop), OverallUncertainty(X_stop), TDDisagreement(X_stop)]


def loop(learner, X, y, pool, cycles, all_criteria):
    """A modAL loop with the criteria updated after every fit (one line per cycle)."""
    for _ in range(cycles):
        decisions = [c.update(learner) for c in all_criteria]
        idx, _ = learner.query(X[pool], n_instances=20)
        learner.teach(X[pool[idx]], y[pool[idx]])
        pool = np.delete(pool, idx)
    return decisions


def check_values(all_criteria, cycles):
    for criterion in all_criteria:
        assert len(criterion.values_) == cycles
        values = np.asarray(criterion.values_, float)
        finite = values[~np.isnan(values)]
        assert len(finite) >= cycles - 1 and ((finite >= -1) & (finite <= 1)).all()


def test_tidal_active_learner_loop(digits):
    X, y = digits
    start, stop_rows = np.arange(40), np.arange(1500, 1797)
    pool = np.arange(40, 1500)
    learner = TiDALActiveLearner(
        tidal_net(), query_strategy=tidal_entropy, X_training=X[start], y_training=y[start]
    )
    all_criteria = criteria(X[stop_rows])
    decisions = loop(learner, X, y, pool, 5, all_criteria)
    check_values(all_criteria, 5)
    assert all(isinstance(d, StoppingDecision) for d in decisions)
    # the model improves: fewer stop-set labels change late than early, and it grows confident
    kappa, uncertainty = all_criteria[0].values_, all_criteria[1].values_
    assert kappa[-1] > kappa[1] and uncertainty[-1] < uncertainty[0]


def test_committee_loop(digits):
    X, y = digits
    members = [
        TiDALActiveLearner(
            tidal_net(), X_training=X[k * 20 : k * 20 + 40], y_training=y[k * 20 : k * 20 + 40]
        )
        for k in range(2)
    ]
    committee = Committee(members, query_strategy=tidal_entropy)
    all_criteria = criteria(X[1500:])
    loop(committee, X, y, np.arange(60, 1500), 3, all_criteria)
    check_values(all_criteria, 3)


def test_pipeline_and_a_plain_estimator(digits):
    X, y = digits
    all_criteria = criteria(X[1500:])
    for n in (100, 200):
        pipe = make_pipeline(StandardScaler(), tidal_net()).fit(X[:n], y[:n])
        for criterion in all_criteria:
            criterion.update(pipe)
    check_values(all_criteria, 2)
    assert all(0 <= c.values_[-1] <= 1 for c in all_criteria)


@pytest.mark.modal_fit
def test_modal_active_learner_with_a_scikit_learn_model(digits):
    X, y = digits
    learner = ActiveLearner(
        LogisticRegression(max_iter=200),
        query_strategy=uncertainty_sampling,
        X_training=X[:40],
        y_training=y[:40],
    )
    all_criteria = [StabilizingPredictions(X[1500:]), OverallUncertainty(X[1500:])]
    loop(learner, X, y, np.arange(40, 1500), 4, all_criteria)
    check_values(all_criteria, 4)


def test_scikit_activeml_loop(digits):
    pytest.importorskip("skactiveml")
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.utils import MISSING_LABEL

    from tidal_modal.skactiveml import TiDALSampling

    X, y_true = digits
    clf = SklearnClassifier(tidal_net(), classes=np.arange(10))
    y = np.full(len(y_true), MISSING_LABEL)
    y[:40] = y_true[:40]
    all_criteria = criteria(X[1500:])
    qs = TiDALSampling(random_state=0)
    for _ in range(3):
        clf.fit(X[:1500], y[:1500])
        for criterion in all_criteria:
            criterion.update(clf)
        idx = qs.query(X[:1500], y[:1500], clf, fit_clf=False, batch_size=20)
        y[idx] = y_true[idx]
    check_values(all_criteria, 3)
