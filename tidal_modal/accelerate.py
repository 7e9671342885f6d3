"""Data-parallel and mixed-precision training of a TiDAL net with Hugging Face Accelerate.

:class:`AcceleratedTiDALNetClassifier` is skorch's :class:`skorch.hf.AccelerateMixin` on a
:class:`~tidal_modal.net.TiDALNetClassifier`, plus what training dynamics need under data
parallelism:

- every process trains on a shard of each epoch's batches (Accelerate's prepared
  ``DataLoader``), so a row's softmax outputs are seen by whichever process drew it; at the end
  of every epoch the processes add up what they saw (one all-reduce of ``n_rows x (n_classes +
  1)`` numbers), so that each process holds the complete training dynamics of every row, with
  global row indices, and the TD targets of the next epoch are the same on every process;
- a row counts once per epoch: the batches with which Accelerate evens out the shards repeat rows
  from the start of the epoch, and the views of a row within one epoch are averaged;
- the TD buffer stays float32 under mixed precision (``Accelerator(mixed_precision="bf16")``);
- the TD head is lazy (it takes its shapes from the first batch), but ``DistributedDataParallel``
  must see every parameter when it wraps the module: the first training batch is first passed
  through the new module once without gradients, in eval mode, to give the head its shapes,
  and the module is wrapped after that;
- the module and the TD head are wrapped together, in one ``DistributedDataParallel``, and a
  training pass runs through that wrapper: a step all-reduces the gradients of both at once
  (skorch's mixin wraps every module on its own, which would all-reduce twice per step);
  ``module_`` and ``td_head_`` stay the net's own modules throughout;
- after a fit the wrapper is dropped (skorch's ``unwrap_after_train=True``), so that the net
  predicts, scores a pool and pickles like a single-process net; a warm-started fit wraps it
  again, so that every fit is data-parallel.

Install with ``pip install tidal-modal[accelerate]``; launch a script with ``torchrun`` (as the
tests do, on the gloo backend) or ``accelerate launch``, as any Accelerate program. See the
README's "Scaling out".
"""

from __future__ import annotations

import atexit
import gc
import warnings
from collections.abc import Callable
from typing import Any

import torch
from skorch.dataset import unpack_data
from skorch.exceptions import DeviceWarning
from skorch.hf import AccelerateMixin

from .dynamics import TrainingDynamics
from .net import TiDALNetClassifier
from .validation import InputData, Labels, is_fitted

__all__ = ["AcceleratedTiDALNetClassifier", "DistributedTrainingDynamics"]


