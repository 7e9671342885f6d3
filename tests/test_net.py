import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback, EpochScoring, Freezer, InputShapeSetter
from skorch.dataset import Dataset, ValidSplit
from torch import nn
from torch.utils.data import default_collate

from tidal_modal import TiDALNetClassifier, disal, tidal_entropy
from tidal_modal.dynamics import collate_rows
from tidal_modal.net import softmax_rows_

from .models import MLP, OwnHead, SmallCNN


class TrainingPassRecorder(Callback):
    """Keeps the inputs and softmax outputs of every training forward pass of the last fit."""

    def initialize(self):
        self.passes = []
        return self

    def on_train_begin(self, net, **kwargs):
        self.passes = []

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training:
            proba = torch.softmax(y_pred.detach(), dim=1).numpy()  # the module's logits, as in skorch
            self.passes.append((batch[0].numpy().copy(), proba))


def hand_computed_td(X, passes):
    """Mean of each row's softmax over the training passes, matching rows by their values."""
    row_of = {row.tobytes(): i for i, row in enumerate(X)}
    seen = [[] for _ in X]
    for Xb, proba in passes:
        for row, p in zip(Xb, proba, strict=True):
            seen[row_of[row.tobytes()]].append(p)
    return np.array([np.mean(s, axis=0) if s else np.full(proba.shape[1], np.nan) for s in seen])


def hand_td(net, features):
    """The TD head computed by hand from its feature maps: each averaged over its spatial
    dimensions, through its branch (Linear, ReLU); the branches concatenated, the output layer, softmax."""
    head = net.td_head_
    hidden = []
    for f, branch in zip(features, head.branches, strict=True):
        pooled = f.mean(dim=(2, 3)) if f.dim() == 4 else f
        hidden.append(torch.relu(pooled @ branch[0].weight.T + branch[0].bias))
    return torch.softmax(torch.cat(hidden, dim=1) @ head.weight.T + head.bias, dim=1).detach().numpy()


def penultimate(net, X):
    """The input of the test MLP's last layer, in eval mode."""
    return net.module_.eval().body(torch.as_tensor(X))


@pytest.fixture
def tiny():
    rng = np.random.RandomState(0)
    X = rng.randn(30, 4).astype(np.float32)  # distinct rows, so rows can be matched by value
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return X, y


def tiny_net(**kwargs):
    params = dict(
        module=MLP,
        module__n_features=4,
        module__n_classes=2,
        module__dropout=0.3,  # train-mode passes differ from eval passes
        max_epochs=5,
        batch_size=8,
        lr=0.1,
        verbose=0,
    )
    params.update(kwargs)
    return TiDALNetClassifier(**params)


class TestTrainingDynamics:
    def test_recorded_td_equals_mean_of_training_pass_softmax(self, tiny):
        X, y = tiny
        recorder = TrainingPassRecorder()
        net = tiny_net(callbacks=[("recorder", recorder)]).fit(X, y)
        passes = dict(net.callbacks_)["recorder"].passes
        first_epoch_rows = np.concatenate([Xb for Xb, _ in passes[:4]])
        assert not np.array_equal(first_epoch_rows, X), "batches should have been shuffled"
        np.testing.assert_allclose(net.training_dynamics_, hand_computed_td(X, passes), rtol=1e-5)

    def test_no_extra_forward_pass_over_the_labeled_set(self, tiny):
        X, y = tiny
        net = tiny_net().initialize()
        calls = []
        net.module_.register_forward_hook(lambda *args: calls.append(1))
        net.partial_fit(X, y)
        # 4 batches x 5 epochs: the first training batch gives the head its shapes
        assert len(calls) == 4 * 5

    def test_validation_rows_get_no_td(self, tiny):
        X, y = tiny
        net = tiny_net(
            train_split=ValidSplit(5, stratified=False), callbacks=[("recorder", TrainingPassRecorder())]
        ).fit(X, y)
        td = net.training_dynamics_
        np.testing.assert_allclose(
            td, hand_computed_td(X, dict(net.callbacks_)["recorder"].passes), rtol=1e-5
        )
        assert np.isnan(td).all(axis=1).sum() == 6  # the held-out fifth
        assert {"valid_loss", "valid_acc"} <= set(net.history[-1])  # skorch's scoring still works

    def test_td_restarts_at_each_fit_while_warm_start_keeps_weights(self, tiny):
        X, y = tiny
        net = tiny_net(warm_start=True, callbacks=[("recorder", TrainingPassRecorder())]).fit(X, y)
        weights = net.module_.out.weight.detach().clone()
        net.fit(X[:20], y[:20])
        assert not torch.equal(weights, net.module_.out.weight)
        assert net.history[0]["epoch"] == 1 and len(net.history) == 10  # one history, kept training
        td = net.training_dynamics_
        assert td.shape == (20, 2)
        np.testing.assert_allclose(
            td, hand_computed_td(X[:20], dict(net.callbacks_)["recorder"].passes), rtol=1e-5
        )
        assert len(dict(net.callbacks_)["recorder"].passes) == 3 * 5  # the second fit's passes only

    def test_td_head_learns_the_training_dynamics(self, digits):
        X, y = digits
        X, y = X[:400], y[:400]
        kl_td, kl_clf = [], []

        class Fidelity(Callback):
            def on_epoch_end(self, net, **kwargs):
                actual = net.training_dynamics_
                td, proba = net.predict_td(X, return_proba=True)
                kl_td.append(np.mean(np.sum(actual * np.log(actual / td), axis=1)))
                kl_clf.append(np.mean(np.sum(actual * np.log(actual / proba), axis=1)))

        TiDALNetClassifier(
            MLP,
            module__hidden=64,
            max_epochs=40,
            lr=0.1,
            optimizer=torch.optim.SGD,
            optimizer__momentum=0.9,
            callbacks=[Fidelity()],
            verbose=0,
        ).fit(X, y)
        # both start near 0 (everything is uniform at first); the head's KL peaks, then falls
        assert kl_td[-1] < 0.5 * max(kl_td)
        assert kl_td[-1] < 0.1 * kl_clf[-1]

    def test_td_weight_zero_leaves_the_head_untrained(self, tiny):
        X, y = tiny
        heads = {}
        for weight in (0.0, 1.0):
            torch.manual_seed(0)
            net = tiny_net(td_weight=weight).initialize()
            net.infer_td(torch.as_tensor(X[:2]))  # gives the head its shapes
            before = net.td_head_.weight.detach().clone()
            net.partial_fit(X, y)
            heads[weight] = torch.equal(before, net.td_head_.weight)
        assert heads == {0.0: True, 1.0: False}

    def test_history_records_the_epoch_mean_td_loss(self, tiny):
        X, y = tiny
        batch_losses = []

        class Spy(Callback):
            def on_batch_end(self, net, batch=None, training=False, td_loss=None, **kwargs):
                batch_losses.append((float(td_loss), len(batch[0])))

        net = tiny_net(callbacks=[Spy()]).fit(X, y)
        last_epoch = batch_losses[-4:]  # 30 rows in batches of 8
        expected = np.average([loss for loss, _ in last_epoch], weights=[n for _, n in last_epoch])
        assert net.history[-1]["train_td_loss"] == pytest.approx(expected, rel=1e-6)
        assert len(net.history[:, "train_td_loss"]) == 5


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.module_.parameters(), b.module_.parameters(), strict=True))


