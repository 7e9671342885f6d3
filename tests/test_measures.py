"""The measure layer: DISAL's closed form against per-sample autograd gradients, and its errors."""

import numpy as np
import pytest
import torch
from modAL.uncertainty import classifier_entropy, classifier_uncertainty
from modAL.utils.combination import make_linear_combination, make_product
from skorch import NeuralNetClassifier
from torch import nn
from torch.func import grad, vmap
from torch.nn import functional as F

from tidal_modal import TiDALNetClassifier, label_influence, measures, tidal_margin
from tidal_modal.measures import (
    classifier_dynamic_influence,
    classifier_td_entropy,
    classifier_td_margin,
    classifier_td_margin_uncertainty,
)

from .models import MLP


def per_sample_gradients(weight, bias, h, targets):
    """``d CE(h W^T + b, q) / d[W | b]`` of every row by autograd (torch.func), ``[n, K, d + 1]``."""

    def loss(W, b, hi, qi):
        return -(qi * F.log_softmax(hi @ W.T + b, dim=0)).sum()

    gW, gb = vmap(grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(weight, bias, h, targets)
    return torch.cat([gW, gb[..., None]], dim=2)


def autograd_influence(weights, h, targets, directions):
    """``sum_t < g(x; theta_t), U_t >`` per row, the gradients at each ``theta_t`` of ``weights``."""
    total = 0
    for theta, direction in zip(weights, directions, strict=True):
        grads = per_sample_gradients(theta[:, :-1], theta[:, -1], h, targets)
        total = total + torch.einsum("nkd,kd->n", grads, direction)
    return total


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    n, d, K, T = 12, 5, 4, 3
    h = torch.randn(n, d, generator=gen, dtype=torch.float64)
    theta = torch.randn(K, d + 1, generator=gen, dtype=torch.float64)
    directions = torch.randn(T, K, d + 1, generator=gen, dtype=torch.float64)
    checkpoints = theta + torch.randn(T, K, d + 1, generator=gen, dtype=torch.float64)
    h1 = torch.cat([h, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    return h, h1, theta, directions, checkpoints


class TestClosedFormEqualsAutograd:
    def test_every_label_as_target(self, problem):
        h, h1, theta, directions, _ = problem
        proba = torch.softmax(h1 @ theta.T, dim=1)
        influence = label_influence(h1, proba, directions)  # [n, K]
        for y in range(theta.shape[0]):
            onehot = F.one_hot(torch.full((len(h),), y), theta.shape[0]).double()
            expected = autograd_influence([theta] * len(directions), h, onehot, directions)
            torch.testing.assert_close(influence[:, y], expected)

    def test_soft_targets(self, problem):
        h, h1, theta, directions, _ = problem
        soft = torch.softmax(torch.randn(len(h), theta.shape[0], dtype=torch.float64), dim=1)
        proba = torch.softmax(h1 @ theta.T, dim=1)
        got = (label_influence(h1, proba, directions) * soft).sum(dim=1)
        torch.testing.assert_close(got, autograd_influence([theta] * len(directions), h, soft, directions))

    def test_probabilities_of_each_checkpoint(self, problem):
        h, h1, theta, directions, checkpoints = problem
        proba_t = torch.softmax(torch.einsum("nd,tkd->tnk", h1, checkpoints), dim=2)
        onehot = F.one_hot(torch.arange(len(h)) % theta.shape[0], theta.shape[0]).double()
        got = (label_influence(h1, proba_t, directions) * onehot).sum(dim=1)
        torch.testing.assert_close(got, autograd_influence(checkpoints, h, onehot, directions))

    def test_numpy_in_numpy_out(self, problem):
        h, h1, theta, directions, _ = problem
        proba = torch.softmax(h1 @ theta.T, dim=1)
        out = label_influence(h1.numpy(), proba.numpy(), directions.numpy())
        assert isinstance(out, np.ndarray)
        np.testing.assert_allclose(out, label_influence(h1, proba, directions).numpy())

    def test_shape_mismatch(self, problem):
        h, h1, theta, directions, _ = problem
        with pytest.raises(ValueError, match="share d"):
            label_influence(h, torch.ones(len(h), 4), directions)


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    torch.manual_seed(0)
    net = TiDALNetClassifier(
        MLP, max_epochs=4, lr=0.05, verbose=0, classes=list(range(10)), module__dropout=0.2
    ).fit(X[:200], y[:200])
    return net, X[200:260]


def layer_inputs(net, X):
    captured = []
    layer = net.module_.out
    handle = layer.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    try:
        logits = torch.as_tensor(net.predict_proba(X)).log()  # eval mode, like scoring
    finally:
        handle.remove()
    return torch.cat(captured).double(), logits


class TestMeasureOnATrainedNet:
    """The measure on a real TiDAL net equals autograd's per-sample gradients of its last layer."""

    def reference(self, net, X, target, heads="current"):
        h, _ = layer_inputs(net, X)
        layer = net.module_.out
        theta = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().double()
        directions, ends = net.trajectory_.directions()
        directions, ends = directions.double(), ends.double()
        weights = [theta] * len(directions) if heads == "current" else list(ends)
        proba = torch.softmax(torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1) @ theta.T, dim=1)
        K = proba.shape[1]
        if target == "pseudo":
            return autograd_influence(weights, h, F.one_hot(proba.argmax(1), K).double(), directions)
        if target == "td":
            return autograd_influence(weights, h, torch.as_tensor(net.predict_td(X)).double(), directions)
        per_label = torch.stack(
            [
                autograd_influence(weights, h, F.one_hot(torch.full((len(h),), y), K).double(), directions)
                for y in range(K)
            ],
            dim=1,
        )
        return (proba * per_label.abs()).sum(dim=1)

    @pytest.mark.parametrize("target", ["pseudo", "td"])
    @pytest.mark.parametrize("heads", ["current", "checkpoint"])
    def test_signed_scores(self, fitted, target, heads):
        net, X = fitted
        got = classifier_dynamic_influence(net, X, target=target, sign="signed", heads=heads)
        np.testing.assert_allclose(got, self.reference(net, X, target, heads).numpy(), rtol=1e-4, atol=1e-6)

    def test_expected_magnitude(self, fitted):
        net, X = fitted
        got = classifier_dynamic_influence(net, X, target="expected")
        np.testing.assert_allclose(got, self.reference(net, X, "expected").numpy(), rtol=1e-4, atol=1e-6)

    @pytest.mark.parametrize("target", ["pseudo", "td", "expected"])
    @pytest.mark.parametrize("heads", ["current", "checkpoint"])
    def test_the_same_scores_whatever_the_chunks(self, fitted, target, heads, monkeypatch):
        net, X = fitted
        whole = classifier_dynamic_influence(net, X, target=target, heads=heads)
        batch_size = net.batch_size
        net.set_params(batch_size=4)  # 60 rows in 15 batches
        try:
            for rows in (1, 7, 10_000):  # every batch alone, a chunk that ends mid-pool, one chunk
                monkeypatch.setattr(measures, "SCORE_CHUNK_ROWS", rows)
                got = classifier_dynamic_influence(net, X, target=target, heads=heads)
                np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-7)
        finally:
            net.set_params(batch_size=batch_size)

    def test_signs(self, fitted):
        net, X = fitted
        signed = classifier_dynamic_influence(net, X, sign="signed")
        assert (signed > 0).any() and (signed < 0).any()  # else the sign choice would be moot
        np.testing.assert_allclose(classifier_dynamic_influence(net, X, sign="negated"), -signed)
        np.testing.assert_allclose(classifier_dynamic_influence(net, X), np.abs(signed))

    def test_normalisation_and_merged_checkpoints_change_the_scores(self, fitted):
        net, X = fitted
        base = classifier_dynamic_influence(net, X, sign="signed")
        for options in (dict(normalize=False), dict(n_checkpoints=1)):
            assert not np.allclose(classifier_dynamic_influence(net, X, sign="signed", **options), base)
        # one merged checkpoint, unnormalised, is the whole fit's step: the same as the steps summed
        np.testing.assert_allclose(
            classifier_dynamic_influence(net, X, sign="signed", normalize=False, n_checkpoints=1),
            classifier_dynamic_influence(net, X, sign="signed", normalize=False),
            rtol=1e-4,
            atol=1e-6,
        )


class TestComposableMeasures:
    """The TD measures as modAL's combination tools and stream-based sampling take them."""

    def test_margin_uncertainty_by_hand(self, fitted):
        net, X = fitted
        td, yhat = net.predict_td(X), net.predict_proba(X).argmax(1)
        at_label = td[np.arange(len(X)), yhat]
        others = np.where(np.eye(td.shape[1], dtype=bool)[yhat], -np.inf, td).max(1)
        expected = (1 - (at_label - others)) / 2
        np.testing.assert_allclose(classifier_td_margin_uncertainty(net, X), expected, rtol=1e-6)
        assert (expected >= 0).all() and (expected <= 1).all()

    def test_margin_uncertainty_ranks_as_tidal_margin(self, fitted):
        net, X = fitted
        idx = tidal_margin(net, X, n_instances=10)
        idx = idx[0] if isinstance(idx, tuple) else idx
        top = np.argsort(-classifier_td_margin_uncertainty(net, X), kind="stable")[:10]
        assert sorted(idx.tolist()) == sorted(top.tolist())

    def test_products_and_sums_stay_finite(self, fitted):
        net, X = fitted
        assert (classifier_td_margin(net, X) < 0).any()  # the raw margin: a square root of it is NaN
        product = make_product(
            classifier_td_entropy,
            classifier_td_margin_uncertainty,
            classifier_uncertainty,
            exponents=[0.5, 0.5, 1],
        )(net, X)
        combination = make_linear_combination(
            classifier_td_entropy, classifier_td_margin_uncertainty, classifier_entropy, weights=[1, 2, 0.5]
        )(net, X)
        assert np.isfinite(product).all() and (product >= 0).all()
        np.testing.assert_allclose(
            combination,
            classifier_td_entropy(net, X)
            + 2 * classifier_td_margin_uncertainty(net, X)
            + 0.5 * classifier_entropy(net, X),
            rtol=1e-6,
        )

    def test_one_row_at_a_time(self, fitted):
        """Stream-based sampling scores rows one by one; the same values as on the whole pool."""
        net, X = fitted
        whole = classifier_td_entropy(net, X)
        single = np.concatenate([classifier_td_entropy(net, X[i : i + 1]) for i in range(5)])
        np.testing.assert_allclose(single, whole[:5], rtol=1e-5)


class TestErrors:
    def test_plain_net_without_recorder_says_which_line_enables_it(self, digits):
        X, y = digits
        net = NeuralNetClassifier(
            MLP, criterion=nn.CrossEntropyLoss, train_split=None, max_epochs=1, verbose=0
        ).fit(X[:50], y[:50])
        with pytest.raises(ValueError, match=r"callbacks=\[tidal_modal.TrajectoryRecorder\(\)\]"):
            classifier_dynamic_influence(net, X[:5])

    def test_a_fit_without_epochs(self, digits):
        X, y = digits
        net = TiDALNetClassifier(MLP, max_epochs=0, verbose=0, classes=list(range(10))).fit(X[:50], y[:50])
        with pytest.raises(ValueError, match="completed no epoch"):
            classifier_dynamic_influence(net, X[:5])

    def test_checkpoints_of_another_architecture(self, fitted, digits, tmp_path):
        net, X = fitted
        net.save_params(f_trajectory=tmp_path / "t.pt")
        other = TiDALNetClassifier(MLP, module__hidden=16, max_epochs=1, verbose=0, classes=list(range(10)))
        other.fit(*digits)
        other.load_params(f_trajectory=tmp_path / "t.pt")
        with pytest.raises(
            ValueError, match=r"shape \(10, 33\).*now has shape \(10, 17\).*another architecture"
        ):
            classifier_dynamic_influence(other, X)

    def test_td_target_needs_a_td_head(self, digits):
        from tidal_modal import TrajectoryRecorder

        X, y = digits
        net = NeuralNetClassifier(
            MLP,
            criterion=nn.CrossEntropyLoss,
            train_split=None,
            max_epochs=1,
            verbose=0,
            callbacks=[TrajectoryRecorder()],
        ).fit(X[:50], y[:50])
        assert classifier_dynamic_influence(net, X[:5]).shape == (5,)
        with pytest.raises(ValueError, match="target='td' needs a net with a TD head"):
            classifier_dynamic_influence(net, X[:5], target="td")

    @pytest.mark.parametrize(
        "options, match",
        [
            (dict(target="label"), "target must be one of"),
            (dict(sign="abs"), "sign must be one of"),
            (dict(heads="all"), "heads must be one of"),
            (dict(n_checkpoints=0), "n_checkpoints"),
        ],
    )
    def test_bad_options(self, fitted, options, match):
        net, X = fitted
        with pytest.raises(ValueError, match=match):
            classifier_dynamic_influence(net, X, **options)

    def test_not_a_skorch_net(self):
        from sklearn.linear_model import LogisticRegression

        with pytest.raises(TypeError, match="disal needs a skorch net.*LogisticRegression"):
            classifier_dynamic_influence(LogisticRegression(), np.zeros((2, 2)))
