"""Misuse of the newer surfaces, as a user would misuse them: each mistake gets an error that
names the problem and the fix, and leaves the learner, its net (every weight) and the user's
data as they were.

DataFrames through :class:`~tidal_modal.TiDALActiveLearner`, callbacks that raise while it is
taught, dask pools with bad blocks, Pipelines, tensors of the wrong dtype, ``n_instances`` and
``pool_subset`` at and past their limits, labels the module cannot take.
"""

import copy

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy, tidal_margin

from .test_validation import EmbeddingNet, blobs, make_net

pd = pytest.importorskip("pandas")

COLUMNS = ["height", "weight", "age", "score"]


# --- what must not change ----------------------------------------------------------------------


def _copy_data(data):
    if data is None:
        return None
    if isinstance(data, torch.Tensor):
        return data.clone()
    if hasattr(data, "copy"):
        return data.copy()  # arrays, DataFrames, Series
    return copy.deepcopy(data)


def assert_same_data(data, before):
    """The user's (or the learner's) data hold what they held: values, dtype, columns."""
    if isinstance(before, pd.DataFrame):
        pd.testing.assert_frame_equal(data, before)
    elif isinstance(before, pd.Series):
        pd.testing.assert_series_equal(data, before)
    elif isinstance(before, torch.Tensor):
        assert data.dtype == before.dtype and torch.equal(data, before)
    else:
        before = np.asarray(before)
        assert np.asarray(data).dtype == before.dtype
        np.testing.assert_array_equal(np.asarray(data), before)


def the_net(learner):
    estimator = learner.estimator
    return estimator[-1] if hasattr(estimator, "steps") else estimator


def snapshot(learner):
    """Everything a failed call must leave as it was."""
    net = the_net(learner)
    return {
        "module": {k: v.clone() for k, v in net.module_.state_dict().items()},
        "head": {k: v.clone() for k, v in net.td_head_.state_dict().items()},
        "X_ref": learner.X_training,
        "y_ref": learner.y_training,
        "X": _copy_data(learner.X_training),
        "y": _copy_data(learner.y_training),
        "epochs": len(net.history),
        "names": getattr(net, "feature_names_in_", None),
        "classes": np.asarray(net.classes_).tolist(),
        "input_shape": net.input_shape_,
        "dynamics": net.training_dynamics_.copy(),
        "steps": [copy.deepcopy(vars(step)) for _, step in getattr(learner.estimator, "steps", [])[:-1]],
    }


def assert_unchanged(learner, before):
    net = the_net(learner)
    for name, module in (("module", net.module_), ("head", net.td_head_)):
        state = module.state_dict()
        assert state.keys() == before[name].keys()
        assert all(torch.equal(state[k], before[name][k]) for k in state), name
    assert learner.X_training is before["X_ref"] and learner.y_training is before["y_ref"]
    assert_same_data(learner.X_training, before["X"])
    assert_same_data(learner.y_training, before["y"])
    assert len(net.history) == before["epochs"]
    names = getattr(net, "feature_names_in_", None)
    assert (names is None and before["names"] is None) or list(names) == list(before["names"])
    assert np.asarray(net.classes_).tolist() == before["classes"]
    assert net.input_shape_ == before["input_shape"]
    np.testing.assert_array_equal(net.training_dynamics_, before["dynamics"])
    for (_, step), attributes in zip(
        getattr(learner.estimator, "steps", [])[:-1], before["steps"], strict=True
    ):
        assert vars(step).keys() == attributes.keys()
        for key, value in attributes.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(vars(step)[key], value)


def refused(learner, call, *user_data, error=ValueError, match):
    """``call()`` raises ``error`` matching ``match`` and changes neither the learner nor the data."""
    before, data = snapshot(learner), [_copy_data(d) for d in user_data]
    with pytest.raises(error, match=match) as info:
        call()
    assert_unchanged(learner, before)
    for d, b in zip(user_data, data, strict=True):
        assert_same_data(d, b)
    return str(info.value)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def data():
    X, y = blobs(n=80)
    return pd.DataFrame(X, columns=COLUMNS), y


@pytest.fixture
def frame_learner(data):
    """A learner whose labeled data and net are a DataFrame's."""
    X, y = data
    torch.manual_seed(0)
    return TiDALActiveLearner(make_net(), X_training=X.iloc[:30], y_training=y[:30])


