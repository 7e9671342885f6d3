"""Every benchmark entry point's ``--help`` describes every option and states its real default."""

import argparse
import tempfile
from pathlib import Path

import pytest

from benchmarks import (
    fidelity,
    import_time,
    memory_cycles,
    overhead,
    report,
    run,
    scaling,
    scaling_dask,
    scaling_paired,
    scaling_training,
    transaction_cost,
)

PARSERS = {
    "run": run.build_parser,
    "report": report.build_parser,
    "overhead": overhead.build_parser,
    "fidelity": fidelity.build_parser,
    "transaction_cost": transaction_cost.build_parser,
    "import_time": import_time.build_parser,
    "memory_cycles": memory_cycles.build_parser,
    "scaling": scaling.build_parser,
    "scaling_dask": scaling_dask.build_parser,
    "scaling_paired": scaling_paired.build_parser,
    "scaling_training": scaling_training.build_parser,
}


def options(parser):
    return [
        a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


def help_of(parser, action):
    """The rendered help paragraph of one option."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help_with_its_default(name):
    parser = PARSERS[name]()
    for action in options(parser):
        text = help_of(parser, action)
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        if action.default is not None and not isinstance(action.default, bool):
            default = " ".join(str(action.default).split())
            assert f"(default: {default})" in text or "default:" in action.help, (name, text)
        assert text.count("default:") <= 1, f"{name}: the default is stated twice: {text}"


def test_flags_do_not_read_as_values():
    parser = run.build_parser()
    warm = next(a for a in options(parser) if "--no-warm-start" in a.option_strings)
    text = help_of(parser, warm)
    assert "(default: True)" not in text and "default: off" in text
    assert parser.parse_args([]).warm_start is True


def test_measurements_go_to_a_scratch_directory_unless_told():
    scratch = Path(tempfile.gettempdir())
    assert scratch in overhead.build_parser().parse_args([]).output_dir.parents
    assert scratch in fidelity.build_parser().parse_args([]).out_dir.parents
    assert overhead.build_parser().parse_args([]).repeats == 9  # the README's committed run


def test_default_strategies_leave_out_the_batch_variant():
    assert "tidal_batch" not in run.build_parser().parse_args([]).strategies
    assert run.build_parser().parse_args(["--strategies", "tidal_batch"]).strategies == ["tidal_batch"]
