"""Pure score functions on (predicted) training dynamics: arrays in, arrays out."""

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import entr

__all__ = ["td_entropy", "td_margin"]


def _check_proba(td_proba):
    td_proba = np.asarray(td_proba)
    if td_proba.ndim != 2 or td_proba.shape[1] < 2:
        raise ValueError(
            "td_proba must be a 2-D array [n_samples, n_classes] with at least 2 classes; "
            f"got shape {td_proba.shape}."
        )
    return td_proba


def td_entropy(td_proba: ArrayLike) -> np.ndarray:
    """Entropy of each row's (predicted) training dynamics, in nats.

    ``H(p) = -sum_c p_c log p_c``; higher means more uncertain (TiDAL's entropy score).

    Parameters
    ----------
    td_proba : array-like of shape (n_samples, n_classes)
        Rows of probabilities, e.g. from :meth:`TiDALNetClassifier.predict_td`.

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> td_entropy([[0.5, 0.5], [1.0, 0.0]]).round(4)
    array([0.6931, 0.    ])
    """
    return entr(_check_proba(td_proba)).sum(axis=1)


def td_margin(td_proba: ArrayLike, predicted_labels: ArrayLike) -> np.ndarray:
    """Margin of the predicted TD at the classifier's predicted label.

    ``M = p[yhat] - max_{c != yhat} p[c]``, where ``yhat`` is the label the *classifier*
    predicts (not the argmax of ``p``), so ``M`` can be negative. A small ``M`` means an
    uncertain row: TiDAL's margin strategy queries the largest ``-M``.

    Parameters
    ----------
    td_proba : array-like of shape (n_samples, n_classes)
        Predicted training dynamics.
    predicted_labels : array-like of int, shape (n_samples,)
        The classifier's predicted class index (column of ``td_proba``) per row.

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> td_margin([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]], [0, 1]).round(4)
    array([ 0.3, -0.3])
    """
    td_proba = _check_proba(td_proba)
    labels = np.asarray(predicted_labels)
    if labels.shape != (td_proba.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"predicted_labels must be {td_proba.shape[0]} integer class indices; "
            f"got shape {labels.shape} of dtype {labels.dtype}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= td_proba.shape[1]):
        raise ValueError(f"predicted_labels must lie in 0..{td_proba.shape[1] - 1}.")
    at_label = td_proba[np.arange(len(labels)), labels]
    second, first = np.partition(td_proba, -2, axis=1)[:, -2:].T
    # the best other class is the runner-up if the label holds the top value, else the top
    best_other = np.where(at_label >= first, second, first)
    return at_label - best_other
