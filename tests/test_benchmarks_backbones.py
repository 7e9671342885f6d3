import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.backbones import BACKBONES, backbone_params
from tidal_modal import TiDALNetClassifier
from tidal_modal.modules import TiDALModule


@pytest.mark.parametrize(
    "name, shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))]
)
def test_flat_rows_in_logits_out_with_dropout(name, shape):
    params = backbone_params(name, shape, 7)
    module = params["module"](
        **{k.removeprefix("module__"): v for k, v in params.items() if k.startswith("module__")}
    )
    x = torch.rand(2, int(np.prod(shape)))
    assert module.eval()(x).shape == (2, 7)
    assert any(isinstance(m, nn.Dropout) for m in module.modules())
    td_module = TiDALModule(module, td_layers=params["td_layers"])
    logits, td_logits = td_module(x)
    assert td_logits.shape == (2, 7)


def test_resnet_feeds_the_td_head_its_four_stages():
    assert BACKBONES["resnet18"][1] == ["layer1", "layer2", "layer3", "layer4"]


def test_params_build_a_trainable_net():
    X = np.random.RandomState(0).rand(20, 64).astype(np.float32)
    y = np.arange(20) % 3
    net = TiDALNetClassifier(**backbone_params("cnn", (1, 8, 8), 3), max_epochs=1, verbose=0).fit(X, y)
    assert net.predict_td(X).shape == (20, 3)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone"):
        backbone_params("vit", (1, 8, 8), 10)