class DistributedTrainingDynamics(TrainingDynamics):
    """:class:`~tidal_modal.dynamics.TrainingDynamics` gathered over data-parallel processes.

    Each process folds the batches it trains on into buffers of the current epoch;
    :meth:`end_epoch` adds them up over the processes and folds each row's mean over the epoch
    into the totals, as one pass. With each row drawn once per epoch (any sampler without
    replacement), the result is the single-process ``TrainingDynamics`` of the same passes. A
    row seen several times in one epoch (the padding of uneven shards, or a sampler with
    replacement) counts once, with the mean of its views.

    Parameters
    ----------
    n_samples : int
        Number of rows in the (unsplit) training dataset.
    accelerator : accelerate.Accelerator
        Its ``reduce`` sums the epoch's buffers over the processes.

    Examples
    --------
    On one process (an ``Accelerator`` on the CPU), an epoch's views of a row count as one pass:

    >>> import torch
    >>> from accelerate import Accelerator
    >>> from tidal_modal.accelerate import DistributedTrainingDynamics
    >>> td = DistributedTrainingDynamics(2, Accelerator(cpu=True))
    >>> _ = td.update(torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    >>> _ = td.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))  # row 0 again, same epoch
    >>> td.end_epoch()
    >>> td.to_numpy()
    array([[0.5, 0.5],
           [0.5, 0.5]], dtype=float32)
    """

    def __init__(self, n_samples: int, accelerator: Any) -> None:
        super().__init__(n_samples)
        self.accelerator = accelerator
        # the epoch's sums and counts side by side, [n_samples, n_classes + 1], so that one
        # all-reduce gathers both; epoch_sums and epoch_counts are views of it
        self.epoch = self.epoch_sums = self.epoch_counts = None

    def update(self, index: torch.Tensor, proba: torch.Tensor) -> torch.Tensor:
        """Fold one batch into the epoch's buffers; return ``pbar`` of its rows, this pass included."""
        index, proba = self._prepare(index, proba)
        self.epoch_sums.index_add_(0, index, proba)
        self.epoch_counts.index_add_(0, index, torch.ones_like(index, dtype=proba.dtype))
        # the epoch's views of a row so far count as one pass, as end_epoch will count them
        epoch_mean = self.epoch_sums[index] / self.epoch_counts[index].unsqueeze(1)
        return (self.sums[index] + epoch_mean) / (self.counts[index] + 1).unsqueeze(1)

    def _allocate(self, proba):
        super()._allocate(proba)
        self.epoch = proba.new_zeros((self.n_samples, proba.shape[1] + 1))
        self.epoch_sums, self.epoch_counts = self.epoch[:, :-1], self.epoch[:, -1]

    def end_epoch(self) -> None:
        """Sum the epoch's buffers over the processes and fold them in; every process must call it."""
        # no batch yet, so no shapes: on no process either, as Accelerate gives every process
        # as many batches (its default even_batches=True)
        if self.sums is None:
            return
        epoch = self.accelerator.reduce(self.epoch, reduction="sum")  # one all-reduce
        epoch_sums, epoch_counts = epoch[:, :-1], epoch[:, -1]
        seen = epoch_counts > 0
        self.sums[seen] += epoch_sums[seen] / epoch_counts[seen].unsqueeze(1)
        self.counts[seen] += 1
        self.epoch.zero_()

    def __getstate__(self):
        # a pickled net keeps the gathered totals (to_numpy reads only those)
        state = super().__getstate__()
        state.update(accelerator=None, epoch=None, epoch_sums=None, epoch_counts=None)
        return state


