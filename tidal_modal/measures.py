"""modAL's middle layer: a measure of every row of ``X`` on an estimator.

Each measure takes what a modAL query strategy is given (an estimator, a Pipeline ending in
one, a modAL learner or a ``Committee``) and returns one number per row; the strategies in
:mod:`tidal_modal.strategies` rank them. The math lives in :mod:`tidal_modal.scores`.

- :func:`classifier_td_entropy`, :func:`classifier_td_margin_uncertainty`: TiDAL's two scores
  on the estimator's public ``predict_td``, as *uncertainties*: non-negative, higher = more
  uncertain, so they compose with modAL's ``make_product`` / ``make_linear_combination`` and
  its own ``classifier_uncertainty`` / ``classifier_entropy``, and feed stream-based sampling.
- :func:`classifier_td_margin`: the raw TD margin, the paper's quantity (in ``[-1, 1]``, lower
  = more uncertain; negative where the classifier and the predicted TD disagree).
- :func:`classifier_dynamic_influence`: DISAL, on a skorch net's recorded
  :class:`~tidal_modal.trajectory.Trajectory` and one forward pass (non-negative with the
  default ``sign="magnitude"``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from .pool import iter_slices
from .scores import label_influence, softmax_, td_entropy, td_margin
from .trajectory import TrajectoryRecorder, classifier_module
from .validation import InputData, check_positive_int

__all__ = [
    "classifier_dynamic_influence",
    "classifier_td_entropy",
    "classifier_td_margin",
    "classifier_td_margin_uncertainty",
]


def _split_estimator(classifier):
    """``(transform or None, estimator)`` behind what a strategy is given."""
    estimator = getattr(classifier, "estimator", classifier)  # a modAL learner holds the estimator
    if isinstance(estimator, Pipeline):
        return estimator[:-1], estimator[-1]
    return None, estimator


def _members(classifier, check):
    """``check(transform, estimator)`` of each member of a modAL ``Committee``, or of ``classifier``."""
    learners = getattr(classifier, "learner_list", None)
    if learners is None:
        return [check(*_split_estimator(classifier))]
    if not len(learners):
        raise ValueError("The Committee has no learners to query.")
    return [check(*_split_estimator(learner)) for learner in learners]


# Rows a Pipeline's earlier steps transform at a time: each row is transformed once, and no
# transformed copy of a large pool is made; large enough that per-call overhead is negligible.
TRANSFORM_CHUNK_ROWS = 8192


def _through_transform(transform, fn, X):
    """``fn(X)`` of one estimator, through a Pipeline's transform, chunk by chunk."""
    if transform is None:
        return fn(X)
    parts = [fn(transform.transform(chunk)) for chunk in iter_slices(X, TRANSFORM_CHUNK_ROWS)]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(outputs) for outputs in zip(*parts, strict=True))
    return np.concatenate(parts)


# --- TiDAL: the predicted training dynamics -------------------------------------------------


def _td_estimator(transform, estimator):
    if not callable(getattr(estimator, "predict_td", None)):
        raise TypeError(
            f"TiDAL query strategies need an estimator with a predict_td method, such as "
            f"TiDALNetClassifier (or a Pipeline ending in one); got {type(estimator).__name__}. "
            "Use modAL's uncertainty strategies for other estimators."
        )
    return transform, estimator


def _td_members(classifier):
    """``(transform, estimator with predict_td)`` of each Committee member, or of ``classifier``."""
    return _members(classifier, _td_estimator)


def _predict_td(classifier, X, return_proba=False, members=None):
    """``predict_td`` of the estimator behind ``classifier``; a modAL ``Committee`` gives its
    members' mean. ``members``: ``_td_members(classifier)``, if the caller has them already.

    The members' mean probabilities are the committee's consensus, whose argmax is the label
    ``Committee.predict`` returns.
    """
    outputs = [
        _through_transform(transform, lambda Xc, e=estimator: e.predict_td(Xc, return_proba=return_proba), X)
        for transform, estimator in (members if members is not None else _td_members(classifier))
    ]
    if len(outputs) == 1:
        return outputs[0]
    if not return_proba:
        outputs = [(out,) for out in outputs]
    if len({out[0].shape for out in outputs}) > 1:
        raise ValueError(
            "The Committee's members predict different numbers of classes; give every member's "
            "module the same number of outputs."
        )
    means = tuple(np.mean(arrays, axis=0) for arrays in zip(*outputs, strict=True))
    return means if return_proba else means[0]


