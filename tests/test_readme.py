"""The README's Quickstart runs as printed: quietly, one line per cycle, no FutureWarning."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.modal


def quickstart():
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quickstart_runs_quietly_without_future_warnings():
    done = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", quickstart()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 8 and not done.stderr  # one line per cycle, nothing else
    found = [re.fullmatch(r"cycle (\d): (\d+) labels, test accuracy (0\.\d+)", line) for line in lines]
    assert [(int(m[1]), int(m[2])) for m in found] == [(c, 75 + 25 * c) for c in range(8)]
    assert float(found[-1][3]) > 0.85  # 250 labels of digits: the loop learns


def test_the_strategy_advice_runs_after_the_quickstart():
    """"Which strategy should I use?": both ranked batches query the Quickstart's learner."""
    text = README.read_text()
    section = text[text.index("## Which strategy should I use?") :]
    advice = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    check = "\nimport numpy as np\nprint(len(idx), len(np.unique(idx)), np.array_equal(rows, X_pool[idx]))\n"
    done = subprocess.run(
        [sys.executable, "-c", quickstart().replace("range(8)", "range(1)") + advice + check],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "50 50 True"