@pytest.fixture
def learner():
    X, y = blobs(n=80)
    torch.manual_seed(0)
    return TiDALActiveLearner(make_net(), X_training=X[:30], y_training=y[:30])


def query_indices(learner, pool, **kwargs):
    return learner.query(pool, **kwargs)[0]


# --- DataFrames through the learner ------------------------------------------------------------


class TestDataFrames:
    def test_teach_with_a_missing_column(self, frame_learner, data):
        X, y = data
        rows = X.iloc[30:35].drop(columns="age")
        message = refused(frame_learner, lambda: frame_learner.teach(rows, y[30:35]), rows, match="missing")
        assert "['age']" in message and "exactly the columns" in message

    def test_teach_with_an_extra_column(self, frame_learner, data):
        X, y = data
        rows = X.iloc[30:35].assign(bmi=1.0)
        message = refused(
            frame_learner, lambda: frame_learner.teach(rows, y[30:35]), rows, match="unexpected"
        )
        assert "['bmi']" in message

    def test_teach_with_a_non_numeric_column(self, frame_learner, data):
        X, y = data
        rows = X.iloc[30:35].assign(age=["young", "old", "old", "young", "old"])
        message = refused(
            frame_learner, lambda: frame_learner.teach(rows, y[30:35]), rows, match=r"non-numeric.*'age'"
        )
        assert "OneHotEncoder" in message

    def test_teach_with_repeated_columns(self, frame_learner, data):
        X, y = data
        rows = pd.DataFrame(X.iloc[30:35].to_numpy()[:, [0, 1, 2, 3, 3]], columns=[*COLUMNS, "score"])
        refused(frame_learner, lambda: frame_learner.teach(rows, y[30:35]), rows, match="repeated")

    def test_teach_an_array_of_another_width(self, frame_learner, data):
        X, y = data
        rows = X.iloc[30:35].to_numpy()[:, :3]
        refused(frame_learner, lambda: frame_learner.teach(rows, y[30:35]), rows, match="different shapes")

    def test_teach_with_reordered_columns_is_aligned_by_name(self, frame_learner, data):
        X, y = data
        ordered = copy.deepcopy(frame_learner)
        rows = X.iloc[30:35]
        torch.manual_seed(1)
        ordered.teach(rows, y[30:35])
        torch.manual_seed(1)
        frame_learner.teach(rows[COLUMNS[::-1]], y[30:35])
        pd.testing.assert_frame_equal(frame_learner.X_training, ordered.X_training)
        np.testing.assert_array_equal(frame_learner.estimator.predict_td(X), ordered.estimator.predict_td(X))

    @pytest.mark.parametrize(
        ("change", "match"),
        [
            (lambda P: P.drop(columns="weight"), r"missing: \['weight'\]"),
            (lambda P: P.assign(extra=0.0), r"unexpected: \['extra'\]"),
            (lambda P: P.assign(weight=P["weight"].astype(str)), r"non-numeric column\(s\): \['weight'"),
            (lambda P: P.iloc[:0], "empty|0 sample"),
        ],
        ids=["missing", "extra", "non-numeric", "empty"],
    )
    @pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
    def test_query_a_bad_pool(self, frame_learner, data, change, match, strategy):
        frame_learner.query_strategy = strategy
        pool = change(data[0].iloc[30:])
        refused(frame_learner, lambda: frame_learner.query(pool, n_instances=3), pool, match=match)

    def test_a_failed_query_leaves_the_next_one_as_it_would_have_been(self, frame_learner, data):
        pool = data[0].iloc[30:]
        expected = query_indices(frame_learner, pool, n_instances=4, random_state=0)
        with pytest.raises(ValueError):
            frame_learner.query(pool.drop(columns="age"), n_instances=4, random_state=0)
        np.testing.assert_array_equal(
            query_indices(frame_learner, pool, n_instances=4, random_state=0), expected
        )


# --- callbacks that raise while the learner is taught ------------------------------------------


