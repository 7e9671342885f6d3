"""The skorch network that trains a classifier together with TiDAL's TD head."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.utils import check_array
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.history import History
from skorch.utils import _identity, get_map_location, is_dataset, to_device, to_numpy, to_tensor
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from . import restoring
from .callbacks import EpochTDLoss
from .dynamics import IndexedDataset, IndexedTarget, TrainingDynamics, collate_rows, source_rows
from .legacy import TiDALModule, is_legacy_state_dict, split_legacy_module, split_legacy_state_dict
from .modules import TDHead, attach_taps, capturing, detach_taps, is_lazy, unwrap
from .pool import is_sliceable, iter_slices, num_rows
from .scores import softmax_
from .trajectory import Trajectory, TrajectoryRecorder
from .transaction import fit_transaction, restore_snapshot, take_snapshot
from .validation import (
    InputData,
    Labels,
    check_device,
    check_finite_output,
    check_input_shape,
    check_n_outputs,
    check_predict_input,
    check_prediction_batch_size,
    check_scoring_dtype,
    check_training_data,
    classes_from_width,
    is_fitted,
    record_input_shape,
)

__all__ = ["TiDALNetClassifier"]


#: Logits closer than this to a row's largest may share its probability once a float32 softmax
#: rounds them (the argmax then takes the first); farther ones stay below it (exp's error is a
#: few units in the last place, about 1e-7 of the largest probability).
SOFTMAX_TIE = 1e-4


def _is_softmax(nonlinearity):
    """Whether ``nonlinearity`` is skorch's for a cross-entropy criterion, a softmax over classes."""
    return (
        isinstance(nonlinearity, partial)
        and nonlinearity.func in (torch.softmax, F.softmax)
        and not nonlinearity.args
        and nonlinearity.keywords in ({"dim": -1}, {"dim": 1})
    )


def predicted_labels(logits: torch.Tensor, nonlinearity: Callable) -> torch.Tensor:
    """The argmax of ``nonlinearity(logits)`` for each row of ``logits``, as ``predict`` takes it.

    A softmax (skorch's with a cross-entropy criterion) keeps the logits' order, so the logits'
    argmax is the probabilities', and the softmax is only computed for the rows where it may
    not be: another logit within :data:`SOFTMAX_TIE` of the largest, or one that is not
    finite. On a small network the softmax of a pool costs a few percent of scoring it.
    Other nonlinearities are applied to every row.
    """

    def argmax_of_nonlinearity(rows):  # numpy's argmax, as skorch's predict takes it (NaN too)
        return torch.from_numpy(to_numpy(nonlinearity(rows)).argmax(axis=1)).to(rows.device)

    if not logits.is_floating_point() or (nonlinearity is not _identity and not _is_softmax(nonlinearity)):
        return argmax_of_nonlinearity(logits)
    top, labels = logits.max(dim=1)  # the first of equal maxima, as argmax
    # a NaN (which max propagates) or an infinity at the top; -inf below a finite top leaves the
    # softmax's order as the logits'
    unsure = ~torch.isfinite(top)
    if nonlinearity is not _identity:
        unsure |= (logits >= (top - SOFTMAX_TIE)[:, None]).sum(dim=1) > 1
    if unsure.any():
        labels[unsure] = argmax_of_nonlinearity(logits[unsure])
    return labels


def softmax_rows_(logits):
    """Softmax of each row of a 2-D float array, in place (see :func:`~tidal_modal.scores.softmax_`)."""
    softmax_(torch.from_numpy(logits))
    return logits


def check_not_several_inputs(X: InputData, y: Labels | None) -> None:
    """Refuse a list that holds several inputs, one array per argument of the module's forward.

    skorch reads a list that way; this net reads a list as rows, as scikit-learn and modAL do.
    A list of arrays of one row per label each, but not one per label itself, can only be the
    former.

    Raises
    ------
    ValueError
        Saying to pass several inputs as a tuple or a dict.
    """
    if not isinstance(X, list) or y is None or len(X) == len(y):
        return
    if all(hasattr(part, "shape") and len(part.shape) and len(part) == len(y) for part in X):
        raise ValueError(
            f"X is a list of {len(X)} arrays of {len(y)} rows each, one row per label: several inputs? "
            "TiDALNetClassifier reads a list as rows, as scikit-learn does. Pass several inputs as a "
            "tuple (X1, X2) or as a dict {'name': X1, ...} of the module's forward arguments."
        )


#: Bytes of input and layer outputs of one scoring batch (:meth:`TiDALNetClassifier.scoring_batch_size`):
#: the benchmarks' MLPs scored fastest with 9-51 MiB of them per batch (benchmarks/results/overhead).
SCORING_BATCH_BYTES = 24 * 2**20
#: Most rows of one scoring batch: past a few thousand rows a CPU pass gains nothing more.
SCORING_BATCH_ROWS = 4096
#: Components read at each call, that a change re-initializes nothing of.
_PASSIVE_PREFIXES = ("iterator_train__", "iterator_valid__", "dataset__")


def _first_row(dataset: Dataset) -> torch.Tensor | None:
    """The input of a Dataset's first row as a batch of one; ``None`` if it has no rows or its
    input is not an array or a tensor (a dict of several inputs, say)."""
    first = dataset[0] if len(dataset) else None
    x = first[0] if isinstance(first, (tuple, list)) else first
    return torch.as_tensor(x)[None] if isinstance(x, (np.ndarray, torch.Tensor)) else None


def td_head_file(f_params: str | os.PathLike) -> str:
    """Where :meth:`TiDALNetClassifier.save_params` saves the TD head that goes with ``f_params``:
    ``params.pt`` -> ``params.td_head.pt``."""
    stem, suffix = os.path.splitext(os.fspath(f_params))
    return f"{stem}.td_head{suffix}"


def _is_path(f):
    return isinstance(f, (str, os.PathLike))


def _as_float32(outputs):
    """Half-precision outputs (of an autocast pass) in float32, for the scores; others as they are."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_as_float32(o) for o in outputs)
    return outputs


def _embeds_input(module):
    """Whether integer input to ``module`` are indices (it has an embedding layer), not values."""
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in module.modules())


def _parameter_dtype(module):
    """dtype of the module's first parameter, which input values are cast to (``None``: none)."""
    for param in module.parameters():
        return param.dtype
    return None


def _shape_change(net, X):
    """The error of rows of another shape than the net was fitted on, or ``None``."""
    try:
        check_input_shape(net, X)
    except ValueError as mismatch:
        return mismatch
    return None


