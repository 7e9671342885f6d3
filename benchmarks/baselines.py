"""Baseline query strategies the paper compares TiDAL with, and the registry of all strategies.

As in modAL, each family has three layers: pure math on arrays (:func:`k_center_greedy`,
:func:`bald_score`), a measure on a fitted net (:func:`penultimate_features`,
:func:`mc_dropout_proba`) and the query strategy. Strategies follow the return convention of
the installed modAL (indices, or ``(indices, scores)`` from 0.4.2 on) so that
``ActiveLearner.query`` reads them right. BALD is implemented here: ``baal``, the maintained
library with a BALD heuristic, pulls in the whole Jupyter stack.
"""

import inspect
from functools import partial

import numpy as np
import torch
from modAL.batch import ranked_batch as modal_ranked_batch
from modAL.uncertainty import (
    classifier_entropy,
    classifier_uncertainty,
    entropy_sampling,
    margin_sampling,
    uncertainty_sampling,
)
from scipy.special import entr
from sklearn.utils import check_random_state
from skorch.dataset import unpack_data
from torch import nn

from tidal_modal import disal, tidal_entropy, tidal_margin
from tidal_modal.batch import tidal_ranked_batch
from tidal_modal.modules import last_linear_name, unwrap
from tidal_modal.strategies import MODAL_RETURNS_METRICS, select_top_k

from .variants import VARIANTS

__all__ = [
    "STRATEGIES",
    "get_strategy",
    "bald_sampling",
    "bald_score",
    "coreset_sampling",
    "k_center_greedy",
    "mc_dropout_proba",
    "penultimate_features",
    "classifier_ranked_batch",
    "random_sampling",
    "uncertainty_batch",
]


def _modal_result(indices, scores):
    return (indices, scores) if MODAL_RETURNS_METRICS else indices


def _net(classifier):
    return getattr(classifier, "estimator", classifier)  # a modAL learner holds the net


def _logit_batches(net, X, mc_dropout=False):
    """Yield the module's logits batch by batch, without gradients and in eval mode (the TD head
    is not run: its taps stay off).

    With ``mc_dropout`` the dropout layers stay active (everything else, e.g. batch norm, is in
    eval mode). skorch's ``forward_iter`` would reset the modes, hence this loop.
    """
    module = net.module_
    module.eval()
    if mc_dropout:
        dropouts = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        if not dropouts:
            raise ValueError("MC-dropout BALD needs a backbone with dropout layers.")
        for m in dropouts:
            m.train()
    try:
        with torch.no_grad():
            for batch in net.get_iterator(net.get_dataset(X), training=False):
                Xi, _ = unpack_data(batch)
                yield net.infer(Xi)  # the module's output: its logits
    finally:  # also when scoring raises or the caller stops early: no dropout left on
        module.eval()


def random_sampling(classifier, X_pool, n_instances=1, *, random_state=None):
    """Query ``n_instances`` pool rows uniformly at random (the paper's baseline)."""
    rng = check_random_state(random_state)
    indices = rng.choice(len(X_pool), size=n_instances, replace=False)
    return _modal_result(indices, np.zeros(n_instances))


# --- core-set -------------------------------------------------------------------------------


def k_center_greedy(pool_features, labeled_features, n_instances):
    """Greedy k-center selection (Sener & Savarese, 2018), the core-set baseline.

    Repeatedly picks the pool row farthest (Euclidean) from every labeled and already picked row.

    Parameters
    ----------
    pool_features : ndarray of shape (n_pool, n_features)
    labeled_features : ndarray of shape (n_labeled, n_features)
    n_instances : int

    Returns
    -------
    indices : ndarray of int, shape (n_instances,)
        Pool rows in the order they were picked.
    distances : ndarray of shape (n_instances,)
        Each pick's distance to its nearest center when it was picked.

    Examples
    --------
    >>> idx, dist = k_center_greedy(np.array([[0.0], [1.0], [5.0]]), np.array([[0.0]]), 2)
    >>> idx.tolist(), dist.tolist()
    ([2, 1], [5.0, 1.0])
    """
    pool = torch.as_tensor(pool_features, dtype=torch.float64)
    centers = torch.as_tensor(labeled_features, dtype=torch.float64)
    # [n_pool]: distance of every pool row to its nearest center, updated after each pick;
    # centers are taken in chunks so that memory stays at n_pool x 1024 distances
    nearest = torch.full((len(pool),), np.inf, dtype=torch.float64)
    for start in range(0, len(centers), 1024):
        nearest = torch.minimum(nearest, torch.cdist(pool, centers[start : start + 1024]).min(dim=1).values)
    indices, distances = [], []
    for _ in range(n_instances):
        pick = int(nearest.argmax())
        indices.append(pick)
        distances.append(float(nearest[pick]))
        nearest = torch.minimum(nearest, torch.cdist(pool, pool[pick : pick + 1]).squeeze(1))
    return np.array(indices), np.array(distances)


def penultimate_features(net, X):
    """The input of the module's last ``nn.Linear`` for every row of ``X``, shape ``[n, d]``."""
    module = unwrap(net.module_)
    captured = []
    hook = module.get_submodule(last_linear_name(module)).register_forward_pre_hook(
        lambda layer, args: captured.append(args[0].cpu())
    )
    try:
        for _ in _logit_batches(net, X):
            pass
    finally:
        hook.remove()
    return torch.cat(captured).numpy()