class TestBatchLoading:
    """Training rows are fetched a batch at a time; the batches are those of skorch's row-by-row path."""

    def fit_both(self, X, y, **kwargs):
        nets = []
        for collate in (collate_rows, default_collate):  # default_collate reads the rows one by one
            torch.manual_seed(0)
            nets.append(
                tiny_net(iterator_train__collate_fn=collate, iterator_valid__collate_fn=collate, **kwargs)
            )
            nets[-1].fit(X, y)
        return nets

    @pytest.mark.parametrize("train_split", [None, ValidSplit(5, stratified=False)])
    def test_same_training_as_row_by_row(self, tiny, train_split):
        X, y = tiny
        sliced, rows = self.fit_both(X, y, train_split=train_split)
        assert same_weights(sliced, rows)
        np.testing.assert_array_equal(sliced.training_dynamics_, rows.training_dynamics_)
        assert sliced.history[-1]["train_loss"] == rows.history[-1]["train_loss"]
        if train_split is not None:
            assert sliced.history[-1]["valid_loss"] == rows.history[-1]["valid_loss"]

    def test_tensor_input_float64_and_batch_size_not_dividing_the_rows(self, tiny):
        X, y = tiny
        sliced, rows = self.fit_both(
            torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y), batch_size=7
        )
        assert same_weights(sliced, rows)
        np.testing.assert_array_equal(sliced.training_dynamics_, rows.training_dynamics_)

    def test_own_collate_fn_receives_rows(self, tiny):
        X, y = tiny
        seen = []

        def collate(rows):
            seen.append(len(rows))
            Xi, (yi, index) = rows[0]  # one row: its values, label and index
            assert Xi.shape == (4,) and (yi, index) == (y[index], index)
            return default_collate(rows)

        tiny_net(iterator_train__collate_fn=collate, max_epochs=1).fit(X, y)
        assert seen == [8, 8, 8, 6]

    def test_loader_workers_deliver_the_row_indices(self, tiny):
        # the reference code writes TD through a dataset attribute, which breaks with workers
        X, y = tiny
        recorder = TrainingPassRecorder()
        torch.manual_seed(0)
        net = tiny_net(iterator_train__num_workers=1, callbacks=[("recorder", recorder)]).fit(X, y)
        passes = dict(net.callbacks_)["recorder"].passes
        np.testing.assert_allclose(net.training_dynamics_, hand_computed_td(X, passes), rtol=1e-5)
        torch.manual_seed(0)
        assert same_weights(net, tiny_net(callbacks=[("recorder", TrainingPassRecorder())]).fit(X, y))


class TestPrediction:
    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, digits):
        X, y = digits
        torch.manual_seed(0)
        return TiDALNetClassifier(MLP, max_epochs=5, lr=0.1, verbose=0).fit(X[:300], y[:300])

    def test_predict_td_rows_sum_to_one_and_proba_is_skorchs(self, fitted, digits):
        X, _ = digits
        td, proba = fitted.predict_td(X[300:400], return_proba=True)
        assert td.shape == proba.shape == (100, 10)
        np.testing.assert_allclose(td.sum(axis=1), 1, rtol=1e-5)
        np.testing.assert_array_equal(proba, fitted.predict_proba(X[300:400]))
        np.testing.assert_array_equal(td, fitted.predict_td(X[300:400]))
        assert not np.allclose(td, proba)  # the head is not a copy of the classifier
        expected = hand_td(fitted, [penultimate(fitted, X[300:400])])
        np.testing.assert_allclose(td, expected, rtol=1e-5, atol=1e-7)

    def test_float64_input_is_cast(self, fitted, digits):
        X, _ = digits
        np.testing.assert_allclose(fitted.predict_td(X[:5].astype(np.float64)), fitted.predict_td(X[:5]))

    def test_module_cast_after_fit_casts_the_input(self, fitted, digits):
        X, _ = digits
        net = pickle.loads(pickle.dumps(fitted))
        net.module_.double()
        proba, td = net.predict_proba(X[:5]), net.predict_td(X[:5])  # float32 rows into a float64 module
        assert proba.dtype == np.float64 and td.dtype == np.float32  # float64 features into the head
        np.testing.assert_allclose(td, fitted.predict_td(X[:5]), rtol=1e-5)
        net.td_head_.double()
        assert net.predict_td(X[:5]).dtype == np.float64

    def test_softmax_rows_matches_torch_without_overflow(self):
        logits = np.random.RandomState(0).randn(50, 7).astype(np.float32) * 30
        logits[0] = [1e30, 0, 0, 0, 0, 0, -1e30]  # exp would overflow without the max shift
        expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        out = softmax_rows_(logits)
        assert out is logits  # in place
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(out[0], [1, 0, 0, 0, 0, 0, 0])

    def test_pickle_round_trip(self, fitted, digits):
        X, _ = digits
        restored = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(restored.predict_td(X[:50]), fitted.predict_td(X[:50]))
        np.testing.assert_array_equal(restored.training_dynamics_, fitted.training_dynamics_)

    def test_unfitted_net_cannot_predict_td(self):
        from skorch.exceptions import NotInitializedError

        with pytest.raises(NotInitializedError):
            TiDALNetClassifier(MLP).predict_td(np.zeros((2, 64), dtype=np.float32))