class Bomb(Callback):
    """Raises ``error`` in ``event`` once armed (not during the learner's first fit)."""

    def __init__(self, event, error=RuntimeError):
        self.event, self.error, self.armed = event, error, False

    def _maybe_explode(self, event):
        if self.armed and event == self.event:
            raise self.error(f"boom in {event}")

    def initialize(self):
        self._maybe_explode("initialize")
        return self

    def on_train_begin(self, net, **kwargs):
        self._maybe_explode("on_train_begin")

    def on_epoch_begin(self, net, **kwargs):
        self._maybe_explode("on_epoch_begin")

    def on_batch_begin(self, net, **kwargs):
        self._maybe_explode("on_batch_begin")

    def on_grad_computed(self, net, named_parameters, **kwargs):
        self._maybe_explode("on_grad_computed")

    def on_batch_end(self, net, **kwargs):
        self._maybe_explode("on_batch_end")

    def on_epoch_end(self, net, **kwargs):
        self._maybe_explode("on_epoch_end")

    def on_train_end(self, net, **kwargs):
        self._maybe_explode("on_train_end")


class TestCallbacksThatRaise:
    @pytest.mark.parametrize(
        "event",
        [
            "initialize",
            "on_train_begin",
            "on_epoch_begin",
            "on_batch_begin",
            "on_grad_computed",
            "on_batch_end",
            "on_epoch_end",
            "on_train_end",
        ],
    )
    @pytest.mark.parametrize("warm_start", [False, True])
    def test_teach_restores_everything(self, event, warm_start):
        if warm_start and event == "initialize":
            pytest.skip("a warm-started fit does not initialize its callbacks again")
        X, y = blobs(n=80)
        bomb = Bomb(event)
        torch.manual_seed(0)
        net = make_net(callbacks=[("bomb", bomb)], warm_start=warm_start)
        learner = TiDALActiveLearner(net, X_training=X[:30], y_training=y[:30])
        bomb.armed = True
        rows, labels = X[30:35].copy(), y[30:35].copy()
        refused(learner, lambda: learner.teach(rows, labels), rows, labels, error=RuntimeError, match=event)
        bomb.armed = False  # the learner is usable afterwards, with the rows taught once
        learner.teach(rows, labels)
        assert len(learner.y_training) == 35

    def test_a_keyboard_interrupt_after_training_restores_too(self):
        X, y = blobs(n=80)
        bomb = Bomb("on_train_end", KeyboardInterrupt)
        torch.manual_seed(0)
        learner = TiDALActiveLearner(make_net(callbacks=[bomb]), X_training=X[:30], y_training=y[:30])
        bomb.armed = True
        refused(learner, lambda: learner.teach(X[30:35], y[30:35]), error=KeyboardInterrupt, match="boom")


# --- dask pools --------------------------------------------------------------------------------


class TestDaskPools:
    @pytest.fixture(autouse=True)
    def synchronous(self):
        dask = pytest.importorskip("dask")
        pytest.importorskip("dask.array")
        with dask.config.set(scheduler="synchronous"):  # Dask's local scheduler, in this thread
            yield

    @pytest.mark.parametrize(
        ("make_pool", "match"),
        [
            (lambda X: np.where(np.arange(len(X))[:, None] == 17, np.nan, X), "NaN or infinity"),
            (lambda X: X[:, :3], "X has 3 features, but TiDALNetClassifier is expecting 4"),
            (lambda X: X[:, 0], "Expected 2D array"),
            (lambda X: X.astype(str), "numeric"),
            (lambda X: X[:0], "X_pool is empty"),
        ],
        ids=["nan-in-one-block", "width", "1d", "strings", "empty"],
    )
    def test_bad_blocks(self, learner, make_pool, match):
        import dask.array as da

        values = make_pool(blobs(n=80)[0][30:])
        chunks = (7,) + values.shape[1:]
        pool = da.from_array(values, chunks=chunks if len(values) else (1,) + values.shape[1:])
        refused(learner, lambda: learner.query(pool, n_instances=3), values, match=match)

    def test_a_block_that_cannot_be_computed(self, learner):
        import dask.array as da

        values = blobs(n=80)[0][30:]

        def read(block, block_info=None):
            if block_info[0]["chunk-location"][0] == 2:
                raise OSError("the third file of the pool is unreadable")
            return block

        pool = da.from_array(values, chunks=(10, 4)).map_blocks(read, dtype=values.dtype)
        refused(
            learner, lambda: learner.query(pool, n_instances=3), values, error=OSError, match="third file"
        )

    def test_too_many_instances(self, learner):
        import dask.array as da

        pool = da.from_array(blobs(n=80)[0][30:], chunks=(7, 4))
        refused(learner, lambda: learner.query(pool, n_instances=51), match="larger than the 50 candidates")

    def test_blocks_split_across_columns_give_the_in_memory_query(self, learner):
        import dask.array as da

        values = blobs(n=80)[0][30:]
        expected = query_indices(learner, values, n_instances=4, random_state=0)
        pool = da.from_array(values, chunks=(50, 2))  # every row whole in one block of rows
        np.testing.assert_array_equal(query_indices(learner, pool, n_instances=4, random_state=0), expected)


