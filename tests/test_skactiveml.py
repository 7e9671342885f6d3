import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skactiveml.classifier import SklearnClassifier, SkorchClassifier
from skactiveml.pool import RandomSampling
from skactiveml.utils import MISSING_LABEL, is_labeled
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from tidal_modal import TiDALNetClassifier, TrajectoryRecorder, td_entropy, td_margin
from tidal_modal.measures import classifier_dynamic_influence, classifier_td_entropy, classifier_td_margin
from tidal_modal.skactiveml import DISALSampling, TiDALSampling

from .models import MLP

N_CLASSES = 4
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class PlantedTD(BaseEstimator):
    """A stub whose predicted TD and predicted label are read off each row: ``[td_0 .. td_3, label]``."""

    def fit(self, X, y):
        return self

    def predict_td(self, X, return_proba=False):
        td = X[:, :N_CLASSES]
        if not return_proba:
            return td
        return td, np.eye(N_CLASSES)[X[:, N_CLASSES].astype(int)]


class FitRaises(ClassifierMixin, BaseEstimator):
    """A classifier without a TD head whose fit must never run."""

    def fit(self, X, y):
        raise AssertionError("fit ran before the classifier was checked")


def confident(c):
    return [c] + [(1 - c) / 3] * 3


def planted_pool():
    """30 rows; rows 0-9 labeled. Known by construction: row 12 has the most uncertain TD
    (uniform; so has the labeled row 7), row 20 the smallest TD margin at the predicted label
    (its TD peaks on class 0, the classifier predicts class 1)."""
    X = np.array([confident(0.97 - 0.001 * i) + [0] for i in range(30)])
    X[[7, 12], :N_CLASSES] = 0.25
    X[20] = [0.9, 0.04, 0.03, 0.03, 1]
    y = np.full(30, MISSING_LABEL)
    y[:10] = 0
    return X, y


def labeled_start(y_true, n, seed=0):
    """scikit-activeml's start: all labels missing, then a random batch labeled."""
    y = np.full(len(y_true), MISSING_LABEL)
    idx = RandomSampling(random_state=seed).query(np.zeros((len(y), 1)), y, batch_size=n)
    y[idx] = y_true[idx]
    return y


@pytest.fixture(scope="module")
def fitted(digits):
    """A TiDAL net fitted on 100 labeled digits, the labels with the rest missing."""
    X, y_true = digits
    y = labeled_start(y_true, 100)
    labeled = is_labeled(y)
    torch.manual_seed(0)
    net = TiDALNetClassifier(MLP, max_epochs=10, lr=0.05, optimizer=torch.optim.Adam, verbose=0)
    net.fit(X[labeled], y[labeled].astype(np.int64))
    return X, y, net


