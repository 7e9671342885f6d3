"""TiDAL and DISAL as scikit-activeml query strategies (``pip install "tidal-modal[skactiveml]"``).

scikit-activeml's pool-based idiom: one array ``y`` over the whole pool in which unlabeled rows
hold ``missing_label``, and a query strategy object whose ``query(X, y, clf, ...)`` returns the
rows to label. :class:`TiDALSampling` and :class:`DISALSampling` are such strategies; they take
scikit-activeml's validation, candidates, fitting convention and tie-breaking selection from its
base class and helpers, and score the candidates with :mod:`tidal_modal.measures`, so their
utilities are exactly the scores of :func:`~tidal_modal.tidal_entropy`,
:func:`~tidal_modal.tidal_margin` and :func:`~tidal_modal.disal`.

The classifier may be a :class:`~tidal_modal.TiDALNetClassifier` (or a Pipeline ending in one)
or scikit-activeml's ``SklearnClassifier`` wrapping one, which drops the missing labels when it
fits. scikit-activeml's ``SkorchClassifier`` builds a plain ``skorch.NeuralNet`` from a module,
so it cannot hold a TiDAL net (whose training step teaches the TD head); it works for DISAL, whose
net only needs to record its trajectory.

``import tidal_modal`` does not import this module, nor scikit-activeml.
"""

from __future__ import annotations

import numpy as np
from skactiveml.base import SingleAnnotatorPoolQueryStrategy, SkactivemlClassifier
from skactiveml.classifier import SklearnClassifier, SkorchClassifier
from skactiveml.utils import MISSING_LABEL, check_equal_missing_label, check_type, is_labeled, simple_batch
from sklearn.base import clone
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from .measures import (
    _split_estimator,
    _td_members,
    classifier_dynamic_influence,
    classifier_td_entropy,
    classifier_td_margin,
)
from .trajectory import TrajectoryRecorder

__all__ = ["DISALSampling", "TiDALSampling"]


def _name(clf):
    if isinstance(clf, SklearnClassifier):
        return f"SklearnClassifier({type(clf.estimator).__name__})"
    return type(clf).__name__


def _template(clf):
    """The (possibly unfitted) estimator that will score for ``clf``, for checks before fitting."""
    return clf.estimator if isinstance(clf, SklearnClassifier) else clf


def _has_td_head(estimator):
    try:
        _td_members(estimator)  # the check that the TiDAL measures make
    except TypeError:
        return False
    return True


def _scorer(clf):
    """The fitted estimator that scores for ``clf`` (a wrapper's, or ``clf``) and the conversion of
    the candidates that the wrapper applies before predicting (``check_array`` keywords, or None)."""
    if isinstance(clf, SklearnClassifier):
        check_is_fitted(clf)
        if not clf.is_fitted_:
            raise ValueError(
                f"The {_name(clf)} could not fit its estimator and predicts class frequencies instead "
                "(its warning says why); fix that error so that the network is trained."
            )
        return clf.estimator_, None
    if isinstance(clf, SkorchClassifier):
        check_is_fitted(clf, "neural_net_")
        return clf.neural_net_, clf.check_X_dict_  # e.g. float32, as its predict_proba casts
    return clf, None