# --- Pipelines ---------------------------------------------------------------------------------


class TestPipelines:
    @pytest.fixture
    def pipe_learner(self):
        X, y = blobs(n=80)
        torch.manual_seed(0)
        pipe = make_pipeline(StandardScaler(), make_net())
        return TiDALActiveLearner(pipe, X_training=X[:30] * 10, y_training=y[:30])

    def test_labels_the_module_cannot_take_restore_the_scaler_too(self, pipe_learner):
        X, y = blobs(n=80)
        rows, labels = X[30:35], np.array([0, 1, 2, 3, 1])
        refused(
            pipe_learner,
            lambda: pipe_learner.teach(rows, labels),
            rows,
            labels,
            match=r"class\(es\) \[3\], but the module outputs 3 logits",
        )

    def test_a_frame_pool_for_a_pipeline_fitted_on_arrays(self, pipe_learner):
        X, _ = blobs(n=80)
        pool = pd.DataFrame(X[30:], columns=COLUMNS)
        with pytest.warns(UserWarning, match="fitted without feature names"):  # scikit-learn's scaler
            idx = query_indices(pipe_learner, pool, n_instances=3, random_state=0)
        np.testing.assert_array_equal(idx, query_indices(pipe_learner, X[30:], n_instances=3, random_state=0))

    def test_a_pipeline_fitted_on_a_frame_follows_scikit_learn(self, data):
        """The scaler, not the net, reads the pool first: scikit-learn's rule (same order) holds."""
        X, y = data
        torch.manual_seed(0)
        learner = TiDALActiveLearner(
            make_pipeline(StandardScaler(), make_net()), X_training=X.iloc[:30], y_training=y[:30]
        )
        pool = X.iloc[30:][COLUMNS[::-1]]
        refused(
            learner, lambda: learner.query(pool, n_instances=3), pool, match="same order as they were in fit"
        )


# --- tensors of the wrong dtype ----------------------------------------------------------------


class TestTensorDtypes:
    def test_fractions_into_integer_ids_are_refused(self):
        rng = np.random.RandomState(0)
        X, y = torch.as_tensor(rng.randint(0, 10, size=(40, 5))), np.arange(40) % 3
        torch.manual_seed(0)
        learner = TiDALActiveLearner(make_net(module=EmbeddingNet), X_training=X[:20], y_training=y[:20])
        rows = X[20:25].double() + 0.5
        message = refused(learner, lambda: learner.teach(rows, y[20:25]), rows, match="float64")
        assert "int64" in message and "dtype" in message

    def test_integral_floats_join_integer_ids(self):
        rng = np.random.RandomState(0)
        X, y = torch.as_tensor(rng.randint(0, 10, size=(40, 5))), np.arange(40) % 3
        torch.manual_seed(0)
        learner = TiDALActiveLearner(make_net(module=EmbeddingNet), X_training=X[:20], y_training=y[:20])
        learner.teach(X[20:25].double(), y[20:25])
        assert learner.X_training.dtype == torch.int64 and torch.equal(learner.X_training, X[:25])

    def test_float64_rows_join_a_float32_tensor(self, learner):
        X, y = blobs(n=80)
        learner.X_training = torch.as_tensor(learner.X_training)
        learner.teach(torch.as_tensor(X[30:35], dtype=torch.float64), y[30:35])
        assert learner.X_training.dtype == torch.float32 and len(learner.X_training) == 35

    def test_a_complex_pool_is_refused(self, learner):
        pool = torch.as_tensor(blobs(n=80)[0][30:]).to(torch.complex64)
        refused(learner, lambda: learner.query(pool, n_instances=3), pool, match="complex")

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
    def test_pools_of_other_dtypes_are_cast(self, learner, dtype):
        values = np.round(blobs(n=80)[0][30:]) if not dtype.is_floating_point else blobs(n=80)[0][30:]
        pool = torch.as_tensor(values).to(dtype)
        as_float32 = pool.to(torch.float32).numpy()
        np.testing.assert_array_equal(
            query_indices(learner, pool, n_instances=3), query_indices(learner, as_float32, n_instances=3)
        )


