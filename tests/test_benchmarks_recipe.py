"""The paper's training recipe: augmentation (benchmarks.augment), optimiser, LR schedule and
BALD's scoring-time dropout (benchmarks.recipe)."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from benchmarks.augment import AugmentRows, random_flip, random_shift
from benchmarks.backbones import backbone_params
from benchmarks.baselines import bald_score, mc_dropout_proba
from benchmarks.protocol import ALConfig
from benchmarks.recipe import (
    PAPER_RECIPE,
    EvenBatches,
    batch_params,
    lr_scheduler,
    optimizer_params,
    scoring_dropout,
)
from tidal_modal import TiDALActiveLearner, TiDALNetClassifier
from tidal_modal.dynamics import IndexedTarget, RowBatch

SHAPE = (1, 6, 6)


@pytest.fixture
def rows():
    # distinct positive pixels, so that a shifted image can be told apart from any other
    return torch.arange(1, 1 + 4 * 36, dtype=torch.float32).reshape(4, 36)


def shifts_of(image, view, pad):
    """The (dy, dx) by which ``view`` is ``image`` shifted with zero fill, if any."""
    padded = nn.functional.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[-2:]
    return [
        (pad - top, pad - left)
        for top in range(2 * pad + 1)
        for left in range(2 * pad + 1)
        if torch.equal(padded[..., top : top + h, left : left + w], view)
    ]


class TestAugmentation:
    def test_every_view_is_a_shift_of_its_own_image_within_the_padding(self, rows):
        images = rows.view(-1, *SHAPE)
        views = random_shift(images, 2)
        for image, view in zip(images, views, strict=True):
            assert len(shifts_of(image, view, 2)) == 1
        # with 25 offsets per image, 40 draws give more than one
        offsets = {shifts_of(image, view, 2)[0] for _ in range(10) for image, view in
                   zip(images, random_shift(images, 2), strict=True)}  # fmt: skip
        assert len(offsets) > 1

    def test_flip_mirrors_about_half_of_the_images(self):
        images = torch.rand(200, *SHAPE)
        flipped = random_flip(images)
        mirrored = [torch.equal(v, i.flip(-1)) for i, v in zip(images, flipped, strict=True)]
        kept = [torch.equal(v, i) for i, v in zip(images, flipped, strict=True)]
        assert all(m != k for m, k in zip(mirrored, kept, strict=True))
        assert 70 < sum(mirrored) < 130

    def test_collate_changes_the_views_each_call_but_keeps_labels_and_indices(self, rows):
        augment = AugmentRows(SHAPE, shift=1)
        batch = RowBatch(rows.numpy(), np.array([3, 1, 4, 1]), [7, 0, 2, 5])
        (X1, target1), (X2, target2) = augment(batch), augment(batch)
        assert X1.shape == rows.shape and not torch.equal(X1, X2)
        for target in (target1, target2):
            assert isinstance(target, IndexedTarget)
            assert target.y.tolist() == [3, 1, 4, 1] and target.index.tolist() == [7, 0, 2, 5]

    def test_no_shift_no_flip_is_the_identity(self, rows):
        assert torch.equal(AugmentRows(SHAPE).augment(rows), rows)


class TestTrainingDynamicsOverViews:
    """The TD of a row is the mean of its softmax over the augmented views it was trained on."""

    def test_td_averages_the_training_views_and_prediction_sees_none(self):
        rng = np.random.RandomState(0)
        X = rng.rand(12, 36).astype(np.float32)
        y = np.arange(12) % 3
        views = []
        net = TiDALNetClassifier(
            **backbone_params("cnn", SHAPE, 3, dropout=0.0),
            lr=0.0,  # the weights stay as initialised: a view's softmax can be recomputed afterwards
            optimizer=torch.optim.SGD,
            max_epochs=4,
            batch_size=12,
            iterator_train__shuffle=False,  # one batch per epoch, rows in order
            iterator_train__collate_fn=AugmentRows(SHAPE, shift=1),
            verbose=0,
        ).initialize()
        net.module_.register_forward_pre_hook(
            lambda module, args: views.append(args[0].detach().clone()) if module.training else None
        )
        net.partial_fit(X, y)  # fit would build a new module, without the hook
        assert len(views) == 4 and not torch.equal(views[0], views[1])
        with torch.no_grad():
            module = net.module_.eval()
            expected = torch.stack([torch.softmax(module(v), 1) for v in views]).mean(0)
            unaugmented = torch.softmax(module(torch.as_tensor(X)), 1)
        np.testing.assert_allclose(net.training_dynamics_, expected.numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(net.training_dynamics_, unaugmented.numpy(), atol=1e-3)
        np.testing.assert_allclose(net.predict_proba(X), unaugmented.numpy(), rtol=1e-5, atol=1e-6)


def test_the_paper_backbone_normalises_its_batches_and_keeps_a_dropout_layer():
    params = backbone_params(PAPER_RECIPE["backbone"], (1, 28, 28), 10, dropout=0.0)
    module = params["module"](
        **{k.removeprefix("module__"): v for k, v in params.items() if k.startswith("module__")}
    )
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [m.num_features for m in norms] == [16, 32]
    assert [m.p for m in module.modules() if isinstance(m, nn.Dropout)] == [0.0]  # for scoring_dropout
    assert module(torch.rand(3, 784)).shape == (3, 10)


class TestOptimizerAndSchedule:
    def test_defaults_are_the_first_presets_adam_without_schedule(self):
        config = ALConfig(dataset="digits")
        assert optimizer_params(config) == {"optimizer": torch.optim.Adam}
        assert lr_scheduler(config) is None

    def test_paper_recipe_is_sgd_with_momentum_weight_decay_and_a_step(self):
        config = ALConfig(dataset="mnist5k", epochs=100, **PAPER_RECIPE)
        assert optimizer_params(config) == {
            "optimizer": torch.optim.SGD,
            "optimizer__momentum": 0.9,
            "optimizer__weight_decay": 5e-4,
        }
        scheduler = lr_scheduler(config)
        assert scheduler.kwargs == {"milestones": [80], "gamma": 0.1, "last_epoch": -1}
        lrs = scheduler.simulate(100, 0.1)
        np.testing.assert_allclose(lrs[[0, 79, 80, 99]], [0.1, 0.1, 0.01, 0.01])

    def test_unknown_optimizer(self):
        with pytest.raises(ValueError, match="Unknown optimizer 'lbfgs'"):
            optimizer_params(ALConfig(dataset="digits", optimizer="lbfgs"))


@pytest.fixture(scope="module")
def learner(digits):
    """A learner whose net was trained without dropout (its dropout layers are at rate 0)."""
    X, y = digits
    net = TiDALNetClassifier(**backbone_params("mlp", (1, 8, 8), 10, dropout=0.0), max_epochs=2, verbose=0)
    return TiDALActiveLearner(net, X_training=X[:100], y_training=y[:100])


class TestEvenBatches:
    @pytest.mark.parametrize(
        "n_rows, sizes", [(100, [50, 50]), (450, [57, 57, 56, 56, 56, 56, 56, 56]), (64, [64]), (3, [3])]
    )
    def test_every_row_once_in_batches_one_row_apart(self, n_rows, sizes):
        batches = list(EvenBatches(n_rows, 64))
        assert [len(b) for b in batches] == sizes
        assert sorted(i for b in batches for i in b) == list(range(n_rows))
        assert list(EvenBatches(n_rows, 64)) != batches or n_rows < 4  # reshuffled every epoch

    def test_a_net_trains_on_them(self, digits):
        batches = []

        class BatchSizes(Callback):
            def on_batch_begin(self, net, batch=None, training=False, **kwargs):
                batches.append(len(batch[1])) if training else None

        config = ALConfig(dataset="digits", even_batches=True)
        net = TiDALNetClassifier(
            **backbone_params("mlp", (1, 8, 8), 10), max_epochs=2, batch_size=64, callbacks=[BatchSizes()],
            verbose=0, **batch_params(config),
        ).fit(*(a[:130] for a in digits))  # fmt: skip
        assert batches == [44, 43, 43] * 2
        assert not np.isnan(net.training_dynamics_).any()  # every row trained on, so every row has a TD
        assert batch_params(ALConfig(dataset="digits")) == {}


class TestScoringDropout:
    def test_dropout_is_set_while_scoring_and_restored_after(self, learner, digits):
        seen = []

        def spy(classifier, X_pool, n_instances=1):
            seen.extend(m.p for m in classifier.estimator.module_.modules() if isinstance(m, nn.Dropout))
            return np.arange(n_instances)

        scoring_dropout(spy, 0.4)(learner, digits[0][100:], n_instances=3)
        assert seen == [0.4, 0.4]
        rates = [m.p for m in learner.estimator.module_.modules() if isinstance(m, nn.Dropout)]
        assert rates == [0.0, 0.0]

    def test_bald_on_a_net_trained_without_dropout(self, learner, digits):
        """Without scoring dropout every draw is the same and BALD scores nothing."""
        pool = digits[0][100:400]
        plain = bald_score(mc_dropout_proba(learner.estimator, pool, n_draws=4))
        scored = scoring_dropout(lambda c, X: bald_score(mc_dropout_proba(c.estimator, X, n_draws=4)), 0.3)
        np.testing.assert_allclose(plain, 0.0, atol=1e-6)
        assert (scored(learner, pool) > 1e-5).all()