class TestBackbones:
    def test_conv_layers_as_td_layers(self, digits):
        X, y = digits
        images = X[:200].reshape(-1, 1, 8, 8)
        net = TiDALNetClassifier(
            SmallCNN, td_layers=["stage1", "stage2"], td_hidden=16, max_epochs=2, verbose=0
        ).fit(images, y[:200])
        assert [b[0].in_features for b in net.td_head_.branches] == [8, 16]
        module = net.module_
        stage1 = module.stage1(torch.as_tensor(images[:7]))
        expected = hand_td(net, [stage1, module.stage2(stage1)])  # both maps averaged over 8x8 / 4x4
        np.testing.assert_allclose(net.predict_td(images[:7]), expected, rtol=1e-5, atol=1e-7)

    def test_module_with_its_own_td_head(self, tiny):
        X, y = tiny
        net = TiDALNetClassifier(OwnHead, max_epochs=3, verbose=0).fit(X, y)
        assert net.td_head_ is None and net.td_taps_ == []
        expected = torch.softmax(net.module_.td(torch.as_tensor(X)), dim=1).detach().numpy()
        np.testing.assert_allclose(net.predict_td(X), expected, rtol=1e-5)
        assert net.history[-1]["train_td_loss"] > 0


class TestEstimatorProtocol:
    def test_clone_and_params(self):
        net = TiDALNetClassifier(MLP, module__hidden=16, td_weight=0.3, td_hidden=8)
        params = clone(net).get_params()
        assert (params["td_weight"], params["td_hidden"], params["module__hidden"]) == (0.3, 8, 16)
        assert params["train_split"] is None and params["iterator_train__shuffle"] is True
        assert params["iterator_train__collate_fn"] is collate_rows
        assert "iterator_valid__collate_fn" not in params  # validation batches are skorch's own
        assert net.set_params(td_weight=2.0).td_weight == 2.0

    def test_set_module_params_reinitialises_the_backbone(self, tiny):
        X, y = tiny
        net = tiny_net().fit(X, y)
        net.set_params(module__hidden=7)
        assert net.module_.body[0].out_features == 7
        net.fit(X, y)
        assert net.td_head_.branches[0][0].in_features == 7  # a new head for the new width
        expected = hand_td(net, [penultimate(net, X)])
        np.testing.assert_allclose(net.predict_td(X), expected, rtol=1e-5, atol=1e-7)

    def test_a_failed_set_params_leaves_the_net_as_it_was(self, tiny):
        # skorch sets what it can before the error: here the optimizer's learning rate (in place)
        # and module__n_hidden, which then broke every later fit
        X, y = tiny
        net = tiny_net().fit(X, y)
        attributes, module, proba = dict(vars(net)), net.module_, net.predict_proba(X)
        with pytest.raises(TypeError, match="n_hidden"):
            net.set_params(optimizer__lr=0.5, module__n_hidden=7)
        assert net.optimizer_.param_groups[0]["lr"] == 0.1
        assert dict(vars(net)).keys() == attributes.keys() and net.module_ is module
        np.testing.assert_array_equal(net.predict_proba(X), proba)
        with pytest.raises(ValueError, match="iterator_vaild__batch_size"):
            net.set_params(iterator_vaild__batch_size=3)
        assert dict(vars(net)).keys() == attributes.keys()
        # an initialized net whose TD head is still lazy (no weights to copy) too
        new = tiny_net().initialize()
        with pytest.raises(TypeError, match="n_hidden"):
            new.set_params(optimizer__lr=0.5, module__n_hidden=7)
        assert new.optimizer_.param_groups[0]["lr"] == 0.1 and "module__n_hidden" not in vars(new)
        # both go on working
        assert net.set_params(optimizer__lr=0.2).optimizer_.param_groups[0]["lr"] == 0.2
        net.fit(X, y)
        assert net.set_params(module__hidden=7).module_.body[0].out_features == 7

    def test_grid_search_over_td_weight(self, digits):
        X, y = digits
        search = GridSearchCV(
            TiDALNetClassifier(MLP, max_epochs=3, lr=0.1, verbose=0),
            {"td_weight": [0.0, 1.0]},
            cv=2,
            scoring="accuracy",
        ).fit(X[:200], y[:200])
        assert len(search.cv_results_["params"]) == 2
        best = search.best_estimator_
        assert best.td_weight == search.best_params_["td_weight"]
        assert best.training_dynamics_.shape == (200, 10)  # refit on all rows, not on a fold
        expected = hand_td(best, [penultimate(best, X[:3])])
        np.testing.assert_allclose(best.predict_td(X[:3]), expected, rtol=1e-5, atol=1e-7)


def cross_entropy(net, X, y):
    """The mean cross-entropy of the net's predicted probabilities on ``X``."""
    proba = net.predict_proba(X)
    return float(-np.mean(np.log(proba[np.arange(len(y)), y])))


class Scaled(nn.Module):
    """A module with a second forward argument, which skorch passes from ``fit(X, y, scale=...)``."""

    def __init__(self, n_features=4, n_classes=2):
        super().__init__()
        self.out = nn.Linear(n_features, n_classes)
        self.scales = []

    def forward(self, X, scale):
        self.scales.append(scale)
        return self.out(X) * scale


