"""What ``import tidal_modal`` costs, and who pays it.

Runs ``python -X importtime -c "import tidal_modal"`` in fresh processes (``--repeats``; the
median is kept) and attributes each module's own import time to its top-level package, so the
table says how much is tidal_modal's own code and how much its dependencies (torch,
scikit-learn and what it pulls in, skorch, modAL). Also lists which optional packages got
imported (none should: the core never imports plotting, Dask, Accelerate or the benchmarks).

Prints a table and writes JSON to ``--output``.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from .cli import HelpFormatter

DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "tidal_modal_benchmarks" / "import_time.json"
# extras and benchmark-only packages (not tabulate: skorch prints its epoch tables with it)
OPTIONAL = (
    "matplotlib",
    "dask",
    "distributed",
    "accelerate",
    "skactiveml",
    "benchmarks",
    "mlxtend",
)


def one_import(module):
    """Self time (s) per top-level package, and the top-level packages imported, in a fresh process."""
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    per_package = defaultdict(float)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:") :].split("|"))
        if self_us.isdigit():  # skips the header line
            per_package[name.split(".")[0]] += int(self_us) / 1e6
    return dict(per_package), done.stdout.split()


def build_parser():
    """The command line of ``python -m benchmarks.import_time``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.import_time",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes; the median is kept")
    parser.add_argument("--module", default="tidal_modal", help="the module to import")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the JSON goes")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    runs = [one_import(args.module) for _ in range(args.repeats)]
    packages = sorted({name for times, _ in runs for name in times})
    median = {name: float(np.median([times.get(name, 0.0) for times, _ in runs])) for name in packages}
    totals = [sum(times.values()) for times, _ in runs]
    own = args.module.split(".")[0]
    result = {
        "module": args.module,
        "repeats": args.repeats,
        "total_s": float(np.median(totals)),
        "own_s": median.get(own, 0.0),
        "per_package_s": dict(sorted(median.items(), key=lambda item: -item[1])),
        "optional_imported": sorted(set(runs[0][1]) & set(OPTIONAL)),
        "environment": {"python": platform.python_version(), "machine": platform.machine()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"import {args.module}: {result['total_s']:.2f} s (median of {args.repeats} fresh processes)")
    print("| package | self time s | share |\n|---|---|---|")
    for name, seconds in list(result["per_package_s"].items())[:10]:
        print(f"| {name} | {seconds:.3f} | {seconds / result['total_s']:.1%} |")
    print(f"optional packages imported: {', '.join(result['optional_imported']) or 'none'}")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
