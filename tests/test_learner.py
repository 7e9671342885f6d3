"""Nothing is lost when a query or a teach fails (tidal_modal.learner)."""

import numpy as np
import pytest
import torch
from modAL.models import ActiveLearner, Committee
from sklearn.datasets import make_blobs
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback
from torch import nn

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier, tidal_entropy, tidal_margin
from tidal_modal.strategies import MODAL_RETURNS_METRICS

from .models import MLP, SmallCNN

pytestmark = pytest.mark.modal


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture
def data():
    X, y = make_blobs(n_samples=90, n_features=4, centers=3, random_state=1)
    return X.astype(np.float32), y


def make_learner(data, cls=TiDALActiveLearner, **net_kwargs):
    """A learner trained on classes 0 and 1 only, classes not declared: class 2 is a new class."""
    X, y = data
    module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    net = TiDALNetClassifier(module, max_epochs=2, lr=0.1, verbose=0, **net_kwargs)
    first = np.flatnonzero(y < 2)[:20]
    return cls(net, query_strategy=tidal_margin, X_training=X[first], y_training=y[first])


def state(learner):
    """The training data, the model's parameters and its history length, as copies."""
    params = {k: v.clone() for k, v in learner.estimator.module_.state_dict().items()}
    return learner.X_training.copy(), learner.y_training.copy(), params, len(learner.estimator.history)


def assert_same_state(learner, before):
    X_training, y_training, params, n_epochs = state(learner)
    np.testing.assert_array_equal(X_training, before[0])
    np.testing.assert_array_equal(y_training, before[1])
    assert all(torch.equal(params[k], before[2][k]) for k in params)
    assert n_epochs == before[3]


class FailWhenArmed(Callback):
    """Raises in the first training batch once armed: an error in the middle of training."""

    def __init__(self, armed=False):
        self.armed = armed

    def on_batch_end(self, net, **kwargs):
        if self.armed:
            raise RuntimeError("out of memory")


class TestTeach:
    @pytest.mark.parametrize("warm_start", [False, True])
    def test_failed_teach_loses_nothing(self, data, warm_start):
        X, y = data
        learner = make_learner(data, warm_start=warm_start)
        before = state(learner)
        new = np.flatnonzero(y == 2)[:5]
        with pytest.raises(ValueError, match=r"class\(es\) \[2\]|outputs 2 logits"):
            learner.teach(X[new], y[new])
        assert_same_state(learner, before)
        # once the labels are fixed, teaching again adds the rows once
        learner.teach(X[new], np.zeros(5, dtype=y.dtype))
        assert len(learner.X_training) == len(before[0]) + 5

    @pytest.mark.parametrize("fault", ["label-outside-the-classes", "error-during-training"])
    def test_failed_teach_restores_the_whole_pipeline(self, data, fault):
        """A Pipeline refits its scaler on the new rows before its net fails."""
        X, y = data
        scaler, failure = StandardScaler(), FailWhenArmed()
        module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        net = TiDALNetClassifier(module, classes=[0, 1], max_epochs=2, lr=0.1, verbose=0, callbacks=[failure])
        known = np.flatnonzero(y < 2)
        learner = TiDALActiveLearner(
            make_pipeline(scaler, net), X_training=X[known[:20]], y_training=y[known[:20]]
        )
        pipeline, steps = learner.estimator, list(learner.estimator.steps)
        mean, scale = scaler.mean_.copy(), scaler.scale_.copy()
        weights = {k: v.clone() for k, v in net.module_.state_dict().items()}
        if fault == "label-outside-the-classes":
            rows = np.flatnonzero(y == 2)[:5]
        else:
            rows, failure.armed = known[20:25], True
        with pytest.raises((ValueError, RuntimeError), match=r"class\(es\) \[2\]|out of memory"):
            learner.teach(X[rows], y[rows])
        assert learner.estimator is pipeline and pipeline.steps == steps and steps[0][1] is scaler
        np.testing.assert_array_equal(scaler.mean_, mean)
        np.testing.assert_array_equal(scaler.scale_, scale)
        assert scaler.n_samples_seen_ == 20
        assert all(torch.equal(v, weights[k]) for k, v in net.module_.state_dict().items())
        assert len(learner.X_training) == 20

    @pytest.mark.modal_fit
    def test_plain_modal_learner_keeps_the_rows_of_a_failed_teach(self, data):
        """Why TiDALActiveLearner exists: modAL appends the rows before fitting."""
        X, y = data
        learner = make_learner(data, cls=ActiveLearner)
        n_before = len(learner.X_training)
        new = np.flatnonzero(y == 2)[:5]
        with pytest.raises(ValueError):
            learner.teach(X[new], y[new])
        assert len(learner.X_training) == n_before + 5

    def test_successful_teach(self, data):
        X, y = data
        learner = make_learner(data, warm_start=True)
        n_epochs = len(learner.estimator.history)
        rows = np.flatnonzero(y < 2)[20:25]
        learner.teach(X[rows], y[rows])
        assert len(learner.X_training) == 25
        assert len(learner.estimator.history) == 2 * n_epochs  # warm start: the history goes on