class WithInputDim(MLP):
    """The test MLP with skorch's ``input_dim`` parameter, which ``InputShapeSetter`` sets."""

    def __init__(self, input_dim=3, n_classes=2):
        super().__init__(n_features=input_dim, n_classes=n_classes)


class TestSkorchParity:
    """What a skorch user does with a NeuralNetClassifier works the same on this net."""

    @pytest.mark.parametrize("where", ["callback", "net"])
    def test_scoring_without_caching(self, tiny, where):
        # skorch's is_skorch_dataset must recognise the datasets that callbacks see
        X, y = tiny
        uncached = EpochScoring("accuracy", name="uncached_acc", use_caching=False)
        if where == "callback":
            net = tiny_net(train_split=ValidSplit(5, stratified=False), callbacks=[uncached]).fit(X, y)
            assert net.history[:, "uncached_acc"] == net.history[:, "valid_acc"]
        else:
            split = ValidSplit(5, stratified=False)
            net = tiny_net(train_split=split, use_caching=False).fit(X, y)
            valid = split(Dataset(X, y))[1].indices
            assert net.history[-1, "valid_acc"] == accuracy_score(y[valid], net.predict(X[valid]))

    def test_train_split_returning_the_whole_data_twice(self, tiny):
        X, y = tiny
        net = tiny_net(train_split=lambda dataset, y: (dataset, dataset)).fit(X, y)
        assert not np.isnan(net.training_dynamics_).any()  # every row trained on
        assert net.history[-1, "valid_loss"] == pytest.approx(cross_entropy(net, X, y), rel=1e-5)

    def test_train_split_returning_datasets_of_its_own(self, tiny):
        X, y = tiny

        def split(dataset, y):
            return Dataset(dataset.X[:20], dataset.y[:20]), Dataset(dataset.X[20:], dataset.y[20:])

        net = tiny_net(train_split=split).fit(X, y)
        assert net.training_dynamics_.shape == (20, 2)  # the rows of the training set
        assert net.history[-1, "valid_loss"] == pytest.approx(cross_entropy(net, X[20:], y[20:]), rel=1e-5)

    def test_fit_params_reach_every_forward_pass_of_the_fit(self, tiny):
        X, y = tiny
        net = TiDALNetClassifier(Scaled, max_epochs=2, batch_size=10, verbose=0).fit(X, y, scale=2.0)
        assert net.module_.scales == [2.0] * 2 * 3  # 2 epochs of 3 batches, no pass without it

    def test_one_dataset_read_per_fit(self, tiny):
        X, y = tiny
        calls = []

        class Counting(TiDALNetClassifier):
            def get_dataset(self, X, y=None):
                calls.append(1)
                return super().get_dataset(X, y)

        Counting(MLP, module__n_features=4, module__n_classes=2, max_epochs=1, verbose=0).fit(X, y)
        assert len(calls) == 1

    def test_input_shape_setter_resizes_the_module_before_training(self, digits):
        X, y = digits
        starts = []

        class Start(Callback):  # after InputShapeSetter: the resized module's first weights
            def on_train_begin(self, net, **kwargs):
                out = net.module_.out
                starts.append(torch.cat([out.weight, out.bias[:, None]], dim=1).detach().clone())

        net = TiDALNetClassifier(
            WithInputDim,
            module__n_classes=10,
            callbacks=[InputShapeSetter(), Start()],
            max_epochs=1,
            verbose=0,
        ).fit(X[:50], y[:50])
        assert net.module_.body[0].in_features == 64
        assert net.predict_td(X[:5]).shape == (5, 10)
        torch.testing.assert_close(net.trajectory_.start, starts[0])  # the path of the new module

    def test_a_fit_without_epochs_gives_the_head_its_shapes(self, tiny):
        X, y = tiny
        net = TiDALNetClassifier(Scaled, max_epochs=0, verbose=0).fit(X, y, scale=2.0)
        assert net.module_.scales == [2.0]  # one forward pass, with the fit's parameters
        assert net.td_head_.weight.shape == (2, 128) and net.classes_.tolist() == [0, 1]

    def test_a_lazy_classifier_layer_gets_its_shapes_and_its_trajectory(self, tiny):
        X, y = tiny
        module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LazyLinear(2))
        net = TiDALNetClassifier(module, max_epochs=3, verbose=0).fit(X, y)
        assert net.trajectory_.layer == "2" and net.trajectory_.start.shape == (2, 9)
        assert len(net.trajectory_) == 3

    def test_a_new_module_on_a_dataset_gets_the_classes_of_its_width(self, digits):
        X, y = digits
        net = TiDALNetClassifier(MLP, max_epochs=1, verbose=0).fit(X[:100], y[:100])
        net.set_params(module__n_classes=5)  # a new module, and a Dataset whose labels skorch cannot read
        rows = np.flatnonzero(y < 5)

        class Rows(torch.utils.data.Dataset):
            def __len__(self):
                return len(rows)

            def __getitem__(self, i):
                return X[rows[i]], y[rows[i]]

        net.fit(Rows(), None)
        assert net.classes_.tolist() == [0, 1, 2, 3, 4]

    def test_a_dataset_of_one_value_gets_skorchs_error(self, tiny):
        X, _ = tiny

        class OnlyX(torch.utils.data.Dataset):
            def __len__(self):
                return len(X)

            def __getitem__(self, i):
                return X[i]

        with pytest.raises(ValueError, match="returns 1 value"):
            tiny_net().fit(OnlyX(), None)

    def test_parameter_patterns_use_the_modules_own_names(self, tiny):
        X, y = tiny
        net = tiny_net(optimizer__param_groups=[("body.0.*", {"lr": 0.5})]).initialize()
        groups = net.optimizer_.param_groups
        assert [g["lr"] for g in groups] == [0.5, 0.1]
        assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.module_.body[0].parameters()}

        net = tiny_net(callbacks=[Freezer(["body.*", "td_head.*"])]).fit(X, y)
        frozen = {name for name, p in net.get_all_learnable_params() if not p.requires_grad}
        assert frozen == {"body.0.weight", "body.0.bias"} | {
            name for name, _ in net.get_all_learnable_params() if name.startswith("td_head.")
        }

    def test_a_new_classifier_layer_is_used(self, tiny):
        X, y = tiny
        net = tiny_net().fit(X, y)
        net.module_.out = nn.Linear(32, 2)  # a new classifier layer, e.g. for fine-tuning
        np.testing.assert_allclose(
            net.predict_proba(X), torch.softmax(net.module_(torch.as_tensor(X)), dim=1).detach(), rtol=1e-5
        )

    def test_an_initialized_net_predicts_with_its_initial_weights(self, tiny):
        X, y = tiny
        net = tiny_net().initialize()
        expected = torch.softmax(net.module_.eval()(torch.as_tensor(X)), dim=1).detach().numpy()
        np.testing.assert_allclose(net.predict_proba(X), expected, rtol=1e-5)
        assert net.predict(X.tolist()).shape == (30,)  # a list is read as rows here too
        net.partial_fit(X, y)  # and it trains on
        assert net.training_dynamics_.shape == (30, 2)

    def test_an_initialized_net_has_no_td_before_a_fit(self, tiny):
        X, _ = tiny
        with pytest.raises(NotFittedError, match="initialized but not fitted"):
            tiny_net().initialize().predict_td(X)

    def test_get_loss_sees_the_logits(self, tiny):
        X, y = tiny
        seen = set()

        class Spy(TiDALNetClassifier):
            def get_loss(self, y_pred, y_true, X=None, training=False):
                seen.add((type(y_pred), tuple(y_pred.shape), training))
                return super().get_loss(y_pred, y_true, X=X, training=training)

        Spy(
            MLP,
            module__n_features=4,
            module__n_classes=2,
            train_split=ValidSplit(5),
            max_epochs=1,
            batch_size=30,
            verbose=0,
        ).fit(X, y)
        assert seen == {(torch.Tensor, (24, 2), True), (torch.Tensor, (6, 2), False)}

    def test_a_list_of_inputs_is_refused_with_the_fix(self, tiny):
        X, y = tiny
        with pytest.raises(ValueError, match=r"list of 2 arrays of 30 rows.*tuple \(X1, X2\)"):
            tiny_net().fit([X[:, :2], X[:, 2:]], y)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
