"""The paper's active-learning loop (spec section 5) for one strategy and one seed.

Random initial labeled set -> train -> score the pool -> label the top ``query_size`` -> retrain,
for ``cycles`` queries, through :class:`~tidal_modal.TiDALActiveLearner` (modAL's ``ActiveLearner``,
with data handling that works on every scikit-learn). For one seed every
strategy starts from the same initial rows and the same initial weights, and each cycle's fit
is seeded alike, so that only the query strategy differs.
"""

import inspect
import time
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch.callbacks import Callback
from tqdm.auto import tqdm

from tidal_modal import TiDALActiveLearner, TiDALNetClassifier

from .backbones import backbone_params
from .baselines import get_strategy

__all__ = ["ALConfig", "EpochProgress", "initial_indices", "make_net", "run_active_learning"]


@dataclass(frozen=True)
class ALConfig:
    """Everything that determines a benchmark's numbers (the device and the seeds do not).

    Parameters
    ----------
    dataset : str
        A name for :func:`~benchmarks.datasets.load_dataset`.
    backbone : {"mlp", "cnn", "resnet18"}
    initial_size, query_size, cycles : int
        Random initial labels, labels per query, number of queries.
    epochs, batch_size, lr : int, int, float
        Each fit's training (Adam).
    warm_start : bool
        Keep the model across cycles, as the paper does (the optimiser is rebuilt each cycle);
        otherwise every cycle trains a freshly initialised model.
    td_weight, td_hidden : float, int
        TiDAL's ``lambda`` and TD-head width.
    dropout : float
        Backbone dropout (MC-dropout BALD needs some).
    mc_draws : int
        Stochastic passes for BALD.
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

    def to_dict(self):
        return asdict(self)


def initial_indices(n_pool, size, seed):
    """The random initial labeled rows of a seed; the same for every strategy."""
    return check_random_state(seed).choice(n_pool, size=size, replace=False)


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
    return TiDALNetClassifier(
        **backbone_params(config.backbone, dataset.image_shape, dataset.n_classes, config.dropout),
        td_weight=config.td_weight,
        td_hidden=config.td_hidden,
        max_epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer=torch.optim.Adam,
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
    return strategy


def _seed_fit(seed, cycle):
    # every strategy's fit of this (seed, cycle) starts from the same torch random state
    torch.manual_seed(seed * 10_007 + cycle)


def run_active_learning(strategy, seed, dataset, config, device="cpu", epoch_progress=False):
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

    Yields
    ------
    dict
        ``strategy, seed, cycle, n_labeled, accuracy, fit_seconds, query_seconds``.
    """
    query = _strategy(strategy, seed, config)
    labeled = initial_indices(len(dataset.y_pool), config.initial_size, seed)
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
        }
        if cycle == config.cycles:
            break
        n_query = min(config.query_size, len(pool))
        start = time.perf_counter()
        chosen, _ = learner.query(dataset.X_pool[pool], n_instances=n_query)
        query_seconds = time.perf_counter() - start
        picked, pool = pool[chosen], np.delete(pool, chosen)
