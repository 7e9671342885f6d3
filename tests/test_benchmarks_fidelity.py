import csv
import json

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset
from skorch.history import History
from torch.optim.lr_scheduler import MultiStepLR

from benchmarks import fidelity
from benchmarks.augment import AugmentRows
from benchmarks.backbones import MLP, BatchNormCNN
from benchmarks.fidelity import TDFidelity, kl_divergence, minority_auroc
from benchmarks.protocol import ALConfig, make_net
from benchmarks.recipe import PAPER_RECIPE, EvenBatchLoader
from tidal_modal import TiDALNetClassifier


def test_kl_divergence_by_hand():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.25, 0.75], [0.5, 0.5]])
    expected = (0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75) + np.log(2)) / 2
    assert kl_divergence(p, q) == pytest.approx(expected)
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


def test_minority_auroc_of_a_perfect_and_a_reversed_score():
    y = np.array([0, 1, 2, 3, 0, 3])  # 4 classes: 2 and 3 are the minority (tail) half
    assert minority_auroc(y, y.astype(float), 4) == 1.0
    assert minority_auroc(y, -y.astype(float), 4) == 0.0


class PlantedNet:
    """A fitted net as the callback sees it, with known training dynamics and predictions."""

    training_dynamics_ = np.array([[0.5, 0.5], [1.0, 0.0]])

    def __init__(self):
        self.history = History()
        self.history.new_epoch()
        self.predicted_on = None

    def predict_td(self, X, return_proba=False):
        self.predicted_on = X
        return np.array([[0.25, 0.75], [0.5, 0.5]]), np.full((2, 2), 0.5)


def test_callback_records_kl_from_the_actual_td():
    net, rows = PlantedNet(), np.zeros((2, 3))
    TDFidelity().on_epoch_end(net, dataset_train=Dataset(rows, np.zeros(2)))
    assert net.predicted_on is rows  # the training rows
    # (0.5 ln 2 + 0.5 ln(2/3) + ln 2) / 2, and (0 + ln 2) / 2; the other direction would be infinite
    assert net.history[-1, "kl_td_head"] == pytest.approx(0.4184941)
    assert net.history[-1, "kl_classifier"] == pytest.approx(0.3465736)


def test_callback_records_every_epoch_of_a_fit():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 6).astype(np.float32)
    y = np.arange(40) % 2
    torch.manual_seed(0)
    net = TiDALNetClassifier(
        MLP, module__n_features=6, module__n_classes=2, callbacks=[TDFidelity()], max_epochs=3, verbose=0
    ).fit(X, y)
    td, proba = net.predict_td(X, return_proba=True)
    actual = net.training_dynamics_  # float32: the callback's KL is good to about 1e-5
    assert len(net.history[:, "kl_td_head"]) == 3
    for key, q in (("kl_td_head", td), ("kl_classifier", proba)):
        expected = np.mean(np.sum(actual * np.log(actual / q), axis=1))
        assert net.history[-1, key] == pytest.approx(expected, rel=1e-4)