class TestClassesFromTheModule:
    """modAL's habits without ``classes=``: the first labeled sets miss classes."""

    @staticmethod
    def start(y, classes, n=12, offset=0):
        return np.concatenate([np.flatnonzero(y == c)[offset : offset + n // len(classes)] for c in classes])

    def test_committee_on_starts_that_miss_classes(self, digits):
        X, y = digits
        members = [
            TiDALActiveLearner(
                TiDALNetClassifier(MLP, max_epochs=3, lr=0.05, verbose=0),
                X_training=X[self.start(y, labels)],
                y_training=y[self.start(y, labels)],
            )
            for labels in ([0, 1, 2], [3, 4])  # each member misses most classes, and the other's
        ]
        committee = Committee(members, query_strategy=tidal_entropy)
        for member in members:
            assert np.asarray(member.estimator.classes_).tolist() == list(range(10))
        idx, _ = committee.query(X[500:], n_instances=5)
        committee.teach(X[500:][idx], y[500:][idx])
        assert committee.predict_proba(X[:20]).shape == (20, 10)
        assert all(
            len(member.y_training) == len(self.start(y, labels)) + 5
            for member, labels in zip(members, ([0, 1, 2], [3, 4]), strict=True)
        )

    def test_teach_only_new_without_warm_start(self, digits):
        X, y = digits
        first = self.start(y, [0, 1, 2, 3, 4])
        net = TiDALNetClassifier(MLP, max_epochs=20, lr=0.05, verbose=0)
        learner = TiDALActiveLearner(net, X_training=X[first], y_training=y[first])
        sevens = self.start(y, [7], n=6, offset=20)
        learner.teach(X[sevens], y[sevens], only_new=True)  # a fresh fit on a single class
        assert np.asarray(net.classes_).tolist() == list(range(10))
        assert net.training_dynamics_.shape == (6, 10)
        assert (net.predict(X[y == 7][:30]) == 7).all()  # what the refit on sevens alone learned
        # modAL 0.4.1 adds the rows to the labeled data, 0.4.2 fits on them without keeping them
        assert len(learner.y_training) == len(first) + (0 if MODAL_RETURNS_METRICS else 6)


class ImagePool(torch.utils.data.Dataset):
    """Images that are read one at a time, with no label yet: ``(image, -1)`` as skorch expects."""

    def __init__(self, images):
        self.images = torch.as_tensor(images).reshape(-1, 1, 8, 8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], -1


class TestDataTypes:
    """What users hold, through several cycles of query and teach: the learner keeps the type."""

    def loop(self, learner, X_pool, y_pool, cycles=3, n=10):
        for cycle in range(cycles):
            idx, rows = learner.query(X_pool, n_instances=n, random_state=cycle)
            learner.teach(rows, y_pool[idx])
            keep = np.setdiff1d(np.arange(len(y_pool)), idx)
            X_pool = X_pool.iloc[keep] if hasattr(X_pool, "iloc") else X_pool[keep]
            y_pool = y_pool[keep]
        return rows

    def net(self, **kwargs):
        return TiDALNetClassifier(MLP, max_epochs=2, lr=0.05, verbose=0, **kwargs)

    def test_dataframes(self, digits):
        pd = pytest.importorskip("pandas")
        X, y = digits
        frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
        learner = TiDALActiveLearner(self.net(), X_training=frame.iloc[:30], y_training=pd.Series(y[:30]))
        rows = self.loop(learner, frame.iloc[30:300], y[30:300])
        assert isinstance(rows, pd.DataFrame) and list(rows.columns) == list(frame.columns)
        assert isinstance(learner.X_training, pd.DataFrame) and isinstance(learner.y_training, pd.Series)
        assert learner.X_training.shape == (60, 64) and len(learner.y_training) == 60
        # the last rows taught are the last query's rows, with their pool labels
        np.testing.assert_array_equal(learner.X_training.to_numpy()[-10:], rows.to_numpy())
        np.testing.assert_array_equal(learner.y_training.to_numpy()[:30], y[:30])

    def test_tensors(self, digits):
        X, y = digits
        Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
        learner = TiDALActiveLearner(self.net(), X_training=Xt[:30], y_training=yt[:30])
        rows = self.loop(learner, Xt[30:300], yt[30:300])
        assert isinstance(rows, torch.Tensor) and rows.shape == (10, 64)
        assert isinstance(learner.X_training, torch.Tensor) and isinstance(learner.y_training, torch.Tensor)
        assert learner.X_training.shape == (60, 64)
        torch.testing.assert_close(learner.X_training[-10:], rows)

    def test_memmaps_stay_on_disk(self, digits, tmp_path):
        X, y = digits
        path = tmp_path / "labeled.dat"
        disk = np.memmap(path, dtype=np.float32, mode="w+", shape=(300, 64))
        disk[:] = X[:300]
        disk.flush()
        disk = np.memmap(path, dtype=np.float32, mode="r", shape=(300, 64))
        learner = TiDALActiveLearner(self.net(), X_training=disk, y_training=y[:300])
        rows = self.loop(learner, X[300:800], y[300:800])
        stack = learner.X_training
        assert stack.parts[0] is disk  # the 300 labeled rows on disk were not copied
        assert [len(part) for part in stack.parts] == [300, 10, 10, 10]
        np.testing.assert_array_equal(np.asarray(stack)[-10:], rows)
        np.testing.assert_array_equal(np.asarray(stack)[:300], X[:300])
        assert learner.estimator.training_dynamics_.shape == (330, 10)

    def test_a_dataset_of_images(self, digits):
        X, y = digits
        pool = ImagePool(X[100:400])
        net = TiDALNetClassifier(SmallCNN, max_epochs=2, lr=0.05, verbose=0)
        learner = TiDALActiveLearner(
            net, X_training=torch.utils.data.Subset(ImagePool(X), range(40)), y_training=y[:40]
        )
        idx, rows = learner.query(pool, n_instances=10, random_state=0)
        assert isinstance(rows, torch.utils.data.Subset) and rows.indices == idx.tolist()
        learner.teach(rows, y[100:400][idx])
        assert len(learner.X_training) == 50 and len(learner.y_training) == 50
        assert net.training_dynamics_.shape == (50, 10)
        images = torch.stack([learner.X_training[i][0] for i in range(50)])
        torch.testing.assert_close(images[40:], torch.as_tensor(X[100:400][idx]).reshape(-1, 1, 8, 8))
        # a second cycle on what is left of the pool (a Subset of the Dataset)
        left = np.setdiff1d(np.arange(300), idx)
        more, rows = learner.query(
            torch.utils.data.Subset(pool, left.tolist()), n_instances=10, random_state=1
        )
        learner.teach(rows, y[100:400][left[more]])
        assert len(learner.X_training) == 60 and net.training_dynamics_.shape == (60, 10)
        assert not set(left[more]) & set(idx)  # new rows, not the ones labeled before

    def test_rows_and_labels_must_agree(self, digits):
        X, y = digits
        learner = TiDALActiveLearner(self.net(), X_training=X[:30], y_training=y[:30])
        with pytest.raises(ValueError, match="X has 5 rows but y has 4 labels"):
            learner.teach(X[30:35], y[30:34])
        assert len(learner.X_training) == 30


class TestQuery:
    @pytest.mark.parametrize(
        ("pool", "kwargs"),
        [
            (lambda X: X, {"n_instances": 0}),
            (lambda X: X, {"n_instances": 1000}),
            (lambda X: np.where(np.arange(len(X))[:, None] == 3, np.nan, X), {"n_instances": 2}),
            (lambda X: X[:, :3], {"n_instances": 2}),
        ],
        ids=["zero", "too-many", "nan", "features"],
    )
    def test_failed_query_loses_nothing(self, data, pool, kwargs):
        X_pool = pool(data[0])
        pool_before = X_pool.copy()
        learner = make_learner(data)
        before = state(learner)
        with pytest.raises((ValueError, TypeError)):
            learner.query(X_pool, **kwargs)
        assert_same_state(learner, before)
        np.testing.assert_array_equal(X_pool, pool_before)

    @pytest.mark.parametrize(("cls", "expected_calls"), [(TiDALActiveLearner, 1), (ActiveLearner, None)])
    def test_a_failing_strategy_runs_once(self, data, cls, expected_calls):
        calls = []

        def failing(learner, X_pool, **kwargs):
            calls.append(kwargs)
            raise RuntimeError("out of memory")

        learner = make_learner(data, cls=cls)
        learner.query_strategy = failing
        with pytest.raises(RuntimeError, match="out of memory"):
            learner.query(data[0], n_instances=3)
        # plain modAL 0.4.2 calls it again after the first error
        assert len(calls) == (expected_calls or (2 if MODAL_RETURNS_METRICS else 1))

    def test_return_metrics(self, data):
        learner = make_learner(data)
        if MODAL_RETURNS_METRICS:
            idx, rows, metrics = learner.query(data[0], n_instances=3, return_metrics=True)
            np.testing.assert_array_equal(metrics, -np.sort(-metrics))  # most uncertain first
        else:  # 0.4.1 strategies return indices only
            with pytest.warns(UserWarning, match="no metrics"):
                idx, rows, metrics = learner.query(data[0], n_instances=3, return_metrics=True)
            assert metrics is None
        np.testing.assert_array_equal(rows, data[0][idx])

    def test_tensor_pool(self, data):
        learner = make_learner(data)
        X_pool = torch.as_tensor(data[0])
        idx, rows = learner.query(X_pool, n_instances=4, random_state=0)
        assert torch.equal(rows, X_pool[torch.as_tensor(idx)])
        expected = tidal_margin(learner, data[0], n_instances=4, random_state=0)
        np.testing.assert_array_equal(idx, expected[0] if MODAL_RETURNS_METRICS else expected)

    def test_modals_ranked_batch_strategy(self, data):
        """modAL's ``uncertainty_batch_sampling``, the strongest strategy of the benchmarks, queries
        through the learner as it is, in both modAL conventions."""
        from modAL.batch import uncertainty_batch_sampling

        learner = make_learner(data)
        learner.query_strategy = uncertainty_batch_sampling
        idx, rows = learner.query(data[0], n_instances=5)
        assert len(set(np.asarray(idx).tolist())) == 5
        np.testing.assert_array_equal(rows, data[0][idx])
        expected = uncertainty_batch_sampling(learner, data[0], n_instances=5)
        np.testing.assert_array_equal(idx, expected[0] if isinstance(expected, tuple) else expected)
