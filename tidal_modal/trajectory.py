"""The optimisation path of a classifier's last layer, recorded during training (for DISAL).

DISAL (Tracing Training Progress: Dynamic Influence Based Selection for Active Learning, ACM
MM 2024) scores an unlabeled row by how its loss gradient projects onto the *accumulated
optimisation direction* ``Delta_t = theta_t - theta_{t-1}`` between training checkpoints.
:class:`TrajectoryRecorder`, a skorch callback, records those directions for one layer (by
default the classifier's last ``nn.Linear``, weights and bias: ``K x (d + 1)`` numbers per
checkpoint, nothing that grows with the data) into ``net.trajectory_``, a :class:`Trajectory`.
:func:`~tidal_modal.disal` turns them into scores.

The record restarts with every ``fit`` / ``partial_fit`` (as the training dynamics do) and
stays on the training device; it survives pickling (its tensors are moved to the CPU) and
``save_params(f_trajectory=...)`` / ``load_params(f_trajectory=...)``.
"""

from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import nn
from torch.nn.parameter import UninitializedParameter

from .modules import last_linear_name, unwrap
from .validation import check_positive_int

__all__ = ["Trajectory", "TrajectoryRecorder", "classifier_module"]


def classifier_module(module):
    """The user's classifier inside a net's ``module_`` (looking through data-parallel and
    ``torch.compile`` wrappers)."""
    return unwrap(module)


def tensor_to_array(value):
    """A CPU tensor as a numpy array for pickling (other values, and dtypes numpy lacks, as they are)."""
    if isinstance(value, torch.Tensor) and value.dtype not in (torch.bfloat16,):
        return value.detach().cpu().numpy()
    return value.cpu() if isinstance(value, torch.Tensor) else value


def array_to_tensor(value):
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def layer_parameters(layer):
    """A linear layer's ``[weight | bias]``, detached, ``[K, d + 1]`` (``[K, d]`` without bias)."""
    weight = layer.weight
    if isinstance(weight, UninitializedParameter):
        raise ValueError(
            "The trajectory's layer still has uninitialized (lazy) parameters when training "
            "starts; give it its input size, or name an initialized layer with layer=..."
        )
    if weight.dim() != 2:
        raise ValueError(f"The trajectory's layer must hold a 2-D weight; got shape {tuple(weight.shape)}.")
    bias = getattr(layer, "bias", None)
    params = weight.detach() if bias is None else torch.cat([weight.detach(), bias.detach()[:, None]], dim=1)
    return params.clone()