class _TrainingDynamicsSampling(SingleAnnotatorPoolQueryStrategy):
    """scikit-activeml's plumbing for strategies that score candidates on the training dynamics.

    ``query`` validates with scikit-activeml's helpers, fits a clone if asked, and selects with
    its ``simple_batch``; a subclass checks the classifier (``_check_classifier``) and scores the
    candidates (``_utilities``, higher = queried first).
    """

    def query(
        self,
        X,
        y,
        clf,
        fit_clf=True,
        sample_weight=None,
        candidates=None,
        batch_size=1,
        return_utilities=False,
    ):
        """Determine for which candidate samples labels are to be queried.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Training data set, usually complete, i.e., including the labeled and unlabeled
            samples.
        y : array-like of shape (n_samples,)
            Labels of the training data set; unlabeled samples hold ``self.missing_label``.
        clf : classifier
            See the class's description. It must be fitted unless ``fit_clf=True``.
        fit_clf : bool, default=True
            Fit a clone of ``clf`` on the labeled samples of ``(X, y)`` first; ``clf`` itself
            is left as it is. With ``False``, ``clf`` is used as fitted (e.g. by the loop, to
            keep training one net with ``warm_start=True``).
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to ``clf.fit`` when ``fit_clf=True`` (the labeled samples' weights for a
            classifier that is not a scikit-activeml classifier). TiDALNetClassifier takes none:
            scikit-activeml's ``SklearnClassifier`` then ignores them, and a bare net refuses them.
        candidates : None or array-like of shape (n_candidates,), dtype=int or \
                array-like of shape (n_candidates, ...), default=None
            - None: the unlabeled samples of ``(X, y)``.
            - Indices of samples in ``(X, y)``.
            - Candidate samples themselves (not necessarily in ``X``).
        batch_size : int, default=1
            The number of samples to select.
        return_utilities : bool, default=False
            Also return the utilities.

        Returns
        -------
        query_indices : numpy.ndarray of shape (batch_size,)
            Indices into ``X``, or into ``candidates`` if they are samples.
        utilities : numpy.ndarray of shape (batch_size, n_samples) or (batch_size, n_candidates)
            Only if ``return_utilities``. Row ``i`` holds the utilities from which the ``i``-th
            sample was selected: the samples selected before it, and samples that are not
            candidates, are NaN. Columns refer to ``X`` unless ``candidates`` are samples.
        """
        X, y, candidates, batch_size, return_utilities = self._validate_data(
            X, y, candidates, batch_size, return_utilities, reset=True
        )
        X_cand, mapping = self._transform_candidates(candidates, X, y)
        check_type(fit_clf, "fit_clf", bool)
        if isinstance(clf, SkactivemlClassifier):
            check_equal_missing_label(clf.missing_label, self.missing_label_)
        self._check_classifier(clf)  # before any training
        if fit_clf:
            clf = self._fit_clone(clf, X, y, sample_weight)

        utilities_cand = self._utilities(clf, X_cand)
        if not np.isfinite(utilities_cand).all():
            # simple_batch would skip NaN utilities as if they were no candidates
            raise ValueError(
                "The utilities of the candidates contain NaN or inf: the network's outputs are not "
                "finite (diverged training, or non-finite values in X). Check the data and the learning rate."
            )
        if mapping is None:
            utilities = utilities_cand
        else:
            utilities = np.full(len(X), np.nan)
            utilities[mapping] = utilities_cand
        return simple_batch(
            utilities, self.random_state_, batch_size=batch_size, return_utilities=return_utilities
        )

    def _fit_clone(self, clf, X, y, sample_weight):
        """A clone of ``clf`` fitted on the labeled samples; ``clf`` is left as it is."""
        if not isinstance(clf, SkactivemlClassifier):  # those drop the missing labels themselves
            labeled = is_labeled(y, self.missing_label_)
            X, y = X[labeled], y[labeled]
            if sample_weight is not None:
                if not has_fit_parameter(clf, "sample_weight"):  # skorch would hand them to the module
                    raise ValueError(f"{_name(clf)}.fit takes no sample_weight; leave sample_weight out.")
                sample_weight = np.asarray(sample_weight)[labeled]
        fit_params = {} if sample_weight is None else {"sample_weight": sample_weight}
        return clone(clf).fit(X, y, **fit_params)

    def _check_classifier(self, clf):
        """Refuse a classifier (and parameters) that cannot work, before any training."""

    def _utilities(self, clf, X_cand):
        """One utility per candidate of the fitted ``clf``; higher = queried first."""
        raise NotImplementedError


