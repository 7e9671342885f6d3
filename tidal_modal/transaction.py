"""All-or-nothing training: a ``fit`` that raises leaves a fitted net as it was.

Validation refuses bad input before anything changes, but it cannot foresee every failure: a
module that rejects the data's shape, memory running out on the first batch, a callback or an
optimizer that raises. So the guarantee comes from a mechanism instead: :func:`fit_transaction`
snapshots a fitted net before ``fit`` / ``partial_fit`` and puts the snapshot back if they raise.

The snapshot (:func:`take_snapshot`) holds

- every attribute of the net *by reference* (a shallow copy of its ``__dict__``): a fit replaces,
  rather than changes, most of what it touches (``initialize`` builds a new ``module_``,
  ``optimizer_`` and ``callbacks_``; every fit a new ``dynamics_``, ``trajectory_``,
  ``classes_inferred_`` and ``input_shape_``), so the old references are the old state;
- a copy of the state dict of every torch module and optimizer of the net (``module_``,
  ``criterion_``, ``optimizer_``), the things that training changes *in place* (also a module
  passed as an instance, which re-initialisation reuses). The copies stay on the training
  device: for the duration of a fit, one more copy of the weights and of the optimizer's state
  (e.g. Adam's two moments) in device memory, made by one device-side copy per fit;
- the rows of the history, which ``initialize`` clears in place and training appends to (the
  last row copied: it is the only one a later epoch could still change).

Callbacks keep their own state (skorch's callbacks reset it when a fit begins).
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from .modules import is_lazy
from .validation import is_fitted

__all__ = ["fit_transaction", "restore_snapshot", "take_snapshot"]


def _copy_tensors(value: Any) -> Any:
    """``value`` with its nested dicts, lists and tuples copied and its tensors cloned.

    A deepcopy of a state dict, several times faster on small networks (``Tensor.__deepcopy__``
    costs more than the copy of a small tensor).
    """
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        value = copy.copy(value)  # keeps the type and a module state dict's _metadata
        for key, item in value.items():
            value[key] = _copy_tensors(item)
        return value
    if type(value) in (list, tuple):
        return type(value)(_copy_tensors(item) for item in value)
    return value


def _copy_row(row):
    """A history row and its batch records, copied; their values (numbers) are kept.

    Several times faster than a deepcopy: a long warm-started history holds many batch records.
    """
    row = dict(row)
    if "batches" in row:
        row["batches"] = [dict(batch) for batch in row["batches"]]
    return row


def take_snapshot(net: Any) -> tuple[dict, dict, list | None]:
    """What :func:`restore_snapshot` needs to put ``net`` back as it is now.

    Returns
    -------
    attributes : dict
        The net's ``__dict__``, its values by reference.
    states : dict
        Attribute name -> a copy of its ``state_dict()``, for the net's modules and optimizers.
    history : list of dict or None
        The history's rows: the last one copied (with its batch records), the others by
        reference; ``None`` before ``initialize``.
    """
    attributes = dict(net.__dict__)
    states = {
        name: _copy_tensors(value.state_dict())
        for name, value in attributes.items()
        # the fitted components only: `module` may be the very backbone inside `module_`; a lazy
        # module (a new TD head) has no weights yet
        if name.endswith("_")
        and isinstance(value, (nn.Module, Optimizer))
        and not (isinstance(value, nn.Module) and is_lazy(value))
    }
    if net.history_ is None:
        return attributes, states, None
    # rows of past epochs are never changed again (skorch records into the last row only), so
    # they are kept by reference: the snapshot does not grow with a long warm-started history
    history = list(net.history_)
    if history:
        history[-1] = _copy_row(history[-1])
    return attributes, states, history


def restore_snapshot(net: Any, snapshot: tuple[dict, dict, list | None]) -> None:
    """Put ``net`` back as it was when :func:`take_snapshot` returned ``snapshot``."""
    attributes, states, history = snapshot
    # __dict__, not setattr: skorch refuses torch modules set outside its initialize methods
    net.__dict__.clear()
    net.__dict__.update(attributes)
    for name, state in states.items():
        # in place, so that the optimizer still holds the module's parameters
        attributes[name].load_state_dict(state)
    if history is not None:
        net.history_[:] = history


@contextmanager
def fit_transaction(net: Any) -> Iterator[None]:
    """Restore a fitted ``net`` as it was if the block raises, then re-raise.

    A net that is not fitted has no model to lose, and no snapshot is taken.

    ``KeyboardInterrupt`` follows skorch: one raised inside the training loop (Ctrl-C, or
    skorch's ``EarlyStopping``, which stops training by raising it) is caught by skorch's
    ``partial_fit``, which ends training early and keeps the net trained so far; the fit then
    returns normally and nothing is restored. Raised anywhere else (e.g. in ``on_train_begin``
    or ``on_train_end``), it is a failed fit like any other exception: the net is restored and
    the interrupt goes on.
    """
    snapshot = take_snapshot(net) if is_fitted(net) else None
    try:
        yield
    except BaseException:
        if snapshot is not None:
            restore_snapshot(net, snapshot)
        raise