# --- n_instances, pool_subset ------------------------------------------------------------------


class TestInstancesAndSubsets:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"n_instances": 51}, ValueError, "n_instances=51 is larger than the 50 candidates"),
            ({"n_instances": 6, "pool_subset": 5}, ValueError, r"larger than the 5 candidates \(pool_subset"),
            ({"n_instances": 0}, ValueError, "positive integer"),
            ({"n_instances": 2.0}, TypeError, "positive integer"),
            ({"pool_subset": 0}, ValueError, "pool_subset must be a positive integer"),
            ({"pool_subset": True}, TypeError, "pool_subset must be a positive integer"),
            ({"pool_subset": 2.5}, TypeError, "pool_subset"),
        ],
        ids=["n>pool", "n>subset", "n=0", "n-float", "subset=0", "subset-bool", "subset-float"],
    )
    def test_refused(self, learner, kwargs, error, match):
        pool = blobs(n=80)[0][30:]
        refused(learner, lambda: learner.query(pool, **kwargs), pool, error=error, match=match)

    def test_a_subset_as_large_as_the_pool_or_larger_is_the_pool(self, learner):
        pool = blobs(n=80)[0][30:]
        expected = query_indices(learner, pool, n_instances=3, random_state=0)
        for subset in (50, 51, 10**9, np.int64(50)):
            idx = query_indices(learner, pool, n_instances=3, pool_subset=subset, random_state=0)
            np.testing.assert_array_equal(idx, expected)

    def test_the_whole_subset_and_all_of_the_pool(self, learner):
        pool = blobs(n=80)[0][30:]
        idx = query_indices(learner, pool, n_instances=5, pool_subset=5, random_state=0)
        assert len(set(idx.tolist())) == 5
        everything = query_indices(learner, pool, n_instances=50)
        assert sorted(everything.tolist()) == list(range(50))
        one = blobs(n=80)[0][30:31]
        assert query_indices(learner, one, n_instances=1).tolist() == [0]


# --- labels ------------------------------------------------------------------------------------


class TestLabels:
    @pytest.mark.parametrize(
        ("labels", "match"),
        [
            (np.array([0, 1, 3, 1, 0]), r"class\(es\) \[3\], but the module outputs 3 logits"),
            (np.array([0, 1, -1, 1, 0]), r"class indices 0..C-1, got the label\(s\) \[-1\]"),
            (np.array([0, 1, 1.5, 1, 0]), r"float64.*cannot hold.*fractions"),
            (np.array(["cat", "dog", "cat", "dog", "cat"]), "LabelEncoder"),
            (np.eye(3)[[0, 1, 2, 1, 0]], r"one-hot.*y.argmax\(axis=1\)"),
            (np.array([0, 1, 2]), "X has 5 rows but y has 3 labels"),
        ],
        ids=["above-width", "negative", "fraction", "strings", "one-hot", "length"],
    )
    def test_teach_refuses_them(self, learner, labels, match):
        rows = blobs(n=80)[0][30:35]
        refused(learner, lambda: learner.teach(rows, labels), rows, labels, match=match)

    def test_a_single_row_and_a_single_label(self, learner):
        X, y = blobs(n=80)
        refused(learner, lambda: learner.teach(X[30], y[30:31]), match=r"X is 1-D.*X\[\[i\]\]")
        refused(learner, lambda: learner.teach(X[[30]], y[30]), match=r"single label.*\[label\]")
        learner.teach(X[[30]], [y[30]])  # as the messages say
        assert len(learner.y_training) == 31

    def test_labels_outside_declared_classes_of_a_frame_learner(self, data):
        X, y = data
        torch.manual_seed(0)
        net = TiDALNetClassifier(make_net().module, classes=[0, 1, 2], max_epochs=2, lr=0.1, verbose=0)
        learner = TiDALActiveLearner(net, X_training=X.iloc[:30], y_training=pd.Series(y[:30]))
        rows, labels = X.iloc[30:33], pd.Series([0, 4, 1])
        refused(
            learner,
            lambda: learner.teach(rows, labels),
            rows,
            labels,
            match=r"class\(es\) \[4\], which are not among the declared classes",
        )