class TestTiDALSampling:
    @pytest.mark.parametrize("method, planted", [("entropy", 12), ("margin_sampling", 20)])
    def test_selects_the_planted_most_uncertain_unlabeled_row(self, method, planted):
        X, y = planted_pool()
        idx = TiDALSampling(method=method, random_state=0).query(X, y, PlantedTD(), fit_clf=False)
        assert idx.tolist() == [planted]

    @pytest.mark.parametrize("method", ["entropy", "margin_sampling"])
    def test_utilities_are_the_td_scores_nan_on_labeled_rows(self, method):
        X, y = planted_pool()
        _, utilities = TiDALSampling(method=method, random_state=0).query(
            X, y, PlantedTD(), fit_clf=False, return_utilities=True
        )
        td, label = X[10:, :N_CLASSES], X[10:, N_CLASSES].astype(int)
        expected = td_entropy(td) if method == "entropy" else -td_margin(td, label)
        assert utilities.shape == (1, 30)
        assert np.isnan(utilities[0, :10]).all()
        np.testing.assert_allclose(utilities[0, 10:], expected)

    def test_batch_is_ranked_and_each_row_hides_the_rows_selected_before(self):
        X, y = planted_pool()
        idx, utilities = TiDALSampling(method="margin_sampling", random_state=0).query(
            X, y, PlantedTD(), fit_clf=False, batch_size=3, return_utilities=True
        )
        assert idx.tolist() == [20, 12, 29]  # the planted rows, then the least confident background row
        assert utilities.shape == (3, 30)
        for i in range(3):
            assert np.isnan(utilities[i, idx[:i]]).all() and not np.isnan(utilities[i, idx[i:]]).any()

    def test_candidate_indices_restrict_the_query_and_index_into_X(self):
        X, y = planted_pool()
        candidates = [3, 15, 20, 25]  # a labeled row may be a candidate, as in scikit-activeml
        idx, utilities = TiDALSampling(method="entropy", random_state=0).query(
            X, y, PlantedTD(), fit_clf=False, candidates=candidates, batch_size=2, return_utilities=True
        )
        assert set(idx) <= set(candidates) and 12 not in idx
        assert utilities.shape == (2, 30)
        assert np.flatnonzero(~np.isnan(utilities[0])).tolist() == candidates

    def test_candidate_samples_are_indexed_by_candidates(self):
        X, y = planted_pool()
        idx, utilities = TiDALSampling(method="entropy", random_state=0).query(
            X, y, PlantedTD(), fit_clf=False, candidates=X[[15, 12, 25]], return_utilities=True
        )
        assert idx.tolist() == [1]
        assert utilities.shape == (1, 3)

    def test_ties_are_broken_by_random_state(self):
        X, y = planted_pool()
        X[:, :N_CLASSES] = 0.25  # every row ties

        def query(seed):
            qs = TiDALSampling(method="entropy", random_state=seed)
            return qs.query(X, y, PlantedTD(), fit_clf=False, batch_size=5).tolist()

        assert query(3) == query(3)
        assert len({tuple(query(seed)) for seed in range(5)}) > 1
        assert all(i >= 10 for i in query(3))

    @pytest.mark.parametrize(
        "clf, fix",
        [
            (SklearnClassifier(LogisticRegression(), classes=[0, 1]), "UncertaintySampling"),
            (FitRaises(), "UncertaintySampling"),
            (SkorchClassifier(MLP, classes=np.arange(10)), r"SklearnClassifier\(TiDALNetClassifier"),
        ],
    )
    def test_classifier_without_td_head_fails_before_fitting_with_the_fix(self, clf, fix):
        X, y = planted_pool()
        with pytest.raises(TypeError, match=rf"needs a classifier with a TD head.*{fix}"):
            TiDALSampling().query(X, y, clf, fit_clf=True)

    def test_unknown_method(self):
        X, y = planted_pool()
        with pytest.raises(ValueError, match="method must be one of"):
            TiDALSampling(method="margin").query(X, y, PlantedTD(), fit_clf=False)

    @pytest.mark.parametrize("wrap", [False, True], ids=["net", "SklearnClassifier"])
    @pytest.mark.parametrize("method", ["entropy", "margin_sampling"])
    def test_utilities_equal_the_library_measures(self, fitted, wrap, method):
        X, y, net = fitted
        clf = SklearnClassifier(net, classes=np.arange(10)) if wrap else net
        _, utilities = TiDALSampling(method=method, random_state=0).query(
            X, y, clf, fit_clf=False, return_utilities=True
        )
        unlabeled = ~is_labeled(y)
        measure = classifier_td_entropy if method == "entropy" else classifier_td_margin
        sign = 1 if method == "entropy" else -1
        np.testing.assert_allclose(utilities[0, unlabeled], sign * measure(net, X[unlabeled]), rtol=1e-6)
        assert np.isnan(utilities[0, ~unlabeled]).all()

    def test_fit_clf_fits_a_clone_on_the_labeled_rows(self, digits):
        X, y_true = digits
        y = labeled_start(y_true, 40)
        net = TiDALNetClassifier(MLP, max_epochs=2, verbose=0)
        idx = TiDALSampling(random_state=0).query(X, y, net, batch_size=5)  # y holds NaN
        assert len(set(idx)) == 5 and not is_labeled(y[idx]).any()
        assert not net.initialized_  # the given net is left as it was

    @pytest.mark.parametrize("wrap", [False, True], ids=["net", "SklearnClassifier"])
    def test_scikit_activeml_loop_on_digits(self, digits, wrap):
        X, y_true = digits
        torch.manual_seed(0)
        net = TiDALNetClassifier(MLP, max_epochs=15, lr=0.01, optimizer=torch.optim.Adam, verbose=0)
        clf = SklearnClassifier(net, classes=np.arange(10)) if wrap else net

        def fit(y):
            if wrap:
                return clf.fit(X, y)  # SklearnClassifier drops the missing labels
            labeled = is_labeled(y)
            return clf.fit(X[labeled], y[labeled])

        qs = TiDALSampling(method="entropy", random_state=0)
        y = labeled_start(y_true, 30)
        fit(y)
        for _ in range(4):
            idx = qs.query(X, y, clf, fit_clf=False, batch_size=30)
            assert len(set(idx)) == 30 and not is_labeled(y[idx]).any()
            y[idx] = y_true[idx]
            fit(y)
        assert is_labeled(y).sum() == 150
        accuracy = np.mean(clf.predict(X) == y_true)
        assert accuracy > 0.6  # far above chance (0.1): the net learned and the loop fed it labels

    def test_bare_net_refuses_sample_weight_before_fitting(self, digits):
        X, y_true = digits
        with pytest.raises(ValueError, match="takes no sample_weight"):
            TiDALSampling().query(
                X, labeled_start(y_true, 30), TiDALNetClassifier(MLP), sample_weight=np.ones(len(X))
            )

    def test_tidal_modal_does_not_import_scikit_activeml(self):
        code = "import sys, tidal_modal; assert 'skactiveml' not in sys.modules, 'imported'"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class TestDISALSampling:
    def test_utilities_equal_the_library_measure(self, fitted):
        X, y, net = fitted
        _, utilities = DISALSampling(sign="signed", random_state=0).query(
            X, y, SklearnClassifier(net, classes=np.arange(10)), fit_clf=False, return_utilities=True
        )
        unlabeled = ~is_labeled(y)
        expected = classifier_dynamic_influence(net, X[unlabeled], sign="signed")
        np.testing.assert_allclose(utilities[0, unlabeled], expected, rtol=1e-6)

    def test_scikit_activeml_skorch_classifier_with_a_recorder(self, digits):
        X, y_true = digits
        X = X.astype(np.float64)  # the wrapper casts to float32, and so must the scoring
        torch.manual_seed(0)
        params = dict(max_epochs=5, lr=0.01, optimizer=torch.optim.Adam, train_split=None, verbose=0)
        clf = SkorchClassifier(
            MLP, neural_net_param_dict={**params, "callbacks": [TrajectoryRecorder()]}, classes=np.arange(10)
        )
        qs = DISALSampling(random_state=0)
        y = labeled_start(y_true, 30)
        clf.fit(X, y)
        for _ in range(2):
            idx, utilities = qs.query(X, y, clf, fit_clf=False, batch_size=20, return_utilities=True)
            assert not is_labeled(y[idx]).any()
            unlabeled = ~is_labeled(y)
            expected = classifier_dynamic_influence(clf.neural_net_, X[unlabeled].astype(np.float32))
            np.testing.assert_allclose(utilities[0, unlabeled], expected, rtol=1e-6)
            y[idx] = y_true[idx]
            clf.fit(X, y)
        assert is_labeled(y).sum() == 70

    def test_skorch_classifier_without_a_recorder_fails_before_fitting(self, digits):
        X, y_true = digits
        clf = SkorchClassifier(MLP, neural_net_param_dict={"max_epochs": 1}, classes=np.arange(10))
        with pytest.raises(ValueError, match=r"neural_net_param_dict=\{'callbacks': \[tidal_modal\.Traj"):
            DISALSampling().query(X, labeled_start(y_true, 30), clf)
        assert not hasattr(clf, "neural_net_")

    def test_classifier_that_is_no_skorch_net_fails_before_fitting(self):
        X, y = planted_pool()
        with pytest.raises(TypeError, match="needs a skorch net"):
            DISALSampling().query(X, y, FitRaises())


def test_example_prints_a_curve_per_strategy(capsys):
    main = runpy.run_path(str(EXAMPLES / "skactiveml_loop.py"))["main"]
    curves = main(["--cycles", "2", "--epochs", "2", "--initial", "20", "--query", "20"])
    assert set(curves) == {"tidal_entropy", "tidal_margin", "disal", "entropy", "random"}
    assert all(len(curve) == 3 and all(0 <= acc <= 1 for acc in curve) for curve in curves.values())
    assert len(capsys.readouterr().out.splitlines()) == 4  # a header and one line per cycle
