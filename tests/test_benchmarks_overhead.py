"""Smoke test of the overhead benchmark: it runs, measures every part and writes its files."""

import json

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch.nn import functional as F

from benchmarks import overhead


def test_overhead_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "overhead"
    results = overhead.main(
        ["--repeats", "2", "--n-train", "64", "--epochs", "1", "--n-pool", "256",
         "--sizes", "2000", "--subset", "500", "--output-dir", str(out)]
    )  # fmt: skip
    assert [(r["backbone"], r["td_hidden"]) for r in results["fit"]] == overhead.FIT_RUNS
    assert [r["backbone"] for r in results["query"]] == list(overhead.BACKBONES)
    for r in results["fit"]:  # ratios are medians of the per-repeat ratios of the stored times
        times = {side: np.asarray(t) for side, t in r["times"].items()}
        assert r["ratio"] == pytest.approx(np.median(times["tidal"] / times["plain"]))
        assert r["like_for_like_ratio"] == pytest.approx(np.median(times["tidal_rows"] / times["plain"]))
        assert r["head_floor_ratio"] == pytest.approx(np.median(times["floor"] / times["plain"]))
        floor_ratio = np.median(times["tidal_rows"] / times["floor"])
        assert r["like_for_like_vs_head_floor"] == pytest.approx(floor_ratio)
        # the head adds work; the floor does exactly TiDAL's, whichever way the rows are read
        assert r["flops"]["floor"] == r["flops"]["tidal"] == r["flops"]["tidal_rows"] > r["flops"]["plain"]
    for r in results["query"]:
        assert r["tidal_entropy_vs_bare_forward_with_head"] > 0
        assert (
            r["flops"]["tidal_entropy"] == r["flops"]["bare_forward_with_head"] > r["flops"]["bare_forward"]
        )
    for r in results["disal"]:
        times = {side: np.asarray(t) for side, t in r["times"].items()}
        assert r["fit_ratio"] == pytest.approx(np.median(times["recording"] / times["no_recording"]))
        assert r["query_ratio"] == pytest.approx(np.median(times["disal"] / times["bare_forward_with_head"]))
        assert r["checkpoints"] == 1  # one epoch: one checkpoint, so the recording side did record
    assert [r["backbone"] for r in results["disal"]] == list(overhead.DISAL_BACKBONES)
    assert [(r["n"], r["pool_subset"]) for r in results["scaling"]] == [(2000, None), (2000, 500)]
    assert all(r["seconds"] > 0 for r in results["scaling"])
    assert json.loads((out / "overhead.json").read_text())["fit"] == results["fit"]
    report = (out / "overhead.md").read_text()
    assert "## Scaling" in report and "## DISAL" in report and "IQR" in report
    assert (out / "scaling.png").stat().st_size > 0


def test_parts_measure_and_report_only_what_is_asked(tmp_path):
    results = overhead.main(
        ["--parts", "selection", "--repeats", "1", "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert "selection" in results and not {"fit", "query", "disal", "scaling"} & set(results)
    report = (tmp_path / "overhead.md").read_text()
    assert "## Selection" in report and "## Training" not in report and "## DISAL" not in report


def test_flop_counts_of_the_mlp_fit_match_a_hand_count():
    n, w, h, C, F_in = 256, 256, 128, overhead.N_CLASSES, overhead.N_FEATURES
    X, y = overhead.random_data(n, seed=0)
    plain = overhead.count_flops(lambda: NeuralNetClassifier(**overhead.net_params("mlp", 1)).fit(X, y))
    tidal = overhead.count_flops(
        lambda: overhead.TiDALNetClassifier(**overhead.net_params("mlp", 1)).fit(X, y)
    )
    # 2 FLOPs per multiply-add; backward: weight and input gradients, no input gradient for layer 1
    assert plain == 2 * n * (2 * F_in * w + 3 * (w * w + w * C))
    head = 2 * n * 3 * (w * h + h * C)
    dry_pass = 2 * 2 * (F_in * w + w * w + w * C + w * h + h * C)  # two rows give the head its shapes
    assert tidal == plain + head + dry_pass


def test_head_floor_trains_backbone_and_head_on_ce_plus_kl_to_uniform():
    X, y = overhead.random_data(64, seed=0)
    torch.manual_seed(0)
    net = NeuralNetClassifier(**overhead.head_floor_params("mlp", epochs=1, td_hidden=8)).initialize()
    head = net.module_.tidal.td_head
    before = [p.detach().clone() for p in head.parameters()]
    net.partial_fit(X, y)
    assert all(not torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))

    logits, td_logits = torch.randn(4, 10), torch.randn(4, 10)
    target = torch.as_tensor(np.array([0, 3, 9, 1]))
    kl = (np.log(0.1) - F.log_softmax(td_logits, dim=1)).mean(dim=1).mean()  # KL(uniform || q)
    expected = F.cross_entropy(logits, target) + kl
    assert overhead.HeadLoss()((logits, td_logits), target).item() == pytest.approx(expected.item(), rel=1e-5)