def coreset_sampling(classifier, X_pool, n_instances=1, *, X_labeled=None):
    """Core-set query: k-center greedy on penultimate features of the pool and the labeled set.

    Parameters
    ----------
    classifier : modAL ActiveLearner or fitted TiDALNetClassifier
    X_pool : ndarray
    n_instances : int
    X_labeled : ndarray, optional
        The labeled rows; defaults to the learner's ``X_training``.
    """
    if X_labeled is None:
        X_labeled = classifier.X_training
    net = _net(classifier)
    indices, distances = k_center_greedy(
        penultimate_features(net, X_pool), penultimate_features(net, X_labeled), n_instances
    )
    return _modal_result(indices, distances)


# --- BALD -----------------------------------------------------------------------------------


def bald_score(mc_proba):
    """BALD mutual information ``H(mean_t p_t) - mean_t H(p_t)`` per row, in nats.

    Parameters
    ----------
    mc_proba : ndarray of shape (n_samples, n_draws, n_classes)
        Softmax outputs of ``n_draws`` stochastic forward passes.

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> bald_score(np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])).round(4)
    array([0.6931, 0.    ])
    """
    mc_proba = np.asarray(mc_proba)
    return entr(mc_proba.mean(axis=1)).sum(axis=1) - entr(mc_proba).sum(axis=2).mean(axis=1)


def mc_dropout_proba(net, X, n_draws=10):
    """Softmax outputs of ``n_draws`` forward passes with dropout active, ``[n, n_draws, n_classes]``."""
    draws = [
        torch.cat([torch.softmax(logits, dim=1).cpu() for logits in _logit_batches(net, X, mc_dropout=True)])
        for _ in range(n_draws)
    ]
    return torch.stack(draws, dim=1).numpy()


def bald_sampling(classifier, X_pool, n_instances=1, *, n_draws=10):
    """BALD query with MC dropout (Gal et al., 2017): the rows of highest mutual information."""
    scores = bald_score(mc_dropout_proba(_net(classifier), X_pool, n_draws))
    indices = select_top_k(scores, n_instances)
    return _modal_result(indices, scores[indices])


# --- ranked batches on the classifier's uncertainty (the fair baselines of batch queries) --------


def uncertainty_batch(classifier, X_pool, n_instances=1):
    """modAL's ranked batch-mode sampling (Cardoso et al., 2017) on the classifier's least confidence.

    The body of modAL's ``uncertainty_batch_sampling`` (its ``ranked_batch`` on
    ``classifier_uncertainty``, Euclidean distances in the input space, uncertainty weighted by
    ``|D| / (|U| + |D|)``), written out so that the scores come back in either modAL's convention.
    """
    scores = classifier_uncertainty(classifier, X_pool)
    result = modal_ranked_batch(classifier, X_pool, scores, n_instances, metric="euclidean", n_jobs=None)
    indices = np.asarray(result[0] if isinstance(result, tuple) else result)
    return _modal_result(indices, scores[indices])


def classifier_ranked_batch(
    classifier, X_pool, n_instances=1, *, weight=0.5, embedding="penultimate", random_state=None
):
    """The library's ranked batch (:func:`~tidal_modal.batch.tidal_ranked_batch`) on the classifier's
    entropy instead of TD entropy: the same code, so that a difference is the measure's."""
    return tidal_ranked_batch(
        classifier,
        X_pool,
        n_instances,
        measure=classifier_entropy,
        weight=weight,
        embedding=embedding,
        random_state=random_state,
    )


# name -> query strategy; all run on the same TiDALNetClassifier, so only the score differs.
# modAL's own uncertainty strategies use the classifier's probabilities (the paper's ablation).
STRATEGIES = {
    "random": random_sampling,
    "uncertainty": uncertainty_sampling,
    "margin": margin_sampling,
    "entropy": entropy_sampling,
    "coreset": coreset_sampling,
    "bald": bald_sampling,
    "tidal_entropy": tidal_entropy,
    "tidal_margin": tidal_margin,
    "disal": disal,
    "tidal_batch": tidal_ranked_batch,
    "uncertainty_batch": uncertainty_batch,
    "classifier_batch": classifier_ranked_batch,
    **VARIANTS,  # the study of benchmarks/run_td_pays.sh
}


def _option_value(text):
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def get_strategy(name):
    """The query strategy named ``name``: a key of :data:`STRATEGIES`, optionally with keyword
    options after a colon, e.g. ``disal:target=td,sign=signed`` (values are parsed as int,
    float, true/false/none, else kept as strings).

    Raises
    ------
    ValueError
        For an unknown strategy or an option the strategy does not take.
    """
    base, _, options = name.partition(":")
    if base not in STRATEGIES:
        raise ValueError(f"unknown strategy {base!r}; choose from {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[base]
    if not options:
        return strategy
    kwargs = {}
    for item in options.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in inspect.signature(strategy).parameters:
            raise ValueError(f"{name!r}: {item!r} is not a keyword option key=value of {base}")
        kwargs[key] = _option_value(value)
    return partial(strategy, **kwargs)
