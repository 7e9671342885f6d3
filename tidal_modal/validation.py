"""Input checks for the net and the query strategies: a clear error before any state changes.

An active-learning loop pays a human for every label, so a bad input must fail at the call
that received it, with a message that names the problem and the fix, and leave the learner
as it was. The checks here are cheap enough for a large pool: they read shapes and dtypes,
and finiteness is tested with scikit-learn's sum-first test, one streaming pass that copies
nothing (also on a memory-mapped pool).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping
from numbers import Integral
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _get_feature_names
from skorch.dataset import get_len
from skorch.utils import is_dataset, to_numpy
from torch.utils.data import Dataset

from .modules import is_lazy, unwrap
from .pool import RowStack, RowSubset, is_sliceable

__all__ = [
    "InputData",
    "InvalidParameterError",
    "Labels",
    "check_columns",
    "check_device",
    "check_finite_batch",
    "check_finite_output",
    "check_input_shape",
    "check_n_outputs",
    "check_positive_int",
    "check_predict_input",
    "check_prediction_batch_size",
    "check_scoring_dtype",
    "check_training_data",
    "classes_from_width",
    "is_fitted",
    "record_input_shape",
]

#: Rows the net and the strategies take: arrays (also memory-mapped), lists, DataFrames,
#: tensors, datasets, or a dict or tuple of those for a module with several inputs.
InputData: TypeAlias = ArrayLike | torch.Tensor | Dataset | Mapping[str, Any] | tuple
#: Class indices ``0..C-1``.
Labels: TypeAlias = ArrayLike | torch.Tensor


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type; a ``TypeError`` and, as in scikit-learn, a ``ValueError``."""


def check_prediction_batch_size(value: object, name: str, also: str = "") -> int:
    """Return ``value`` as an ``int`` if it is a batch size of predictions: ``>= 1``, or ``-1``
    (all rows at once, as in skorch).

    Sliced into batches of 0 rows, a pool would be scored as no rows at all; skorch's
    ``DataLoader`` refuses such a size, the sliced path checks it here.

    Parameters
    ----------
    value : object
    name : str
        The parameter's name, for the message.
    also : str, default=""
        Further values that work, for the message (e.g. ``", or 'auto' (...)"``).

    Raises
    ------
    InvalidParameterError
        If ``value`` is not an integer (``bool`` and floats such as ``5.0`` included).
    ValueError
        If ``value`` is 0 or below -1.
    """
    integer = isinstance(value, Integral) and not isinstance(value, bool)
    if integer and (value >= 1 or value == -1):
        return int(value)
    error = ValueError if integer else InvalidParameterError
    raise error(
        f"{name}={value!r} is not a batch size. Use a number of rows (1 or more), -1 (all rows at "
        f"once){also}."
    )


#: What ``scoring_dtype`` takes, by name.
SCORING_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_scoring_dtype(value: object) -> torch.dtype | None:
    """Return the ``torch.dtype`` of a ``scoring_dtype`` (``None``: no autocast).

    Raises
    ------
    InvalidParameterError
        Unless ``value`` is ``None``, ``"bfloat16"``, ``"float16"``, ``torch.bfloat16`` or
        ``torch.float16``: the precisions ``torch.autocast`` runs on a CPU and on a GPU
        (another dtype would be ignored with a warning on a CPU).
    """
    if value is None:
        return None
    dtype = SCORING_DTYPES.get(value) if isinstance(value, str) else value
    if dtype not in SCORING_DTYPES.values():
        raise InvalidParameterError(
            f"scoring_dtype={value!r} is not a precision for scoring. Use None (the module's own), "
            "'bfloat16' or 'float16' (or torch.bfloat16, torch.float16)."
        )
    return dtype


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The parameter's name, for the message.

    Returns
    -------
    int

    Raises
    ------
    InvalidParameterError
        If ``value`` is not an integer (``bool`` and floats such as ``5.0`` included).
    ValueError
        If ``value < 1``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidParameterError(
            f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}."
        )
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)


