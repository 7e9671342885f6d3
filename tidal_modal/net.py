"""The skorch network that trains a classifier together with TiDAL's TD head."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.utils import check_array
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.utils import is_dataset, to_device, to_numpy, to_tensor
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from .callbacks import EpochTDLoss
from .dynamics import IndexedDataset, IndexedTarget, TrainingDynamics, collate_rows, source_rows
from .modules import TiDALModule, unwrap_parallel
from .pool import is_sliceable, iter_slices, num_rows
from .scores import softmax_
from .trajectory import Trajectory, TrajectoryRecorder
from .transaction import fit_transaction
from .validation import (
    InputData,
    Labels,
    check_device,
    check_finite_batch,
    check_input_shape,
    check_n_outputs,
    check_predict_input,
    check_training_data,
    classes_from_width,
    is_fitted,
    record_input_shape,
)

__all__ = ["TiDALNetClassifier"]


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


def _shape_change(net, X):
    """The error of rows of another shape than the net was fitted on, or ``None``."""
    try:
        check_input_shape(net, X)
    except ValueError as mismatch:
        return mismatch
    return None


class TiDALNetClassifier(NeuralNetClassifier):
    """A skorch classifier that learns its own training dynamics (TiDAL, ICCV 2023).

    The user's module is wrapped in a :class:`~tidal_modal.modules.TiDALModule`: a small TD head
    reads features of chosen layers (by forward hooks) and is trained, next to the classifier,
    to predict each labeled row's *training dynamics*, the running mean of its softmax outputs
    over the epochs of a fit. The loss is ``CE(logits, y) + td_weight * KL(pbar || TD head)``.
    :meth:`predict_td` then estimates the training dynamics of unlabeled rows, which
    :func:`~tidal_modal.tidal_entropy` and :func:`~tidal_modal.tidal_margin` turn into
    active-learning scores.

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

    What else differs from a plain skorch net: the module's output is ``(logits, td_logits)``
    (``forward``, ``forward_iter``, ``infer`` and the ``y_pred`` of callbacks carry both, as
    skorch does for a module that returns a tuple; :meth:`get_loss` gets the logits alone);
    labels are class indices (see ``classes``); a list ``X`` is rows, as in scikit-learn
    (several inputs go in a tuple or a dict); and ``iterator_train`` receives the training
    set wrapped in an :class:`~tidal_modal.dynamics.IndexedDataset`.

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
    classes : array-like or None, default=None
        skorch's parameter. Without it the net has one class per output of the module,
        ``0 .. n_outputs - 1``, whether or not the labeled data contain them all yet (an
        active-learning loop's first cycles often miss rare classes); labels must be class
        indices below the module's width. Declared, they must be ``0..C-1`` and the module must
        output one logit per class. Either way the classes stay fixed while the net is
        warm-started.
    criterion, train_split, **kwargs
        As in :class:`skorch.NeuralNetClassifier` (see the defaults above).

    Attributes
    ----------
    module_ : TiDALModule
        The wrapper; the user's network is ``module_.backbone`` and the head ``module_.td_head``.
        Attributes of your network are reached through it (``net.module_.fc``), and parameter
        names in skorch's patterns (``optimizer__param_groups``, ``Freezer``) are your
        network's own; the head's are ``td_head.*``. The head gets its shapes from the first
        training batch, or from the first prediction of a net that was only initialized.
    training_dynamics_ : ndarray of shape (n_samples, n_classes)
        Recorded training dynamics of the rows of the last ``fit`` / ``partial_fit`` call (of
        the training set itself if a ``train_split`` returns datasets of its own, not subsets).
    input_shape_ : tuple of int
        Shape of one row of the training data; predicting on rows of another shape is an error.
    n_features_in_ : int
        Number of features, for 2-D training data only.
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

    @property
    def _default_callbacks(self):
        callbacks = list(super()._default_callbacks)
        callbacks.insert(len(callbacks) - 1, ("train_td_loss", EpochTDLoss()))  # printed by print_log
        # the last layer's optimisation path, for disal: a few small copies per fit
        callbacks.insert(len(callbacks) - 1, ("trajectory", TrajectoryRecorder()))
        return callbacks

    # --- initialisation -------------------------------------------------------------------

    def initialize_module(self) -> "TiDALNetClassifier":
        """Build the user's module (skorch-style) and attach the TD head to it."""
        check_device(self.device)  # before skorch moves anything there
        super().initialize_module()
        self.module_ = TiDALModule(self.module_, td_layers=self.td_layers, td_hidden=self.td_hidden)
        # a new module has no path yet; also what load_params(f_trajectory=...) loads into
        self.trajectory_ = Trajectory()
        return self

    def get_all_learnable_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        """As in skorch, with the parameters of your module named as in your module.

        ``module_`` wraps it as ``module_.backbone``; without that prefix, the names that
        ``optimizer__param_groups``, ``Freezer``, ``Unfreezer`` and other skorch callbacks match
        are those of ``module.named_parameters()``. The TD head's are ``td_head.*``.
        """
        wrapped = isinstance(getattr(self, "module_", None), TiDALModule)
        for name, param in super().get_all_learnable_params():
            yield (name.removeprefix("backbone.") if wrapped else name), param

    # --- training -------------------------------------------------------------------------

    def fit(self, X: InputData, y: Labels | None = None, **fit_params: Any) -> "TiDALNetClassifier":
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
            check_not_several_inputs(X, y)
            X, y, _ = check_training_data(self, X, y, reset=not self.warm_start or not is_fitted(self))
            # skorch's fit calls partial_fit, which need neither read X again nor take a second snapshot
            return super().fit(X, y, _from_fit=True, **fit_params)

    def partial_fit(
        self, X: InputData, y: Labels | None = None, classes: ArrayLike | None = None, **fit_params: Any
    ) -> "TiDALNetClassifier":
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
                    self._after_first_forward()
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
        """As in skorch; the rows of training batches carry their row index (:class:`IndexedDataset`)."""
        if training:
            dataset = IndexedDataset(dataset)
        return super().get_iterator(dataset, training=training)

    def infer(self, x: InputData, **fit_params: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward a batch; float input is cast to the module's dtype (e.g. float64 from a scaler),
        and so is integer input unless the module embeds it."""
        x = to_tensor(x, device=self.device)
        module = unwrap_parallel(self.module_)
        if isinstance(x, torch.Tensor) and (x.is_floating_point() or not module.embeds_input):
            dtype = module.input_dtype
            if x.dtype != dtype:
                x = x.to(dtype)
        return super().infer(x, **fit_params)

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

        A new module's first forward pass gives its TD head (and any lazy layer) their shapes;
        then its width settles the classes, before any loss is computed, and the trajectory
        starts (:meth:`_after_first_forward`).
        """
        step = self._forward_td_step(batch, **fit_params)
        step["loss"].backward()
        return step

    def _forward_td_step(self, batch, **fit_params):
        """A training step's forward pass, TD update and loss, before the backward pass."""
        self._set_training(True)
        Xi, (yi, index) = unpack_data(batch)
        new_module = not is_fitted(self)
        y_pred = self.infer(Xi, **fit_params)
        if new_module:
            self._after_first_forward()
        logits, td_logits = y_pred
        td_target = self.dynamics_.update(index, torch.softmax(logits.detach(), dim=1))
        td_loss = self.get_td_loss(td_logits, td_target)
        loss = torch.add(self.get_loss(logits, yi, X=Xi, training=True), td_loss, alpha=float(self.td_weight))
        return {"loss": loss, "y_pred": y_pred, "td_loss": td_loss.detach()}

    def _after_first_forward(self):
        """A new module has its shapes after its first forward pass, and a module with a TD head of
        its own has shown it: its width gives the classes (or checks the declared ones), and the
        trajectory recorders start on its layers, before the first optimizer step."""
        if self.classes is None or not len(self.classes):
            self.classes_inferred_ = classes_from_width(self, getattr(self, "classes_inferred_", None))
        else:
            check_n_outputs(self, self.classes_inferred_)
        for _, callback in self.callbacks_:
            if isinstance(callback, TrajectoryRecorder):
                callback.on_train_begin(self)

    def validation_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """As in skorch, with :meth:`get_loss` given the logits (validation rows get no TD)."""
        self._set_training(False)
        Xi, yi = unpack_data(batch)
        with torch.no_grad():
            y_pred = self.infer(Xi, **fit_params)
            loss = self.get_loss(y_pred[0], yi, X=Xi, training=False)
        return {"loss": loss, "y_pred": y_pred}

    def notify(self, method_name: str, **cb_kwargs: Any) -> None:
        """Notify callbacks as skorch does, showing them batches without our row indices.

        For a new module, the trajectory recorders start at its first forward pass instead of
        ``on_train_begin`` (:meth:`_after_first_forward`): until then its layers may be lazy, a
        callback may replace it (skorch's ``InputShapeSetter`` does, for the data's input size),
        and its last ``nn.Linear`` may turn out to be a TD layer of its own.
        """
        batch = cb_kwargs.get("batch")
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], IndexedTarget):
            cb_kwargs["batch"] = (batch[0], batch[1].y)  # scoring callbacks read y from the batch
        deferred = method_name == "on_train_begin" and not is_fitted(self)
        getattr(self, method_name)(self, **cb_kwargs)  # skorch's notify, less the deferred calls
        for _, callback in self.callbacks_:
            if not (deferred and isinstance(callback, TrajectoryRecorder)):
                getattr(callback, method_name)(self, **cb_kwargs)

    # --- pickling -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """skorch's state, plus the release of tidal_modal that pickles the net."""
        from . import __version__  # at call time: the package defines it after importing this module

        return {**super().__getstate__(), "_tidal_modal_version": __version__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle as skorch does; an error says which release of tidal_modal pickled the net."""
        from . import __version__

        # nets pickled before the release was recorded (during 0.1.0) have no such key
        written_by = state.pop("_tidal_modal_version", "0.1.0 or earlier")
        try:
            super().__setstate__(state)  # unpickles the module, criterion and optimizer
        except Exception as error:
            error.add_note(f"(pickled by tidal_modal {written_by}; this is tidal_modal {__version__})")
            raise

    # --- prediction -----------------------------------------------------------------------

    @property
    def training_dynamics_(self) -> np.ndarray:
        """Recorded TD ``[n_samples, n_classes]`` of the rows of the last fit (NaN for rows never
        trained on, e.g. a validation split's)."""
        self.check_is_fitted(["dynamics_"])
        return self.dynamics_.to_numpy()

    def forward_iter(
        self, X: InputData, training: bool = False, device: str | torch.device = "cpu"
    ) -> Iterator[Any]:
        """Yield the module's outputs batch by batch, as :meth:`skorch.NeuralNet.forward_iter`.

        The net must be fitted and ``X`` must match its training data (every prediction goes
        through here; the checks read shapes, and each batch is checked for NaN as it is read).
        Arrays (memory-mapped ones too) and tensors are sliced into batches of
        ``iterator_valid__batch_size`` (or ``batch_size``) rows instead of going through a
        ``Dataset`` row by row and ``default_collate``: on small networks that per-row path costs
        more than the forward pass itself. Other inputs take skorch's path.

        As in skorch, a net that was initialized but never fitted predicts with its initial
        weights; a forward pass on the first rows first gives its TD head its shapes.
        """
        if self.initialized_ and not is_fitted(self):
            self._infer_shapes(X)
        yield from self._forward_checked(check_predict_input(self, X), training, device)

    def _forward_checked(self, X, training, device):
        """:meth:`forward_iter` on input that :func:`check_predict_input` has accepted."""
        if not is_sliceable(X):
            yield from super().forward_iter(X, training=training, device=device)
            return
        self._set_training(training)
        batch_size = self.get_params_for("iterator_valid").get("batch_size", self.batch_size)
        # outputs already on the requested device are not sent through to_device
        move = device is not None and (
            self.device is None or torch.device(device) != torch.device(self.device)
        )
        for Xi in iter_slices(X, batch_size):
            Xi = torch.as_tensor(Xi)  # no copy; torch reduces a batch faster than numpy
            check_finite_batch(Xi)
            with torch.set_grad_enabled(training):
                yp = self.infer(Xi)
            yield to_device(yp, device=device) if move else yp

    def _infer_shapes(self, X, **fit_params):
        """One forward pass in eval mode on the first batch of ``X``, read as for prediction, which
        gives a new module's TD head (and any lazy layer) their shapes."""
        if not (is_dataset(X) or isinstance(X, (Mapping, tuple, torch.Tensor))):
            # lists, DataFrames: rows, as check_predict_input reads them
            X = check_array(X[:2], accept_sparse=True, allow_nd=True)
        batch = next(iter(self.get_iterator(self.get_dataset(X), training=False)))
        self._shape_pass(unpack_data(batch)[0], **fit_params)

    def _shape_pass(self, Xi, **fit_params):
        """A forward pass of the batch ``Xi`` without gradients, in eval mode (no batch-norm
        statistics move, no dropout): it gives a new module's lazy layers their shapes."""
        self._set_training(False)
        with torch.no_grad():
            self.infer(Xi, **fit_params)

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
        # Each batch's logits are written into arrays allocated once: thousands of small batch
        # outputs kept until a final concatenation fragment the heap (a large pool's peak memory
        # grew by ~1 kB per row that way, 25 times the outputs' own size). The softmax then runs
        # once, in place, over all rows.
        X = check_predict_input(self, X)
        td = logits = None
        start = 0
        for batch_logits, batch_td_logits in self._forward_checked(X, training=False, device="cpu"):
            if td is None:
                n = num_rows(X)
                td = np.empty((n, *batch_td_logits.shape[1:]), dtype=to_numpy(batch_td_logits).dtype)
                if return_proba:
                    logits = np.empty((n, *batch_logits.shape[1:]), dtype=to_numpy(batch_logits).dtype)
            stop = start + len(batch_td_logits)
            td[start:stop] = batch_td_logits
            if return_proba:
                logits[start:stop] = batch_logits
            start = stop
        softmax_rows_(td)  # [n, n_classes], rows sum to 1
        if return_proba:
            return td, to_numpy(self._get_predict_nonlinearity()(torch.from_numpy(logits)))
        return td
