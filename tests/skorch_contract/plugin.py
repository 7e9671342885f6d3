"""pytest plugin that runs skorch's own tests with TiDALNetClassifier in place of NeuralNetClassifier.

``tests/test_skorch_contract.py`` loads it into a pytest subprocess (``-p
tests.skorch_contract.plugin``). When that pytest configures, the plugin puts
:class:`NeuralNetClassifier` below in ``skorch``'s namespace, before skorch's tests are collected
(they import the class from ``skorch``, mostly inside fixtures); at the end it writes each test's
outcome to the JSON file named by ``$SKORCH_CONTRACT_OUTCOMES``. Importing the module changes
nothing: the project's own test run imports it too (``--doctest-modules``).
"""

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import skorch
from skorch.dataset import ValidSplit
from torch import nn

from tidal_modal import TiDALNetClassifier


class NeuralNetClassifier(TiDALNetClassifier):
    """TiDALNetClassifier with skorch's defaults, under skorch's name (messages print the class name).

    skorch's tests are written for ``NLLLoss`` on a module's probabilities, the 5-fold stratified
    split and unshuffled training batches; our active-learning defaults differ on all three.
    """

    def __init__(
        self,
        module,
        *args,
        criterion=nn.NLLLoss,
        train_split=ValidSplit(5, stratified=True),  # noqa: B008 -- skorch's own default, shared alike
        **kwargs,
    ):
        kwargs.setdefault("iterator_train__shuffle", False)
        super().__init__(module, *args, criterion=criterion, train_split=train_split, **kwargs)


def run_once(*args, **kwargs):
    """Stand-in for ``flaky.flaky``: ``@flaky`` and ``@flaky(max_runs=5)`` leave the test as it is."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda test: test


_outcomes = {}


def pytest_configure(config):
    # not skorch.classifier.NeuralNetClassifier: skorch's own methods call super(NeuralNetClassifier, self)
    skorch.NeuralNetClassifier = NeuralNetClassifier
    # skorch's test_net.py imports flaky, a test dependency of skorch's (for one test); an installed one wins
    if importlib.util.find_spec("flaky") is None:
        sys.modules["flaky"] = types.ModuleType("flaky")
        sys.modules["flaky"].flaky = run_once


def pytest_runtest_logreport(report):
    # a failed setup, call or teardown makes the test failed; a skip anywhere makes it skipped
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session):
    path = os.environ.get("SKORCH_CONTRACT_OUTCOMES")
    if path:
        Path(path).write_text(json.dumps(_outcomes, indent=0, sort_keys=True))