def is_fitted(net: Any) -> bool:
    """Whether ``net`` has a module and a TD head whose every parameter is materialised (fitted or
    loaded); a module with a TD head of its own has none of ours (``td_head_`` is ``None``)."""
    if not getattr(net, "initialized_", False):
        return False
    modules = (net.module_, getattr(net, "td_head_", None))
    return not any(is_lazy(m) for m in modules if m is not None)


def _rows_unknown(X):
    """Whether the rows of ``X`` cannot be seen without reading it: a Dataset, or several inputs
    (skorch passes a dict or a tuple of arrays to a module that takes several)."""
    return is_dataset(X) or isinstance(X, (Mapping, tuple))


# --- DataFrames: column names and column types ------------------------------------------------

#: What :func:`pandas.api.types.infer_dtype` says of an object column that holds numbers only.
_NUMERIC_OBJECT_KINDS = frozenset(
    {"integer", "floating", "mixed-integer-float", "decimal", "boolean", "empty"}
)
# names listed in full in a message; the rest are counted
_MAX_LISTED = 10


def _is_pandas_frame(X):
    """Whether ``X`` is a pandas DataFrame, asked without importing pandas."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(X, pd.DataFrame)


def _listing(items, show=repr):
    """``items`` for a message: the first :data:`_MAX_LISTED`, then how many more."""
    items = list(items)
    shown = ", ".join(show(item) for item in items[:_MAX_LISTED])
    return (
        "[" + shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "") + "]"
    )


def _non_numeric_columns(frame):
    """``{name: dtype}`` of the columns of a DataFrame that do not hold numbers (or booleans)."""
    from pandas.api import types  # only reached with a DataFrame

    bad = {}
    for i, (name, dtype) in enumerate(frame.dtypes.items()):
        if types.is_bool_dtype(dtype) or types.is_numeric_dtype(dtype):
            continue  # complex numbers: check_array refuses them itself
        if types.is_object_dtype(dtype) and types.infer_dtype(frame.iloc[:, i], skipna=True) in (
            _NUMERIC_OBJECT_KINDS
        ):
            continue  # numbers held as objects convert
        bad[name] = dtype
    return bad


def _check_numeric_columns(net, frame, input_name):
    bad = _non_numeric_columns(frame)
    if bad:
        listed = _listing([f"{name!r} ({dtype})" for name, dtype in bad.items()], str)
        raise ValueError(
            f"{input_name} has {len(bad)} non-numeric column(s): {listed}. {type(net).__name__} "
            "takes numbers only: encode these columns before the net, e.g. with scikit-learn's "
            "OneHotEncoder or OrdinalEncoder in a Pipeline that ends in the net: "
            f"make_pipeline(make_column_transformer((OneHotEncoder(), {_listing(bad)}), "
            "remainder='passthrough'), net). Or drop them."
        )


def _check_unique_columns(net, frame, input_name):
    if frame.columns.is_unique:
        return
    repeated = frame.columns[frame.columns.duplicated()].unique().tolist()
    raise ValueError(
        f"{input_name} has repeated column names {_listing(repeated)}: {type(net).__name__} reads a "
        "DataFrame's columns by name. Rename or drop the repeated columns."
    )


def _feature_names(X):
    """scikit-learn's feature names of ``X`` (``None`` unless it is a data frame whose column names
    are all strings); arrays and tensors, which have no columns, are not asked (a prediction's cost)."""
    return _get_feature_names(X) if hasattr(X, "columns") else None


def _names_mismatch(net, names, expected, input_name, training):
    """The error for column names that are not the fitted ones (in any order)."""
    expected_set, names_set = set(expected), set(names)
    missing = [n for n in expected if n not in names_set]
    unexpected = [n for n in names if n not in expected_set]
    parts = []
    if missing:
        parts.append(f"missing: {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected: {_listing(unexpected)}")
    if not parts:  # the same names, one of them twice (a data frame other than pandas')
        repeated = sorted(
            {n for n in names if list(names).count(n) > 1}
            | {n for n in expected if list(expected).count(n) > 1}
        )
        parts.append(f"repeated: {_listing(repeated)}")
    fix = (
        "; or fit afresh on the new columns (warm_start=False): a warm-started net keeps its inputs"
        if training
        else ""
    )
    return ValueError(
        f"The columns of {input_name} are not those {type(net).__name__} was fitted on "
        f"({'; '.join(parts)}). The net reads a fitted DataFrame's columns by name: pass a DataFrame "
        f"with exactly the columns {_listing(expected)} (in any order: they are put in the fitted "
        f"order), preprocessed like the training data{fix}."
    )


def check_columns(
    net: Any, X: InputData, input_name: str = "X", *, reset: bool = False, training: bool = False
) -> tuple[InputData, np.ndarray | None]:
    """Check a DataFrame's columns before it becomes an array; return it ready and its names.

    A DataFrame with non-numeric columns (strings, categories, dates) is refused, naming them.
    Feature names follow scikit-learn (``feature_names_in_``: only all-string column names count;
    column names of mixed types are a ``TypeError``). Unless ``reset``, a DataFrame with the
    fitted names in another order is reordered to the fitted order; missing, unexpected or
    repeated names are an error that lists them. Input without names for a net fitted with names,
    or the other way round, is used as it is, with scikit-learn's warning.

    Parameters
    ----------
    net : TiDALNetClassifier
    X : array-like, tensor, dict or Dataset
        Only DataFrames (and other data frames scikit-learn reads names from) are changed.
    input_name : str, default="X"
        How the messages call ``X``.
    reset : bool, default=False
        Whether ``X`` is the training data of a fit that starts afresh (nothing to check against).
    training : bool, default=False
        Whether ``X`` is training data (of a warm-started fit, unless ``reset``), for the message.

    Returns
    -------
    X : ``X``, or the same DataFrame with its columns in the fitted order (a new DataFrame: the
        caller's is not changed)
    names : ndarray of object or None
        ``X``'s feature names (after reordering), or ``None`` if it has none.

    Raises
    ------
    ValueError
        Non-numeric columns, repeated column names, or (unless ``reset``) names other than the
        fitted ones.
    TypeError
        Column names of mixed types (some strings, some not), as in scikit-learn.
    """
    if _rows_unknown(X):
        return X, None
    if _is_pandas_frame(X):
        _check_unique_columns(net, X, input_name)
        _check_numeric_columns(net, X, input_name)
    names = _feature_names(X)
    if reset:
        return X, names
    expected = getattr(net, "feature_names_in_", None)
    cls = type(net).__name__
    if names is None:
        if expected is not None:
            warnings.warn(
                f"X does not have valid feature names, but {cls} was fitted with feature names",
                UserWarning,
                stacklevel=3,
            )
        return X, None
    if expected is None:
        if getattr(net, "input_shape_", None) is not None:  # fitted, on data without names
            warnings.warn(
                f"X has feature names, but {cls} was fitted without feature names", UserWarning, stacklevel=3
            )
        return X, names
    if len(names) == len(expected) and np.array_equal(names, expected):
        return X, names
    if len(names) != len(expected) or set(names) != set(expected) or len(set(names)) != len(names):
        raise _names_mismatch(net, names, expected, input_name, training)
    # the fitted columns in another order: select them in the fitted order (a new DataFrame)
    return X[list(expected)], np.asarray(expected, dtype=object)


def _check_X(X, net, input_name, finite=True):
    """Rows of ``X`` as the net will see them: numeric, at least 2-D, non-empty and finite.

    Datasets, dicts and tuples (several inputs) pass through: their rows are unknown without
    reading them. Tensors and lazy row subsets are checked in place (a row subset's values are
    not read: its rows are scored batch by batch, and non-finite scores are refused later);
    other array-likes (lists, DataFrames, object arrays) go through ``check_array``, which
    copies only what needs converting.
    """
    if _rows_unknown(X):
        return X
    if isinstance(X, (torch.Tensor, RowSubset, RowStack)):
        if isinstance(X, torch.Tensor) and X.device.type == "meta":
            raise ValueError(f"{input_name} is a tensor on the 'meta' device, which holds no data.")
        if len(X.shape) < 2:
            raise ValueError(
                f"Expected a 2-D (or higher) {input_name}, got shape {tuple(X.shape)}. Reshape it "
                "with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for one row."
            )
        if len(X) == 0:
            raise ValueError(f"{input_name} has 0 rows; at least 1 is required.")
        if isinstance(X.dtype, np.dtype) and X.dtype.kind not in "biuf":
            raise ValueError(f"{input_name} has dtype {X.dtype}; convert it to numbers first.")
        if isinstance(X.dtype, torch.dtype) and X.dtype.is_complex:
            # torch would drop the imaginary parts when casting to the module's dtype, with a warning
            raise ValueError(
                f"{input_name} holds complex numbers ({X.dtype}), which the net cannot take; pass real "
                "features (e.g. torch.view_as_real(X).flatten(1), or X.abs())."
            )
        if finite and isinstance(X, torch.Tensor) and X.is_floating_point():
            if not torch.isfinite(X.sum()) and not torch.isfinite(X).all():
                raise ValueError(f"{input_name} contains NaN or infinity; impute or drop those rows first.")
        return X
    # dtype="numeric" keeps float and integer arrays as they are (no copy) and converts object arrays
    return check_array(
        X,
        accept_sparse=True,
        dtype="numeric",
        allow_nd=True,
        ensure_all_finite=finite,
        estimator=net,
        input_name=input_name,
    )


def check_input_shape(net: Any, X: InputData, input_name: str = "X") -> None:
    """Check that the rows of ``X`` have the shape of the training data's (``input_shape_``).

    Nothing is checked before a fit, nor for input whose rows are unknown without reading them.

    Raises
    ------
    ValueError
        If the shapes differ, naming both.
    """
    expected = getattr(net, "input_shape_", None)
    if expected is None or _rows_unknown(X):
        return
    shape = tuple(X.shape[1:])
    if shape == expected:
        return
    name = type(net).__name__
    if len(shape) == 1 and len(expected) == 1:
        # scikit-learn's wording, which its estimator checks look for
        raise ValueError(
            f"X has {shape[0]} features, but {name} is expecting {expected[0]} features as input."
        )
    raise ValueError(
        f"{input_name} has rows of shape {shape}, but {name} was fitted on rows of shape {expected}; "
        "the pool must be preprocessed like the training data."
    )


#: Where :func:`check_training_data` leaves the feature names of a fit for :func:`record_input_shape`:
#: by then a DataFrame has become an array.
_PENDING_NAMES = "_tidal_feature_names_of_fit"


def record_input_shape(net: Any, X: InputData) -> None:
    """Remember the shape of a row of the training data (``input_shape_``, ``n_features_in_``) and
    its column names (``feature_names_in_``, for a DataFrame with string column names, as in
    scikit-learn; the names were read by :func:`check_training_data`, before ``X`` became an array)."""
    for attribute in ("input_shape_", "n_features_in_", "feature_names_in_"):
        if hasattr(net, attribute):
            delattr(net, attribute)
    names = net.__dict__.pop(_PENDING_NAMES) if _PENDING_NAMES in net.__dict__ else _feature_names(X)
    if names is not None:
        net.feature_names_in_ = np.asarray(names, dtype=object)
    if _rows_unknown(X):
        return
    net.input_shape_ = tuple(X.shape[1:])
    if len(net.input_shape_) == 1:
        net.n_features_in_ = net.input_shape_[0]


def check_predict_input(net: Any, X: InputData, input_name: str = "X", td: bool = False) -> InputData:
    """Check that ``net`` is fitted and that ``X`` can be scored by it; return ``X`` ready for it.

    Parameters
    ----------
    net : TiDALNetClassifier
    X : array-like, tensor, dict or Dataset
        Rows to predict on.
    input_name : str, default="X"
        How the messages call ``X``.
    td : bool, default=False
        Whether the TD head will be run: it must then be fitted (or loaded). The module alone
        predicts as soon as the net is initialized, as in skorch.

    Returns
    -------
    X : the input, converted only where needed (lists, DataFrames, object arrays); a DataFrame's
        columns in the order of the training DataFrame's

    Raises
    ------
    NotFittedError
        If ``td`` and the TD head has no weights (skorch's ``NotInitializedError`` if the net is
        not even initialised).
    ValueError, TypeError
        If ``X`` is 1-D, empty, non-numeric, not finite, or its rows differ in shape from the
        training data's; a DataFrame whose columns are not those of the training DataFrame
        (see :func:`check_columns`; in another order, they are reordered).
    """
    net.check_is_fitted()
    if td and not is_fitted(net):
        raise NotFittedError(
            f"This {type(net).__name__}'s TD head has no weights: it was initialized but not fitted, "
            "or its classifier was loaded without the head. Call fit, or load the head with "
            "load_params(f_td_head=...) (save_params writes it next to f_params)."
        )
    X, _ = check_columns(net, X, input_name)  # a DataFrame: its columns in the fitted order
    # rows read by slicing are checked for NaN batch by batch as they are scored
    # (check_finite_output): a second pass over a large (memory-mapped) pool would cost as much
    # as reading it again
    X = _check_X(X, net, input_name, finite=not is_sliceable(X))
    check_input_shape(net, X, input_name)
    return X


def check_finite_batch(batch: torch.Tensor, input_name: str = "X") -> None:
    """Refuse a batch of rows (a tensor, as the net reads it) that holds NaN or infinity.

    The sum is tested first (as scikit-learn does): one cheap pass over a batch that is in cache
    anyway; only a non-finite sum (NaN, inf, or an overflow) leads to the element-wise test.

    Raises
    ------
    ValueError
        If a value of the batch is not finite.
    """
    if batch.is_floating_point() and not math.isfinite(batch.sum()) and not torch.isfinite(batch).all():
        raise ValueError(f"{input_name} contains NaN or infinity; impute or drop those rows first.")


def check_finite_output(outputs: Any, batch: Any, input_name: str = "X") -> None:
    """Refuse a batch of input rows that holds NaN or infinity, judged by the net's output for it.

    NaN and infinity in the input reach the output of any network built from arithmetic, so the
    input batch is checked (:func:`check_finite_batch`) only when an output is not finite: a sum
    over a few logits per row instead of one over every feature of every row (about 5% of a
    small MLP's pass over the pool). A module that turns non-finite input into finite output
    (its own imputation) handles it, and its rows are accepted.

    Raises
    ------
    ValueError
        If an output is not finite and ``batch`` (a tensor) holds NaN or infinity.
    """
    tensors = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    if isinstance(batch, torch.Tensor) and any(
        isinstance(t, torch.Tensor) and t.is_floating_point() and not math.isfinite(t.detach().sum())
        for t in tensors
    ):
        check_finite_batch(batch, input_name)


def check_device(device: str | torch.device | None) -> None:
    """Refuse a ``device`` that this machine cannot use, with the fix, before anything is built.

    Without it torch fails later and obscurely (``AssertionError: Torch not compiled with CUDA
    enabled``).

    Raises
    ------
    ValueError
        For a CUDA device without a usable GPU (a CPU-only torch, or no GPU found) or one
        beyond the GPUs found, and for an unavailable MPS device.
    """
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch ({torch.__version__}) is built without CUDA"
                if torch.version.cuda is None
                else "torch finds no usable NVIDIA GPU (torch.cuda.is_available() is False)"
            )
            raise ValueError(
                f"device={str(device)!r}, but {why}. Use device='cpu' here, or run on a machine with "
                "an NVIDIA GPU and a CUDA build of torch."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={str(device)!r}, but torch finds {torch.cuda.device_count()} GPU(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r}, but MPS is not available here; use device='cpu'.")


def _declared_classes(net):
    if net.classes is None or not len(net.classes):
        return None
    classes = np.asarray(net.classes)
    if not np.issubdtype(classes.dtype, np.integer) or not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(
            f"classes={net.classes!r} must be the class indices 0..C-1 (the columns of the module's "
            "output). Encode other labels with sklearn.preprocessing.LabelEncoder."
        )
    if len(classes) < 2:
        raise ValueError(f"classes={net.classes!r} declares fewer than 2 classes.")
    return classes


def _n_outputs(net):
    """Number of logits of a fitted module (the TD head is as wide), else ``None``."""
    td_head = getattr(net, "td_head_", None) if is_fitted(net) else None
    return None if td_head is None else unwrap(td_head).weight.shape[0]


def check_n_outputs(net: Any, classes: ArrayLike, n_outputs: int | None = None) -> None:
    """Check that a fitted module outputs one logit per class.

    Parameters
    ----------
    net : TiDALNetClassifier
        Nothing is checked unless its module is fitted (its width is then known).
    classes : array-like
        The classes the net knows.
    n_outputs : int or None, default=None
        The module's width, if known from an output; else read from the fitted TD head.

    Raises
    ------
    ValueError
        If the widths differ, with the fix (declare ``classes=`` or change the module).
    """
    n_outputs = _n_outputs(net) if n_outputs is None else n_outputs
    classes = np.asarray(classes)
    if n_outputs is not None and n_outputs != len(classes):
        raise ValueError(
            f"The module outputs {n_outputs} logits, but the net knows {len(classes)} classes "
            f"{classes.tolist()}. Give the module one output per class; if the labeled data does not "
            f"contain every class yet, declare them all up front: classes=list(range({n_outputs}))."
        )


def classes_from_width(net: Any, y: np.ndarray | None, n_outputs: int | None = None) -> np.ndarray:
    """The classes of a net that neither declares them nor knows them from an earlier fit:
    one per logit of its (just materialised) module, ``0 .. n_outputs - 1``.

    An active-learning loop's first labeled sets often miss classes; the module's output width
    says how many there are, as it does for skorch's own loss.

    Parameters
    ----------
    net : TiDALNetClassifier
        With a materialised module.
    y : ndarray of int64 or None
        The labels of the fit (``None`` when they are inside a Dataset).
    n_outputs : int or None, default=None
        The module's width, if known from an output; else read from the fitted TD head.

    Raises
    ------
    ValueError
        If the module has fewer than 2 outputs, or a label is not below its width.
    """
    n_outputs = _n_outputs(net) if n_outputs is None else n_outputs
    if n_outputs is None:  # not materialised: fall back on the labels themselves
        return np.unique(y) if y is not None else None
    if n_outputs < 2:
        raise ValueError(
            f"The module outputs {n_outputs} logit; TiDALNetClassifier needs one logit per class "
            "(at least 2), also for a binary task."
        )
    if y is not None and len(y) and y.max() >= n_outputs:
        outside = np.unique(y[y >= n_outputs]).tolist()
        raise ValueError(
            f"y contains the class(es) {outside}, but the module outputs {n_outputs} logits (classes "
            f"0..{n_outputs - 1}). Give the module one output per class, or fix the labels."
        )
    return np.arange(n_outputs)


def _check_labels(net, y, n_samples, reset):
    """``y`` as int64 class indices, and the classes the net will know after this fit (``None``:
    not known before the module is built, see :func:`classes_from_width`)."""
    y = np.asarray(to_numpy(y) if isinstance(y, torch.Tensor) else y)
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"y has shape {y.shape}: one column per class (one-hot or soft labels?). "
            "TiDALNetClassifier takes one class index per row: pass y.argmax(axis=1)."
        )
    y = column_or_1d(y, warn=True)
    check_consistent_length(np.empty(n_samples), y)
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"y must hold integer class indices 0..C-1, got labels of dtype {y.dtype} "
            f"(e.g. {np.unique(y)[:3].tolist()}). Encode them with sklearn.preprocessing.LabelEncoder."
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; every row needs a label.")
    check_classification_targets(y)  # rejects continuous and multi-output targets
    y = y.astype(np.int64, copy=False)
    labels = np.unique(y)

    declared = _declared_classes(net)
    known = None if reset or not hasattr(net, "classes_inferred_") else np.asarray(net.classes_inferred_)
    if declared is not None:
        classes, source = declared, "the declared classes"
    elif known is not None:
        classes, source = known, "the classes the net was fitted on (warm start)"
    else:
        # neither declared nor known: the module's width decides (see classes_from_width)
        if labels[0] < 0:
            raise ValueError(
                f"y must hold class indices 0..C-1, got the label(s) {labels[labels < 0].tolist()}. "
                "Encode other labels with sklearn.preprocessing.LabelEncoder."
            )
        return y, None
    new = np.setdiff1d(labels, classes)
    if len(new):
        hint = (
            "Declare every class up front with classes=list(range(C)) (C = the module's outputs), "
            "or refit from scratch with warm_start=False."
            if declared is None
            else "Fix the labels, or declare more classes (the module needs one output per class)."
        )
        raise ValueError(
            f"y contains the class(es) {new.tolist()}, which are not among {source} {classes.tolist()}. "
            + hint
        )
    check_n_outputs(net, classes)  # a fitted module's width is known: refuse before skorch re-initialises it
    return y, classes


