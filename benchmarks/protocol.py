"""The paper's active-learning loop (spec section 5) for one strategy and one seed.

Random initial labeled set -> train -> score the pool -> label the top ``query_size`` -> retrain,
for ``cycles`` queries, through :class:`~tidal_modal.TiDALActiveLearner` (modAL's ``ActiveLearner``,
with data handling that works on every scikit-learn). For one seed every
strategy starts from the same initial rows and the same initial weights, and each cycle's fit
is seeded alike, so that only the query strategy differs. The net's training recipe is
:mod:`benchmarks.recipe`'s.
"""

import inspect
import time
from dataclasses import dataclass, fields
from functools import partial

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch.callbacks import Callback
from tqdm.auto import tqdm

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier

from .backbones import backbone_params
from .baselines import get_strategy
from .recipe import augment_params, batch_params, lr_scheduler, optimizer_params, scoring_dropout

__all__ = [
    "ALConfig",
    "EpochProgress",
    "class_covering_indices",
    "initial_indices",
    "make_net",
    "run_active_learning",
]

# fields added with the paper's recipe: config.json holds them only where they differ from the
# default, so that the configurations of results committed before them still match
RECIPE_FIELDS = (
    "optimizer",
    "momentum",
    "weight_decay",
    "lr_milestones",
    "lr_gamma",
    "shift",
    "flip",
    "even_batches",
    "cover_classes",
    "pool_subset",
    "mc_dropout",
)


@dataclass(frozen=True)
class ALConfig:
    """Everything that determines a benchmark's numbers (the device and the seeds do not).

    Parameters
    ----------
    dataset : str
        A name for :func:`~benchmarks.datasets.load_dataset`.
    backbone : {"mlp", "cnn", "cnn-bn", "resnet18"}
    initial_size, query_size, cycles : int
        Random initial labels, labels per query, number of queries.
    epochs, batch_size, lr : int, int, float
        Each fit's training.
    warm_start : bool
        Keep the model across cycles, as the paper does (the optimiser is rebuilt each cycle);
        otherwise every cycle trains a freshly initialised model.
    td_weight, td_hidden : float, int
        TiDAL's ``lambda`` and TD-head width.
    dropout : float
        Backbone dropout while training (MC-dropout BALD needs some, unless ``mc_dropout``).
    mc_draws : int
        Stochastic passes for BALD.
    optimizer : {"adam", "sgd"}
    momentum, weight_decay : float
        The optimiser's; 0 leaves the optimiser's own defaults.
    lr_milestones : tuple of float
        Fractions of ``epochs`` after which the LR is multiplied by ``lr_gamma``, in every fit
        (``MultiStepLR``); empty for a constant LR.
    lr_gamma : float
    shift : int
        Training batches are shifted by up to this many pixels (zero padding); 0 for none.
    flip : bool
        Training batches are flipped left-right at random.
    even_batches : bool
        Training batches of equal size (one row apart), as few as ``batch_size`` allows, rather
        than full batches and a remainder (batch norm needs it).
    cover_classes : bool
        The initial set has a row of every class of the pool (else it is purely random).
    pool_subset : int or None
        Each query scores a random subset of this many pool rows (the paper: 10,000);
        None scores the whole pool.
    mc_dropout : float or None
        BALD's dropout rate, applied only while it scores; None keeps ``dropout``.
    """

    dataset: str
    backbone: str = "mlp"
    initial_size: int = 50
    query_size: int = 25
    cycles: int = 10
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    warm_start: bool = True
    td_weight: float = 1.0
    td_hidden: int = 128
    dropout: float = 0.3
    mc_draws: int = 10
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_milestones: tuple = ()
    lr_gamma: float = 0.1
    shift: int = 0
    flip: bool = False
    even_batches: bool = False
    cover_classes: bool = False
    pool_subset: int | None = None
    mc_dropout: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))  # a list from the command line

    def to_dict(self):
        """The fields as JSON values; those of :data:`RECIPE_FIELDS` only where not at their default."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        defaults = {f.name: f.default for f in fields(self)}
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in values.items()
            if name not in RECIPE_FIELDS or value != defaults[name]
        }


def initial_indices(n_pool, size, seed):
    """The random initial labeled rows of a seed; the same for every strategy."""
    return check_random_state(seed).choice(n_pool, size=size, replace=False)


def class_covering_indices(y, size, seed):
    """Initial labeled rows of a seed with every class of ``y`` in them; the same for every strategy.

    One random row of each class, then ``size - n_classes`` more drawn at random from the rest,
    so that beyond its first row a class is as likely to be drawn as in a random set.

    Raises
    ------
    ValueError
        If ``size`` is smaller than the number of classes in ``y``.
    """
    rng = check_random_state(seed)
    classes = np.unique(y)
    if size < len(classes):
        raise ValueError(f"An initial set of {size} rows cannot cover the pool's {len(classes)} classes.")
    firsts = np.array([rng.choice(np.flatnonzero(y == c)) for c in classes])
    rest = rng.choice(np.setdiff1d(np.arange(len(y)), firsts), size=size - len(classes), replace=False)
    return np.concatenate([firsts, rest])


class EpochProgress(Callback):
    """A progress bar over the epochs of each fit, for long fits."""

    def on_train_begin(self, net, **kwargs):
        self.bar_ = tqdm(total=net.max_epochs, desc="epochs", leave=False, unit="epoch")

    def on_epoch_end(self, net, **kwargs):
        self.bar_.update()

    def on_train_end(self, net, **kwargs):
        self.bar_.close()


def make_net(config, dataset, device="cpu", callbacks=None):
    """An unfitted :class:`~tidal_modal.TiDALNetClassifier` with the benchmark's backbone."""
    scheduler = lr_scheduler(config)
    if scheduler is not None:
        callbacks = [("lr_scheduler", scheduler), *(callbacks or [])]
    return TiDALNetClassifier(
        **backbone_params(config.backbone, dataset.image_shape, dataset.n_classes, config.dropout),
        td_weight=config.td_weight,
        td_hidden=config.td_hidden,
        max_epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        **optimizer_params(config),
        **augment_params(config, dataset.image_shape),
        **batch_params(config),
        warm_start=config.warm_start,
        # early labeled sets can miss classes (always so on a long tail); the net must know them all
        classes=list(range(dataset.n_classes)),
        device=device,
        callbacks=callbacks,
        verbose=0,
    )


