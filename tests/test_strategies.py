from functools import partial

import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner, Committee
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from skorch import NeuralNetClassifier
from skorch.dataset import Dataset as SkorchDataset
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, disal, td_entropy, tidal_entropy, tidal_margin
from tidal_modal.measures import classifier_dynamic_influence
from tidal_modal.strategies import MODAL_RETURNS_METRICS, select_top_k
from tidal_modal.trajectory import Trajectory

from .models import MLP

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
    def test_ties_at_the_kth_place_go_to_the_earlier_rows(self):
        assert select_top_k(np.ones(10), 3).tolist() == [0, 1, 2]
        scores = np.array([0.5, 0.9, 0.5, 0.5, 0.9, 0.1, 0.5])
        assert select_top_k(scores, 4).tolist() == [1, 4, 0, 2]
        rng_order = np.random.RandomState(7).permutation(7)  # what random_tie_break draws
        expected = [i for i in rng_order if scores[i] == 0.9] + [i for i in rng_order if scores[i] == 0.5][:2]
        assert select_top_k(scores, 4, random_tie_break=True, random_state=7).tolist() == expected

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


# --- DISAL ----------------------------------------------------------------------------------

PLANTED_X0 = {7: -5.0, 31: 4.0, 2: -3.0, 19: 2.0, 25: -1.0}


def planted_influence_net():
    """A skorch net whose features, probabilities and trajectory are set by hand.

    The module is one ``Linear(3 -> 2)``, so its features are the rows themselves:
    ``[x0, x1, row id]``. Weights 0 and bias ``[0.1, 0]`` give every row ``p = (0.525, 0.475)``
    and the predicted label 0. The one recorded step moved class 0's weight on ``x0``
    (``U = e_{0,0}``), so the pseudo-label influence is ``s = p . v - v_0 = -0.475 x0``:
    DISAL's magnitude queries the largest ``|x0|``, the signed score the most negative ``x0``,
    the negated one the most positive. The row id has zero weight and no step.
    """
    net = NeuralNetClassifier(nn.Linear, module__in_features=3, module__out_features=2, verbose=0)
    net.initialize()
    with torch.no_grad():
        net.module_.weight.zero_()
        net.module_.bias.copy_(torch.tensor([0.1, 0.0]))
    start = torch.cat([net.module_.weight, net.module_.bias[:, None]], dim=1).detach().clone()
    net.trajectory_ = Trajectory("", start)
    step = torch.zeros_like(start)
    step[0, 0] = 0.3
    net.trajectory_.checkpoint(start + step, epoch=1)
    return net


def planted_influence_pool():
    X = np.zeros((40, 3), dtype=np.float32)
    X[:, 0] = 0.01 * np.arange(40)
    X[:, 2] = np.arange(40)
    for row, x0 in PLANTED_X0.items():
        X[row, 0] = x0
    background = [i for i in range(40) if i not in PLANTED_X0]
    ranks = {
        "magnitude": [7, 31, 2, 19, 25] + background[::-1],
        "signed": [7, 2, 25] + background + [19, 31],
        "negated": [31, 19] + background[::-1] + [25, 2, 7],
    }
    return X, ranks


def scored_row_ids(net):
    ids = []
    net.module_.register_forward_pre_hook(lambda module, args: ids.append(args[0][:, 2].long()))
    return ids


class TestDisalPlanted:
    @pytest.mark.parametrize("sign", ["magnitude", "signed", "negated"])
    @pytest.mark.parametrize("n_instances", [1, 2, 5])
    def test_queries_the_planted_rows_through_an_active_learner(self, sign, n_instances):
        X, ranks = planted_influence_pool()
        learner = ActiveLearner(estimator=planted_influence_net(), query_strategy=partial(disal, sign=sign))
        idx, rows = learner.query(X, n_instances=n_instances)
        assert list(idx) == ranks[sign][:n_instances]
        np.testing.assert_array_equal(rows, X[idx])

    @pytest.mark.parametrize("n_instances", [1, 2, 5])
    def test_pool_subset_scores_a_subset_and_indexes_the_full_pool(self, n_instances):
        X, ranks = planted_influence_pool()
        net = planted_influence_net()
        ids = scored_row_ids(net)
        idx, _ = ActiveLearner(net, query_strategy=disal).query(
            X, n_instances=n_instances, pool_subset=15, random_state=3
        )
        scored = set(torch.cat(ids).tolist())
        assert len(scored) == 15
        assert list(idx) == [row for row in ranks["magnitude"] if row in scored][:n_instances]

    def test_return_convention_and_scores(self):
        X, ranks = planted_influence_pool()
        result = disal(planted_influence_net(), X, n_instances=2)
        if MODAL_RETURNS_METRICS:
            idx, scores = result
            p1 = 1 - 1 / (1 + np.exp(-0.1))  # the softmax of logits (0.1, 0) at class 1
            np.testing.assert_allclose(scores, p1 * np.abs(X[idx, 0]), rtol=1e-5)
        else:
            idx = result
        assert list(idx) == ranks["magnitude"][:2]

    def test_normalisation_weighs_checkpoints_alike(self):
        """A second step on class 1's weight of x1, 3 times as long: normalised, s = 0.475 (x1 - x0)
        scaled alike; unnormalised, the x1 step dominates."""
        net = planted_influence_net()
        step = torch.zeros(2, 4)
        step[1, 1] = 0.9
        net.trajectory_.checkpoint(net.trajectory_.weights()[-1] + step, epoch=2)
        X = np.zeros((3, 3), dtype=np.float32)
        X[0, 0], X[1, 1], X[2, 2] = -1.0, 0.5, 2  # row 0: x0 step; row 1: x1 step
        top = indices_of(disal(net, X, 1, sign="signed"))
        assert list(top) == [0]  # unit steps: 0.475 * 1 beats 0.525 * 0.5
        top = indices_of(disal(net, X, 1, sign="signed", normalize=False))
        assert list(top) == [1]  # raw steps: 0.3 * 0.475 loses to 0.9 * 0.525 * 0.5

    def test_committee_averages_its_members(self):
        X, _ = planted_influence_pool()
        members = [planted_influence_net(), planted_influence_net()]
        with torch.no_grad():
            members[1].module_.bias[0] = 0.3  # p0 = sigmoid(0.3): s = -(1 - p0) x0
        committee = Committee([ActiveLearner(m) for m in members], query_strategy=disal)
        idx, _ = committee.query(X, n_instances=3)
        assert list(idx) == [7, 31, 2]
        weight = np.mean([1 - 1 / (1 + np.exp(-b)) for b in (0.1, 0.3)])
        np.testing.assert_allclose(
            classifier_dynamic_influence(committee, X), weight * np.abs(X[:, 0]), rtol=1e-5
        )