def check_training_data(
    net: Any, X: InputData, y: Labels | None, *, reset: bool, check_X: bool = True
) -> tuple[InputData, np.ndarray | None, np.ndarray | None]:
    """Validate training data before ``fit`` / ``partial_fit`` change anything.

    Parameters
    ----------
    net : TiDALNetClassifier
    X : array-like, tensor, dict or Dataset
    y : array-like, tensor or None
        Class indices ``0..C-1``; may be ``None`` only if ``X`` is a Dataset.
    reset : bool
        Whether this fit starts from a freshly initialised module (else it continues training).
    check_X : bool, default=True
        ``False`` when this very ``X`` has just been checked (``fit`` before ``partial_fit``):
        its values are not read again.

    Returns
    -------
    X : the input, converted only where needed (lists, DataFrames, object arrays)
    y : ndarray of int64 or None
    classes : ndarray or None
        The classes the net knows after this fit: the declared ones, or while warm-starting
        those of the first fit (a class first seen later is an error). ``None`` when the module
        decides (:func:`classes_from_width`, once it is built).

    Raises
    ------
    ValueError, TypeError
        On bad shapes, non-numeric or non-finite values (a DataFrame's non-numeric columns by
        name), labels that the module cannot take, or (warm-starting) a DataFrame whose columns are
        not those of the first fit (the same columns in another order are reordered).
    """
    if check_X:
        # a DataFrame's names are read now, before it becomes an array; record_input_shape keeps them
        X, names = check_columns(net, X, "X", reset=reset, training=True)
        names = names if reset else getattr(net, "feature_names_in_", None)
        # a list (plain data, should a failed first fit leave it behind), or None
        net.__dict__[_PENDING_NAMES] = None if names is None else [str(name) for name in names]
        X = _check_X(X, net, "X")
    if not reset:
        check_input_shape(net, X, "X")
    if y is None:
        if not is_dataset(X):
            raise ValueError("y is required: pass the labels, or a Dataset that yields (X, y) as X.")
        return X, None, None
    y, classes = _check_labels(net, y, get_len(X), reset)
    return X, y, classes
