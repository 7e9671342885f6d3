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
    # every side was timed once per repeat (the query's five, its floors, the floor at its scoring
    # batch, and the fastest floor)
    floors = len(overhead.FLOOR_BATCH_SIZES) + 2
    sides = {"fit": 4, "query": 5 + floors, "disal": 5 + floors}
    for part, n_sides in sides.items():
        for r in results[part]:
            assert len(r["times"]) == n_sides and all(len(t) == 2 and min(t) > 0 for t in r["times"].values())
    for r in results["fit"]:
        # the head adds work; the floor does exactly TiDAL's, whichever way the rows are read
        assert r["flops"]["floor"] == r["flops"]["tidal"] == r["flops"]["tidal_rows"] > r["flops"]["plain"]
    for r in results["query"]:
        # a query does the floor's work, plus one row through the module that sizes its batches
        one_row = r["flops"]["bare_forward"] // r["n_pool"]
        assert r["flops"]["tidal_entropy"] == r["flops"]["bare_forward_with_head"] + one_row
        assert r["flops"]["bare_forward_with_head"] > r["flops"]["bare_forward"]
    # the mlp (784 -> 256 -> 256 -> 10) and its head (256 -> 128 -> 10): per row multiply-adds
    backbone, head = 784 * 256 + 256 * 256 + 256 * 10, 256 * 128 + 128 * 10
    assert results["query"][0]["head_flop_ratio"] == pytest.approx((backbone + head) / backbone)
    for r in results["disal"]:
        assert r["checkpoints"] == 1  # one epoch: one checkpoint, so the recording side did record
        assert r["fastest_floor_batch"] in overhead.FLOOR_BATCH_SIZES and r["disal_vs_fastest_floor"] > 0
    for r in results["query"]:
        assert 0 <= r["td_difference_at_fastest_batch"] < 1e-5  # rounding, not a different result
    assert [r["backbone"] for r in results["disal"]] == list(overhead.BACKBONES)
    assert [(r["n"], r["pool_subset"]) for r in results["scaling"]] == [(2000, None), (2000, 500)]
    for r in results["scaling"]:
        assert r["pool_mib"] == pytest.approx(2000 * 784 * 4 / 2**20)
        assert r["rows_per_s"] == pytest.approx((r["pool_subset"] or 2000) / r["seconds"])
    assert json.loads((out / "overhead.json").read_text())["fit"] == results["fit"]
    report = (out / "overhead.md").read_text()
    assert "## Scaling" in report and "## DISAL" in report and "IQR" in report
    assert (out / "scaling.png").stat().st_size > 0


# Planted per-repeat times: the median of the per-repeat ratios differs from their mean and from
# the ratio of the medians, so each ratio below can only come out of the median of ratios.
PLANTED = {
    "plain": [1.0, 2.0, 4.0],
    "floor": [1.5, 2.0, 16.0],  # / plain: 1.5, 1, 4 -> 1.5
    "tidal": [3.0, 2.0, 4.0],  # / plain: 3, 1, 1 -> 1
    "tidal_rows": [2.0, 10.0, 8.0],  # / plain: 2, 5, 2 -> 2; / floor: 4/3, 5, 1/2 -> 4/3
    "bare_forward": [1.0, 2.0, 4.0],
    "bare_forward_with_head": [2.5, 2.0, 6.0],  # also the floor at 128 rows: the same pass
    "entropy_sampling": [2.0, 1.0, 0.5],
    "tidal_entropy": [3.0, 2.0, 4.0],  # / bare: 1; / bare + head: 1.2, 1, 2/3 -> 1; / entropy_sampling: 2
    "tidal_margin": [2.0, 10.0, 8.0],  # / bare: 2; / bare + head: 0.8, 5, 4/3 -> 4/3; / entropy_sampling: 10
    "no_recording": [1.0, 2.0, 4.0],
    "recording": [3.0, 2.0, 4.0],  # / no recording: 1
    "disal": [2.0, 10.0, 8.0],  # / bare + head: 4/3; / tidal_entropy: 2/3, 5, 2 -> 2
    # the fastest floor of each repeat: 1, 2, 0.5; tidal_entropy / it: 3, 1, 8 -> 3
    "floor_64": [6.0, 6.0, 6.0],
    "floor_512": [1.0, 3.0, 4.0],
    "floor_1024": [2.0, 3.0, 0.5],
    "floor_4096": [5.0, 5.0, 5.0],
    # / the fastest floor: 1.5, 1, 2 -> 1.5; tidal_entropy / it: 2, 1, 4 -> 2; tidal_margin: 4/3, 5, 8 -> 5
    "floor_scoring_batch": [1.5, 2.0, 1.0],
}


