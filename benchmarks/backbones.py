"""Classifier backbones for the benchmarks: an MLP, small CNNs and a CIFAR ResNet-18.

Each returns class logits and has dropout before its last ``nn.Linear`` (MC-dropout BALD needs
it); TiDAL's head reads the input of that layer unless ``td_layers`` names other layers. Every
module takes flat rows ``[n, n_features]`` and reshapes them itself, so one pool array serves
every backbone.
"""

import math

from torch import nn
from torch.nn import functional as F

__all__ = ["BACKBONES", "MLP", "SmallCNN", "BatchNormCNN", "ResNet18", "backbone_params"]


class MLP(nn.Module):
    """``n_features -> hidden -> hidden -> n_classes`` with ReLU and dropout.

    Parameters
    ----------
    n_features : int
    n_classes : int
    hidden : int, default=256
    dropout : float, default=0.3
    """

    def __init__(self, n_features, n_classes, hidden=256, dropout=0.3):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x):
        return self.layers(x.flatten(1))


def _conv_stage(in_channels, out_channels, batch_norm):
    """3x3 convolution (+ batch norm), ReLU, 2x2 max-pool."""
    if not batch_norm:
        return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class SmallCNN(nn.Module):
    """Two conv-pool stages and a two-layer classifier, for 8x8 to 32x32 images.

    Parameters
    ----------
    image_shape : tuple of int
        ``(channels, height, width)`` of the flat input rows.
    n_classes : int
    width : int, default=32
        Channels of the first convolution (the second has twice as many).
    dropout : float, default=0.3
    batch_norm : bool, default=False
        Batch norm after each convolution (which then has no bias).
    """

    def __init__(self, image_shape, n_classes, width=32, dropout=0.3, batch_norm=False):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.features = nn.Sequential(
            *_conv_stage(image_shape[0], width, batch_norm),
            *_conv_stage(width, 2 * width, batch_norm),
            nn.AdaptiveAvgPool2d(2),  # [n, 2 * width, 2, 2] whatever the image size
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(8 * width, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, n_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x.view(-1, *self.image_shape)))


class BatchNormCNN(SmallCNN):
    """:class:`SmallCNN` at half width (16 and 32 channels) with batch norm after each convolution.

    The ``*-paper`` presets' backbone: SGD at the paper's LR 0.1 trains it in a few hundred
    steps, as batch norm lets the paper's ResNet-18 train, where :class:`SmallCNN` plateaus
    for most of a fit on 100 labels; half the width is about a third of its CPU time.

    Parameters
    ----------
    image_shape : tuple of int
    n_classes : int
    width : int, default=16
    dropout : float, default=0.3
    """

    def __init__(self, image_shape, n_classes, width=16, dropout=0.3):
        super().__init__(image_shape, n_classes, width, dropout, batch_norm=True)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions and a (projected) shortcut."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """The CIFAR ResNet-18 of the TiDAL reference code (3x3 stem, no max-pool, 4 stages).

    TiDAL's head reads the four stage outputs ``layer1`` .. ``layer4`` (see :data:`BACKBONES`).

    Parameters
    ----------
    image_shape : tuple of int
        ``(channels, height, width)`` of the flat input rows, e.g. ``(3, 32, 32)``.
    n_classes : int
    dropout : float, default=0.3
        Before the last linear layer (the reference has none; MC-dropout BALD needs it).
    """

    def __init__(self, image_shape, n_classes, dropout=0.3):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.conv1 = nn.Conv2d(image_shape[0], 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(512, n_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x.view(-1, *self.image_shape))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.dropout(F.adaptive_avg_pool2d(out, 1).flatten(1)))


# name -> (module class, td_layers); td_layers=None is the input of the last nn.Linear
BACKBONES = {
    "mlp": (MLP, None),
    "cnn": (SmallCNN, None),
    "cnn-bn": (BatchNormCNN, None),
    "resnet18": (ResNet18, ["layer1", "layer2", "layer3", "layer4"]),
}


def backbone_params(name, image_shape, n_classes, dropout=0.3):
    """Keyword arguments for :class:`~tidal_modal.TiDALNetClassifier` that build backbone ``name``.

    The module is passed as a class with ``module__*`` arguments, so that skorch builds a fresh
    one whenever the net is (re)initialised.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose from {sorted(BACKBONES)}.")
    module, td_layers = BACKBONES[name]
    shape = {"n_features": math.prod(image_shape)} if module is MLP else {"image_shape": tuple(image_shape)}
    params = {f"module__{k}": v for k, v in {**shape, "n_classes": n_classes, "dropout": dropout}.items()}
    return {"module": module, "td_layers": td_layers, **params}
