"""When to stop labeling: stopping criteria for an active-learning loop.

Each criterion watches a fixed *stop set*: unlabeled rows drawn once, before the loop (they need
no labels, and rows of it may still be queried). Once per cycle, after the learner was taught,
``criterion.update(learner)`` measures one number on the stop set and returns a
:class:`StoppingDecision`: whether to stop, and the value it decided on, for plotting.

- :class:`StabilizingPredictions`: the classifier's predictions on the stop set stop changing
  (Cohen's kappa between consecutive cycles, averaged over a window; Bloodgood & Vijay-Shanker,
  2009). The classic criterion, and the one to use (see the user guide's measurements).
- :class:`OverallUncertainty`: the classifier's mean entropy on the stop set falls below a
  threshold (Zhu et al., 2008).
- :class:`TDDisagreement`: from training dynamics. The share of the stop set where the class
  the TD head predicts the training to favour differs from the classifier's prediction: rows
  whose prediction still moves during training. A count of rows, so its threshold keeps its
  meaning as the net grows more confident.

A criterion takes what a modAL query strategy is given: a fitted estimator, a Pipeline ending
in one, a modAL ``ActiveLearner`` / :class:`~tidal_modal.TiDALActiveLearner` or a
``Committee`` (the consensus: its ``predict`` and ``predict_proba``, its members' mean TD), and
the estimator of a scikit-activeml loop.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np
from scipy.special import entr
from sklearn.metrics import cohen_kappa_score

from .measures import _predict_td
from .validation import InputData

__all__ = [
    "OverallUncertainty",
    "StabilizingPredictions",
    "StoppingDecision",
    "TDDisagreement",
]


class StoppingDecision(NamedTuple):
    """What a criterion decided in a cycle.

    Parameters
    ----------
    stop : bool
        Whether to stop labeling now.
    value : float
        The number compared with the criterion's threshold (NaN while it cannot be computed,
        e.g. kappa in the first cycle).

    Examples
    --------
    >>> from tidal_modal.stopping import StoppingDecision
    >>> stop, value = StoppingDecision(True, 0.995)
    >>> stop
    True
    """

    stop: bool
    value: float


def _check_fraction(name, value, low_open=False):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not ((0 < value <= 1) if low_open else (0 <= value <= 1))
    ):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be a number in {interval}; got {value!r}.")


def _check_window(window):
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer; got {window!r}.")


def _check_stop_set(X_stop):
    if X_stop is None or not hasattr(X_stop, "__len__") or len(X_stop) < 1:
        raise ValueError(
            "X_stop must hold at least one row: a fixed set of unlabeled rows, drawn once before "
            "the loop (e.g. a random sample of the pool)."
        )
    return X_stop


class _Criterion:
    """One measurement per cycle; the decision reads the measurements so far: the mean of the
    last ``window`` against ``threshold``, at most it (or, with ``_stops_above``, at least)."""

    _stops_above = False

    def __init__(self, X_stop: InputData, *, threshold: float, window: int):
        self.X_stop = X_stop
        self.threshold = threshold
        self.window = window

    def _params(self):
        return {"threshold": self.threshold, "window": self.window}

    def _check_params(self):
        _check_stop_set(self.X_stop)
        _check_window(self.window)
        # a kappa threshold of 0 would stop at once; a share or an entropy of 0 is a real goal
        _check_fraction("threshold", self.threshold, low_open=self._stops_above)

    def _stops(self, value):
        return value >= self.threshold if self._stops_above else value <= self.threshold

    def update(self, learner: Any) -> StoppingDecision:
        """Measure ``learner`` on the stop set, record the value and decide.

        Call it once per cycle, after the learner was taught. A call that fails records nothing.

        Parameters
        ----------
        learner : estimator, Pipeline, modAL learner or Committee
            Fitted on the labels so far.

        Returns
        -------
        StoppingDecision
        """
        self._check_params()
        value, state = self._measure(learner)
        values = [*getattr(self, "values_", []), value]
        decision = self.decide(values)
        # recorded only once everything succeeded: a failed call leaves the criterion as it was
        self.values_ = values
        self.decisions_ = [*getattr(self, "decisions_", []), decision]
        self._state = state
        return decision

    def decide(self, values: list[float]) -> StoppingDecision:
        """The decision after cycles whose measurements were ``values`` (one per cycle).

        :meth:`update` calls it; call it yourself to try other thresholds on recorded values
        (``values_``) without running the loop again.

        Parameters
        ----------
        values : sequence of float
            The per-cycle measurements, oldest first.

        Returns
        -------
        StoppingDecision
        """
        recent = np.asarray(values, dtype=float)[-self.window :]
        if len(recent) < self.window or np.isnan(recent).any():
            return StoppingDecision(False, math.nan)
        value = float(recent.mean())
        return StoppingDecision(bool(self._stops(value)), value)

    def reset(self) -> _Criterion:
        """Forget every cycle measured so far (a new loop).

        Returns
        -------
        self
        """
        for name in ("values_", "decisions_", "_state"):
            self.__dict__.pop(name, None)
        return self

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        rows = f"<{len(self.X_stop)} rows>" if hasattr(self.X_stop, "__len__") else repr(self.X_stop)
        return f"{type(self).__name__}(X_stop={rows}, {params})"


class StabilizingPredictions(_Criterion):
    """Stop when the predictions on the stop set stop changing (Bloodgood & Vijay-Shanker, 2009).

    Each cycle measures Cohen's kappa between the labels predicted for the stop set in this
    cycle and in the previous one (1 = the same labels; identical predictions count as 1, also
    when they are all one class). It stops when the mean of the last ``window`` kappas reaches
    ``threshold``. The first decision comes ``window + 1`` cycles in.

    Parameters
    ----------
    X_stop : array-like, tensor or DataFrame
        The stop set: unlabeled rows, fixed for the whole loop.
    threshold : float, default=0.99
        The authors' value: on average fewer than about 1% of the stop set's labels change.
    window : int, default=3
        Cycles averaged (the authors' value).

    Attributes
    ----------
    values_ : list of float
        Kappa of each cycle (NaN in the first).
    decisions_ : list of StoppingDecision

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from tidal_modal.stopping import StabilizingPredictions
    >>> X = np.random.RandomState(0).randn(200, 2)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> criterion = StabilizingPredictions(X[100:], window=2)
    >>> for n in (20, 40, 60, 80):
    ...     decision = criterion.update(LogisticRegression().fit(X[:n], y[:n]))
    >>> len(criterion.values_), decision.stop in (True, False)
    (4, True)
    """

    _stops_above = True

    def __init__(self, X_stop: InputData, *, threshold: float = 0.99, window: int = 3):
        super().__init__(X_stop, threshold=threshold, window=window)

    def _measure(self, learner):
        labels = np.asarray(learner.predict(self.X_stop))
        previous = getattr(self, "_state", None)
        if previous is None:
            return math.nan, labels
        if np.array_equal(labels, previous):
            return 1.0, labels  # kappa is 0/0 when both cycles predict one class
        return float(cohen_kappa_score(previous, labels)), labels


class OverallUncertainty(_Criterion):
    """Stop when the classifier's mean uncertainty on the stop set is low (Zhu et al., 2008).

    Each cycle measures the mean entropy of ``predict_proba`` over the stop set, divided by
    ``log(n_classes)`` so that it lies in [0, 1] whatever the number of classes. It stops when
    the mean over the last ``window`` cycles is at most ``threshold``. Its scale depends on how
    confident the training makes the net, so prefer :class:`StabilizingPredictions`.

    Parameters
    ----------
    X_stop : array-like, tensor or DataFrame
        The stop set: unlabeled rows, fixed for the whole loop.
    threshold : float, default=0.001
        Mean normalized entropy at which to stop. Entropies shrink by orders of magnitude as
        a net grows confident, so the value that works depends on the training: 0.001 was
        chosen on the benchmarks' presets (``python -m benchmarks.stopping``), where 0.05 (a
        99%-confident prediction among 10 classes) stopped too early on every one. No data set
        outside those presets checked it.
    window : int, default=1

    Attributes
    ----------
    values_ : list of float
        Mean normalized entropy of each cycle.
    decisions_ : list of StoppingDecision

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from tidal_modal.stopping import OverallUncertainty
    >>> X = np.random.RandomState(0).randn(200, 2)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> criterion = OverallUncertainty(X[100:], threshold=0.3)
    >>> criterion.update(LogisticRegression().fit(X[:50], y[:50]))  # doctest: +ELLIPSIS
    StoppingDecision(stop=False, value=0.56...)
    """

    def __init__(self, X_stop: InputData, *, threshold: float = 0.001, window: int = 1):
        super().__init__(X_stop, threshold=threshold, window=window)

    def _measure(self, learner):
        proba = np.asarray(learner.predict_proba(self.X_stop), dtype=float)
        if proba.ndim != 2 or proba.shape[1] < 2:
            raise ValueError(
                f"predict_proba must give one row of at least 2 classes per row; got {proba.shape}."
            )
        return float(entr(proba).sum(axis=1).mean() / math.log(proba.shape[1])), None


def _fitted(learner):
    """What holds the TD head: scikit-learn's wrappers (scikit-activeml's ``SklearnClassifier``)
    keep the fitted estimator in ``estimator_``, beside the unfitted ``estimator``."""
    fitted = getattr(learner, "estimator_", None)
    return fitted if fitted is not None and callable(getattr(fitted, "predict_td", None)) else learner


class TDDisagreement(_Criterion):
    """Stop when the TD head and the classifier agree on (nearly) every row of the stop set.

    Training dynamics average a row's predictions over the epochs of a fit; the TD head
    predicts them for unlabeled rows. Where the class the head expects the training to have
    favoured (the argmax of the predicted TD) differs from the class the trained classifier
    predicts, the row's prediction moved during training: the model has not settled on it.
    Each cycle measures the share of the stop set where they differ (with a Committee, its
    consensus TD against its consensus prediction). The share is a count of rows, not a size of
    probabilities, so it keeps its meaning as an Adam-trained net grows confident (entropies
    shrink by orders of magnitude; this share does not). It stops when the mean share over the
    last ``window`` cycles is at most ``threshold``.

    Needs an estimator with a TD head (:class:`~tidal_modal.TiDALNetClassifier`, a Pipeline
    ending in one, or a learner or Committee of them).

    Parameters
    ----------
    X_stop : array-like, tensor or DataFrame
        The stop set: unlabeled rows, fixed for the whole loop.
    threshold : float, default=0.002
        Share at which to stop: 1 row in 500 on average (set on seed 0 of two benchmark
        presets before they were measured). 0 (no row disagrees for ``window`` cycles) stops
        later and loses less accuracy.
    window : int, default=3
        Cycles averaged.

    Attributes
    ----------
    values_ : list of float
        The share of each cycle.
    decisions_ : list of StoppingDecision

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALNetClassifier
    >>> from tidal_modal.stopping import TDDisagreement
    >>> X = np.random.RandomState(0).randn(300, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(nn.Linear(4, 2), max_epochs=3, verbose=0).fit(X[:100], y[:100])
    >>> criterion = TDDisagreement(X[200:], window=1)
    >>> decision = criterion.update(net)
    >>> 0 <= decision.value <= 1
    True
    """

    def __init__(self, X_stop: InputData, *, threshold: float = 0.002, window: int = 3):
        super().__init__(X_stop, threshold=threshold, window=window)

    def _measure(self, learner):
        # one pass for both (a Committee: its members' means, its consensus probabilities)
        td, proba = _predict_td(_fitted(learner), self.X_stop, return_proba=True)
        if proba.shape != td.shape:
            raise ValueError(
                f"predict_proba gives {proba.shape[1:]} classes per row but the TD head "
                f"{td.shape[1:]}; the classifier and its TD head must share the classes."
            )
        return float(np.mean(td.argmax(axis=1) != proba.argmax(axis=1))), None