def classifier_td_entropy(classifier: BaseEstimator, X: InputData) -> np.ndarray:
    """Entropy of the predicted training dynamics of each row of ``X`` (higher = more uncertain).

    Parameters
    ----------
    classifier : estimator with ``predict_td``, Pipeline ending in one, modAL learner or Committee
        A Committee's members' predicted TD are averaged.
    X : array-like, tensor or Dataset
        Rows to score.

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALNetClassifier
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... ).fit(X, y)
    >>> from tidal_modal import classifier_td_entropy
    >>> scores = classifier_td_entropy(net, X[:5])
    >>> scores.shape, bool((scores >= 0).all())
    ((5,), True)
    """
    return td_entropy(_predict_td(classifier, X))


def classifier_td_margin(classifier: BaseEstimator, X: InputData) -> np.ndarray:
    """Margin of the predicted training dynamics at the classifier's predicted label.

    Predicted TD and predicted labels come from one forward pass. Lower = more uncertain.

    Parameters
    ----------
    classifier : estimator with ``predict_td``, Pipeline ending in one, modAL learner or Committee
        A Committee's members' predicted TD are averaged, and its consensus label (the argmax
        of the members' mean probabilities) is the predicted label.
    X : array-like, tensor or Dataset
        Rows to score.

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALNetClassifier
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... ).fit(X, y)
    >>> from tidal_modal import classifier_td_margin
    >>> margins = classifier_td_margin(net, X[:5])
    >>> margins.shape, bool(((margins >= -1) & (margins <= 1)).all())
    ((5,), True)
    """
    members = _td_members(classifier)
    transform, estimator = members[0]
    if len(members) == 1 and callable(getattr(estimator, "_predict_td_and_labels", None)):
        # a TiDALNetClassifier: the labels from its logits, without the pool's probabilities
        return td_margin(*_through_transform(transform, estimator._predict_td_and_labels, X))
    td, proba = _predict_td(classifier, X, return_proba=True, members=members)
    return td_margin(td, proba.argmax(axis=1))


def classifier_td_margin_uncertainty(classifier: BaseEstimator, X: InputData) -> np.ndarray:
    """TiDAL's margin score as an uncertainty: ``(1 - M) / 2`` in ``[0, 1]``, higher = more uncertain.

    ``M`` is :func:`classifier_td_margin`; the map is decreasing, so ranking by this measure is
    ranking by TiDAL's margin (``tidal_margin`` queries the same rows). Unlike ``M`` it is
    never negative, so products and powers of it (modAL's ``make_product``) stay finite.

    Parameters
    ----------
    classifier : estimator with ``predict_td``, Pipeline ending in one, modAL learner or Committee
    X : array-like, tensor or Dataset
        Rows to score.

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    With modAL's composition tools, e.g. TD margin times the classifier's own uncertainty:

    >>> from modAL.uncertainty import classifier_uncertainty
    >>> from modAL.utils.combination import make_product, make_query_strategy
    >>> td_times_snapshot = make_query_strategy(
    ...     make_product(classifier_td_margin_uncertainty, classifier_uncertainty),
    ...     selector=lambda scores: scores.argsort()[::-1][:10],
    ... )
    """
    return (1.0 - classifier_td_margin(classifier, X)) / 2.0


# --- DISAL: dynamic influence along the recorded trajectory ---------------------------------

TARGETS = ("pseudo", "td", "expected")
SIGNS = ("magnitude", "signed", "negated")
HEADS = ("current", "checkpoint")


def _no_trajectory_reason(net):
    recorders = [cb for _, cb in getattr(net, "callbacks_", []) if isinstance(cb, TrajectoryRecorder)]
    if not recorders:
        return (
            f"{type(net).__name__} recorded no training trajectory. Add the recorder and fit "
            "again: NeuralNetClassifier(..., callbacks=[tidal_modal.TrajectoryRecorder()]) "
            "(TiDALNetClassifier has it unless callbacks__trajectory=None)."
        )
    reason = getattr(recorders[0], "skipped_", None)
    if reason:
        return f"The net's TrajectoryRecorder recorded nothing: {reason}."
    return "The net has a TrajectoryRecorder but has not been fitted since it was added; fit it first."


