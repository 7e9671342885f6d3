"""Every bad input gets a clear error before anything changes (tidal_modal.validation)."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.exceptions import NotInitializedError
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy, tidal_margin
from tidal_modal.strategies import MODAL_RETURNS_METRICS
from tidal_modal.validation import (
    InvalidParameterError,
    check_finite_batch,
    check_predict_input,
    check_prediction_batch_size,
    check_scoring_dtype,
)

from .test_pool import peak_allocation


class MLP(nn.Module):
    """Adapts to any number of features (lazy first layer); ``n_classes`` logits."""

    def __init__(self, n_classes=3):
        super().__init__()
        self.seq = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, n_classes))

    def forward(self, X):
        return self.seq(X)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.out = nn.Linear(4, 3)

    def forward(self, X):
        return self.out(self.conv(X).mean(dim=(2, 3)))


class EmbeddingNet(nn.Module):
    """Integer input are token ids: they must reach the embedding as integers."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, X):
        return self.out(self.embed(X).mean(dim=1))


class TwoInputs(nn.Module):
    """Takes two inputs, as skorch passes them: a dict as keywords, a tuple as one argument."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(4, 3)

    def forward(self, a, b=None):
        a, b = a if b is None else (a, b)
        return self.out(torch.cat([a, b], dim=1))


def blobs(n=60, n_features=4, n_classes=3):
    X, y = make_blobs(n_samples=n, n_features=n_features, centers=n_classes, random_state=0)
    return X.astype(np.float32), y


def make_net(**kwargs):
    kwargs = {"module": MLP, "max_epochs": 2, "lr": 0.1, "verbose": 0, **kwargs}
    return TiDALNetClassifier(**kwargs)


def snapshot(net):
    """Everything a failed call must leave as it was."""
    params = {k: v.clone() for k, v in net.module_.state_dict().items()}
    return params, len(net.history), np.asarray(net.classes_).tolist(), net.input_shape_


def assert_unchanged(net, before):
    params, n_epochs, classes, input_shape = snapshot(net)
    assert params.keys() == before[0].keys()
    assert all(torch.equal(params[k], before[0][k]) for k in params)
    assert (n_epochs, classes, input_shape) == before[1:]


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def fitted():
    """A fitted net shared by tests that only read it."""
    torch.manual_seed(0)
    X, y = blobs()
    return make_net().fit(X, y)


@pytest.fixture
def fresh_fit():
    X, y = blobs()
    return make_net().fit(X, y), X, y


class TestFitInput:
    @pytest.mark.parametrize(
        ("X", "match"),
        [
            (np.zeros(60, np.float32), "2D array"),
            (np.zeros((0, 4), np.float32), "0 sample"),
            (np.full((60, 4), np.nan, np.float32), "NaN"),
            (np.full((60, 4), np.inf, np.float32), "infinity"),
            (np.full((60, 4), "a"), "strings"),
            (np.full((60, 4), "a", dtype=object), "could not convert"),
            (pd.DataFrame({"a": ["x"] * 60, "b": 1.0}), r"non-numeric column\(s\): \['a' \(.*OneHotEncoder"),
            (torch.zeros((60, 4), dtype=torch.complex64), "complex numbers"),
        ],
        ids=["1d", "empty", "nan", "inf", "strings", "object-strings", "frame-strings", "complex-tensor"],
    )
    def test_bad_X_raises_and_keeps_the_fitted_net(self, fresh_fit, X, match):
        net, _, y = fresh_fit
        before = snapshot(net)
        with pytest.raises(ValueError, match=match):
            net.fit(X, y[: len(X)] if len(X) else y[:0])
        assert_unchanged(net, before)

    def test_nan_in_a_tensor(self):
        X, y = blobs()
        X[3, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            make_net().fit(torch.as_tensor(X), y)

    def test_meta_tensor(self):
        with pytest.raises(ValueError, match="meta"):
            make_net().fit(torch.empty((60, 4), device="meta"), blobs()[1])

    @pytest.mark.parametrize(
        "convert",
        [
            lambda X, y: (pd.DataFrame(X), pd.Series(y)),
            lambda X, y: (X.tolist(), y.tolist()),
            lambda X, y: (X.astype(np.float64), y),
            lambda X, y: (X.astype(object), y.astype(np.float64)),
            lambda X, y: (torch.as_tensor(X), torch.as_tensor(y)),
        ],
        ids=["pandas", "lists", "float64", "object-numbers", "tensors"],
    )
    def test_converts_what_should_just_work(self, convert, fitted):
        X, y = blobs()
        torch.manual_seed(0)
        net = make_net().fit(*convert(X, y))
        assert net.n_features_in_ == 4
        # the same values reach the module: the same training as on the float32 array
        np.testing.assert_allclose(net.predict_td(convert(X, y)[0]), fitted.predict_td(X), rtol=1e-6)

    def test_float64_is_cast_to_the_module_dtype(self, fitted):
        X, _ = blobs()
        np.testing.assert_allclose(fitted.predict_td(X.astype(np.float64)), fitted.predict_td(X), rtol=1e-6)

    def test_integer_features_are_cast(self):
        X, y = blobs()
        net = make_net().fit(X.round().astype(np.int64), y)
        np.testing.assert_array_equal(
            net.predict_td(X.round().astype(np.int32)), net.predict_td(X.round().astype(np.float32))
        )

    def test_integer_ids_reach_an_embedding(self):
        rng = np.random.RandomState(0)
        X, y = rng.randint(0, 10, size=(40, 5)), np.arange(40) % 3
        net = make_net(module=EmbeddingNet).fit(X, y)
        with torch.no_grad():
            expected = torch.softmax(net.infer_td(torch.as_tensor(X))[2], dim=1).numpy()
        np.testing.assert_allclose(net.predict_td(X), expected, rtol=1e-6)

    @pytest.mark.parametrize("as_dict", [True, False])
    def test_several_inputs_pass_through(self, as_dict):
        X, y = blobs()
        a, b = torch.as_tensor(X[:, :2]), torch.as_tensor(X[:, 2:])
        X = {"a": X[:, :2], "b": X[:, 2:]} if as_dict else (X[:, :2], X[:, 2:])
        net = make_net(module=TwoInputs).fit(X, y)
        with torch.no_grad():
            # each input in its place
            expected = torch.softmax(net.infer_td({"a": a, "b": b})[2], dim=1).numpy()
        np.testing.assert_allclose(net.predict_td(X), expected, rtol=1e-6)

    def test_warm_start_with_another_feature_count(self, fresh_fit):
        net, X, y = fresh_fit
        net.set_params(warm_start=True)
        before = snapshot(net)
        with pytest.raises(ValueError, match="X has 3 features, but TiDALNetClassifier is expecting 4"):
            net.fit(X[:, :3], y)
        assert_unchanged(net, before)


class TestLabels:
    @pytest.mark.parametrize(
        ("transform", "match"),
        [
            (lambda y: np.where(y == 0, np.nan, y), "NaN"),
            (lambda y: np.array(["a", "b", "c"])[y], "LabelEncoder"),
            (lambda y: y + 1, r"class\(es\) \[3\], but the module outputs 3 logits \(classes 0..2\)"),
            (lambda y: y - 1, r"class indices 0..C-1, got the label\(s\) \[-1\]"),
            (lambda y: y + 0.5, "Unknown label type"),
            (lambda y: y[:-1], "inconsistent numbers of samples"),
            (lambda y: np.eye(3)[y], r"one column per class \(one-hot.*pass y.argmax\(axis=1\)"),
        ],
        ids=["nan", "strings", "above-width", "negative", "continuous", "length", "one-hot"],
    )
    def test_bad_y_raises_and_keeps_the_fitted_net(self, fresh_fit, transform, match):
        net, X, y = fresh_fit
        before = snapshot(net)
        with pytest.raises(ValueError, match=match):
            net.fit(X, transform(y))
        assert_unchanged(net, before)

    def test_y_is_required(self):
        with pytest.raises(ValueError, match="y is required"):
            make_net().fit(blobs()[0])

    def test_declared_classes_allow_missing_ones(self):
        X, y = blobs(n_classes=2)
        net = make_net(classes=[0, 1, 2]).fit(X, y)  # the module has 3 outputs, class 2 unseen
        assert np.asarray(net.classes_).tolist() == [0, 1, 2]
        assert net.predict_proba(X).shape == (60, 3)
        predicted = net.predict(X)
        assert 2 not in predicted and (predicted == y).mean() > 0.9  # 0.97

    def test_declared_classes_take_a_later_class_with_warm_start(self):
        X, y = blobs()
        net = make_net(classes=[0, 1, 2], warm_start=True).fit(X[y < 2], y[y < 2])
        assert 2 not in net.predict(X[y < 2])  # the rows it was trained on
        net.fit(X, y)
        assert net.training_dynamics_.shape == (60, 3)
        assert (net.predict(X[y == 2]) == 2).mean() > 0.9  # the new class is learned (all 20 rows)

    def test_label_outside_the_declared_classes(self):
        X, y = blobs()
        with pytest.raises(ValueError, match=r"class\(es\) \[3\], which are not among the declared classes"):
            make_net(classes=[0, 1, 2]).fit(X, np.where(y == 2, 3, y))

    def test_declared_classes_must_be_indices(self):
        X, y = blobs()
        with pytest.raises(ValueError, match="must be the class indices 0..C-1"):
            make_net(classes=["a", "b", "c"]).fit(X, y)

    def test_classes_come_from_the_module_width(self):
        X, y = blobs(n_classes=2)
        net = make_net().fit(X, y)  # a cycle-0 set that misses class 2, classes not declared
        assert np.asarray(net.classes_).tolist() == [0, 1, 2]
        assert net.predict_proba(X).shape == (60, 3)
        assert net.training_dynamics_.shape == (60, 3)
        predicted = net.predict(X)
        assert 2 not in predicted and (predicted == y).mean() > 0.9

    def test_a_single_labeled_class_is_enough(self):
        X, y = blobs()
        net = make_net().fit(X[y == 1], y[y == 1])
        assert np.asarray(net.classes_).tolist() == [0, 1, 2]
        assert (net.predict(X[y == 1]) == 1).mean() > 0.9

    def test_declared_classes_must_match_the_module_width(self):
        X, y = blobs(n_classes=2)
        with pytest.raises(ValueError, match=r"outputs 3 logits, but the net knows 2 classes"):
            make_net(classes=[0, 1]).fit(X, y)

    def test_a_module_with_one_logit(self):
        X, y = blobs(n_classes=2)
        with pytest.raises(ValueError, match="outputs 1 logit; TiDALNetClassifier needs one logit per class"):
            make_net(module__n_classes=1).fit(X, y)

    def test_undeclared_new_class_with_warm_start(self):
        X, y = blobs()
        net = make_net(module__n_classes=2, warm_start=True).fit(X[y < 2], y[y < 2])
        before = snapshot(net)
        with pytest.raises(ValueError, match=r"\[2\], which are not among the classes the net was fitted on"):
            net.fit(X, y)
        assert_unchanged(net, before)

    def test_undeclared_new_class_without_warm_start(self):
        X, y = blobs()
        net = make_net(module__n_classes=2).fit(X[y < 2], y[y < 2])
        before = snapshot(net)
        with pytest.raises(ValueError, match=r"class\(es\) \[2\], but the module outputs 2 logits"):
            net.fit(X, y)
        assert_unchanged(net, before)

    def test_warm_start_keeps_the_classes_when_a_cycle_misses_one(self, fresh_fit):
        net, X, y = fresh_fit
        net.partial_fit(X[y < 2], y[y < 2])
        assert np.asarray(net.classes_).tolist() == [0, 1, 2]


class TestPredictInput:
    def test_uninitialized_net(self):
        with pytest.raises(NotInitializedError):
            make_net().predict_td(blobs()[0])
        assert issubclass(NotInitializedError, NotFittedError)

    def test_initialized_but_not_fitted(self):
        with pytest.raises(NotFittedError, match="initialized but not fitted"):
            make_net().initialize().predict_td(blobs()[0])

    @pytest.mark.parametrize(
        ("X", "match"),
        [
            (np.zeros((5, 3), np.float32), "X has 3 features, but TiDALNetClassifier is expecting 4"),
            (np.zeros(4, np.float32), "2D array"),
            (np.zeros((0, 4), np.float32), "0 sample"),
            (np.full((5, 4), np.nan, np.float32), "NaN"),
            (np.full((5, 4), "a"), "strings"),
            (torch.zeros(4), "2-D"),
            (torch.zeros((0, 4)), "0 rows"),
            (torch.full((5, 4), np.inf), "NaN or infinity"),
            (torch.zeros((5, 4), dtype=torch.complex64), "complex numbers"),
            (
                pd.DataFrame(np.zeros((5, 4))).astype({0: "category"}),
                r"non-numeric column\(s\): \[0 \(category\)",
            ),
        ],
        ids=[
            "features",
            "1d",
            "empty",
            "nan",
            "strings",
            "tensor-1d",
            "tensor-empty",
            "tensor-inf",
            "tensor-complex",
            "frame-category",
        ],
    )
    @pytest.mark.parametrize("method", ["predict_td", "predict_proba", "predict"])
    def test_bad_pool(self, fitted, X, match, method):
        with pytest.raises(ValueError, match=match):
            getattr(fitted, method)(X)

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
    def test_a_pool_on_another_device_is_moved_batch_by_batch(self, fitted):
        X = torch.as_tensor(blobs()[0])
        np.testing.assert_allclose(fitted.predict_td(X.cuda()), fitted.predict_td(X), rtol=1e-6)

    def test_image_shape(self):
        X = np.random.RandomState(0).rand(30, 1, 8, 8).astype(np.float32)
        net = make_net(module=ConvNet).fit(X, np.arange(30) % 3)
        assert net.input_shape_ == (1, 8, 8) and not hasattr(net, "n_features_in_")
        with pytest.raises(ValueError, match=r"rows of shape \(1, 6, 6\).*rows of shape \(1, 8, 8\)"):
            net.predict_td(X[:, :, :6, :6])

    @pytest.mark.parametrize("as_memmap", [False, True])
    def test_checking_a_large_pool_copies_nothing(self, fitted, tmp_path, as_memmap):
        shape = (100_000, 4)  # 1.6 MB
        if as_memmap:
            X = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float32, shape=shape)
        else:
            X = np.zeros(shape, np.float32)
        with peak_allocation() as peak:
            assert np.shares_memory(check_predict_input(fitted, X), X)
        assert peak["numpy"] + peak["torch"] < 200_000, peak  # an eighth of the pool


class TestFiniteBatch:
    def test_a_sum_that_overflows_is_not_taken_for_infinity(self):
        big = torch.full((4, 3), torch.finfo(torch.float32).max)
        assert not torch.isfinite(big.sum())
        check_finite_batch(big)  # every value is finite

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_nan_and_infinity_are_refused(self, bad):
        batch = torch.zeros(4, 3)
        batch[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            check_finite_batch(batch)

    def test_integer_batches_are_not_checked(self):
        check_finite_batch(torch.arange(6).reshape(2, 3))


class TestQueryInput:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"n_instances": 0}, ValueError, "n_instances must be a positive integer"),
            ({"n_instances": 2.0}, TypeError, "n_instances must be a positive integer"),
            ({"n_instances": True}, TypeError, "n_instances"),
            ({"n_instances": 61}, ValueError, "larger than the 60 candidates"),
            ({"n_instances": 11, "pool_subset": 10}, ValueError, "larger than the 10 candidates"),
            ({"pool_subset": 0}, ValueError, "pool_subset must be a positive integer"),
            ({"pool_subset": 0.5}, TypeError, "pool_subset"),
        ],
    )
    @pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
    def test_bad_arguments(self, fitted, strategy, kwargs, error, match):
        with pytest.raises(error, match=match):
            strategy(fitted, blobs()[0], **kwargs)

    def test_empty_pool(self, fitted):
        with pytest.raises(ValueError, match="empty"):
            tidal_entropy(fitted, np.zeros((0, 4), np.float32))

    def test_pool_with_nan(self, fitted):
        X = blobs()[0]
        X[7, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            tidal_entropy(fitted, X)

    def test_nan_in_a_pool_subset(self, fitted):
        """A row subset is not read up front; each batch is checked as it is scored."""
        X = blobs()[0]
        X[::2, 0] = np.nan
        with pytest.raises(ValueError, match="contains NaN or infinity"):
            tidal_margin(fitted, X, pool_subset=20, random_state=0)

    def test_a_diverged_net_is_not_queried_silently(self, fresh_fit):
        net, X, _ = fresh_fit
        with torch.no_grad():
            net.td_head_.bias.fill_(np.nan)
        with pytest.raises(ValueError, match="scores of the pool contain NaN or inf"):
            tidal_entropy(net, X)

    @pytest.mark.modal
    def test_learner_without_predict_td(self):
        X, y = blobs()
        forest = RandomForestClassifier(n_estimators=3)
        learner = TiDALActiveLearner(forest, tidal_entropy, X_training=X, y_training=y)
        with pytest.raises(TypeError, match="predict_td.*RandomForestClassifier"):
            learner.query(X, n_instances=3)

    def test_pipeline_not_ending_in_a_tidal_net(self):
        X, y = blobs()
        pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
        with pytest.raises(TypeError, match="Pipeline ending in one.*LogisticRegression"):
            tidal_margin(pipe, X)

    def test_pipeline_ending_in_a_tidal_net(self):
        X, y = blobs()
        pipe = make_pipeline(StandardScaler(), make_net()).fit(X, y)  # hands the net float64
        idx = tidal_margin(pipe, X, n_instances=3)
        assert len(idx[0] if MODAL_RETURNS_METRICS else idx) == 3


class TestPredictionParameters:
    """Parameters read when the net predicts: refused with the values that work, at ``fit`` too."""

    @pytest.mark.parametrize(
        "value, error",
        [(0, ValueError), (-5, ValueError), (100.0, InvalidParameterError), (True, InvalidParameterError)],
    )
    def test_a_batch_size_that_is_not_one(self, value, error):
        with pytest.raises(
            error, match=rf"size={value!r} is not a batch size\. Use a number of rows \(1 or more\)"
        ):
            check_prediction_batch_size(value, "size")
        assert check_prediction_batch_size(np.int64(7), "size") == 7
        assert check_prediction_batch_size(-1, "size") == -1

    @pytest.mark.parametrize("name", ["iterator_valid__batch_size", "batch_size"])
    @pytest.mark.parametrize("value", [0, -5, 2.5, "Auto"])
    def test_predictions_refuse_it_and_change_nothing(self, fresh_fit, name, value):
        # a pool sliced into batches of 0 rows was scored as no rows at all, silently
        net, X, _ = fresh_fit
        before, proba = snapshot(net), net.predict_proba(X)
        net.set_params(**{name: value})
        also = r", or 'auto'" if name.startswith("iterator") else r"\."
        with pytest.raises(
            ValueError, match=rf"{name}={value!r} is not a batch size\..*all rows at once\){also}"
        ):
            net.predict_proba(X)
        with pytest.raises(ValueError, match="is not a batch size"):
            tidal_entropy(net, X, n_instances=3) if name.startswith("iterator") else net.predict(X)
        assert_unchanged(net, before)
        np.testing.assert_array_equal(net.set_params(**{name: 16}).predict_proba(X), proba)

    def test_a_misspelt_scoring_dtype(self, fresh_fit):
        net, X, y = fresh_fit
        before = snapshot(net)
        for value in ("bf16", "int8", torch.int8, torch.float32):
            net.set_params(scoring_dtype=value)
            with pytest.raises(
                InvalidParameterError, match=rf"scoring_dtype={value!r} is not a precision.*'bfloat16'"
            ):
                net.predict_td(X)
            with pytest.raises(InvalidParameterError, match="is not a precision"):
                net.fit(X, y)  # before training, not at the first query
            with pytest.raises(InvalidParameterError, match="is not a precision"):
                net.partial_fit(X, y)
            assert_unchanged(net, before)
        assert (
            check_scoring_dtype("bfloat16") is torch.bfloat16
            and check_scoring_dtype(torch.float16) is torch.float16
        )
        assert check_scoring_dtype(None) is None
        assert net.set_params(scoring_dtype="bfloat16").predict_td(X).dtype == np.float32
