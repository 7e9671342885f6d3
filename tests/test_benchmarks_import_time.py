"""``import tidal_modal`` imports no optional package, and the import-time benchmark adds up."""

import json

import pytest

from benchmarks import import_time


def test_the_core_imports_no_extra_and_the_times_add_up(tmp_path, capsys):
    out = tmp_path / "import_time.json"
    result = import_time.main(["--repeats", "1", "--output", str(out)])
    assert result["optional_imported"] == []  # no plotting, Dask, Accelerate, benchmarks, ...
    per_package = result["per_package_s"]
    assert {"tidal_modal", "torch", "sklearn", "skorch", "modAL"} <= set(per_package)
    assert sum(per_package.values()) == pytest.approx(result["total_s"])
    assert result["own_s"] == per_package["tidal_modal"] < result["total_s"]
    assert json.loads(out.read_text()) == result
    assert "| tidal_modal |" in capsys.readouterr().out


def test_an_optional_package_is_reported(tmp_path):
    """The check above can fail: a module that imports an extra is caught."""
    result = import_time.main(
        ["--repeats", "1", "--module", "benchmarks.report", "--output", str(tmp_path / "j")]
    )
    assert "matplotlib" in result["optional_imported"] and "benchmarks" in result["optional_imported"]