class Trajectory:
    """Checkpoints of one linear layer along one fit: where it started and each step since.

    An empty ``Trajectory()`` (what an initialized, unfitted TiDAL net holds) is a place for
    ``net.load_params(f_trajectory=...)`` to load into.

    Parameters
    ----------
    layer : str or None
        Name of the layer in the user's classifier (as in ``named_modules()``).
    start : torch.Tensor of shape (K, d + 1) or None
        ``[weight | bias]`` when the fit began (``(K, d)`` for a layer without bias).
    has_bias : bool
        Whether the last column of ``start`` is the bias.

    Attributes
    ----------
    deltas : list of torch.Tensor of shape (K, d + 1)
        ``Delta_t = theta_t - theta_{t-1}``, one per checkpoint, on the training device.
    epochs : list of int
        The epoch of the fit (1-based) that closed each checkpoint.

    Examples
    --------
    >>> import torch
    >>> from tidal_modal.trajectory import Trajectory
    >>> path = Trajectory("fc", start=torch.zeros(2, 3))
    >>> path.checkpoint(torch.ones(2, 3), epoch=1)
    >>> path.checkpoint(3 * torch.ones(2, 3), epoch=2)
    >>> directions, ends = path.directions(normalize=False)
    >>> directions[:, 0, 0], ends[:, 0, 0]
    (tensor([1., 2.]), tensor([1., 3.]))
    """

    def __init__(self, layer=None, start=None, has_bias=True):
        self.layer = layer
        self.start = start
        self.has_bias = has_bias
        self.deltas = []
        self.epochs = []
        self._last = start

    def __len__(self):
        return len(self.deltas)

    def checkpoint(self, params, epoch):
        """Close a checkpoint at ``params`` (the layer's ``[weight | bias]`` now), reached at ``epoch``."""
        self.deltas.append(params - self._last)
        self.epochs.append(int(epoch))
        self._last = params

    def truncate(self, n_checkpoints):
        """Keep the first ``n_checkpoints`` checkpoints (the path up to an earlier epoch)."""
        del self.deltas[n_checkpoints:], self.epochs[n_checkpoints:]
        self._last = self.weights()[-1] if self.deltas else self.start

    def weights(self):
        """``theta_t`` at every checkpoint, ``[T, K, d + 1]``."""
        return self.start + torch.cumsum(torch.stack(self.deltas), dim=0)

    def segments(self, n_checkpoints=None):
        """Checkpoint indices ``[0, T)`` grouped into at most ``n_checkpoints`` consecutive segments.

        A segment's direction is the sum of its steps (exactly ``theta`` at its end minus
        ``theta`` at its start), so coarser checkpoints lose nothing of the path's end points.
        """
        n = len(self.deltas)
        if n_checkpoints is None or n_checkpoints >= n:
            return [[i] for i in range(n)]
        bounds = np.linspace(0, n, n_checkpoints + 1).round().astype(int)
        return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def directions(self, n_checkpoints=None, normalize=True):
        """The accumulated directions ``[T', K, d + 1]`` and the weights at their ends ``[T', K, d + 1]``.

        Parameters
        ----------
        n_checkpoints : int or None
            Merge the recorded steps into at most this many evenly spread segments.
        normalize : bool
            Divide each direction by its (Frobenius) norm, so that every checkpoint counts
            alike; a step of norm 0 (nothing moved) stays 0.
        """
        if not self.deltas:
            raise ValueError("The trajectory holds no checkpoint: the fit completed no epoch.")
        deltas = torch.stack(self.deltas)
        groups = self.segments(n_checkpoints)
        directions = torch.stack([deltas[g].sum(dim=0) for g in groups])
        ends = self.weights()[[g[-1] for g in groups]]
        if normalize:
            norms = torch.linalg.vector_norm(directions.flatten(1), dim=1)
            directions = directions / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None, None]
        return directions, ends

    def state_dict(self):
        """Tensors and names only, for ``torch.save`` with ``weights_only=True`` (skorch's default)."""
        if self.start is None:
            deltas = None
        elif self.deltas:
            deltas = torch.stack(self.deltas)
        else:
            deltas = self.start.new_zeros((0, *self.start.shape))
        return {
            "layer": self.layer,
            "has_bias": self.has_bias,
            "start": self.start,
            "deltas": deltas,
            "epochs": torch.tensor(self.epochs, dtype=torch.long),
        }

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (``net.load_params(f_trajectory=...)``)."""
        self.layer = state_dict["layer"]
        self.has_bias = bool(state_dict["has_bias"])
        self.start = state_dict["start"]
        deltas = state_dict["deltas"]
        self.deltas = [] if deltas is None else list(deltas)
        self.epochs = [int(e) for e in state_dict["epochs"]]
        self._last = self.weights()[-1] if self.deltas else self.start

    def __getstate__(self):
        # skorch maps only its registered modules to the CPU when unpickling; ours go as arrays,
        # which unpickle without torch.load (and its map_location)
        return {key: tensor_to_array(value) for key, value in self.state_dict().items()}

    def __setstate__(self, state):
        self.load_state_dict({key: array_to_tensor(value) for key, value in state.items()})

    def __repr__(self):
        return f"Trajectory(layer={self.layer!r}, checkpoints={len(self)}, shape={tuple(self.start.shape)})"


class TrajectoryRecorder(Callback):
    """Record the optimisation path of a linear layer into ``net.trajectory_`` (for DISAL).

    At the start of every fit the layer's ``[weight | bias]`` is copied; every ``every``
    epochs, and at the end of the fit, the step since the previous checkpoint is stored:
    ``Delta_t = theta_t - theta_{t-1}``. The copies stay on the training device (one small
    device-side copy per checkpoint, no host transfer).

    :class:`~tidal_modal.TiDALNetClassifier` has this callback by default (named
    ``"trajectory"``; ``callbacks__trajectory__every=2`` changes it, ``callbacks__trajectory=None``
    turns it off). A plain :class:`skorch.NeuralNetClassifier` records with one line:
    ``NeuralNetClassifier(..., callbacks=[TrajectoryRecorder()])``.

    Parameters
    ----------
    layer : str or None, default=None
        Name (as in ``module.named_modules()`` of your classifier) of an ``nn.Linear``-like
        layer with a 2-D ``weight``. ``None``: the classifier's last ``nn.Linear``, whose
        output are the logits.
    every : int, default=1
        Epochs between checkpoints; the end of a fit always closes one.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from skorch import NeuralNetClassifier
    >>> X = np.random.RandomState(0).randn(40, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = NeuralNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), criterion=nn.CrossEntropyLoss,
    ...     train_split=None, max_epochs=3, verbose=0, callbacks=[TrajectoryRecorder()],
    ... ).fit(X, y)
    >>> net.trajectory_
    Trajectory(layer='2', checkpoints=3, shape=(2, 9))
    """

    def __init__(self, layer: str | None = None, every: int = 1) -> None:
        self.layer = layer
        self.every = every

    def initialize(self) -> "TrajectoryRecorder":
        """Check ``every`` (skorch calls this when the net initialises its callbacks)."""
        check_positive_int(self.every, "every")
        self.epochs_ = 0
        self.started_ = False
        return self

    def _layer(self, net):
        """``(name, layer)`` to record, or ``(None, reason)`` when the default layer is ambiguous."""
        root = classifier_module(net.module_)
        if self.layer is None:
            if hasattr(net, "td_head_") and net.td_head_ is None:
                return None, (
                    "the module returns its own (logits, td_logits), so its last nn.Linear may be "
                    "its TD layer; name the logits layer: callbacks__trajectory__layer='...'"
                )
            name = last_linear_name(root)
            if name is None:
                return None, (
                    "the module has no nn.Linear; name the layer whose optimisation path to "
                    "record: TrajectoryRecorder(layer=...) (callbacks__trajectory__layer=... on a TiDAL net)"
                )
            return name, root.get_submodule(name)
        try:
            return self.layer, root.get_submodule(self.layer)
        except AttributeError:
            names = [n for n, m in root.named_modules() if isinstance(m, nn.Linear)]
            raise ValueError(
                f"TrajectoryRecorder(layer={self.layer!r}) names no submodule of the module; "
                f"its linear layers: {names}."
            ) from None

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        """A new fit: its trajectory starts at the first gradient (:meth:`on_grad_computed`)."""
        self.epochs_ = 0
        self.started_ = False
        self.skipped_ = None
        net.trajectory_ = None

    def on_grad_computed(self, net: Any, named_parameters: Any = None, **kwargs: Any) -> None:
        """Start the trajectory at the layer's ``[weight | bias]`` before the fit's first step.

        Not at ``on_train_begin``: until the module's first forward pass its layers may be lazy,
        another callback may replace the module then (skorch's ``InputShapeSetter``), and a
        TiDAL net learns only then whether the module has a TD head of its own. Between the first
        gradient and the first optimizer step the weights are those the fit starts from.
        """
        if self.started_:
            return
        self.started_ = True
        name, layer = self._layer(net)
        if name is None:
            # nothing to record: fitting goes on, and disal says why it has no trajectory
            self.skipped_ = layer
            return
        net.trajectory_ = Trajectory(
            name, layer_parameters(layer), has_bias=getattr(layer, "bias", None) is not None
        )

    def _checkpoint(self, net):
        if getattr(net, "trajectory_", None) is not None:
            layer = classifier_module(net.module_).get_submodule(net.trajectory_.layer)
            net.trajectory_.checkpoint(layer_parameters(layer), self.epochs_)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        """Close a checkpoint every ``every`` epochs."""
        self.epochs_ += 1
        if self.epochs_ % self.every == 0:
            self._checkpoint(net)

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        """Close the last, shorter segment, if the fit ended between checkpoints."""
        if not self.started_:
            self.skipped_ = "the last fit completed no epoch (no training step); fit for at least one epoch"
        elif self.epochs_ % self.every:
            self._checkpoint(net)