def _strategy(name, seed, config):
    strategy = get_strategy(name)
    params = inspect.signature(strategy).parameters
    if "random_state" in params:
        # a stream of its own: the initial set is drawn from RandomState(seed)
        strategy = partial(strategy, random_state=np.random.RandomState([seed, 1]))
    if "n_draws" in params:
        strategy = partial(strategy, n_draws=config.mc_draws)
        if config.mc_dropout is not None:
            strategy = scoring_dropout(strategy, config.mc_dropout)
    return strategy


def _seed_fit(seed, cycle):
    # every strategy's fit of this (seed, cycle) starts from the same torch random state
    torch.manual_seed(seed * 10_007 + cycle)


def run_active_learning(strategy, seed, dataset, config, device="cpu", epoch_progress=False, observe=None):
    """Run the loop and yield one result row per cycle (cycle 0 is the initial set).

    Parameters
    ----------
    strategy : str
        A name for :func:`~benchmarks.baselines.get_strategy` (a key of
        :data:`~benchmarks.baselines.STRATEGIES`, optionally with options).
    seed : int
        Picks the initial set, the initial weights and the strategy's own randomness.
    dataset : ALDataset
    config : ALConfig
    device : str
    epoch_progress : bool
        Show a progress bar over each fit's epochs.
    observe : callable, optional
        ``observe(learner, cycle, pool)`` after each fit, with the pool's unlabeled indices; the
        dict it returns joins the cycle's row (e.g. a stopping criterion's value).

    Yields
    ------
    dict
        ``strategy, seed, cycle, n_labeled, accuracy, fit_seconds, query_seconds``.
    """
    query = _strategy(strategy, seed, config)
    if config.cover_classes:
        labeled = class_covering_indices(dataset.y_pool, config.initial_size, seed)
    else:
        labeled = initial_indices(len(dataset.y_pool), config.initial_size, seed)
    # the candidates' own stream: a seed's strategies score the same subset in their first query
    subsets = np.random.RandomState([seed, 2])
    pool = np.setdiff1d(np.arange(len(dataset.y_pool)), labeled)
    picked = labeled  # the rows to (add and) fit on in this cycle
    net = make_net(config, dataset, device, [EpochProgress()] if epoch_progress else None)
    query_seconds = 0.0
    for cycle in range(config.cycles + 1):
        _seed_fit(seed, cycle)
        start = time.perf_counter()
        if cycle == 0:
            learner = TiDALActiveLearner(
                net,
                query_strategy=query,
                X_training=dataset.X_pool[picked],
                y_training=dataset.y_pool[picked],
            )
        else:
            if config.warm_start:
                net.initialize_optimizer()  # the paper rebuilds the optimiser every cycle
            learner.teach(dataset.X_pool[picked], dataset.y_pool[picked])
        fit_seconds = time.perf_counter() - start
        yield {
            "strategy": strategy,
            "seed": seed,
            "cycle": cycle,
            "n_labeled": len(learner.y_training),
            "accuracy": float(net.score(dataset.X_test, dataset.y_test)),
            "fit_seconds": round(fit_seconds, 3),
            "query_seconds": round(query_seconds, 3),
            **(observe(learner, cycle, pool) if observe is not None else {}),
        }
        if cycle == config.cycles:
            break
        candidates = pool
        if config.pool_subset is not None and len(pool) > config.pool_subset:
            candidates = np.sort(subsets.choice(pool, size=config.pool_subset, replace=False))
        n_query = min(config.query_size, len(candidates))
        start = time.perf_counter()
        chosen, _ = learner.query(dataset.X_pool[candidates], n_instances=n_query)
        query_seconds = time.perf_counter() - start
        picked = candidates[chosen]
        pool = np.setdiff1d(pool, picked, assume_unique=True)