def _influence_estimator(transform, net):
    """Check that ``net`` is a fitted skorch net whose trajectory fits its module."""
    if not (callable(getattr(net, "forward_iter", None)) and callable(getattr(net, "check_is_fitted", None))):
        raise TypeError(
            f"disal needs a skorch net (NeuralNetClassifier or TiDALNetClassifier, or a Pipeline "
            f"ending in one) that recorded its training trajectory; got {type(net).__name__}."
        )
    net.check_is_fitted()
    trajectory = getattr(net, "trajectory_", None)
    if trajectory is None or trajectory.layer is None:
        raise ValueError(_no_trajectory_reason(net))
    if not len(trajectory):
        raise ValueError(
            "The net's last fit completed no epoch, so its trajectory holds no checkpoint; "
            "fit it for at least one epoch."
        )
    try:
        layer = classifier_module(net.module_).get_submodule(trajectory.layer)
    except AttributeError:
        raise ValueError(
            f"The trajectory was recorded on a layer {trajectory.layer!r} that this net's module "
            "does not have (checkpoints from another architecture?); fit the net again."
        ) from None
    weight = getattr(layer, "weight", None)
    if weight is None or weight.dim() != 2:
        raise ValueError(f"The trajectory's layer {trajectory.layer!r} has no 2-D weight; fit the net again.")
    shape = (weight.shape[0], weight.shape[1] + (getattr(layer, "bias", None) is not None))
    if shape != tuple(trajectory.start.shape):
        raise ValueError(
            f"The trajectory was recorded on a layer {trajectory.layer!r} of shape "
            f"{tuple(trajectory.start.shape)} ([weight | bias]); it now has shape {shape} "
            "(checkpoints from another architecture?). Fit the net again."
        )
    return transform, net


def _influence_members(classifier):
    """``(transform, fitted net with a trajectory)`` of each Committee member, or of ``classifier``."""
    return _members(classifier, _influence_estimator)


# rows scored at once: a small net's batches are cheap, and a dozen small tensor operations per
# batch would cost more than a tenth of its forward pass (w=256 MLP, 128-row batches)
SCORE_CHUNK_ROWS = 2048


def _with_sign(score, sign):
    """``|s|``, ``s`` or ``-s`` as ``sign`` says (see :func:`classifier_dynamic_influence`)."""
    return score.abs() if sign == "magnitude" else (-score if sign == "negated" else score)


def _net_influence(net, X, target, sign, n_checkpoints, normalize, heads):
    """DISAL scores of the rows of ``X`` on one fitted net (no Pipeline).

    The layer's input and output are captured batch by batch during the forward pass and
    scored in chunks of about :data:`SCORE_CHUNK_ROWS` rows.
    """
    trajectory = net.trajectory_
    layer = classifier_module(net.module_).get_submodule(trajectory.layer)
    params = layer.weight
    directions, ends = trajectory.directions(n_checkpoints, normalize)
    directions = directions.to(device=params.device, dtype=params.dtype)  # [T, K, d+1]
    ends = ends.to(device=params.device, dtype=params.dtype)
    # current weights: p is the same at every checkpoint, so only the summed direction enters
    # (label_influence's first case), split so that no column of ones is appended
    summed = directions.sum(dim=0)  # [K, d+1]
    weight_dir, bias_dir = (summed[:, :-1], summed[:, -1]) if trajectory.has_bias else (summed, None)

    def score(h, z, td_logits=None):
        proba = softmax_(z.clone())  # z is the module's output too: not in place
        if heads == "current":
            v = h @ weight_dir.T if bias_dir is None else torch.addmm(bias_dir, h, weight_dir.T)
            expected_v = (proba * v).sum(dim=1, keepdim=True)
            if target == "pseudo":  # the predicted label's column alone of label_influence
                return _with_sign((expected_v - v.gather(1, z.argmax(dim=1, keepdim=True))).squeeze(1), sign)
            influence = expected_v - v  # [b, K], as label_influence
        else:  # the stored layer at each checkpoint, on today's features
            if trajectory.has_bias:
                h = torch.cat([h, h.new_ones((len(h), 1))], dim=1)
            proba_t = torch.softmax(torch.einsum("nd,tkd->tnk", h, ends), dim=2)
            influence = label_influence(h, proba_t, directions)  # [b, K]
        if target == "expected":  # E_{y ~ p} |s_y|: the signed expectation is 0 in closed form
            return (proba * influence.abs()).sum(dim=1)
        if target == "pseudo":
            return _with_sign(influence.gather(1, z.argmax(dim=1, keepdim=True)).squeeze(1), sign)
        return _with_sign((influence * softmax_(td_logits.to(proba.dtype, copy=True))).sum(dim=1), sign)

    def score_pending():
        columns = [torch.cat(parts) if len(parts) > 1 else parts[0] for parts in zip(*pending, strict=True)]
        scores.append(score(*columns).cpu())
        pending.clear()

    captured, pending, scores = [], [], []
    n_pending = 0
    if target == "td":
        if not callable(getattr(net, "forward_td_iter", None)):
            raise ValueError("target='td' needs a net with a TD head (TiDALNetClassifier).")
        outputs = net.forward_td_iter(X, device=None)  # (logits, td_logits) per batch
    else:
        # a TiDAL net reads a pool in batches of its scoring size; a plain skorch net as skorch does
        scoring = {"scoring": True} if callable(getattr(net, "scoring_batch_size", None)) else {}
        outputs = net.forward_iter(X, training=False, device=None, **scoring)
    handle = layer.register_forward_hook(lambda module, args, out: captured.append((args[0], out)))
    try:
        for output in outputs:
            if len(captured) != 1:
                raise RuntimeError(
                    f"The trajectory's layer {trajectory.layer!r} ran {len(captured)} times in one "
                    "forward pass; DISAL's closed form needs a layer that runs once per batch."
                )
            h, z = captured.pop()  # [b, d], [b, K]
            if h.dim() != 2:
                raise ValueError(
                    f"The trajectory's layer {trajectory.layer!r} receives input of shape "
                    f"{tuple(h.shape)}; DISAL's closed form needs [batch, features]."
                )
            td_logits = output[1] if target == "td" else None
            pending.append((h, z) if td_logits is None else (h, z, td_logits))
            n_pending += len(h)
            if n_pending >= SCORE_CHUNK_ROWS:
                score_pending()
                n_pending = 0
        if pending:
            score_pending()
    finally:
        handle.remove()
    return torch.cat(scores).numpy() if scores else np.empty(0)


