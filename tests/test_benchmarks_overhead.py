"""Smoke test of the overhead benchmark: it runs, measures every part and writes its files."""

import json

from benchmarks import overhead


def test_overhead_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "overhead"
    results = overhead.main(
        ["--repeats", "1", "--n-train", "64", "--epochs", "1", "--n-pool", "256",
         "--sizes", "2000", "--subset", "500", "--output-dir", str(out)]
    )  # fmt: skip
    assert {r["backbone"] for r in results["fit"]} == {"mlp", "mlp-wide", "cnn"}
    assert all(r["ratio"] > 0 and 0 < r["head_share"] for r in results["fit"])
    assert all(r["tidal_entropy_vs_bare_forward"] > 0 for r in results["query"])
    assert [(r["n"], r["pool_subset"]) for r in results["scaling"]] == [(2000, None), (2000, 500)]
    assert all(r["seconds"] > 0 for r in results["scaling"])
    assert json.loads((out / "overhead.json").read_text())["fit"] == results["fit"]
    assert "## Scaling" in (out / "overhead.md").read_text()
    assert (out / "scaling.png").stat().st_size > 0
