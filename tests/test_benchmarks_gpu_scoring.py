import json
import subprocess
from pathlib import Path

from benchmarks import gpu_scoring

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_scoring_benchmark_runs_on_a_cpu_and_writes_its_report(tmp_path):
    results = gpu_scoring.main(
        ["--device", "cpu", "--n-pool", "600", "--batch-sizes", "64", "256", "--backbones", "mlp",
         "--repeats", "1", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    (result,) = results
    assert set(result["floor_s"]) == {"64", "256"}
    assert result["fastest_floor_s"] == min(result["floor_s"].values())
    assert result["tidal_entropy_rows_per_s"] == 600 / result["tidal_entropy_s"]
    assert json.loads((tmp_path / "gpu_scoring.json").read_text())["results"] == results
    assert "tidal_entropy / fastest floor" in (tmp_path / "gpu_scoring.md").read_text()


def test_the_gpu_check_script_is_valid_bash_and_runs_both_parts():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    assert "pytest -m cuda" in text and "benchmarks.gpu_scoring --device cuda" in text
