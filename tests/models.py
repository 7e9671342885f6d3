"""Small backbones shared by the tests."""

from torch import nn


class MLP(nn.Module):
    """A small classifier for vector data; dropout makes train-mode passes differ from eval ones."""

    def __init__(self, n_features=64, hidden=32, n_classes=10, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.out(self.body(x))


class SmallCNN(nn.Module):
    """Two conv stages on [n, 1, 8, 8] images; their 4-D maps can feed the TD head."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU())
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.fc(self.stage2(self.stage1(x)).mean(dim=(2, 3)))


class OwnHead(nn.Module):
    """A classifier with a TD head of its own: returns ``(logits, td_logits)``."""

    def __init__(self, n_features=4, n_classes=2):
        super().__init__()
        self.fc = nn.Linear(n_features, n_classes)
        self.td = nn.Linear(n_features, n_classes)

    def forward(self, x):
        return self.fc(x), self.td(x)