def _release_process_group():
    """Tear a still-open process group down at exit, while Python still runs.

    Left to the interpreter's finalization, the gloo threads of a module that was wrapped in
    ``DistributedDataParallel`` can call into Python after it has begun to shut down, and the
    process aborts after its work is done ("terminate called without an active exception",
    exit code -6), one run in a few on a busy machine.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect()  # what still holds the wrappers' communication hooks goes first
        torch.distributed.destroy_process_group()


atexit.register(_release_process_group)


class _ModuleAndHead(torch.nn.Module):
    """A net's module and TD head as one module, whose forward pass is the net's
    :meth:`~tidal_modal.net.TiDALNetClassifier.infer_td`.

    Accelerate wraps it in one ``DistributedDataParallel``, so that a step all-reduces the
    gradients of both at once; skorch's mixin wraps every module on its own, and two wrappers
    all-reduce twice per step. ``module_`` and ``td_head_`` stay the net's own modules.
    """

    def __init__(self, net: TiDALNetClassifier) -> None:
        super().__init__()
        self.module, self.head = net.module_, net.td_head_
        self.net = [net]  # not a submodule: a list hides it from nn.Module

    def forward(self, x: Any, **fit_params: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
        return TiDALNetClassifier.infer_td(self.net[0], x, **fit_params)


def _silent(text):
    """The log sink of the processes other than the main one."""


class AcceleratedTiDALNetClassifier(AccelerateMixin, TiDALNetClassifier):
    """A :class:`~tidal_modal.net.TiDALNetClassifier` trained through Hugging Face Accelerate.

    skorch's :class:`~skorch.hf.AccelerateMixin` on the TiDAL net: data-parallel training on
    several processes (GPUs, or CPU processes on the gloo backend), mixed precision and gradient
    accumulation, as the ``Accelerator`` passed in is configured. Training dynamics are gathered
    over the processes once per epoch and are complete and identical on every process (see
    :class:`DistributedTrainingDynamics`); the TD head, ``predict_td``, the strategies, the
    trajectory that ``disal`` reads, ``warm_start`` and pickling work as on one process.

    Parameters
    ----------
    *args
        ``module`` (as for :class:`~tidal_modal.net.TiDALNetClassifier`), then skorch's
        positional parameters.
    accelerator : accelerate.Accelerator
        Configures the processes, devices and precision.
    device : None, default=None
        Leave it ``None``: the accelerator places the module.
    callbacks__print_log__sink : callable or "auto", default="auto"
        Where the log goes; ``"auto"`` prints on the main process only, and only if ``verbose``.
    unwrap_after_train : bool, default=True
        skorch's parameter: after each fit the wrappers (``DistributedDataParallel``) are
        dropped, so that the net pickles; the next fit (also warm-started) wraps the module and
        the TD head again. Prediction runs on each process alone either way.
    **kwargs
        Any parameter of :class:`~tidal_modal.net.TiDALNetClassifier` and skorch.

    Notes
    -----
    Each process must call ``fit`` with the same data (each trains on its shard of the batches)
    and the same seeds. ``training_dynamics_`` holds every training row's TD on every process.
    Batch statistics of batch norm stay per process unless the module uses
    ``nn.SyncBatchNorm``. The log is printed by the main process only.

    Examples
    --------
    In a script started with ``torchrun --nproc_per_node 2 train.py``::

        from accelerate import Accelerator
        from tidal_modal.accelerate import AcceleratedTiDALNetClassifier

        net = AcceleratedTiDALNetClassifier(MyModule, accelerator=Accelerator(), max_epochs=10)
        net.fit(X, y)  # every process: the same X, y
        if net.accelerator.is_main_process:
            td = net.predict_td(X_pool)
    """

    def _initialize_callbacks(self) -> AcceleratedTiDALNetClassifier:
        """The default log prints on the main process only, and only if ``verbose``.

        skorch's ``'auto'`` sink is ``accelerator.print``, which ``PrintLog`` calls whatever
        ``verbose`` says (it honours ``verbose`` for ``print`` alone).
        """
        if self.callbacks__print_log__sink == "auto":
            self.callbacks__print_log__sink = print if self.accelerator.is_main_process else _silent
        return super()._initialize_callbacks()

    def _initialize_accelerator(self) -> AcceleratedTiDALNetClassifier:
        """Wrap the module, criterion and optimizer, once the module's every parameter has a shape.

        A new module's TD head is lazy; it is wrapped at the first training batch instead
        (:meth:`train_step`). An optimizer that Accelerate already wraps is not wrapped twice. A
        criterion without trainable parameters is not prepared: on CPU processes Accelerate wraps
        any module in ``DistributedDataParallel``, which refuses one with nothing to train.
        """
        if self._wrapped_with_accelerator or not is_fitted(self):
            return self
        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            inner = getattr(optimizer, "optimizer", None)
            if isinstance(inner, torch.optim.Optimizer):  # an AcceleratedOptimizer of an earlier fit
                setattr(self, name + "_", inner)
        criteria, modules = self._criteria, self._modules
        self._criteria = [
            name
            for name in criteria
            if any(p.requires_grad for p in getattr(getattr(self, name + "_"), "parameters", list)())
        ]
        # the module and the TD head are prepared together below, not one by one as skorch does
        self._modules = [name for name in modules if name not in ("module", "td_head")]
        try:
            super()._initialize_accelerator()
        finally:
            self._criteria, self._modules = criteria, modules
        # not through skorch's __setattr__, which would add it to the net's modules (saved, moved)
        object.__setattr__(self, "_pair", self.accelerator.prepare(_ModuleAndHead(self)))
        return self

    def _initialize_module(self) -> AcceleratedTiDALNetClassifier:
        """Build the modules as a TiDAL net does, after dropping the last fit's wrapper, which
        ``unwrap_after_train=False`` keeps: new modules are wrapped afresh, not trained through
        a wrapper of the old ones."""
        self._unwrap_accelerator()
        return super()._initialize_module()

    def _unwrap_accelerator(self) -> None:
        """Unwrap as skorch does, and let the accelerator drop its references to the wrappers."""
        wrapped = self._wrapped_with_accelerator
        super()._unwrap_accelerator()
        self._pair = None
        if wrapped:
            # each fit wraps afresh: without this the accelerator would keep every fit's wrapper
            # (and DistributedDataParallel's gradient buckets) alive
            self.accelerator.free_memory()

    def _new_dynamics(self, n_samples: int) -> DistributedTrainingDynamics:
        """The TD buffer of a fit, gathered over the processes."""
        return DistributedTrainingDynamics(n_samples, self.accelerator)

    def on_train_begin(self, net: Any, X: InputData = None, y: Labels | None = None, **kwargs: Any) -> None:
        """Wrap a fitted module again for a warm-started fit (skorch unwraps it after each fit)."""
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self.grads_pending_ = False  # a fit starts from zero gradients
        self._initialize_accelerator()

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """A new module first gets its shapes from the batch, then is wrapped; then skorch's step,
        with gradient accumulation over the module and the TD head alike.

        skorch's mixin accumulates over ``module_`` alone (skorch#874): the head's gradients
        would then be synchronised at every micro-batch.
        """
        if not is_fitted(self):
            if self.accelerator.device_placement:  # the prepared loader puts batches there
                self.module_.to(self.accelerator.device)
                self.td_head_.to(self.accelerator.device)
            self._shape_pass(unpack_data(batch)[0], **fit_params)
            self._initialize_accelerator()
        with self.accelerator.accumulate(self._pair):
            return TiDALNetClassifier.train_step(self, batch, **fit_params)

    def infer_td(self, x: InputData, **fit_params: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """As a TiDAL net; a training pass of a wrapped net runs through the one wrapper of the
        module and the TD head, whose gradients then synchronise together."""
        pair = getattr(self, "_pair", None)
        if pair is not None and self._wrapped_with_accelerator and torch.is_grad_enabled():
            return pair(x, **fit_params)
        return super().infer_td(x, **fit_params)

    def _zero_grad_optimizer(self, set_to_none: bool | None = None) -> None:
        """Zero the gradients at the first micro-batch of an accumulation group only.

        skorch zeroes them before every forward pass, and Accelerate's optimizer zeroes only
        while gradients synchronise, that is at the *last* micro-batch of a group: together
        they would drop the group's accumulated gradients and step on the last micro-batch's
        alone. A group begins after a step (:meth:`_step_optimizer`).
        """
        if not getattr(self, "grads_pending_", False):
            for name in self._optimizers:
                optimizer = getattr(self, name + "_")
                getattr(optimizer, "optimizer", optimizer).zero_grad(set_to_none=True)

    def _step_optimizer(self, step_fn: Callable) -> None:
        """As skorch's mixin (Accelerate's optimizer steps only when gradients synchronise);
        records whether the gradients wait for the next micro-batch."""
        super()._step_optimizer(step_fn)
        self.grads_pending_ = not self.accelerator.sync_gradients

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """The TiDAL step under the accelerator's autocast, with its backward pass."""
        with self.accelerator.autocast():
            step = self._forward_td_step(batch, **fit_params)
            self.accelerator.backward(step["loss"])
        return step

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        """Gather the epoch's training dynamics before any callback reads them."""
        self.dynamics_.end_epoch()
        super().on_epoch_end(net, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """As a TiDAL net; refused while the module is wrapped for data-parallel training."""
        if self._wrapped_with_accelerator:
            raise TypeError(
                "An AcceleratedTiDALNetClassifier cannot be pickled while its module is wrapped for "
                "data-parallel training (unwrap_after_train=False); save it with save_params, or "
                "keep unwrap_after_train=True."
            )
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle as skorch does, and leave the device to the accelerator again.

        skorch unpickles a net of ``device=None`` to the CPU, with a warning, and keeps
        ``device='cpu'``, which the accelerator then refuses when the net trains further.
        """
        device = state.get("device")
        with warnings.catch_warnings():
            if device is None:
                warnings.filterwarnings("ignore", category=DeviceWarning)
            super().__setstate__(state)
        self.device = device
