import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from benchmarks.backbones import BACKBONES, backbone_params
from tidal_modal import TiDALNetClassifier
from tidal_modal.modules import TDHead, attach_taps, capturing


@pytest.mark.parametrize(
    "name, shape, head_widths",
    [("mlp", (1, 8, 8), [256]), ("cnn", (1, 8, 8), [128]), ("cnn", (1, 28, 28), [128]),
     ("resnet18", (3, 32, 32), [64, 128, 256, 512])],
)  # fmt: skip
def test_flat_rows_in_logits_out_with_dropout(name, shape, head_widths):
    params = backbone_params(name, shape, 7, dropout=0.5)
    module = params["module"](
        **{k.removeprefix("module__"): v for k, v in params.items() if k.startswith("module__")}
    )
    x = torch.rand(2, int(np.prod(shape)))
    module.eval()
    taps = attach_taps(module, params["td_layers"])
    head = TDHead(len(taps)).eval()
    with torch.no_grad():
        with capturing(taps):  # as the net runs module and head: the taps on around the pass
            logits = module(x)
            td_logits = head([tap.features for tap in taps], logits.shape[1])
        torch.testing.assert_close(logits, module(x.view(2, *shape)))  # flat rows are the images
        assert td_logits.shape == (2, 7)
        # the head reads the penultimate features (the ResNet: its four stages)
        assert [branch[0].in_features for branch in head.branches] == head_widths
        dropouts = [m for m in module.modules() if isinstance(m, nn.Dropout)]
        assert dropouts and all(m.p == 0.5 for m in dropouts)
        for m in dropouts:  # MC dropout: only the dropout layers in train mode
            m.train()
        assert not torch.equal(module(x), module(x))


def test_resnet_feeds_the_td_head_its_four_stages():
    assert BACKBONES["resnet18"][1] == ["layer1", "layer2", "layer3", "layer4"]


class InitialWeights(Callback):
    """The weights before the first optimizer step (the lazy TD head has its shape from the
    first training batch's forward pass, so they are read after it)."""

    def on_train_begin(self, net, **kwargs):
        self.weights = None

    def on_grad_computed(self, net, named_parameters, **kwargs):
        if self.weights is None:
            # the module's parameters under their own names, the TD head's as td_head.*
            self.weights = {k: p.detach().clone() for k, p in net.get_all_learnable_params()}


def test_params_build_a_trainable_net():
    X = np.random.RandomState(0).rand(20, 64).astype(np.float32)
    y = np.arange(20) % 3
    initial = InitialWeights()
    net = TiDALNetClassifier(
        **backbone_params("cnn", (1, 8, 8), 3), max_epochs=1, callbacks=[initial], verbose=0
    ).fit(X, y)
    # one epoch moves every weight: convolutions, classifier and TD head
    unchanged = [k for k, p in net.get_all_learnable_params() if torch.equal(p, initial.weights[k])]
    assert not unchanged and len(initial.weights) == 12
    head = [k for k in initial.weights if k.startswith("td_head.")]
    assert len(head) == 4 and len(initial.weights) - len(head) == len(list(net.module_.parameters()))
    assert net.predict_td(X).shape == (20, 3)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone"):
        backbone_params("vit", (1, 8, 8), 10)