class TestCuda:
    def test_fit_predict_and_move_to_cpu(self, digits):
        X, y = digits
        net = TiDALNetClassifier(MLP, device="cuda", max_epochs=3, verbose=0).fit(X[:200], y[:200])
        assert net.dynamics_.sums.device.type == "cuda"  # the TD buffer stays on the device
        td = net.predict_td(X[200:260])
        assert td.shape == (60, 10)
        restored = pickle.loads(pickle.dumps(net))
        assert restored.dynamics_.sums.device.type == "cpu"
        np.testing.assert_allclose(restored.predict_td(X[200:260]), td, rtol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
class TestDeviceWithoutGPU:
    def test_fit_and_initialize_name_the_problem_and_the_fix(self, digits):
        X, y = digits
        for call in (
            lambda net: net.fit(X[:50], y[:50]),
            lambda net: net.initialize(),
        ):
            net = TiDALNetClassifier(MLP, device="cuda", max_epochs=1, verbose=0)
            with pytest.raises(
                ValueError, match=r"device='cuda', but this torch .* built without CUDA.*device='cpu'"
            ):
                call(net)

    def test_a_fitted_net_moved_to_cuda_stays_fitted(self, digits):
        X, y = digits
        net = TiDALNetClassifier(MLP, max_epochs=1, verbose=0).fit(X[:50], y[:50])
        proba = net.predict_proba(X[:10])
        net.set_params(device="cuda")
        with pytest.raises(ValueError, match="device='cuda'"):
            net.fit(X[:50], y[:50])
        net.set_params(device="cpu")
        np.testing.assert_array_equal(net.predict_proba(X[:10]), proba)


class TestSkorchNative:
    """``module_`` is the user's module; the TD head is a second skorch module, ``td_head_``."""

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls):
        rng = np.random.RandomState(0)
        X = rng.randn(40, 4).astype(np.float32)
        y = (X[:, 0] > 0).astype(np.int64)
        module = MLP(n_features=4, hidden=8, n_classes=2)
        torch.manual_seed(0)
        return TiDALNetClassifier(module, max_epochs=3, lr=0.1, verbose=0).fit(X, y), module, X

    def test_module_is_the_users_instance(self, trained):
        net, module, _ = trained
        assert net.module_ is module and type(net.module_) is MLP
        assert list(net.module_.state_dict()) == list(MLP(n_features=4, hidden=8, n_classes=2).state_dict())
        assert repr(net.module_) == repr(MLP(n_features=4, hidden=8, n_classes=2))

    def test_forward_infer_and_predict_give_the_classifiers_output(self, trained):
        net, module, X = trained
        with torch.no_grad():
            logits = module.eval()(torch.as_tensor(X))
        torch.testing.assert_close(net.forward(X), logits)
        assert all(isinstance(out, torch.Tensor) for out in net.forward_iter(X))
        torch.testing.assert_close(net.infer(torch.as_tensor(X)).detach(), logits)
        np.testing.assert_allclose(net.predict_proba(X), torch.softmax(logits, dim=1).numpy(), rtol=1e-6)

    def test_the_head_is_a_registered_skorch_module(self, trained):
        net, _, X = trained
        assert net._modules == ["module", "td_head"] and "td_head_" in net.cuda_dependent_attributes_
        optimized = {id(p) for group in net.optimizer_.param_groups for p in group["params"]}
        assert {id(p) for p in net.td_head_.parameters()} <= optimized
        assert all(p.device == torch.device(net.device) for p in net.td_head_.parameters())
        net = clone(net).set_params(td_head__hidden=5).fit(X, (X[:, 0] > 0).astype(np.int64))
        assert net.td_head_.branches[0][0].out_features == 5

    def test_an_export_of_the_module_gives_the_logits(self, trained):
        net, _, X = trained
        x = torch.as_tensor(X[:5])
        exported = torch.export.export(net.module_.eval(), (x,))
        torch.testing.assert_close(exported.module()(x), net.forward(X[:5]))
        assert all(tap.features is None for tap in net.td_taps_)  # the export left nothing behind
        np.testing.assert_allclose(net.predict_td(X), pickle.loads(pickle.dumps(net)).predict_td(X))

    def test_a_compiled_module_trains_and_scores_as_the_plain_one(self):
        rng = np.random.RandomState(0)
        X = rng.randn(40, 4).astype(np.float32)
        y = (X[:, 0] > 0).astype(np.int64)
        nets = []
        for compile_ in (False, True):
            torch.manual_seed(0)
            params = {"compile": True, "compile__backend": "aot_eager"} if compile_ else {}
            nets.append(tiny_net(module__dropout=0.0, max_epochs=2, **params).fit(X, y))
        plain, compiled = nets
        assert type(compiled.module_).__name__ == "OptimizedModule"
        np.testing.assert_allclose(
            compiled.training_dynamics_, plain.training_dynamics_, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(compiled.predict_td(X), plain.predict_td(X), rtol=1e-5, atol=1e-6)
        assert compiled.trajectory_.layer == "out" and len(compiled.trajectory_) == 2

    def test_the_taps_are_registered_once_per_initialization(self, tiny):
        X, y = tiny
        module = MLP(n_features=4, n_classes=2)

        def taps():
            dicts = [d for m in module.modules() for d in (m._forward_hooks, m._forward_pre_hooks)]
            return [hook for d in dicts for hook in d.values()]

        net = TiDALNetClassifier(module, max_epochs=1, verbose=0).fit(X, y)
        net.initialize().fit(X, y)  # the same instance, initialized again
        assert taps() == net.td_taps_ and len(net.td_taps_) == 1
        net.set_params(td_layers=["body"]).initialize()  # another layer: the old tap goes
        assert taps() == net.td_taps_ and net.td_taps_[0].layer == "body"
        copy = clone(net).fit(X, y)  # clone deep-copies the instance, hooks included
        assert len(copy.td_taps_) == 1 and copy.module_ is not module

    def test_a_module_with_its_own_head_keeps_it_across_pickling(self, tiny):
        X, y = tiny
        net = TiDALNetClassifier(OwnHead, max_epochs=2, verbose=0).fit(X, y)
        restored = pickle.loads(pickle.dumps(net))
        assert restored.td_head_ is None
        np.testing.assert_allclose(restored.predict_td(X), net.predict_td(X))
        y_pred = net.forward(X)
        assert isinstance(y_pred, tuple) and len(y_pred) == 2  # as skorch gives a tuple output


class TestCallbacksMayRunTheModule:
    """A callback may run the module, or predict, whenever it likes (also before training)."""

    def test_running_the_module_on_each_batch(self, digits):
        X, y = digits

        class Peek(Callback):
            def on_batch_begin(self, net, batch=None, training=False, **kwargs):
                with torch.no_grad():
                    net.module_(torch.as_tensor(batch[0]))

        net = TiDALNetClassifier(MLP, max_epochs=2, callbacks=[Peek()], verbose=0).fit(X[:100], y[:100])
        assert len(net.trajectory_) == 2 and net.predict_td(X[:5]).shape == (5, 10)

    def test_predicting_before_the_first_batch(self, digits):
        X, y = digits
        keep = y < 9  # the first fit sees classes 0..8 of a 10-logit module

        class Predict(Callback):
            def on_train_begin(self, net, **kwargs):
                net.predict_proba(X[:4])

        net = TiDALNetClassifier(MLP, max_epochs=2, callbacks=[Predict()], verbose=0)
        net.fit(X[keep][:200], y[keep][:200])
        assert net.classes_.tolist() == list(range(10))  # from the module's width, not the labels
        assert len(net.trajectory_) == 2
        net.set_params(warm_start=True).fit(X[:200], y[:200])  # class 9 arrives later
        assert net.predict_td(X[:5]).shape == (5, 10)
        net.set_params(callbacks__trajectory=None, warm_start=False).fit(X[keep][:200], y[keep][:200])
        assert net.classes_.tolist() == list(range(10))


class TestScoringBatch:
    """Scoring has a batch size of its own; the results do not depend on it."""

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls):
        rng = np.random.RandomState(0)
        X = rng.randn(300, 20).astype(np.float32)
        y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
        layers = [nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2)]
        module = nn.Sequential(*layers)
        torch.manual_seed(0)
        return TiDALNetClassifier(module, batch_size=16, max_epochs=3, verbose=0).fit(X, y), X

    def batch_sizes(self, net, X, predict=None):
        seen = []
        handle = net.module_.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
        try:
            (predict or net.predict_td)(X)
        finally:
            handle.remove()
        return seen

    def test_skorch_methods_batch_as_skorch_does_and_tidal_ones_at_the_scoring_batch(self, trained):
        # skorch documents and tests that predictions batch at iterator_valid__batch_size, else at
        # batch_size (five tests of its own suite fail otherwise, tests/test_skorch_contract.py)
        net, X = trained
        pool = np.concatenate([X] * 20)  # 6,000 rows: 4,096 by the rule (next test), training's 16
        for predict in (net.predict_proba, net.predict, net.forward, lambda X: list(net.forward_iter(X))):
            assert self.batch_sizes(net, pool[:40], predict) == [16, 16, 8]
        assert self.batch_sizes(net, Dataset(pool[:40], None), net.predict_proba) == [16, 16, 8]
        for score in (net.predict_td, lambda X: tidal_entropy(net, X), lambda X: disal(net, X)):
            assert self.batch_sizes(net, pool, score) == [4096, 6000 - 4096]
        # skorch's parameter sets both, as in skorch
        explicit = pickle.loads(pickle.dumps(net))
        explicit.iterator_valid__batch_size = 1000  # as its constructor sets it
        for predict in (explicit.predict_proba, explicit.predict_td, lambda X: tidal_entropy(explicit, X)):
            assert self.batch_sizes(explicit, pool, predict) == [1000] * 6

    def test_auto_gives_skorch_methods_the_scoring_batch_and_the_same_results(self, trained):
        net, X = trained
        pool = np.concatenate([X] * 20)
        auto = pickle.loads(pickle.dumps(net)).set_params(iterator_valid__batch_size="auto")
        for predict in (auto.predict_proba, auto.predict, auto.forward, lambda X: list(auto.forward_iter(X))):
            assert self.batch_sizes(auto, pool, predict) == [4096, 6000 - 4096]
        assert self.batch_sizes(auto, Dataset(pool, None), auto.predict_proba) == [4096, 6000 - 4096]
        for score in (auto.predict_td, lambda X: tidal_entropy(auto, X)):
            assert self.batch_sizes(auto, pool, score) == [4096, 6000 - 4096]
        # eval mode: batch norm's statistics, not the batch's; dropout off; a matmul over another number
        # of rows may round the last bit differently (test_scores_and_queries_do_not_depend_on_the_batch)
        np.testing.assert_allclose(auto.predict_proba(pool), net.predict_proba(pool), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(auto.predict(pool), net.predict(pool))

    def test_auto_batches_the_validation_of_a_fit_too(self, trained):
        _, X = trained
        y = (X[:, 0] > 0).astype(np.int64)
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
        net = TiDALNetClassifier(
            module,
            batch_size=16,
            max_epochs=1,
            train_split=ValidSplit(5),
            iterator_valid__batch_size="auto",
            verbose=0,
        )
        seen = []
        module.register_forward_pre_hook(lambda m, args: seen.append((m.training, len(args[0]))))
        net.fit(X, y)
        # 240 training rows in batches of 16, the 60 validation rows in one, in eval mode
        assert [n for training, n in seen if not training] == [60]
        assert [n for training, n in seen if training] == [16] * 15
        assert np.isfinite(net.history[-1, "valid_loss"])

    def test_a_misspelt_auto_is_an_error_that_names_the_fix_and_changes_nothing(self, trained):
        net, X = trained
        wrong = pickle.loads(pickle.dumps(net)).set_params(iterator_valid__batch_size="Auto")
        weights = [p.detach().clone() for p in wrong.module_.parameters()]
        with pytest.raises(ValueError, match="iterator_valid__batch_size='Auto' is not a batch size.*'auto'"):
            wrong.predict_proba(X)
        with pytest.raises(ValueError, match="'Auto' is not a batch size"):
            wrong.fit(X, (X[:, 0] > 0).astype(np.int64))
        assert all(torch.equal(a, b) for a, b in zip(weights, wrong.module_.parameters(), strict=True))
        proba = wrong.set_params(iterator_valid__batch_size="auto").predict_proba(X)
        np.testing.assert_allclose(proba, net.predict_proba(X), rtol=1e-5, atol=1e-7)

    def test_set_params_of_iterators_on_a_fitted_net_reinitializes_nothing(self, trained, capsys):
        # skorch 1.4's set_params raises "Something went wrong" for an initialized net given
        # parameters of its iterators or dataset alone (it sets them first)
        net, X = trained
        y = (X[:, 0] > 0).astype(np.int64)
        fitted = pickle.loads(pickle.dumps(net)).set_params(verbose=1)  # prints what it re-initializes
        module, head, optimizer = fitted.module_, fitted.td_head_, fitted.optimizer_
        assert fitted.set_params(iterator_valid__batch_size=100, iterator_train__drop_last=True) is fitted
        assert (fitted.module_, fitted.td_head_, fitted.optimizer_) == (module, head, optimizer)
        assert "Re-initializing" not in capsys.readouterr().out
        assert fitted.get_params()["iterator_valid__batch_size"] == 100
        assert self.batch_sizes(fitted, X, fitted.predict_proba) == [100] * 3
        np.testing.assert_allclose(fitted.predict_proba(X), net.predict_proba(X), rtol=1e-5, atol=1e-7)
        fitted.verbose = 0
        seen = self.batch_sizes(fitted, X, lambda X: fitted.partial_fit(X, y))
        assert seen == [16] * 18 * net.max_epochs  # the last 12 rows dropped
        # with a module's parameter, as in skorch: everything is re-initialized
        fitted.set_params(iterator_valid__batch_size=50, td_head__hidden=8, verbose=1)
        assert fitted.module_ is not module and fitted.td_head_.hidden == 8
        assert "Re-initializing module" in capsys.readouterr().out
        assert fitted.iterator_valid__batch_size == 50
        # a misspelt parameter is skorch's error, as before
        with pytest.raises(ValueError, match="iterator_vaild__batch_size"):
            clone(net).initialize().set_params(iterator_vaild__batch_size=3)

    def test_the_rule_reads_every_input_that_predictions_take(self, trained):
        net, X = trained
        pool = np.concatenate([X] * 20)
        expected = net.scoring_batch_size(pool)
        assert expected == 4096
        for rows in (torch.as_tensor(pool), list(pool), pd.DataFrame(pool), Dataset(pool, None)):
            assert net.scoring_batch_size(rows) == expected
        # no rows, or rows that are not one array (several inputs): skorch's batch, as predictions use
        assert net.scoring_batch_size(pool[:0]) == net.scoring_batch_size(pd.DataFrame(pool[:0])) == 16
        assert net.scoring_batch_size({"x": pool}) == 16
        other = pickle.loads(pickle.dumps(net))
        assert other.set_params(batch_size=-1).scoring_batch_size(pool[:0]) == -1
        with pytest.raises(ValueError, match="batch_size=0 is not a batch size"):
            other.set_params(batch_size=0).scoring_batch_size(pool[:0])

    def test_a_training_pass_batches_as_skorch_does_and_warns_nothing(self, trained):
        net, X = trained
        trainee = pickle.loads(pickle.dumps(net))  # a training pass updates batch norm's statistics
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the finiteness check reads outputs that carry gradients
            seen = self.batch_sizes(trainee, X[:40], lambda X: trainee.forward(X, training=True))
        assert seen == [16, 16, 8]

    def test_the_default_is_large_and_an_explicit_one_is_kept(self, trained):
        net, X = trained
        pool = np.concatenate([X] * 20)  # 6,000 rows of 80 bytes, 600 with the layers' outputs
        assert net._bytes_per_row(torch.as_tensor(pool[:1])) == 80 + 4 * (32 + 32 + 32 + 32 + 2)
        # 24 MiB / 600 bytes, capped at 4,096 rows (the one-row pass that measures a row is unseen)
        assert self.batch_sizes(net, pool) == [4096, 6000 - 4096]
        explicit = pickle.loads(pickle.dumps(net)).set_params(iterator_valid__batch_size=1000)
        assert self.batch_sizes(explicit, pool) == [1000] * 6
        cnn = TiDALNetClassifier(
            nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4096, 2)),
            batch_size=16,
        ).initialize()
        images = np.zeros((3, 3, 16, 16), dtype=np.float32)  # 3 kB a row, 16 kB each layer's output
        assert cnn.scoring_batch_size(images) == 24 * 2**20 // (4 * 16 * 16 * (3 + 16 + 16 + 16) + 8) == 481
        # on a CPU the cache decides, not training's batch; on a GPU, at least training's batch
        assert cnn.set_params(batch_size=512).scoring_batch_size(images) == 481
        measured = cnn._bytes_per_row(torch.as_tensor(images[:1]))
        cnn.device = "cuda"  # the rule reads the device (the row's bytes are measured there: kept)
        cnn._bytes_per_row = lambda row: measured
        assert cnn.scoring_batch_size(images) == 512

    def test_a_batch_holds_twice_the_weights_when_they_outweigh_the_cache_budget(self):
        rng = np.random.RandomState(0)
        X = rng.randn(40, 10).astype(np.float32)
        y = (X[:, 0] > 0).astype(np.int64)
        layers = [nn.Linear(10, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2)]
        module = nn.Sequential(*layers)
        net = TiDALNetClassifier(module, max_epochs=1, batch_size=20, verbose=0).fit(X, y)
        weights = 4 * sum(p.numel() for m in (net.module_, net.td_head_) for p in m.parameters())
        assert 2 * weights > 24 * 2**20  # 17 MB of weights (with the head's): more than the 24 MiB rule
        row = 4 * (10 + 2048 * 4 + 2)  # input and the layers' outputs
        assert net._bytes_per_row(torch.as_tensor(X[:1])) == row
        assert net.scoring_batch_size(X) == 2 * weights // row > 24 * 2**20 // row
        # a narrow net keeps the 24 MiB rule (test_the_default_is_large_and_an_explicit_one_is_kept)

    def test_scores_and_queries_do_not_depend_on_the_batch(self, trained):
        net, X = trained
        reference_td, reference_proba = net.predict_td(X, return_proba=True)
        reference_query = tidal_entropy(net, X, n_instances=20)
        reference_disal = disal(net, X, n_instances=20)
        for size in (1, 7, 128, 4096):
            copy = pickle.loads(pickle.dumps(net))
            copy.iterator_valid__batch_size = size
            td, proba = copy.predict_td(X, return_proba=True)
            np.testing.assert_allclose(td, reference_td, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(proba, reference_proba, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(tidal_entropy(copy, X, n_instances=20), reference_query)
            np.testing.assert_array_equal(disal(copy, X, n_instances=20), reference_disal)
            np.testing.assert_allclose(copy.predict_proba(X), reference_proba, rtol=1e-5, atol=1e-7)


class TestScoringPrecision:
    def test_bfloat16_scoring_gives_float32_scores_close_to_full_precision(self, tiny):
        X, y = tiny
        torch.manual_seed(0)
        net = tiny_net(module__dropout=0.0).fit(X, y)
        full_td, full_proba = net.predict_td(X, return_proba=True)
        low = pickle.loads(pickle.dumps(net)).set_params(scoring_dtype="bfloat16")
        td, proba = low.predict_td(X, return_proba=True)
        assert td.dtype == proba.dtype == np.float32 and low.forward(X).dtype == torch.float32
        np.testing.assert_allclose(td, full_td, atol=0.02)  # bfloat16: 3 significant digits
        np.testing.assert_allclose(proba, full_proba, atol=0.02)
        assert not np.array_equal(td, full_td)  # it did run in bfloat16
        low.partial_fit(X, y)  # training stays in the module's precision
        assert low.module_.out.weight.dtype == torch.float32

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
    def test_a_cpu_pool_is_scored_on_the_gpu_as_on_the_cpu(self, tiny):
        X, y = tiny
        torch.manual_seed(0)
        net = tiny_net(module__dropout=0.0).fit(X, y)
        expected = net.predict_td(X)
        gpu = pickle.loads(pickle.dumps(net))
        gpu.module_.cuda()
        gpu.td_head_.cuda()
        gpu.device = "cuda"
        np.testing.assert_allclose(gpu.predict_td(X), expected, rtol=1e-4, atol=1e-6)  # pinned copies
        gpu.scoring_dtype = "bfloat16"
        np.testing.assert_allclose(gpu.predict_td(X), expected, atol=0.02)