@pytest.fixture(scope="module")
def disal_loop(digits):
    X, y = digits
    torch.manual_seed(0)
    net = TiDALNetClassifier(MLP, max_epochs=3, verbose=0, classes=list(range(10)), warm_start=True)
    learner = TiDALActiveLearner(net, query_strategy=disal, X_training=X[:60], y_training=y[:60])
    return learner, X[60:], y[60:]


class TestDisalOnANet:
    def test_a_real_loop(self, digits):
        X, y = digits
        net = TiDALNetClassifier(MLP, max_epochs=3, verbose=0, classes=list(range(10)), warm_start=True)
        learner = TiDALActiveLearner(net, query_strategy=disal, X_training=X[:60], y_training=y[:60])
        pool, labels = X[60:400], y[60:400]
        for cycle in range(3):
            idx, rows = learner.query(pool, n_instances=10, random_state=cycle)
            assert len(set(idx.tolist())) == 10
            learner.teach(rows, labels[idx])
            pool, labels = np.delete(pool, idx, axis=0), np.delete(labels, idx)
            assert net.trajectory_.epochs == [1, 2, 3]  # restarted by each cycle's fit
        assert len(learner.y_training) == 90

    def test_pipeline_scores_the_transformed_rows(self, disal_loop):
        learner, X, _ = disal_loop
        scaler = FunctionTransformer(lambda Z: Z * 2.0).fit(X)
        pipe = Pipeline([("double", scaler), ("net", learner.estimator)])
        np.testing.assert_allclose(
            classifier_dynamic_influence(pipe, X), classifier_dynamic_influence(learner.estimator, X * 2.0)
        )

    def test_streaming_equals_batch_for_every_kind_of_pool(self, disal_loop, tmp_path):
        learner, X, _ = disal_loop
        net = learner.estimator
        whole = classifier_dynamic_influence(net, X)
        path = tmp_path / "pool.npy"
        np.save(path, X)
        memmap = np.load(path, mmap_mode="r")
        for pool in (memmap, torch.as_tensor(X), SkorchDataset(X, None)):
            np.testing.assert_allclose(classifier_dynamic_influence(net, pool), whole, rtol=1e-6)
        batch_size = net.batch_size
        net.set_params(batch_size=7)
        try:
            np.testing.assert_allclose(classifier_dynamic_influence(net, memmap), whole, rtol=1e-5, atol=1e-7)
        finally:
            net.set_params(batch_size=batch_size)

    def test_same_seed_same_query(self, disal_loop):
        learner, X, _ = disal_loop
        runs = [indices_of(disal(learner, X, 5, pool_subset=300, random_state=s)) for s in (4, 4, 5)]
        np.testing.assert_array_equal(runs[0], runs[1])
        assert not np.array_equal(runs[0], runs[2])

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
    def test_cuda_scores_equal_cpu_scores(self, digits):
        X, y = digits
        net = TiDALNetClassifier(MLP, device="cuda", max_epochs=3, verbose=0).fit(X[:200], y[:200])
        assert net.trajectory_.deltas[0].device.type == "cuda"  # kept on the training device
        on_gpu = classifier_dynamic_influence(net, X[200:])
        net.set_params(device="cpu")
        net.module_.cpu()
        np.testing.assert_allclose(classifier_dynamic_influence(net, X[200:]), on_gpu, rtol=1e-4, atol=1e-6)
