"""The benchmark net's training recipe: optimiser, LR schedule, batch augmentation, BALD's dropout.

The defaults of :class:`~benchmarks.protocol.ALConfig` are the recipe of the first presets
(Adam, no schedule, no augmentation, dropout while training). :data:`PAPER_RECIPE` is the TiDAL
authors' CIFAR protocol (spec section 3 and 5) on CPU-sized data, for the ``*-paper`` presets:

- SGD, lr 0.1, momentum 0.9, weight decay 5e-4; the LR x0.1 at 80% of each fit's epochs
  (200 epochs and a step at 160 in the paper); the optimiser, and with it the schedule,
  starts afresh every cycle while the weights are kept.
- Random shifts of up to 3 pixels (the paper's crop of 32 px images with 4 px padding, scaled to
  28 px), done on the training batches only, so that every epoch sees each labeled image anew
  and its TD is a mean over views. No flip: a mirrored digit is no digit (CIFAR would take one).
- No dropout while training, for any strategy: every strategy trains the same net, as in the
  paper's ResNet-18. BALD needs stochastic passes, so its dropout layers (present, at rate 0)
  run at ``mc_dropout`` while it scores, and only then; see :func:`scoring_dropout`.
- Batches of 64 on a batch-norm CNN (:class:`~benchmarks.backbones.BatchNormCNN`), cut evenly
  (:class:`EvenBatchLoader`): a last batch of a few rows makes batch norm's statistics, and SGD
  at lr 0.1, jump (450 labels in batches of 64 leave 2 rows; that fit ends at 63% test
  accuracy, 448 labels at 94%).
- An initial set with every class of the pool in it, and (pools over 10,000 rows) a random
  10,000 candidates scored per cycle: see :mod:`benchmarks.protocol`.
"""

import math

import torch
from skorch.callbacks import LRScheduler
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, Sampler

from .augment import AugmentRows

__all__ = [
    "OPTIMIZERS",
    "PAPER_RECIPE",
    "EvenBatchLoader",
    "EvenBatches",
    "augment_params",
    "batch_params",
    "lr_scheduler",
    "optimizer_params",
    "scoring_dropout",
]

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}

# ALConfig values of the authors' protocol; a preset adds its dataset, sizes and epochs
PAPER_RECIPE = dict(
    backbone="cnn-bn",
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    lr_milestones=(0.8,),
    batch_size=64,
    dropout=0.0,
    mc_dropout=0.3,
    shift=3,
    even_batches=True,
    cover_classes=True,
    pool_subset=10_000,  # as the paper's CIFAR runs; smaller pools are scored whole
)


def optimizer_params(config):
    """skorch's ``optimizer`` and ``optimizer__*`` parameters of ``config``."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}; choose from {sorted(OPTIMIZERS)}.")
    params = {"optimizer": OPTIMIZERS[config.optimizer]}
    # passed only when set, so that a default configuration builds exactly the net it always did
    if config.momentum:
        params["optimizer__momentum"] = config.momentum
    if config.weight_decay:
        params["optimizer__weight_decay"] = config.weight_decay
    return params


def lr_scheduler(config):
    """A ``LRScheduler`` callback with the step schedule of ``config``, or None without milestones.

    ``config.lr_milestones`` are fractions of ``config.epochs``: ``(0.8,)`` with 100 epochs
    multiplies the LR by ``config.lr_gamma`` after epoch 80 of every fit.
    """
    if not config.lr_milestones:
        return None
    milestones = sorted({max(1, round(f * config.epochs)) for f in config.lr_milestones})
    # skorch continues a schedule across warm-started fits (last_epoch = len(history) - 1), and
    # torch then refuses the optimiser rebuilt each cycle (KeyError 'initial_lr'). With
    # last_epoch=-1 given, skorch builds a fresh scheduler at every fit's start, on that fit's
    # new optimiser: each cycle runs the whole schedule from config.lr, as in the paper.
    return LRScheduler(MultiStepLR, milestones=milestones, gamma=config.lr_gamma, last_epoch=-1)


def augment_params(config, image_shape):
    """The training iterator's augmenting ``collate_fn`` (:class:`~benchmarks.augment.AugmentRows`),
    or nothing without augmentation."""
    if not (config.shift or config.flip):
        return {}
    return {"iterator_train__collate_fn": AugmentRows(tuple(image_shape), config.shift, config.flip)}


class EvenBatches(Sampler):
    """Batches of ``n_rows`` rows: as few as ``batch_size`` allows, their sizes one row apart at most.

    With ``batch_size=64``, 100 rows make 50 + 50 (not 64 + 36) and 450 rows 2 x 57 + 6 x 56
    (not 7 x 64 + 2). Shuffled from torch's global generator, as ``shuffle=True`` is.
    """

    def __init__(self, n_rows, batch_size, shuffle=True):
        self.n_rows, self.batch_size, self.shuffle = n_rows, batch_size, shuffle

    def __len__(self):
        return math.ceil(self.n_rows / self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n_rows) if self.shuffle else torch.arange(self.n_rows)
        return (batch.tolist() for batch in torch.tensor_split(order, len(self)))


class EvenBatchLoader(DataLoader):
    """A ``DataLoader`` of :class:`EvenBatches`, for skorch's ``iterator_train``.

    skorch calls it with ``batch_size`` and ``shuffle`` as it calls a ``DataLoader``.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, **kwargs):
        super().__init__(dataset, batch_sampler=EvenBatches(len(dataset), batch_size, shuffle), **kwargs)


def batch_params(config):
    """``iterator_train=EvenBatchLoader`` with ``config.even_batches``, else nothing (a ``DataLoader``)."""
    return {"iterator_train": EvenBatchLoader} if config.even_batches else {}


def scoring_dropout(strategy, rate):
    """``strategy`` with every dropout layer of the net at ``rate`` while it scores, and only then.

    MC-dropout BALD on a net trained without dropout: the stochastic passes come from dropout
    applied at scoring time alone. That is a heuristic (Gal et al. derive BALD for a net trained
    with dropout), chosen so that BALD's net trains exactly like every other strategy's.
    """

    def query(classifier, X_pool, *args, **kwargs):
        module = getattr(classifier, "estimator", classifier).module_  # a modAL learner holds the net
        layers = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        rates = [m.p for m in layers]
        for m in layers:
            m.p = rate
        try:
            return strategy(classifier, X_pool, *args, **kwargs)
        finally:
            for m, p in zip(layers, rates, strict=True):
                m.p = p

    return query
