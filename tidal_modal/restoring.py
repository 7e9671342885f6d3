"""The TD head, the training dynamics and the trajectory follow the classifier back to its best epoch.

skorch's ``EarlyStopping(load_best=True)`` and ``Checkpoint(load_best=True)`` restore the weights
of an earlier epoch when training ends. On their own they would leave a TiDAL net's other
records at the last epoch: a TD head that belongs to other weights (``EarlyStopping`` copies
``module_`` alone), training dynamics averaged over epochs after the restored one, and a DISAL
trajectory that ends elsewhere. So, at the end of every epoch that such a callback would restore,
the net remembers its head's state, its dynamics and the length of its trajectory
(:func:`remember`); when training ends and a callback has restored that epoch, they are put back
(:func:`restore`). Memory: one copy of the head and of the TD buffer per such callback.

A ``Checkpoint`` without ``event_name`` does not record which epoch it saved; its epoch is not
known, and only its own files (the head included, see ``TiDALNetClassifier.save_params``) are
restored.
"""

from typing import Any

import torch
from skorch.callbacks import Checkpoint, EarlyStopping

from .modules import unwrap
from .trajectory import classifier_module, layer_parameters

__all__ = ["remember", "restore"]


def _restorers(net):
    """``(name, callback)`` of the callbacks that restore an earlier epoch's weights at the end."""
    for name, callback in getattr(net, "callbacks_", []):
        if isinstance(callback, EarlyStopping) and callback.load_best:
            yield name, callback
        elif isinstance(callback, Checkpoint) and callback.load_best and callback.monitor is not None:
            if callback.event_name is not None:
                yield name, callback


def _is_marked(callback, net):
    """Whether the epoch that just ended is the one ``callback`` would restore."""
    if isinstance(callback, EarlyStopping):
        return callback.best_epoch_ == net.history[-1, "epoch"]
    return bool(net.history[-1].get(callback.event_name))


def _restored_epoch(callback, net, last):
    """The epoch whose weights ``callback`` restored when training ended after epoch ``last``, or
    ``None`` (a ``Checkpoint`` may have put its history back too)."""
    if isinstance(callback, EarlyStopping):
        restored = callback.best_epoch_ != last and callback.best_model_weights_ is not None
        return callback.best_epoch_ if restored else None
    marked = [row["epoch"] for row in net.history if row.get(callback.event_name)]
    return marked[-1] if marked and marked[-1] != last else None


def remember(net: Any) -> None:
    """At the end of an epoch: what to put back if a callback restores this epoch's weights."""
    points = net.__dict__.setdefault("restore_points_", {})
    points["last epoch"] = net.history[-1, "epoch"]
    for name, callback in _restorers(net):
        if _is_marked(callback, net):
            head = getattr(net, "td_head_", None)
            head = None if head is None else unwrap(head).state_dict()
            trajectory = getattr(net, "trajectory_", None)
            points[name] = {
                "epoch": net.history[-1, "epoch"],
                "head": None if head is None else {key: value.clone() for key, value in head.items()},
                "dynamics": net.dynamics_.snapshot(),
                "trajectory": None if trajectory is None else len(trajectory),
            }


def restore(net: Any) -> None:
    """When training has ended: put back what :func:`remember` kept for the restored epoch."""
    points = net.__dict__.pop("restore_points_", {})
    for name, callback in _restorers(net):
        point = points.get(name)
        if point is None or _restored_epoch(callback, net, points["last epoch"]) != point["epoch"]:
            continue
        if point["head"] is not None and isinstance(callback, EarlyStopping):
            unwrap(net.td_head_).load_state_dict(point["head"])  # Checkpoint loads its own file
        net.dynamics_.restore(point["dynamics"])
        trajectory = getattr(net, "trajectory_", None)
        if trajectory is not None and point["trajectory"] is not None:
            trajectory.truncate(point["trajectory"])
            layer = classifier_module(net.module_).get_submodule(trajectory.layer)
            params = layer_parameters(layer)
            # the path's end is a sum of steps: equal to the restored weights up to rounding
            if not trajectory.deltas or not torch.allclose(params, trajectory.weights()[-1], atol=1e-6):
                trajectory.checkpoint(params, point["epoch"])
