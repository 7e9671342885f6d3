import pickle

import pytest
import torch
from torch import nn

from tidal_modal.modules import TDHead, TiDALModule, global_average_pool, last_linear_name

from .models import MLP, OwnHead, SmallCNN


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


class TestTiDALModule:
    def test_default_layer_is_input_of_last_linear(self):
        backbone = MLP(n_features=6, hidden=9, n_classes=4)
        module = TiDALModule(backbone, td_hidden=5)
        assert module.default_td_layer == last_linear_name(backbone) == "out"
        logits, td_logits = module(torch.randn(3, 6))
        assert logits.shape == td_logits.shape == (3, 4)
        assert module.td_head.branches[0][0].in_features == 9  # penultimate width, not 4

    def test_named_conv_layers_feed_pooled_maps(self):
        module = TiDALModule(SmallCNN(n_classes=3), td_layers=["stage1", "stage2"], td_hidden=4)
        logits, td_logits = module(torch.randn(2, 1, 8, 8))
        assert td_logits.shape == (2, 3)
        assert [b[0].in_features for b in module.td_head.branches] == [8, 16]

    def test_unknown_layer_name_lists_available_names(self):
        with pytest.raises(ValueError, match=r"unknown: \['nope'\].*stage1"):
            TiDALModule(SmallCNN(), td_layers=["nope"])

    def test_td_loss_gradient_reaches_the_backbone(self):
        backbone = MLP(n_features=6, hidden=9, n_classes=4)
        module = TiDALModule(backbone)
        _, td_logits = module(torch.randn(3, 6))
        td_logits.sum().backward()
        assert backbone.body[0].weight.grad.abs().sum() > 0
        assert backbone.out.weight.grad is None  # the classifier layer is not on the TD path

    def test_hooks_do_not_outlive_the_forward_call(self):
        module = TiDALModule(SmallCNN(), td_layers=["stage2"])
        module(torch.randn(2, 1, 8, 8))
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.backbone.modules())
        clone = pickle.loads(pickle.dumps(module))
        x = torch.randn(2, 1, 8, 8)
        torch.testing.assert_close(clone(x)[1], module(x)[1])

    def test_module_with_own_head_drops_ours(self):
        module = TiDALModule(OwnHead())
        x = torch.randn(2, 4)
        logits, td_logits = module(x)
        assert module.td_head is None
        torch.testing.assert_close(td_logits, module.backbone.td(x))
        fresh = TiDALModule(OwnHead())
        fresh.load_state_dict(module.state_dict())  # saved without our head: loads without it
        assert fresh.td_head is None

    def test_backbone_without_linear_needs_td_layers(self):
        backbone = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(1))
        with pytest.raises(ValueError, match="no nn.Linear.*td_layers"):
            TiDALModule(backbone)(torch.randn(2, 1, 3, 3))

    def test_input_dtype_follows_casts_and_moves(self):
        module = TiDALModule(MLP(n_features=4, n_classes=3, hidden=8))
        assert module.input_dtype == torch.float32
        module.double()
        assert module.input_dtype == torch.float64
        module.to(torch.float32)
        assert module.input_dtype == torch.float32
        restored = pickle.loads(pickle.dumps(module.double()))
        assert restored.input_dtype == torch.float64

    def test_attributes_of_the_backbone_are_reached_through_the_wrapper(self):
        backbone = MLP(n_features=4, hidden=8, n_classes=3)
        module = TiDALModule(backbone)
        assert module.out is backbone.out and module.body is backbone.body
        with pytest.raises(AttributeError, match="nope"):
            module.nope  # noqa: B018

    def test_setting_an_attribute_of_the_backbone_sets_it_there(self):
        backbone = MLP(n_features=4, hidden=8, n_classes=3)
        module = TiDALModule(backbone)
        module.out = nn.Linear(8, 5)  # replaces the user's classifier layer
        assert backbone.out is module.out and "out" not in module._modules
        logits, td_logits = module(torch.randn(2, 4))
        assert logits.shape == td_logits.shape == (2, 5)
        module.note = "mine"  # the backbone has no such attribute: the wrapper keeps it
        assert not hasattr(backbone, "note")
        module.eval()  # the wrapper's own flags stay its own
        assert not module.training and not backbone.training

    def test_the_wrappers_attributes_win_over_the_backbones(self):
        class Clashing(MLP):
            td_layers = td_head = "the user's"

        backbone = Clashing(n_features=4, n_classes=2)
        module = TiDALModule(backbone)
        assert module.td_layers is None and isinstance(module.td_head, TDHead)
        assert backbone.td_layers == backbone.td_head == "the user's"
        assert list(module.state_dict())[0].startswith("backbone.")  # the order of earlier releases