def read_csv(path):
    with open(path, newline="") as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def test_main_writes_numbers_and_plots(tmp_path):
    fidelity.main(
        [
            "--kl-dataset",
            "digits",
            "--kl-labeled",
            "100",
            "--imbalanced-dataset",
            "digits-ir10",
            "--auroc-labeled",
            "60",
            "--epochs",
            "2",
            "--seeds",
            "0",
            "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    headline = json.loads((tmp_path / "fidelity.json").read_text())
    kl = read_csv(tmp_path / "kl.csv")
    assert [(row["seed"], row["epoch"]) for row in kl] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    first, last = kl[0::2], kl[1::2]
    for start, end in zip(first, last, strict=True):  # the paper's claim, in every seed
        assert end["kl_td_head"] < start["kl_td_head"]  # the head learns the TD ...
        assert end["kl_td_head"] < 0.5 * end["kl_classifier"]  # ... closer than the classifier is
    head_last = [row["kl_td_head"] for row in last]
    assert headline["kl_td_head_last_epoch"]["mean"] == pytest.approx(sum(head_last) / 2, rel=1e-4)
    assert headline["kl_td_head_last_epoch"]["std"] == pytest.approx(
        abs(head_last[0] - head_last[1]) / 2**0.5, rel=1e-3
    )
    assert headline["kl_classifier_first_epoch"]["mean"] == pytest.approx(
        (first[0]["kl_classifier"] + first[1]["kl_classifier"]) / 2, rel=1e-4
    )
    auroc = read_csv(tmp_path / "auroc.csv")
    assert [row["seed"] for row in auroc] == [0, 1]
    # the classifier's entropy tells its errors apart well above chance (0.75 in both seeds)
    assert all(row["error_auroc_classifier_entropy"] > 0.65 for row in auroc)
    for column in ("minority_auroc_td_entropy", "error_auroc_td_entropy"):
        assert headline[column]["mean"] == pytest.approx((auroc[0][column] + auroc[1][column]) / 2, abs=1e-4)
    for name in ["kl.png", "entropy_hist.png"]:
        assert (tmp_path / name).stat().st_size > 0


def test_recipe_paper_trains_the_paper_net(tmp_path, monkeypatch):
    nets = []

    def recording_make_net(*args, **kwargs):
        nets.append(make_net(*args, **kwargs))
        return nets[-1]

    monkeypatch.setattr(fidelity, "make_net", recording_make_net)
    fidelity.main(
        ["--recipe", "paper", "--kl-dataset", "digits", "--kl-labeled", "80", "--imbalanced-dataset",
         "digits-ir10", "--auroc-labeled", "60", "--epochs", "2", "--seeds", "0", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    assert len(nets) == 2  # the KL fit and the AUROC fit
    for net in nets:
        assert net.module is BatchNormCNN
        assert isinstance(net.optimizer_, torch.optim.SGD)
        group = net.optimizer_.param_groups[0]
        assert group["momentum"] == PAPER_RECIPE["momentum"]
        assert group["weight_decay"] == PAPER_RECIPE["weight_decay"]
        assert net.batch_size == PAPER_RECIPE["batch_size"] and net.iterator_train is EvenBatchLoader
        augment = net.iterator_train__collate_fn
        assert isinstance(augment, AugmentRows) and augment.shift == PAPER_RECIPE["shift"]
        assert dict(net.callbacks_)["lr_scheduler"].policy is MultiStepLR  # the step schedule
        assert len(net.history) == 2
    headline = json.loads((tmp_path / "fidelity.json").read_text())
    assert headline["arguments"]["recipe"] == "paper"
    assert headline["arguments"]["backbone"] == "cnn-bn" and headline["arguments"]["epochs"] == 2
    assert headline["recipe_values"]["optimizer"] == "sgd"
    kl = read_csv(tmp_path / "kl.csv")
    assert [(row["seed"], row["epoch"]) for row in kl] == [(0, 1), (0, 2)]
    assert all(row["kl_td_head"] >= 0 and row["kl_classifier"] >= 0 for row in kl)
    assert [row["seed"] for row in read_csv(tmp_path / "auroc.csv")] == [0]
    for name in ["kl.png", "entropy_hist.png"]:
        assert (tmp_path / name).stat().st_size > 0


def test_recipe_defaults_and_overrides():
    assert fidelity.parse_args([]).epochs == 30 and fidelity.parse_args([]).backbone == "mlp"
    paper = fidelity.parse_args(["--recipe", "paper"])
    assert (paper.epochs, paper.backbone) == (100, "cnn-bn")
    assert fidelity.parse_args(["--recipe", "paper", "--epochs", "7"]).epochs == 7
    config = fidelity.make_config(paper, "mnist5k")
    assert {k: getattr(config, k) for k in PAPER_RECIPE} == PAPER_RECIPE
    assert fidelity.make_config(fidelity.parse_args([]), "mnist5k") == ALConfig(dataset="mnist5k")
