import pickle
from copy import deepcopy

import pytest
import torch
from torch import nn

from tidal_modal.modules import (
    FeatureTap,
    TDHead,
    attach_taps,
    capturing,
    detach_taps,
    global_average_pool,
    last_linear_name,
    unwrap,
)

from .models import MLP, SmallCNN


class TestGlobalAveragePool:
    def test_4d_map_is_averaged_over_space(self):
        x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
        torch.testing.assert_close(global_average_pool(x), x.mean(dim=(2, 3)))

    def test_2d_passes_through(self):
        x = torch.randn(5, 7)
        assert global_average_pool(x) is x

    def test_1d_is_refused(self):
        with pytest.raises(ValueError, match="at least 2-D"):
            global_average_pool(torch.randn(5))


class TestTDHead:
    def test_shapes_are_inferred_on_first_call(self):
        head = TDHead(n_branches=2, hidden=16)
        out = head([torch.randn(4, 8, 5, 5), torch.randn(4, 3)], 7)
        assert out.shape == (4, 7)
        assert head.weight.shape == (7, 32)
        assert [b[0].in_features for b in head.branches] == [8, 3]

    def test_wrong_number_of_feature_maps(self):
        with pytest.raises(ValueError, match="2 branches but received 1"):
            TDHead(n_branches=2)([torch.randn(4, 3)], 5)


def headed(module, taps, head, x):
    """Logits and TD logits of ``x``, as the net computes them (taps switched on around the pass)."""
    with capturing(taps):
        logits = module(x)
        return logits, head([tap.features for tap in taps], logits.shape[1])


class TestFeatureTaps:
    def test_default_layer_is_input_of_last_linear(self):
        module = MLP(n_features=6, hidden=9, n_classes=4)
        taps = attach_taps(module)
        assert [(t.layer, t.use_input) for t in taps] == [(last_linear_name(module), True)] == [("out", True)]
        head = TDHead(1, hidden=5)
        logits, td_logits = headed(module, taps, head, torch.randn(3, 6))
        assert logits.shape == td_logits.shape == (3, 4)
        assert head.branches[0][0].in_features == 9  # penultimate width, not 4

    def test_named_conv_layers_feed_pooled_maps(self):
        module = SmallCNN(n_classes=3)
        taps = attach_taps(module, ["stage1", "stage2"])
        head = TDHead(2, hidden=4)
        _, td_logits = headed(module, taps, head, torch.randn(2, 1, 8, 8))
        assert td_logits.shape == (2, 3)
        assert [b[0].in_features for b in head.branches] == [8, 16]

    def test_unknown_layer_name_lists_available_names(self):
        with pytest.raises(ValueError, match=r"unknown: \['nope'\].*stage1"):
            attach_taps(SmallCNN(), ["nope"])

    def test_td_loss_gradient_reaches_the_module(self):
        module = MLP(n_features=6, hidden=9, n_classes=4)
        _, td_logits = headed(module, attach_taps(module), TDHead(1), torch.randn(3, 6))
        td_logits.sum().backward()
        assert module.body[0].weight.grad.abs().sum() > 0
        assert module.out.weight.grad is None  # the classifier layer is not on the TD path

    def test_switched_off_they_keep_nothing(self):
        module = SmallCNN()
        taps = attach_taps(module, ["stage2"])
        module(torch.randn(2, 1, 8, 8))  # the user's own forward, an export, serving
        assert taps[0].features is None
        headed(module, taps, TDHead(1), torch.randn(2, 1, 8, 8))
        assert taps[0].features is None and not taps[0].active  # dropped when the pass ends

    def test_attaching_again_keeps_one_tap_per_layer(self):
        module = SmallCNN()
        first = attach_taps(module, ["stage2"])
        assert attach_taps(module, ["stage2"]) == first  # the same tap, not a second hook
        other = attach_taps(module, ["stage1"])  # another configuration replaces it
        dicts = [d for m in module.modules() for d in (m._forward_hooks, m._forward_pre_hooks)]
        hooks = [hook for d in dicts for hook in d.values()]
        assert hooks == other

    def test_copies_and_pickles_bring_their_taps_along_switched_off(self):
        module = SmallCNN()
        taps = attach_taps(module, ["stage2"])
        taps[0].active, taps[0].features = True, torch.ones(1)
        for copy in (pickle.loads(pickle.dumps(module)), deepcopy(module)):
            (tap,) = copy.stage2._forward_hooks.values()
            assert isinstance(tap, FeatureTap) and not tap.active and tap.features is None
            assert attach_taps(copy, ["stage2"]) == [tap]
        detach_taps(module)
        assert not module.stage2._forward_hooks

    def test_a_module_without_linear_has_no_default_layer(self):
        assert attach_taps(nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(1))) == []


class TestUnwrap:
    def test_compiled_and_parallel_modules_are_seen_through(self):
        module = MLP()
        assert unwrap(torch.compile(module)) is module
        assert unwrap(nn.DataParallel(module)) is module
        assert unwrap(module) is module
