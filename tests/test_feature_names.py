"""DataFrames: the net records their column names as scikit-learn does, reads a pool's columns by
name, and refuses non-numeric columns by name (tidal_modal.validation.check_columns)."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.compose import make_column_transformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tidal_modal import TiDALActiveLearner, tidal_entropy, tidal_margin
from tidal_modal.strategies import MODAL_RETURNS_METRICS

from .test_validation import blobs, make_net

pd = pytest.importorskip("pandas")

COLUMNS = ["height", "weight", "age", "score"]
SHUFFLED = ["score", "age", "height", "weight"]


def frame(X, columns=COLUMNS):
    return pd.DataFrame(X, columns=columns)


def indices_of(result):
    return result[0] if MODAL_RETURNS_METRICS else result


def weights(net):
    """Copies of every weight of the net: the module's and the TD head's."""
    return [{k: v.clone() for k, v in module.state_dict().items()} for module in (net.module_, net.td_head_)]


def assert_same_weights(net, before):
    for module, state in zip((net.module_, net.td_head_), before, strict=True):
        now = module.state_dict()
        assert now.keys() == state.keys()
        assert all(torch.equal(now[k], state[k]) for k in now)


@pytest.fixture(scope="module")
def data():
    X, y = blobs()
    return frame(X), y


@pytest.fixture(scope="module")
def fitted(data):
    """A net fitted on a DataFrame, shared by the tests that only read it."""
    torch.manual_seed(0)
    return make_net().fit(*data)


@pytest.fixture
def fresh(data):
    torch.manual_seed(0)
    return make_net().fit(*data)


class TestRecording:
    def test_string_column_names_are_recorded(self, fitted):
        assert isinstance(fitted.feature_names_in_, np.ndarray)
        assert fitted.feature_names_in_.dtype == object
        assert fitted.feature_names_in_.tolist() == COLUMNS
        assert fitted.n_features_in_ == 4 and fitted.input_shape_ == (4,)

    @pytest.mark.parametrize(
        "columns", [None, [0, 1, 2, 3], [1.5, 2.5, 3.5, 4.5]], ids=["range", "ints", "floats"]
    )
    def test_other_column_names_are_not_feature_names(self, columns):
        X, y = blobs()
        net = make_net().fit(pd.DataFrame(X, columns=columns), y)
        assert not hasattr(net, "feature_names_in_")
        assert net.n_features_in_ == 4

    def test_mixed_column_name_types_are_refused_as_in_scikit_learn(self):
        X, y = blobs()
        with pytest.raises(TypeError, match=r"only supported if all input features have string names"):
            make_net().fit(pd.DataFrame(X, columns=["a", "b", 2, 3]), y)

    def test_arrays_and_tensors_record_no_names(self):
        X, y = blobs()
        assert not hasattr(make_net().fit(X, y), "feature_names_in_")
        assert not hasattr(make_net().fit(torch.as_tensor(X), y), "feature_names_in_")

    def test_partial_fit_records_them(self, data):
        net = make_net().partial_fit(*data)
        assert net.feature_names_in_.tolist() == COLUMNS

    def test_a_fit_from_scratch_resets_them(self, fresh, data):
        X, y = data
        fresh.fit(X.to_numpy(), y)  # warm_start=False: a new net
        assert not hasattr(fresh, "feature_names_in_")
        fresh.fit(frame(X.to_numpy(), ["a", "b", "c", "d"]), y)
        assert fresh.feature_names_in_.tolist() == ["a", "b", "c", "d"]

    def test_they_survive_pickling(self, fitted, data):
        clone = pickle.loads(pickle.dumps(fitted))
        assert clone.feature_names_in_.tolist() == COLUMNS
        np.testing.assert_array_equal(clone.predict_td(data[0][SHUFFLED]), fitted.predict_td(data[0]))

    def test_a_failed_fit_keeps_the_names_of_the_last_one(self, fresh, data):
        X, y = data
        with pytest.raises(ValueError, match="NaN"):
            fresh.fit(frame(X.to_numpy(), ["a", "b", "c", "d"]), np.where(y == 0, np.nan, y))
        assert fresh.feature_names_in_.tolist() == COLUMNS
        assert "_tidal_feature_names_of_fit" not in vars(fresh)


class TestPoolColumns:
    def test_reordered_columns_are_read_in_the_fitted_order(self, fitted, data):
        X, _ = data
        td, proba = fitted.predict_td(X, return_proba=True)
        shuffled = X[SHUFFLED]
        before = shuffled.copy()
        got_td, got_proba = fitted.predict_td(shuffled, return_proba=True)
        np.testing.assert_array_equal(got_td, td)
        np.testing.assert_array_equal(got_proba, proba)
        np.testing.assert_array_equal(fitted.predict(shuffled), fitted.predict(X))
        pd.testing.assert_frame_equal(shuffled, before)  # the caller's DataFrame is not reordered

    @pytest.mark.parametrize("strategy", [tidal_entropy, tidal_margin])
    @pytest.mark.parametrize("pool_subset", [None, 25])
    def test_a_reordered_pool_gives_the_same_query(self, fitted, data, strategy, pool_subset):
        X, _ = data
        kwargs = {"n_instances": 5, "pool_subset": pool_subset, "random_state": 0}
        expected = indices_of(strategy(fitted, X, **kwargs))
        np.testing.assert_array_equal(indices_of(strategy(fitted, X[SHUFFLED], **kwargs)), expected)
        with pytest.warns(UserWarning, match="X does not have valid feature names"):
            np.testing.assert_array_equal(indices_of(strategy(fitted, X.to_numpy(), **kwargs)), expected)

    @pytest.mark.parametrize(
        ("columns", "match"),
        [
            (COLUMNS[:3], r"missing: \['score'\]"),
            ([*COLUMNS, "extra"], r"unexpected: \['extra'\]"),
            (["height", "weight", "age", "grade"], r"missing: \['score'\]; unexpected: \['grade'\]"),
            (["height", "weight", "age", "age"], r"repeated column names \['age'\].*Rename or drop"),
        ],
        ids=["missing", "extra", "renamed", "repeated"],
    )
    @pytest.mark.parametrize("method", ["predict_td", "predict_proba", "predict", "query"])
    def test_other_columns_are_refused_with_both_lists(self, fitted, data, columns, match, method):
        X, _ = data
        pool = pd.DataFrame(X.to_numpy()[:, [i % 4 for i in range(len(columns))]], columns=columns)
        call = (lambda P: tidal_entropy(fitted, P)) if method == "query" else getattr(fitted, method)
        with pytest.raises(ValueError, match=match) as error:
            call(pool)
        if len(set(columns)) == len(columns):
            assert "exactly the columns ['height', 'weight', 'age', 'score'] (in any order" in str(
                error.value
            )

    def test_the_same_names_twice(self, fitted, data):
        X, _ = data
        pool = pd.DataFrame(X.to_numpy()[:, [0, 1, 2, 3, 3]], columns=[*COLUMNS, "score"])
        with pytest.raises(ValueError, match=r"repeated column names \['score'\]"):
            fitted.predict_td(pool)

    def test_an_array_pool_works_with_scikit_learns_warning(self, fitted, data):
        X, _ = data
        with pytest.warns(UserWarning, match="X does not have valid feature names, but TiDALNetClassifier"):
            td = fitted.predict_td(X.to_numpy())
        np.testing.assert_array_equal(td, fitted.predict_td(X))

    def test_a_frame_pool_for_a_net_fitted_on_arrays_warns(self):
        X, y = blobs()
        net = make_net().fit(X, y)
        with pytest.warns(
            UserWarning, match="X has feature names, but TiDALNetClassifier was fitted without"
        ):
            td = net.predict_td(frame(X))
        np.testing.assert_array_equal(td, net.predict_td(X))

    def test_a_frame_of_the_fitted_names_does_not_warn(self, fitted, data):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fitted.predict_td(data[0])
            fitted.predict_td(data[0][SHUFFLED])


class TestWarmStart:
    def test_reordered_columns_train_as_the_fitted_order(self, data):
        X, y = data
        nets = []
        for columns in (COLUMNS, SHUFFLED):
            torch.manual_seed(0)
            net = make_net(warm_start=True).fit(X, y)
            torch.manual_seed(1)
            net.fit(X[columns], y)
            nets.append(net)
        assert nets[1].feature_names_in_.tolist() == COLUMNS
        np.testing.assert_array_equal(nets[1].predict_td(X), nets[0].predict_td(X))

    @pytest.mark.parametrize("method", ["fit", "partial_fit"])
    def test_other_columns_are_refused_and_change_nothing(self, fresh, data, method):
        X, y = data
        fresh.set_params(warm_start=True)
        before, epochs = weights(fresh), len(fresh.history)
        renamed = X.rename(columns={"age": "years"})
        with pytest.raises(
            ValueError, match=r"missing: \['age'\]; unexpected: \['years'\].*warm_start=False"
        ):
            getattr(fresh, method)(renamed, y)
        assert_same_weights(fresh, before)
        assert len(fresh.history) == epochs
        assert fresh.feature_names_in_.tolist() == COLUMNS
        assert list(renamed.columns) == ["height", "weight", "years", "score"]

    def test_an_array_keeps_the_names_with_scikit_learns_warning(self, fresh, data):
        X, y = data
        with pytest.warns(UserWarning, match="X does not have valid feature names"):
            fresh.partial_fit(X.to_numpy(), y)
        assert fresh.feature_names_in_.tolist() == COLUMNS


class TestNonNumericColumns:
    @pytest.mark.parametrize(
        ("column", "dtype_name"),
        [
            (lambda n: np.array(["a", "b", "c"])[np.arange(n) % 3], "str|object"),
            (lambda n: pd.Categorical(np.array(["a", "b"])[np.arange(n) % 2]), "category"),
            (lambda n: pd.date_range("2024-01-01", periods=n), "datetime"),
            (lambda n: np.array(["1", "x"] * (n // 2), dtype=object), "str|object"),
        ],
        ids=["strings", "category", "dates", "object-strings"],
    )
    def test_fit_names_them_and_the_fix(self, fresh, data, column, dtype_name):
        X, y = data
        bad = X.assign(city=column(len(X)))
        before, copy = weights(fresh), bad.copy()
        with pytest.raises(
            ValueError, match=rf"1 non-numeric column\(s\): \['city' \(({dtype_name})"
        ) as error:
            fresh.fit(bad, y)
        assert "OneHotEncoder" in str(error.value) and "OrdinalEncoder" in str(error.value)
        assert "['city']" in str(error.value)  # in the example of the fix
        assert_same_weights(fresh, before)
        pd.testing.assert_frame_equal(bad, copy)

    def test_prediction_and_queries_name_them_too(self, fitted, data):
        X, _ = data
        bad = X.assign(height=X["height"].astype(str), age=X["age"].astype("category"))
        for call in (fitted.predict_td, fitted.predict_proba, lambda P: tidal_margin(fitted, P)):
            with pytest.raises(
                ValueError, match=r"2 non-numeric column\(s\): \['height' \(.*\), 'age' \(category\)\]"
            ):
                call(bad)

    def test_numbers_held_as_objects_and_booleans_are_numbers(self, data):
        X, y = data
        X = X.assign(height=X["height"].astype(object), flag=np.arange(len(X)) % 2 == 0)
        net = make_net().fit(X, y)
        assert net.feature_names_in_.tolist() == [*COLUMNS, "flag"]
        assert net.predict_td(X).shape == (len(X), 3)

    def test_many_columns_are_counted_not_listed(self, data):
        X, y = data
        bad = pd.concat([X, pd.DataFrame({f"s{i}": ["x"] * len(X) for i in range(15)})], axis=1)
        with pytest.raises(ValueError, match=r"15 non-numeric column\(s\): .*\.\.\. \(5 more\)"):
            make_net().fit(bad, y)


class TestLearner:
    def test_teach_and_query_with_dataframes(self, data):
        X, y = data
        torch.manual_seed(0)
        learner = TiDALActiveLearner(make_net(), X_training=X.iloc[:20], y_training=y[:20])
        assert learner.estimator.feature_names_in_.tolist() == COLUMNS
        pool = X.iloc[20:][SHUFFLED]
        idx, rows = learner.query(pool, n_instances=4, random_state=0)
        np.testing.assert_array_equal(idx, learner.query(X.iloc[20:], n_instances=4, random_state=0)[0])
        assert list(rows.columns) == SHUFFLED  # the user's rows, as they are
        learner.teach(rows, y[20:][idx])  # aligned by name on the labeled DataFrame
        assert list(learner.X_training.columns) == COLUMNS and len(learner.X_training) == 24
        np.testing.assert_array_equal(
            learner.X_training.iloc[20:].to_numpy(), X.iloc[20:].iloc[idx].to_numpy()
        )

    def test_a_pipeline_encodes_the_strings(self, data):
        X, y = data
        X = X.assign(city=np.array(["paris", "oslo", "rome"])[np.arange(len(X)) % 3])
        encode = make_column_transformer(
            (OneHotEncoder(sparse_output=False), ["city"]), remainder=StandardScaler()
        )
        torch.manual_seed(0)
        learner = TiDALActiveLearner(
            make_pipeline(encode, make_net()), X_training=X.iloc[:30], y_training=y[:30]
        )
        idx, rows = learner.query(X.iloc[30:], n_instances=3, random_state=0)
        assert len(idx) == 3 and list(rows.columns) == list(X.columns)
        learner.teach(rows, y[30:][idx])
        assert len(learner.X_training) == 33