def classifier_dynamic_influence(
    classifier: BaseEstimator,
    X: InputData,
    *,
    target: str = "pseudo",
    sign: str = "magnitude",
    normalize: bool = True,
    n_checkpoints: int | None = None,
    heads: str = "current",
) -> np.ndarray:
    """DISAL's dynamic influence of each row of ``X``: its loss gradient projected onto the
    accumulated optimisation directions of the last fit, summed over checkpoints.

    An interpretation of the DISAL abstract (ACM MM 2024; no code or full text is public):
    ``s(x) = sum_t < g_t(x), U_t >`` with ``U_t = Delta_t / ||Delta_t||`` the step of the
    recorded layer between checkpoints (see :class:`~tidal_modal.TrajectoryRecorder`) and
    ``g_t(x) = (p_t(x) - q(x)) outer [h(x), 1]`` the closed-form gradient of the softmax
    cross-entropy for that layer. ``h`` is the layer's input *at the current weights* (the
    earlier layers' checkpoints are not stored). The abstract's "dynamic loss term" has no
    public definition and is not implemented.

    Parameters
    ----------
    classifier : skorch net, Pipeline ending in one, modAL learner or Committee
        The net must have recorded its trajectory (``net.trajectory_``); a Committee's
        members' scores are averaged.
    X : array-like, tensor or Dataset
        Rows to score.
    target : {"pseudo", "td", "expected"}, default="pseudo"
        The unknown label ``q(x)``: the one-hot predicted label; the TD head's predicted
        training dynamics (a soft target; TiDAL nets only); or the expectation over
        ``y ~ p(x)`` of ``|s_y(x)|`` (the expected *signed* influence is 0 in closed form, so
        ``"expected"`` always scores the magnitude).
    sign : {"magnitude", "signed", "negated"}, default="magnitude"
        ``|s|``, ``s`` (training moved the layer so that ``x``'s loss rose) or ``-s``
        (training lowered ``x``'s loss).
    normalize : bool, default=True
        Use unit directions ``Delta_t / ||Delta_t||`` (every checkpoint counts alike) instead
        of the raw steps (large early steps dominate).
    n_checkpoints : int or None, default=None
        Merge the recorded checkpoints into at most this many evenly spread segments.
    heads : {"current", "checkpoint"}, default="current"
        The probabilities ``p_t`` in the gradient: the current layer's for every checkpoint,
        or the layer as stored at each checkpoint (on the current features).

    Returns
    -------
    ndarray of shape (n_samples,)
        Higher = queried first.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALNetClassifier
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), max_epochs=2, verbose=0
    ... ).fit(X, y)
    >>> from tidal_modal import classifier_dynamic_influence
    >>> classifier_dynamic_influence(net, X[:5]).shape
    (5,)
    """
    for name, value, allowed in (("target", target, TARGETS), ("sign", sign, SIGNS), ("heads", heads, HEADS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}; got {value!r}.")
    if n_checkpoints is not None:
        n_checkpoints = check_positive_int(n_checkpoints, "n_checkpoints")
    options = dict(
        target=target, sign=sign, n_checkpoints=n_checkpoints, normalize=bool(normalize), heads=heads
    )
    scores = [
        _through_transform(transform, lambda Xc, n=net: _net_influence(n, Xc, **options), X)
        for transform, net in _influence_members(classifier)
    ]
    return scores[0] if len(scores) == 1 else np.mean(scores, axis=0)
