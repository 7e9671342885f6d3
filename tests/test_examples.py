import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.modal

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_digits_loop_prints_a_curve_per_strategy(capsys):
    main = runpy.run_path(str(EXAMPLES / "digits_loop.py"))["main"]
    curves = main(["--cycles", "2", "--epochs", "5", "--initial", "30", "--query", "30"])
    assert set(curves) == {"tidal_entropy", "disal", "random"}
    assert all(len(curve) == 3 and all(0 <= acc <= 1 for acc in curve) for curve in curves.values())
    out = capsys.readouterr().out
    assert "tidal_entropy" in out and "disal" in out