@pytest.fixture
def planted_times(monkeypatch):
    monkeypatch.setattr(overhead, "interleaved", lambda runs, repeats, seed=0: {k: PLANTED[k] for k in runs})
    monkeypatch.setattr(overhead, "count_flops", lambda fn: 1)


def test_ratios_are_medians_of_the_per_repeat_ratios(planted_times):
    fit = overhead.measure_fit("mlp", 3, n_train=64, epochs=1)
    assert (fit["plain_s"], fit["head_floor_s"], fit["tidal_s"], fit["tidal_rows_s"]) == (2.0, 2.0, 3.0, 8.0)
    assert (fit["ratio"], fit["like_for_like_ratio"], fit["head_floor_ratio"]) == (1.0, 2.0, 1.5)
    assert fit["like_for_like_vs_head_floor"] == pytest.approx(4 / 3)
    assert overhead.verdict(fit, "tidal", "plain", 1.1) == "1.000 (meets <= 1.1; IQR 1.000-2.000)"

    query = overhead.measure_query("mlp", 3, n_pool=256)
    assert query["tidal_entropy_vs_bare_forward"] == 1.0
    assert query["tidal_entropy_vs_bare_forward_with_head"] == 1.0
    assert query["tidal_entropy_vs_entropy_sampling"] == 2.0
    assert query["tidal_margin_vs_bare_forward"] == 2.0
    assert query["tidal_margin_vs_bare_forward_with_head"] == pytest.approx(4 / 3)
    assert query["tidal_margin_vs_entropy_sampling"] == 10.0
    assert query["times"]["fastest_floor"] == [1.0, 2.0, 0.5]
    assert query["tidal_entropy_vs_fastest_floor"] == 3.0  # not the ratio to any one floor
    assert query["fastest_floor_batch"] == 1024  # the floor of the lowest median: 2 (6, 2.5, 3, 2, 5)
    assert query["times"]["floor_128"] == PLANTED["bare_forward_with_head"]  # timed once, not twice
    assert query["scoring_floor_vs_fastest_floor"] == 1.5  # not one of the floors the fastest is of
    assert (query["tidal_entropy_vs_scoring_floor"], query["tidal_margin_vs_scoring_floor"]) == (2.0, 5.0)

    disal = overhead.measure_disal("mlp", 3, n_train=64, epochs=1, n_pool=256)
    assert (disal["fit_ratio"], disal["disal_vs_tidal_entropy"]) == (1.0, 2.0)
    assert disal["query_ratio"] == pytest.approx(4 / 3)
    # / the fastest floor (1, 2, 0.5): 2, 5, 16 -> 5; / the floor at the scoring batch: 4/3, 5, 8 -> 5
    assert (disal["disal_vs_fastest_floor"], disal["disal_vs_scoring_floor"]) == (5.0, 5.0)
    assert disal["scoring_floor_vs_fastest_floor"] == 1.5


def test_the_td_difference_is_that_of_the_batch_alone():
    X, y = overhead.random_data(64, seed=0)
    torch.manual_seed(0)
    net = overhead.TiDALNetClassifier(**overhead.net_params("mlp", epochs=1)).fit(X, y)
    pool, _ = overhead.random_data(300, seed=1)
    assert overhead.td_difference(net, pool, net.scoring_batch_size(pool)) == 0.0  # same batch, same bits
    assert overhead.td_difference(net, pool, 7) < 1e-6
    assert net.get_params_for("iterator_valid") == {}  # the net itself keeps its own batch


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
    head = 2 * n * 3 * (w * h + h * C)  # no dry pass: the first training batch gives the head its shapes
    assert tidal == plain + head


def test_head_floor_trains_backbone_and_head_on_ce_plus_kl_to_uniform():
    X, y = overhead.random_data(64, seed=0)
    torch.manual_seed(0)
    net = NeuralNetClassifier(**overhead.head_floor_params("mlp", epochs=1, td_hidden=8)).initialize()
    head = net.module_.td_head
    with torch.no_grad():  # the lazy head takes its shapes from a first forward pass
        net.module_(torch.as_tensor(X[:2]))
    before = [p.detach().clone() for p in head.parameters()]
    net.partial_fit(X, y)
    assert all(not torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))

    logits, td_logits = torch.randn(4, 10), torch.randn(4, 10)
    target = torch.as_tensor(np.array([0, 3, 9, 1]))
    kl = (np.log(0.1) - F.log_softmax(td_logits, dim=1)).mean(dim=1).mean()  # KL(uniform || q)
    expected = F.cross_entropy(logits, target) + kl
    assert overhead.HeadLoss()((logits, td_logits), target).item() == pytest.approx(expected.item(), rel=1e-5)
