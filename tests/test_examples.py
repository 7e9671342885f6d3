import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.modal

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_digits_loop_prints_a_curve_per_strategy(capsys):
    main = runpy.run_path(str(EXAMPLES / "digits_loop.py"))["main"]
    curves = main(["--cycles", "2", "--epochs", "5", "--initial", "30", "--query", "30"])
    assert list(curves) == ["tidal_entropy", "disal", "random"]
    assert len({curve[0] for curve in curves.values()}) == 1  # the same start for every strategy
    for name, curve in curves.items():  # 0.45 after 30 labels, 0.51 to 0.67 after 90
        assert len(curve) == 3 and 0.3 < curve[0] < curve[-1] - 0.03, (name, curve)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["labeled", *curves]
    printed = [[float(value) for value in line.split()] for line in lines[1:]]
    rows = zip(*curves.values(), strict=True)
    expected = [[30 + 30 * cycle, *(round(acc, 3) for acc in row)] for cycle, row in enumerate(rows)]
    assert printed == expected