class TiDALSampling(_TrainingDynamicsSampling):
    """TiDAL: query the samples whose predicted training dynamics are the most uncertain.

    The network's TD head predicts each sample's training dynamics (TiDAL, ICCV 2023); the
    utilities are :func:`~tidal_modal.measures.classifier_td_entropy` (``"entropy"``) or the
    negated :func:`~tidal_modal.measures.classifier_td_margin` (``"margin_sampling"``), the
    scores of :func:`~tidal_modal.tidal_entropy` and :func:`~tidal_modal.tidal_margin`. The
    method names follow scikit-activeml's ``UncertaintySampling``.

    Parameters
    ----------
    method : {"entropy", "margin_sampling"}, default="entropy"
        The entropy of the predicted TD, or its margin at the classifier's predicted label
        (smaller margin = higher utility).
    missing_label : scalar or string or np.nan or None, default=np.nan
        Value that marks an unlabeled sample in ``y``.
    random_state : int or RandomState instance or None, default=None
        Breaks ties between equal utilities, as in scikit-activeml: an int gives the same
        query for the same ``(X, y)``.

    Notes
    -----
    ``clf`` in :meth:`query` is a :class:`~tidal_modal.TiDALNetClassifier`, a Pipeline ending
    in one, or scikit-activeml's ``SklearnClassifier`` wrapping either (``SklearnClassifier``
    drops the missing labels when it fits; a bare net is fitted on the labeled rows by
    ``fit_clf=True``, but a loop must then fit it on them too). scikit-activeml's
    ``SkorchClassifier`` cannot hold the net: it builds a plain ``skorch.NeuralNet`` from a
    module, which never trains a TD head.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from skactiveml.classifier import SklearnClassifier
    >>> from tidal_modal import TiDALNetClassifier
    >>> from tidal_modal.skactiveml import TiDALSampling
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = np.full(60, np.nan)
    >>> y[:20] = X[:20, 0] > 0                      # 20 labeled samples, 40 unlabeled
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... )
    >>> clf = SklearnClassifier(net, classes=[0, 1])
    >>> qs = TiDALSampling(method="entropy", random_state=0)
    >>> idx, utilities = qs.query(X, y, clf, batch_size=3, return_utilities=True)
    >>> idx.shape, utilities.shape, bool(np.isnan(utilities[0, :20]).all())
    ((3,), (3, 60), True)
    """

    METHODS = ("entropy", "margin_sampling")

    def __init__(self, method="entropy", missing_label=MISSING_LABEL, random_state=None):
        super().__init__(missing_label=missing_label, random_state=random_state)
        self.method = method

    def _check_classifier(self, clf):
        if self.method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}; got {self.method!r}.")
        if isinstance(clf, SkorchClassifier):
            fix = (
                "SkorchClassifier builds a plain skorch NeuralNet from a module and never trains a "
                "TD head; wrap the TiDAL net instead: SklearnClassifier(TiDALNetClassifier(module, "
                "...), classes=...)."
            )
        elif not _has_td_head(_template(clf)):
            fix = (
                "Use TiDALNetClassifier(module, ...) as the classifier (wrapped in SklearnClassifier "
                "if the loop fits it on y with missing labels), or skactiveml.pool.UncertaintySampling "
                "for classifiers without a TD head."
            )
        else:
            return
        raise TypeError(
            "TiDALSampling needs a classifier with a TD head (predict_td): TiDALNetClassifier, a "
            f"Pipeline ending in one, or SklearnClassifier wrapping either; got {_name(clf)}. {fix}"
        )

    def _utilities(self, clf, X_cand):
        estimator, _ = _scorer(clf)
        if self.method == "entropy":
            return classifier_td_entropy(estimator, X_cand)
        return -classifier_td_margin(estimator, X_cand)


