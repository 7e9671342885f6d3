import json

import numpy as np
import pytest
import torch

from benchmarks import fidelity
from benchmarks.backbones import MLP
from benchmarks.fidelity import TDFidelity, kl_divergence, minority_auroc
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


def test_callback_compares_with_the_recorded_dynamics():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 6).astype(np.float32)
    y = np.arange(40) % 2
    torch.manual_seed(0)
    net = TiDALNetClassifier(
        MLP, module__n_features=6, module__n_classes=2, callbacks=[TDFidelity()], max_epochs=3, verbose=0
    ).fit(X, y)
    td, proba = net.predict_td(X, return_proba=True)
    assert len(net.history[:, "kl_td_head"]) == 3
    assert net.history[-1, "kl_td_head"] == pytest.approx(kl_divergence(net.training_dynamics_, td))
    assert net.history[-1, "kl_classifier"] == pytest.approx(kl_divergence(net.training_dynamics_, proba))


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
    assert 0 <= headline["minority_auroc_td_entropy"]["mean"] <= 1
    assert headline["kl_td_head_last_epoch"]["mean"] >= 0
    assert len((tmp_path / "kl.csv").read_text().splitlines()) == 1 + 2 * 2
    for name in ["kl.png", "entropy_hist.png", "auroc.csv"]:
        assert (tmp_path / name).stat().st_size > 0