class TiDALNetClassifier(NeuralNetClassifier):
    """A skorch classifier that learns its own training dynamics (TiDAL, ICCV 2023).

    Your module stays yours: ``net.module_`` is it, unchanged, and ``forward``, ``infer`` and
    ``predict_proba`` give its output. Next to it the net trains a small TD head, ``td_head_``
    (a second skorch module), that reads features of chosen layers of your module through
    forward hooks and learns to predict each labeled row's *training dynamics*: the running
    mean of its softmax outputs over the epochs of a fit. The loss is
    ``CE(logits, y) + td_weight * KL(pbar || TD head)``. :meth:`predict_td` then estimates the
    training dynamics of unlabeled rows, which :func:`~tidal_modal.tidal_entropy` and
    :func:`~tidal_modal.tidal_margin` turn into active-learning scores.

    Every :class:`skorch.NeuralNetClassifier` parameter works as usual; only these defaults
    differ, to suit active learning:

    - ``criterion=nn.CrossEntropyLoss``: the module returns logits, not probabilities.
    - ``train_split=None``: skorch's default 5-fold stratified split fails while a class has
      fewer than 5 labels, the normal state of an active-learning loop's first cycles. To hold
      out validation data, pass e.g. ``train_split=skorch.dataset.ValidSplit(0.2)``;
      validation rows get no training dynamics.
    - ``iterator_train__shuffle=True``: SGD on batches in label order (as a modAL learner
      appends them) trains badly, and the reference code shuffles.
    - ``iterator_train__collate_fn=collate_rows``: training rows of numeric arrays and
      tensors are gathered a batch at a time instead of row by row
      (:meth:`~tidal_modal.dynamics.IndexedDataset.__getitems__`); the batches are the same
      as skorch's, in the same order. A ``collate_fn`` of your own gets the rows one by one
      as usual.

    What else differs from a plain skorch net: labels are class indices (see ``classes``); a
    list ``X`` is rows, as in scikit-learn (several inputs go in a tuple or a dict);
    ``iterator_train`` receives the training set wrapped in an
    :class:`~tidal_modal.dynamics.IndexedDataset`; the optimizer trains the head too; and
    ``train_loss`` includes the TD term. The README's "skorch compatibility" lists each
    difference that skorch's own test suite finds. Two additions: ``predict_td`` and the
    strategies score the pool in batches of :meth:`scoring_batch_size` rows, and
    ``iterator_valid__batch_size="auto"`` gives ``predict_proba`` and the other predictions
    that batch size too (skorch's ``batch_size`` otherwise).

    Parameters
    ----------
    module : torch.nn.Module class or instance
        Any classifier whose ``forward`` returns class logits ``[n, n_classes]``. It may instead
        return ``(logits, td_logits)`` from a TD head of its own; ``td_layers`` is then unused.
        Its constructor arguments are passed skorch-style as ``module__<name>=...``.
    td_layers : list of str or None, default=None
        Names of submodules (as in ``module.named_modules()``) whose outputs feed the TD head;
        4-D feature maps are global-average-pooled. ``None`` uses the input of the module's
        last ``nn.Linear`` (its penultimate features).
    td_weight : float, default=1.0
        ``lambda`` in ``L = CE + lambda * KL``; 1.0 in the paper. It can be changed between
        fits with ``set_params`` without re-initialising the module.
    td_hidden : int, default=128
        Width of each TD-head branch.
    scoring_dtype : torch.dtype, {"bfloat16", "float16"} or None, default=None
        Run prediction and pool scoring (not training) under ``torch.autocast`` in this
        precision, e.g. ``"bfloat16"`` on a GPU; outputs, probabilities and scores are computed
        in float32 from the low-precision logits. ``None``: the module's own precision.
    *args
        skorch's positional parameters, after ``module`` (rarely used).
    criterion, train_split
        As in :class:`skorch.NeuralNetClassifier` (see the defaults above).
    **kwargs
        Any parameter of :class:`skorch.NeuralNetClassifier`. One reads differently:
        ``classes``. Without it the net has one class per output of the module,
        ``0 .. n_outputs - 1``, whether or not the labeled data contain them all yet (an
        active-learning loop's first cycles often miss rare classes); labels must be class
        indices below the module's width. Declared, they must be ``0..C-1`` and the module must
        output one logit per class. Either way the classes stay fixed while the net is
        warm-started.

    Attributes
    ----------
    module_ : torch.nn.Module
        Your module, as skorch builds it (or the instance you passed): its class, its
        ``state_dict`` keys, its output. It carries one small forward hook per layer the head
        reads (:class:`~tidal_modal.modules.FeatureTap`), inert outside the net's own passes.
    td_head_ : TDHead or None
        The TD head (:class:`~tidal_modal.modules.TDHead`), a registered skorch module: moved
        to the device, pickled, saved with ``save_params(f_td_head=...)`` (and next to
        ``f_params`` by default), set with ``set_params(td_head__...)``. Its parameters are
        named ``td_head.*`` in ``get_all_learnable_params`` (``optimizer__param_groups``,
        ``Freezer``); yours keep your names. It gets its shapes from the first training batch.
        ``None`` if your module returns ``(logits, td_logits)`` from a head of its own.
    training_dynamics_ : ndarray of shape (n_samples, n_classes)
        Recorded training dynamics of the rows of the last ``fit`` / ``partial_fit`` call (of
        the training set itself if a ``train_split`` returns datasets of its own, not subsets).
    input_shape_ : tuple of int
        Shape of one row of the training data; predicting on rows of another shape is an error.
    n_features_in_ : int
        Number of features, for 2-D training data only.
    feature_names_in_ : ndarray of str
        Column names of a training DataFrame whose names are all strings (scikit-learn's rule);
        DataFrame pools are read by these names.
    history : skorch.History
        Besides skorch's keys, ``train_td_loss`` is the epoch's mean KL term;
        ``train_loss`` is the optimised total ``CE + td_weight * KL``; ``valid_loss`` (with a
        ``train_split``) is the cross-entropy alone on the validation rows, which get no TD.

    Notes
    -----
    Training data are validated before anything changes (see :mod:`tidal_modal.validation`):
    a bad ``X`` or ``y`` raises ``ValueError`` / ``TypeError``. Any other error of ``fit`` /
    ``partial_fit`` (the module refusing the data, memory running out, a callback that raises)
    leaves a fitted net as it was too, even with ``warm_start=False``: weights, optimizer
    state, history, training dynamics and trajectory (see :mod:`tidal_modal.transaction`). A
    ``KeyboardInterrupt`` inside the training loop is the exception: as in skorch, it stops
    training early and keeps the net trained so far.

    Float input of any precision is cast to the module's dtype batch by batch; so are integer
    and boolean input, unless the module has an embedding layer (its integer input are then
    indices).

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from tidal_modal import TiDALNetClassifier
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = TiDALNetClassifier(
    ...     nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)),
    ...     max_epochs=3, lr=0.1, verbose=0,
    ... ).fit(X, y)
    >>> net.predict_td(X).shape
    (60, 2)
    """

    def __init__(
        self,
        module: type[nn.Module] | nn.Module,
        *args: Any,
        td_layers: str | Sequence[str] | None = None,
        td_weight: float = 1.0,
        td_hidden: int = 128,
        scoring_dtype: torch.dtype | str | None = None,
        criterion: type[nn.Module] | nn.Module = nn.CrossEntropyLoss,
        train_split: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("iterator_train__shuffle", True)
        kwargs.setdefault("iterator_train__collate_fn", collate_rows)
        super().__init__(module, *args, criterion=criterion, train_split=train_split, **kwargs)
        self.td_layers = td_layers
        self.td_weight = td_weight
        self.td_hidden = td_hidden
        self.scoring_dtype = scoring_dtype

    @property
    def _default_callbacks(self):
        callbacks = list(super()._default_callbacks)
        callbacks.insert(len(callbacks) - 1, ("train_td_loss", EpochTDLoss()))  # printed by print_log
        # the last layer's optimisation path, for disal: a few small copies per fit
        callbacks.insert(len(callbacks) - 1, ("trajectory", TrajectoryRecorder()))
        return callbacks

    # --- initialisation -------------------------------------------------------------------

    def _initialize_module(self, reason: str | None = None) -> TiDALNetClassifier:
        """Build your module as skorch does (``initialize_module``), then the TD head.

        The head is a second skorch module, ``td_head_`` (skorch's "custom modules"): it is
        moved to the device, pickled, saved with ``save_params(f_td_head=...)``, reached by
        ``set_params(td_head__...)`` and trained by the optimizer. Built here rather than in
        ``initialize_module``, an override of that method needs no ``super()`` call for it.
        """
        check_device(self.device)  # before skorch moves anything there
        super()._initialize_module(reason=reason)
        if isinstance(getattr(self, "module_", None), nn.Module):  # an override may build other modules
            with self._current_init_context("module"):
                self._initialize_td_head()
        return self

    def _initialize_td_head(self):
        """A new, lazy TD head, and the :class:`~tidal_modal.modules.FeatureTap` hooks that feed it,
        registered on ``module_`` once per initialization (those of an earlier initialization of
        the same instance are reused or replaced)."""
        self.td_taps_ = attach_taps(self.module_, self._td_layer_names())
        params = {"hidden": self.td_hidden, **self.get_params_for("td_head")}
        self.td_head_ = to_device(TDHead(max(len(self.td_taps_), 1), **params), self.device)
        self.embeds_input_ = _embeds_input(self.module_)
        # a new module has no path yet; also what load_params(f_trajectory=...) loads into
        self.trajectory_ = Trajectory()

    def _td_layer_names(self):
        return [self.td_layers] if isinstance(self.td_layers, str) else self.td_layers

    def torch_compile(self, module: nn.Module, name: str) -> nn.Module:
        """As in skorch (``compile=True``), for your module; the small, lazy TD head is not compiled."""
        return module if name == "td_head" else super().torch_compile(module, name)

    def get_all_learnable_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        """As in skorch: your module's parameters named as in your module, then the TD head's,
        named ``td_head.*`` (what ``optimizer__param_groups`` and ``Freezer`` patterns match)."""
        head = getattr(self, "td_head_", None)
        head = set() if head is None else {id(p) for p in head.parameters()}
        for name, param in super().get_all_learnable_params():
            yield (f"td_head.{name}" if id(param) in head else name), param

    # --- training -------------------------------------------------------------------------

    def fit(self, X: InputData, y: Labels | None = None, **fit_params: Any) -> TiDALNetClassifier:
        """Initialise the module (unless warm-starting) and train it, as in skorch.

        ``X`` and ``y`` are validated first, so that a bad input raises before skorch
        re-initialises anything. Whatever raises, a fitted net stays as it was (see
        :mod:`tidal_modal.transaction`); a ``KeyboardInterrupt`` inside the training loop
        ends training early instead, as in skorch, and keeps the net trained so far.

        Parameters
        ----------
        X : array-like, tensor, dict or Dataset
            Training input; lists and DataFrames are converted to arrays.
        y : array-like of int, tensor or None
            Class indices ``0..C-1`` (see ``classes``); ``None`` only if ``X`` is a Dataset.
        **fit_params
            Passed on to :meth:`partial_fit`.

        Returns
        -------
        self : TiDALNetClassifier
        """
        with fit_transaction(self):
            check_device(self.device)  # before skorch moves anything there
            self._check_prediction_params()  # a misspelt "auto" raises now, not at the first query
            check_not_several_inputs(X, y)
            X, y, _ = check_training_data(self, X, y, reset=not self.warm_start or not is_fitted(self))
            # skorch's fit calls partial_fit, which need neither read X again nor take a second snapshot
            return super().fit(X, y, _from_fit=True, **fit_params)

    def partial_fit(
        self, X: InputData, y: Labels | None = None, classes: ArrayLike | None = None, **fit_params: Any
    ) -> TiDALNetClassifier:
        """Train further without re-initialising; training dynamics restart with each call.

        See :meth:`skorch.NeuralNet.partial_fit`. ``fit`` calls this method once, so the TD
        recorded by a fit covers exactly that fit's epochs. The data are validated first, as
        in :meth:`fit`; a label outside the net's classes is an error. As with :meth:`fit`, a
        fitted net that fails to train stays as it was.

        A new module gets the shapes of its TD head (and of any lazy layer) from its first
        training batch (see :meth:`train_step_single`), after the callbacks' ``on_train_begin``.
        If it cannot take rows of another shape than those the net was fitted on before, the
        error is a ``ValueError`` that names both shapes.
        """
        from_fit = fit_params.pop("_from_fit", False)
        with nullcontext() if from_fit else fit_transaction(self):
            if not from_fit:
                check_device(self.device)
                self._check_prediction_params()
                check_not_several_inputs(X, y)
            X, y, net_classes = check_training_data(
                self, X, y, reset=not is_fitted(self), check_X=not from_fit
            )
            if not self.initialized_:
                self.initialize()
            shape_change = None if is_fitted(self) else _shape_change(self, X)
            record_input_shape(self, X)
            # a fitted module's width checks declared classes, or gives them; a new module's
            # width is known after its first forward pass (_after_first_forward)
            if net_classes is None:
                net_classes = classes_from_width(self, y)
            if net_classes is not None:
                check_n_outputs(self, net_classes)
                self.classes_inferred_ = net_classes
            elif hasattr(self, "classes_inferred_"):
                # a new module and a Dataset: the classes of an earlier module are not this one's
                del self.classes_inferred_
            try:
                super().partial_fit(X, y, classes=classes, **fit_params)
                if not is_fitted(self):  # no training batch ran (max_epochs=0): shapes from the first batch
                    # skorch >= 1.4's fit names its entry point for metadata routing: not a forward argument
                    self._infer_shapes(X, **{k: v for k, v in fit_params.items() if k != "_routing_method"})
            except (RuntimeError, ValueError) as error:
                # the module never completed a forward pass on rows of a new shape: that is the error
                if shape_change is None or is_fitted(self) or isinstance(error, torch.OutOfMemoryError):
                    raise
                raise ValueError(
                    f"{shape_change} The module cannot take them: {type(error).__name__}: {error}. Give "
                    "the module an input size that matches the data, or preprocess the data as before."
                ) from error
            return self

    def check_data(self, X: InputData, y: Labels | None) -> None:
        """As in skorch, but keep the classes settled by :meth:`partial_fit`.

        skorch infers the classes from each call's labels, which while warm-starting may miss
        a class that the net already knows.
        """
        classes = getattr(self, "classes_inferred_", None)
        super().check_data(X, y)
        if classes is not None and y is not None:
            self.classes_inferred_ = classes

    def get_split_datasets(
        self, X: InputData, y: Labels | None = None, **fit_params: Any
    ) -> tuple[Dataset, Dataset | None]:
        """Split as skorch does, and restart the TD buffer.

        ``train_split`` and the callbacks see skorch's own datasets. The buffer has one row per
        row of the dataset that the training rows come from: the fit's data when the training
        set is a subset of it (as ``ValidSplit`` returns), else the training set itself.
        """
        dataset_train, dataset_valid = super().get_split_datasets(X, y, **fit_params)
        source, _ = source_rows(dataset_train)
        self.dynamics_ = self._new_dynamics(len(source))
        return dataset_train, dataset_valid

    def _new_dynamics(self, n_samples):
        """The TD buffer of a fit over ``n_samples`` rows."""
        return TrainingDynamics(n_samples)

    def get_iterator(self, dataset: Dataset, training: bool = False) -> Any:
        """As in skorch; the rows of training batches carry their row index (:class:`IndexedDataset`),
        and ``iterator_valid__batch_size="auto"`` batches the rest at :meth:`scoring_batch_size`."""
        if training:
            dataset = IndexedDataset(dataset)
        elif self._valid_batch_size() == "auto":
            return self._scoring_iterator(dataset)
        return super().get_iterator(dataset, training=training)

    def set_params(self, **kwargs: Any) -> TiDALNetClassifier:
        """As in skorch, and all or nothing: a call that raises (a misspelt parameter, a module
        that refuses its new arguments) leaves the net as it was, its attributes and its modules'
        and optimizers' states, where skorch keeps what it set before the error (the parameters
        of a callback, which skorch sets on the callback itself, excepted). Also on a fitted net,
        parameters of its iterators or dataset alone (e.g. ``iterator_valid__batch_size``) are
        set as they are, re-initializing nothing."""
        # with the states of the modules and optimizers: virtual parameters (optimizer__lr) change
        # the optimizer in place before a re-initialization fails
        snapshot = take_snapshot(self)
        to_validate = set(self._params_to_validate)
        try:
            return self._set_params(kwargs)
        except BaseException:
            restore_snapshot(self, snapshot)
            self._params_to_validate = to_validate
            raise

    def _set_params(self, kwargs):
        passive = {k: v for k, v in kwargs.items() if k.startswith(_PASSIVE_PREFIXES)}
        if not passive or not self.initialized_:
            return super().set_params(**kwargs)
        # skorch 1.4 raises "Something went wrong" when an initialized net gets only such parameters
        # (none of its modules, criteria or optimizers to re-initialize), after setting them
        super().set_params(**{k: v for k, v in kwargs.items() if k not in passive})
        vars(self).update(passive)
        self._params_to_validate.update(passive)
        return self

    def infer(self, x: InputData, **fit_params: Any) -> Any:
        """Forward a batch through ``module_``, as in skorch; float input is cast to the module's
        dtype (e.g. float64 from a scaler), and so is integer input unless the module embeds it."""
        x = to_tensor(x, device=self.device)
        if isinstance(x, torch.Tensor) and (x.is_floating_point() or not self.embeds_input_):
            dtype = _parameter_dtype(self.module_)
            if dtype is not None and x.dtype != dtype:
                x = x.to(dtype)
        return super().infer(x, **fit_params)

    def infer_td(self, x: InputData, **fit_params: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Forward a batch through ``module_`` and the TD head.

        Returns
        -------
        y_pred : the module's output, as :meth:`infer` returns it
        logits : torch.Tensor of shape (batch, n_classes)
        td_logits : torch.Tensor of shape (batch, n_classes)
            The TD head's, or the second output of a module that returns ``(logits, td_logits)``.
        """
        with capturing(self.td_taps_):
            y_pred = self.infer(x, **fit_params)
            if isinstance(y_pred, (tuple, list)):
                return (y_pred, *self._own_head_outputs(y_pred))
            if self.td_head_ is None:
                raise RuntimeError(
                    "This module returned (logits, td_logits) before; it now returns logits only."
                )
            features = [tap.features for tap in self.td_taps_]
            if not features or any(f is None for f in features):
                raise ValueError(self._missing_features_message(features))
            return y_pred, y_pred, self.td_head_(self._head_input(features), y_pred.shape[1])

    def _head_input(self, features):
        """Features in the head's dtype, e.g. after ``net.module_.double()`` (autocast excepted,
        which chooses the precision of each operation itself)."""
        dtype = _parameter_dtype(self.td_head_)
        if dtype is None or torch.is_autocast_enabled(features[0].device.type):
            return features
        return [f if f.dtype == dtype or not f.is_floating_point() else f.to(dtype) for f in features]

    def _own_head_outputs(self, y_pred):
        """``(logits, td_logits)`` of a module with a TD head of its own, which replaces ours."""
        if len(y_pred) < 2:
            raise ValueError("A module that returns a tuple must return (logits, td_logits).")
        if self.td_head_ is not None:
            self.td_head_, self.td_taps_ = None, []
            detach_taps(self.module_)
        return y_pred[0], y_pred[1]

    def _missing_features_message(self, features):
        names = [n for n, _ in unwrap(self.module_).named_modules() if n]
        if not features:
            return (
                "Could not find the features for the TD head: the module has no nn.Linear layer. "
                f"Pass td_layers=[...] with the names of the layers whose outputs should feed the TD "
                f"head; available: {names}."
            )
        missing = [tap.layer for tap, f in zip(self.td_taps_, features, strict=True) if f is None]
        return (
            f"The layers {missing} that feed the TD head did not run in the module's forward pass; "
            f"name layers that forward uses in td_layers (available: {names})."
        )

    def get_loss(
        self,
        y_pred: torch.Tensor | tuple[torch.Tensor, ...],
        y_true: Labels,
        X: InputData | None = None,
        training: bool = False,
    ) -> torch.Tensor:
        """The classifier's loss; the TD term is separate (:meth:`get_td_loss`).

        The training and validation steps pass the logits alone as ``y_pred``, as skorch passes
        a module's output: an override sees the classifier's output, not the TD head's.
        """
        logits = y_pred[0] if isinstance(y_pred, tuple) else y_pred
        y_true = to_tensor(y_true, device=self.device)
        if not (y_true.is_floating_point() or y_true.dtype == torch.long):
            y_true = y_true.long()  # CrossEntropyLoss wants int64 class indices
        return super().get_loss(logits, y_true, X=X, training=training)

    def get_td_loss(self, td_logits: torch.Tensor, td_target: torch.Tensor) -> torch.Tensor:
        """``KL(pbar || softmax(td_logits))`` with batch-mean reduction; ``pbar`` is the target.

        Computed in the target's precision (at least float32) when the head's logits are in half
        precision (mixed-precision training).
        """
        return F.kl_div(F.log_softmax(td_logits.to(td_target.dtype), dim=1), td_target, reduction="batchmean")

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """One training step: record each row's softmax into its TD, then optimise CE + lambda * KL.

        The fit's first batch settles the classes from the module's width (or checks the declared
        ones), before any loss is computed; a new module's first forward pass gives its TD head
        (and any lazy layer) their shapes.
        """
        step = self._forward_td_step(batch, **fit_params)
        step["loss"].backward()
        return step

    def _forward_td_step(self, batch, **fit_params):
        """A training step's forward pass, TD update and loss, before the backward pass."""
        self._set_training(True)
        Xi, (yi, index) = unpack_data(batch)
        y_pred, logits, td_logits = self.infer_td(Xi, **fit_params)
        if self.dynamics_.empty:  # the fit's first batch: the module's width is known now
            self._settle_classes(logits.shape[1])
        td_target = self.dynamics_.update(index, torch.softmax(logits.detach(), dim=1))
        td_loss = self.get_td_loss(td_logits, td_target)
        loss = torch.add(self.get_loss(logits, yi, X=Xi, training=True), td_loss, alpha=float(self.td_weight))
        return {"loss": loss, "y_pred": y_pred, "td_loss": td_loss.detach()}

    def _settle_classes(self, n_outputs):
        """The module's width gives the classes, or checks the declared ones."""
        if self.classes is None or not len(self.classes):
            self.classes_inferred_ = classes_from_width(
                self, getattr(self, "classes_inferred_", None), n_outputs=n_outputs
            )
        else:
            check_n_outputs(self, self.classes_inferred_, n_outputs=n_outputs)

    def validation_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """As in skorch (validation rows get no TD)."""
        self._set_training(False)
        Xi, yi = unpack_data(batch)
        with torch.no_grad():
            y_pred = self.infer(Xi, **fit_params)
            loss = self.get_loss(y_pred, yi, X=Xi, training=False)
        return {"loss": loss, "y_pred": y_pred}

    def notify(self, method_name: str, **cb_kwargs: Any) -> None:
        """Notify callbacks as skorch does, showing them batches without our row indices.

        When a callback restores an earlier epoch's weights at the end of training (skorch's
        ``EarlyStopping(load_best=True)``, ``Checkpoint(load_best=True)``), the TD head, the
        training dynamics and the trajectory are put back to that epoch too
        (:mod:`tidal_modal.restoring`).
        """
        batch = cb_kwargs.get("batch")
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], IndexedTarget):
            cb_kwargs["batch"] = (batch[0], batch[1].y)  # scoring callbacks read y from the batch
        super().notify(method_name, **cb_kwargs)
        # the TD head, dynamics and trajectory follow the weights that a callback restores
        if method_name == "on_epoch_end":
            restoring.remember(self)
        elif method_name == "on_train_end":
            restoring.restore(self)

    # --- pickling and saving ---------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """skorch's state, plus the release of tidal_modal that pickles the net.

        The taps are not pickled twice: they travel as hooks of ``module_`` and are found there
        again when unpickling.
        """
        from . import __version__  # at call time: the package defines it after importing this module

        state = super().__getstate__()
        state.pop("td_taps_", None)
        return {**state, "_tidal_modal_version": __version__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle as skorch does; nets of 0.1.0 are converted to today's layout. An error says
        which release of tidal_modal pickled the net."""
        from . import __version__

        # nets pickled before the release was recorded (during 0.1.0) have no such key
        written_by = state.pop("_tidal_modal_version", "0.1.0 or earlier")
        state.setdefault("scoring_dtype", None)  # a parameter that nets of 0.2.0's development lack
        try:
            super().__setstate__(state)  # unpickles the module, criterion and optimizer
            if isinstance(self.__dict__.get("module_"), TiDALModule):
                self._convert_legacy_module()
            if "module_" in self.__dict__:
                head = self.__dict__.get("td_head_")
                taps = [] if head is None else attach_taps(self.module_, self._td_layer_names())
                self.__dict__["td_taps_"] = taps
        except Exception as error:
            error.add_note(f"(pickled by tidal_modal {written_by}; this is tidal_modal {__version__})")
            raise

    def _convert_legacy_module(self):
        """0.1.0's ``module_`` wrapper becomes ``module_`` (the user's) and ``td_head_``."""
        module, head, _ = split_legacy_module(self.__dict__["module_"])
        # __dict__ and skorch's registries directly: outside initialize, skorch refuses new modules
        self.__dict__.update(module_=module, td_head_=head, embeds_input_=_embeds_input(module))
        if "td_head" not in self._modules:
            self._modules = [*self._modules, "td_head"]
            self.prefixes_ = [*self.prefixes_, "td_head"]
            self.cuda_dependent_attributes_ = [*self.cuda_dependent_attributes_, "td_head_"]

    def save_params(
        self,
        f_params: Any = None,
        f_optimizer: Any = None,
        f_criterion: Any = None,
        f_history: Any = None,
        use_safetensors: bool = False,
        **kwargs: Any,
    ) -> None:
        """As :meth:`skorch.NeuralNet.save_params`; the TD head goes with the module.

        ``f_params`` holds your module's state dict, as in skorch. Given as a path without
        ``f_td_head``, the fitted TD head is saved next to it, in ``<stem>.td_head<suffix>``
        (``params.pt`` -> ``params.td_head.pt``), so that skorch's ``Checkpoint`` and
        ``TrainEndCheckpoint`` keep it too; :meth:`load_params` finds it there. Pass
        ``f_td_head=`` to choose the file (a file object included), or ``f_td_head=None`` to
        save the classifier alone.
        """
        source = kwargs.get("f_module") if f_params is None else f_params  # skorch's Checkpoint: f_module
        if _is_path(source) and "f_td_head" not in kwargs and self._head_is_fitted():
            kwargs["f_td_head"] = td_head_file(source)
        if kwargs.get("f_td_head", 0) is None:
            del kwargs["f_td_head"]
        super().save_params(
            f_params, f_optimizer, f_criterion, f_history, use_safetensors=use_safetensors, **kwargs
        )

    def load_params(
        self,
        f_params: Any = None,
        f_optimizer: Any = None,
        f_criterion: Any = None,
        f_history: Any = None,
        checkpoint: Any = None,
        use_safetensors: bool = False,
        **kwargs: Any,
    ) -> None:
        """As :meth:`skorch.NeuralNet.load_params`; the TD head comes with the module.

        Loading ``f_params`` without ``f_td_head`` also loads the head saved next to it by
        :meth:`save_params` (``<stem>.td_head<suffix>``), also through a ``checkpoint`` (skorch's
        ``LoadInitState``, ``Checkpoint(load_best=True)``). Without such a file the head would
        not match the loaded classifier, so it is reset: :meth:`predict_td` then raises until the
        net is fitted or a head is loaded (``f_td_head=...``). ``f_params`` files of 0.1.0, which
        hold the module and the head together, load both.
        """
        files = {}
        if checkpoint is not None:
            if not self.initialized_:
                self.initialize()
            if f_history is None and checkpoint.f_history is not None:
                # as skorch does first: the file names may be formatted with the last epoch
                self.history = History.from_file(checkpoint.f_history_)
            files = dict(checkpoint.get_formatted_files(self))
        explicit = {"f_params": f_params, "f_optimizer": f_optimizer, "f_criterion": f_criterion}
        files.update({k: v for k, v in {**explicit, "f_history": f_history}.items() if v})
        files.update(kwargs)
        if kwargs.get("f_td_head", 0) is None:  # keep the head as it is
            del kwargs["f_td_head"]
        source = files.get("f_params", files.get("f_module"))
        reset_head = source is not None and "f_td_head" not in files
        if reset_head and _is_path(source) and os.path.exists(td_head_file(source)):
            kwargs["f_td_head"], reset_head = td_head_file(source), False
        try:
            super().load_params(
                f_params, f_optimizer, f_criterion, f_history, checkpoint, use_safetensors, **kwargs
            )
        except RuntimeError as error:
            # 0.1.0 saved the module and the head in one state dict, under the wrapper's names
            if "backbone." not in str(error) or use_safetensors:
                raise
            self._load_legacy_params(source)
            loaded = ("f_params", "f_module", "f_pickle")
            rest = {k: v for k, v in files.items() if k not in loaded and v is not None}
            super().load_params(**rest)
            reset_head = False
        if reset_head and getattr(self, "td_head_", None) is not None:
            with self._current_init_context("module"):
                trajectory = self.trajectory_
                self._initialize_td_head()
                self.trajectory_ = trajectory

    def _load_legacy_params(self, source):
        """Load an ``f_params`` file of 0.1.0: the wrapper's ``backbone.*`` and ``td_head.*``."""
        if hasattr(source, "seek"):
            source.seek(0)
        kwargs = self.torch_load_kwargs or {"weights_only": True}
        state = torch.load(source, map_location=get_map_location(self.device), **kwargs)
        if not is_legacy_state_dict(state):
            raise ValueError(f"{source!r} holds neither this net's module nor a 0.1.0 TiDAL module.")
        module_state, head_state = split_legacy_state_dict(state)
        self.module_.load_state_dict(module_state)
        if self.td_head_ is not None and head_state:
            self.td_head_.load_state_dict(head_state)

    def _head_is_fitted(self):
        head = getattr(self, "td_head_", None)
        return head is not None and not is_lazy(head)

    # --- prediction -----------------------------------------------------------------------

    @property
    def training_dynamics_(self) -> np.ndarray:
        """Recorded TD ``[n_samples, n_classes]`` of the rows of the last fit (NaN for rows never
        trained on, e.g. a validation split's)."""
        self.check_is_fitted(["dynamics_"])
        return self.dynamics_.to_numpy()

    def forward_iter(
        self,
        X: InputData,
        training: bool = False,
        device: str | torch.device = "cpu",
        *,
        scoring: bool = False,
    ) -> Iterator[Any]:
        """Yield the module's outputs batch by batch, as :meth:`skorch.NeuralNet.forward_iter`.

        ``X`` must match the net's training data (every prediction goes through here; the checks
        read shapes, and a batch whose output is not finite is checked for NaN in its input).
        Arrays (memory-mapped ones too) and tensors are sliced into batches of
        ``iterator_valid__batch_size`` (or ``batch_size``) rows, as skorch batches them (with
        ``"auto"``, :meth:`scoring_batch_size` rows), instead of going through a ``Dataset`` row
        by row and ``default_collate``: on small networks that per-row path costs more than the
        forward pass itself. Other inputs take skorch's path. As in skorch, a net that was
        initialized but never fitted predicts with its initial weights.

        With ``scoring=True`` (a keyword of ours) the batches are those of pool scoring,
        :meth:`scoring_batch_size` rows: what ``disal`` reads the pool with.
        """
        yield from self._passes(check_predict_input(self, X), self.infer, training, device, scoring)

    def forward_td_iter(
        self, X: InputData, device: str | torch.device = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(logits, td_logits)`` batch by batch, in eval mode and without gradients.

        :meth:`forward_iter` for the classifier and the TD head together (one forward pass per
        batch of :meth:`scoring_batch_size` rows); :meth:`predict_td` and the strategies read the
        pool through it. The TD head must be fitted (or loaded).
        """
        yield from self._forward_td_checked(check_predict_input(self, X, td=True), device)

    def _forward_td_checked(self, X, device):
        yield from self._passes(X, lambda Xi: self.infer_td(Xi)[1:], False, device, scoring=True)

    def _passes(self, X, forward, training, device, scoring):
        """``forward`` of each batch of checked input ``X``: in the scoring precision (none while
        training), outputs checked for NaN, half precision back in float32, moved to ``device``."""
        self._set_training(training)
        precision = self._scoring_precision(training)
        for Xi in self._batches(X, scoring=scoring):
            with torch.set_grad_enabled(training), precision():
                outputs = forward(Xi)
            check_finite_output(outputs, Xi)
            yield self._to_device(_as_float32(outputs), device)

    def _scoring_precision(self, training=False):
        """What makes a batch's context of a prediction pass: ``torch.autocast`` in
        ``scoring_dtype`` (checked once per pass), none while training."""
        dtype = check_scoring_dtype(self.scoring_dtype)
        if dtype is None or training:
            return nullcontext
        return partial(torch.autocast, torch.device(self.device or "cpu").type, dtype=dtype)

    def _batches(self, X, scoring=False):
        """The batches of input rows of ``X`` (accepted by :func:`check_predict_input`): of
        :meth:`scoring_batch_size` rows when ``scoring``, else as skorch batches predictions."""
        if not is_sliceable(X):
            dataset = self.get_dataset(X)
            if scoring:
                iterator = self._scoring_iterator(dataset)
            else:  # "auto" included
                iterator = self.get_iterator(dataset, training=False)
            for batch in iterator:
                yield unpack_data(batch)[0]
            return
        size = self._valid_batch_size()
        if scoring or size == "auto":
            batch_size = self.scoring_batch_size(X)
        elif size is None:
            batch_size = check_prediction_batch_size(self.batch_size, "batch_size")
        else:
            batch_size = size
        to_gpu = self.device is not None and torch.device(self.device).type == "cuda"
        for Xi in iter_slices(X, batch_size):
            # no copy of C-ordered rows; others (a DataFrame's columns) are copied batch by batch,
            # so that a pool's scores do not depend on its memory layout: torch's kernels for
            # strided input round the last bit differently, which decides exact ties
            Xi = torch.as_tensor(Xi).contiguous()
            if to_gpu and Xi.device.type == "cpu":
                # page-locked, so that the copy runs asynchronously, next to the GPU's work
                Xi = Xi.pin_memory().to(self.device, non_blocking=True)
            yield Xi

    def scoring_batch_size(self, X: InputData) -> int:
        """Rows per batch when the net scores ``X`` with its TD head: :meth:`predict_td`,
        :meth:`forward_td_iter` and every strategy that reads them (also on Dask and in
        scikit-activeml).

        ``iterator_valid__batch_size`` when you set it to a number, as in skorch. Otherwise as
        many rows as keep one batch's input and layer outputs within :data:`SCORING_BATCH_BYTES`
        (24 MiB, about a CPU's caches) or within twice the bytes of the weights (module and TD
        head), if those are more, and at most :data:`SCORING_BATCH_ROWS` (4,096); on another device (a
        GPU, whose memory and not a cache bounds it) at least the training ``batch_size`` too.
        The bytes of a row are measured by one forward pass of one row of ``X`` (an ``X``
        without rows, or whose rows are several inputs, gets skorch's ``batch_size``). Scoring keeps
        no gradients, and on small networks the batch size decides the cost of a pass over the
        pool more than the network does: small batches pay Python's per-batch cost and read
        every weight once per batch, batches whose activations overflow the cache pay memory
        traffic.
        skorch's own methods (``forward``, ``predict``, ``predict_proba``, validation during
        ``fit``) batch as skorch does (``iterator_valid__batch_size``, else ``batch_size``); with
        ``iterator_valid__batch_size="auto"`` (a value of ours) they batch by this rule too.

        Parameters
        ----------
        X : array-like, tensor, dict or Dataset
            The rows to score, as :meth:`predict_td` takes them.

        Returns
        -------
        int

        Examples
        --------
        >>> import numpy as np
        >>> from torch import nn
        >>> from tidal_modal import TiDALNetClassifier
        >>> net = TiDALNetClassifier(nn.Linear(784, 10), batch_size=32).initialize()
        >>> net.scoring_batch_size(np.zeros((10, 784), dtype="float32"))  # 3,176 bytes a row: capped
        4096
        >>> wide = TiDALNetClassifier(nn.Sequential(nn.Linear(784, 8192), nn.Linear(8192, 10))).initialize()
        >>> wide.scoring_batch_size(np.zeros((10, 784), dtype="float32"))  # 35,944 B a row, 26 MB of weights
        1449
        >>> _ = net.set_params(iterator_valid__batch_size=256)  # skorch's parameter wins
        >>> net.scoring_batch_size(np.zeros((10, 784), dtype="float32"))
        256
        """
        size = self._valid_batch_size()
        if size not in (None, "auto"):
            return size
        if is_dataset(X) or isinstance(X, Mapping):
            row = _first_row(self.get_dataset(X))
        else:  # arrays, tensors, lists and DataFrames of rows
            row = next(iter_slices(X, 1), None)
            if row is not None and not isinstance(row, torch.Tensor):
                row = torch.as_tensor(np.array(row))  # one row, copied (a DataFrame's is read-only)
        if row is None:  # no rows, or rows we cannot measure: skorch's batch
            return check_prediction_batch_size(self.batch_size, "batch_size")
        return self._batch_size_for(row)

    def _check_prediction_params(self):
        self._valid_batch_size()
        check_scoring_dtype(self.scoring_dtype)

    def _valid_batch_size(self):
        """``iterator_valid__batch_size`` as set, checked: rows, -1, ``"auto"`` or ``None`` (unset)."""
        size = self.get_params_for("iterator_valid").get("batch_size")
        if size is None or size == "auto":
            return size
        also = ", or 'auto' (every prediction at TiDALNetClassifier.scoring_batch_size)"
        return check_prediction_batch_size(size, "iterator_valid__batch_size", also)

    def _batch_size_for(self, row):
        """The scoring batch size for rows like ``row`` (a batch of one), by the rule above."""
        # each batch reads every weight once: activations of at least twice the weights' bytes
        # keep that read a small part of a batch's traffic (the benchmarks' w=2048 MLP, 24 MB of
        # weights with its head's, passed its pool at 1.04 times its fastest floor at the 24 MiB
        # rule's 480 rows, at 1.02 at this rule's 930; benchmarks/results/overhead)
        budget = max(SCORING_BATCH_BYTES, 2 * self._parameter_bytes())
        rows = min(SCORING_BATCH_ROWS, max(1, budget // self._bytes_per_row(row)))
        if torch.device(self.device or "cpu").type == "cpu" or not self.batch_size or self.batch_size < 1:
            # on a CPU a batch past the caches is slower however large training's batch is: the
            # benchmarks' CNN (345 KB of activations a row) scores 4% faster at 64 rows than at 128
            return rows
        return max(rows, self.batch_size)

    def _parameter_bytes(self):
        """Bytes of the weights a scoring pass reads: the module's and the TD head's parameters."""
        modules = [unwrap(self.module_)] + ([self.td_head_] if self.td_head_ is not None else [])
        return sum(
            p.nelement() * p.element_size()
            for module in modules
            for p in module.parameters()
            if not isinstance(p, nn.parameter.UninitializedParameter)
        )

    def _scoring_iterator(self, dataset):
        """skorch's ``iterator_valid`` over a Dataset, at the scoring batch size of its rows."""
        if self._valid_batch_size() not in (None, "auto"):  # set: skorch's
            return self.get_iterator(dataset, training=False)
        batch_size = self.scoring_batch_size(dataset)
        batch_size = batch_size if batch_size != -1 else max(1, len(dataset))  # skorch's -1: all rows
        params = {**self.get_params_for("iterator_valid"), "batch_size": batch_size}
        return self.iterator_valid(dataset, **params)

    def _bytes_per_row(self, row):
        """Bytes of ``row`` (a batch of one) and of every layer's output for it (one forward pass)."""
        sizes = [row.nelement() * row.element_size()]
        module = unwrap(self.module_)
        if module is not self.module_ or is_lazy(module):
            # compiled (new hooks would make it compile again) or lazy (its own hooks shape it): guessed
            return sizes[0] * 4

        def count(layer, args, output):
            if isinstance(output, torch.Tensor):
                sizes.append(output.nelement() * output.element_size())

        # the hooks of the module (yours, a strategy's) do not see this pass: they are set aside
        saved = [(m, m.training, m._forward_hooks, m._forward_pre_hooks) for m in module.modules()]
        try:
            for m, *_ in saved:
                m._forward_hooks, m._forward_pre_hooks = OrderedDict(), OrderedDict()
                if next(m.children(), None) is None:
                    m.register_forward_hook(count)
            module.eval()  # one row through batch norm, and no statistics moved
            with torch.no_grad():
                self.infer(row)
        finally:
            for m, training, hooks, pre_hooks in saved:
                m.training, m._forward_hooks, m._forward_pre_hooks = training, hooks, pre_hooks
        return max(1, sum(sizes))

    def _to_device(self, outputs, device):
        # outputs already on the requested device are not sent through to_device
        if device is None or (self.device is not None and torch.device(device) == torch.device(self.device)):
            return outputs
        return to_device(outputs, device=device)

    def _infer_shapes(self, X, **fit_params):
        """One forward pass through module and TD head in eval mode (no batch-norm statistics
        move, no dropout), without gradients, on the first batch of ``X``, read as for
        prediction: it gives a new module's TD head (and any lazy layer) their shapes, and the
        module's width settles the classes."""
        if not (is_dataset(X) or isinstance(X, (Mapping, tuple, torch.Tensor))):
            # lists, DataFrames: rows, as check_predict_input reads them
            X = check_array(X[:2], accept_sparse=True, allow_nd=True)
        batch = next(iter(self.get_iterator(self.get_dataset(X), training=False)))
        logits = self._shape_pass(unpack_data(batch)[0], **fit_params)
        self._settle_classes(logits.shape[1])

    def _shape_pass(self, Xi, **fit_params):
        """:meth:`infer_td` on the batch ``Xi`` in eval mode, without gradients; its logits."""
        self._set_training(False)
        with torch.no_grad():
            return self.infer_td(Xi, **fit_params)[1]

    def predict_td(
        self, X: InputData, *, return_proba: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted training dynamics: the TD head's softmax, one pass in eval mode.

        Parameters
        ----------
        X : array-like, tensor or Dataset
            Input data, as for :meth:`predict_proba`.
        return_proba : bool, default=False
            Also return the classifier's probabilities from the same forward pass (what
            :meth:`predict_proba` returns), e.g. for the margin against the predicted label.

        Returns
        -------
        td : ndarray of shape (n_samples, n_classes)
            Predicted TD; each row sums to 1.
        proba : ndarray of shape (n_samples, n_classes)
            Only if ``return_proba``.

        Raises
        ------
        NotFittedError
            Before a fit (or ``load_params``): unlike ``predict_proba``, an initialized net has
            no TD to predict.
        """
        td, logits = self._predict_td_with(X, keep_logits=return_proba)
        if return_proba:
            return td, to_numpy(self._get_predict_nonlinearity()(torch.from_numpy(logits)))
        return td

    def _predict_td_and_labels(self, X: InputData) -> tuple[np.ndarray, np.ndarray]:
        """``predict_td(X)`` and the class index ``predict(X)`` takes (the argmax of
        ``predict_proba``) from one pass: what TiDAL's margin reads. The labels come from the
        pool's logits (:func:`predicted_labels`), without its probabilities. Once over the pool:
        the same operations batch by batch, between the passes, slowed two-thread queries."""
        td, logits = self._predict_td_with(X, keep_logits=True)
        return td, predicted_labels(torch.from_numpy(logits), self._get_predict_nonlinearity()).numpy()

    def _predict_td_with(self, X, keep_logits):
        """``(predicted TD, the classifier's logits if keep_logits else None)`` from one pass."""
        # Each batch's outputs are written into arrays allocated once: thousands of small batch
        # outputs kept until a final concatenation fragment the heap (a large pool's peak memory
        # grew by ~1 kB per row that way, 25 times the outputs' own size). The softmax then runs
        # once, in place, over all rows.
        X = check_predict_input(self, X, td=True)
        td = logits = None
        start = 0
        for batch_logits, batch_td_logits in self._forward_td_checked(X, "cpu"):
            if td is None:
                n = num_rows(X)
                td = np.empty((n, *batch_td_logits.shape[1:]), dtype=to_numpy(batch_td_logits).dtype)
                if keep_logits:
                    logits = np.empty((n, *batch_logits.shape[1:]), dtype=to_numpy(batch_logits).dtype)
            stop = start + len(batch_td_logits)
            td[start:stop] = batch_td_logits
            if keep_logits:
                logits[start:stop] = batch_logits
            start = stop
        return softmax_rows_(td), logits  # [n, n_classes], rows sum to 1