class DISALSampling(_TrainingDynamicsSampling):
    """DISAL (our interpretation): query the samples of highest dynamic influence.

    The utilities are :func:`~tidal_modal.measures.classifier_dynamic_influence`, the scores
    of :func:`~tidal_modal.disal`: each sample's loss gradient for the network's last linear
    layer, projected onto that layer's recorded steps during the last fit. DISAL (ACM MM 2024)
    has no public code; see :func:`~tidal_modal.disal` for the interpretation.

    Parameters
    ----------
    target, sign, normalize, n_checkpoints, heads
        The interpretation's choices, as in
        :func:`~tidal_modal.measures.classifier_dynamic_influence`; the defaults are those of
        :func:`~tidal_modal.disal`.
    missing_label : scalar or string or np.nan or None, default=np.nan
        Value that marks an unlabeled sample in ``y``.
    random_state : int or RandomState instance or None, default=None
        Breaks ties between equal utilities, as in scikit-activeml.

    Notes
    -----
    ``clf`` in :meth:`query` is a skorch net that records its trajectory: a
    :class:`~tidal_modal.TiDALNetClassifier` (it does by default), a ``NeuralNetClassifier``
    with ``callbacks=[TrajectoryRecorder()]``, or a Pipeline ending in either, wrapped in
    scikit-activeml's ``SklearnClassifier`` or not; or scikit-activeml's ``SkorchClassifier``
    with ``neural_net_param_dict={"callbacks": [TrajectoryRecorder()], ...}``. The recorder
    follows the network's last ``nn.Linear``, which must output the logits.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from skactiveml.classifier import SklearnClassifier
    >>> from tidal_modal import TiDALNetClassifier
    >>> from tidal_modal.skactiveml import DISALSampling
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = np.full(60, np.nan)
    >>> y[:20] = X[:20, 0] > 0                      # 20 labeled samples, 40 unlabeled
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... )
    >>> qs = DISALSampling(random_state=0)
    >>> qs.query(X, y, SklearnClassifier(net, classes=[0, 1]), batch_size=3).shape
    (3,)
    """

    def __init__(
        self,
        target="pseudo",
        sign="magnitude",
        normalize=True,
        n_checkpoints=None,
        heads="current",
        missing_label=MISSING_LABEL,
        random_state=None,
    ):
        super().__init__(missing_label=missing_label, random_state=random_state)
        self.target = target
        self.sign = sign
        self.normalize = normalize
        self.n_checkpoints = n_checkpoints
        self.heads = heads

    def _check_classifier(self, clf):
        if isinstance(clf, SkorchClassifier):
            callbacks = (clf.neural_net_param_dict or {}).get("callbacks") or []
            callbacks = [cb[1] if isinstance(cb, tuple) else cb for cb in callbacks]
            if not any(cb is TrajectoryRecorder or isinstance(cb, TrajectoryRecorder) for cb in callbacks):
                raise ValueError(
                    "DISALSampling needs the net to record its training trajectory; give the "
                    "SkorchClassifier the recorder: neural_net_param_dict={'callbacks': "
                    "[tidal_modal.TrajectoryRecorder()], ...}."
                )
        elif not callable(getattr(_split_estimator(_template(clf))[1], "forward_iter", None)):
            raise TypeError(
                "DISALSampling needs a skorch net that records its training trajectory: "
                "TiDALNetClassifier (or NeuralNetClassifier(..., callbacks=[TrajectoryRecorder()])), a "
                "Pipeline ending in one, SklearnClassifier wrapping either, or SkorchClassifier with "
                f"neural_net_param_dict={{'callbacks': [TrajectoryRecorder()]}}; got {_name(clf)}."
            )

    def _utilities(self, clf, X_cand):
        estimator, check_X = _scorer(clf)
        if check_X is not None:
            X_cand = check_array(X_cand, **check_X)
        return classifier_dynamic_influence(
            estimator,
            X_cand,
            target=self.target,
            sign=self.sign,
            normalize=self.normalize,
            n_checkpoints=self.n_checkpoints,
            heads=self.heads,
        )
