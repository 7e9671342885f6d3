"""Pure score functions on (predicted) training dynamics and training trajectories: arrays in, arrays out."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["label_influence", "td_entropy", "td_margin"]


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of a float tensor, in place, in whole-tensor passes.

    torch's CPU softmax over a short last dimension (fewer than 16 classes) runs row by row,
    about six times slower.
    """
    logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=-1, keepdim=True))


def _check_proba(td_proba):
    td_proba = np.asarray(td_proba)
    if td_proba.ndim != 2 or td_proba.shape[1] < 2:
        raise ValueError(
            "td_proba must be a 2-D array [n_samples, n_classes] with at least 2 classes; "
            f"got shape {td_proba.shape}."
        )
    return td_proba


def _float_rows(td_proba):
    """``td_proba`` as a C-ordered, writable float32 or float64 array (other dtypes in float64),
    ready for ``torch.from_numpy`` (which warns on a read-only array)."""
    if td_proba.dtype not in (np.float32, np.float64):
        td_proba = td_proba.astype(np.float64)
    if not td_proba.flags.writeable:
        td_proba = td_proba.copy()
    return np.ascontiguousarray(td_proba)


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
    td_proba = _float_rows(_check_proba(td_proba))
    # torch's entr is vectorised and runs on torch's threads: about half of scipy's time on one
    # thread, less on more (part of every tidal_entropy query); each row's sum does not depend
    # on the other rows, so a pool scored in blocks (on Dask) gets the same bits
    return torch.special.entr(torch.from_numpy(td_proba)).sum(dim=1).numpy()


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
    p = torch.from_numpy(_float_rows(td_proba))
    index = torch.tensor(labels, dtype=torch.int64)[:, None]
    at_label = p.gather(1, index)[:, 0]
    # the best other class: the row's maximum once the label's column is out of the running,
    # exactly as a runner-up found by sorting (a third of numpy's partition's time, which was
    # part of every tidal_margin query)
    best_other = p.clone().scatter_(1, index, float("-inf")).amax(dim=1)
    return (at_label - best_other).numpy()


def label_influence(
    features: ArrayLike, proba: ArrayLike, directions: ArrayLike
) -> np.ndarray | torch.Tensor:
    """Dynamic influence of each row under every candidate label (DISAL's closed form).

    For a linear last layer ``z = W h + b`` trained with softmax cross-entropy, the gradient of
    a row's loss with target ``t`` is ``(p - t) outer [h, 1]``. Its projection onto the
    accumulated directions ``U_t``, summed over checkpoints, is for the target ``e_y``::

        S[i, y] = sum_t < (p_t - e_y) outer h1_i, U_t > = sum_t p_t . v_t  -  sum_t v_t[y],
        v_t = U_t h1_i,

    linear in the target, so a soft target ``q`` scores ``S[i] . q``. Computed with matrix
    products only: no per-sample autograd.

    Parameters
    ----------
    features : array-like or tensor of shape (n_samples, d)
        The layer's input ``h1`` (with a trailing column of ones when the directions have a
        bias column).
    proba : array-like or tensor of shape (n_samples, K) or (T, n_samples, K)
        Softmax of the layer's output, the same at every checkpoint or one per checkpoint.
    directions : array-like or tensor of shape (T, K, d)
        ``U_t``, one per checkpoint.

    Returns
    -------
    ndarray or tensor of shape (n_samples, K)
        A tensor if ``features`` is one (on its device), else an ndarray.

    Examples
    --------
    >>> h = [[1.0, 1.0]]                      # one row, feature 1 and the bias column
    >>> U = [[[1.0, 0.0], [0.0, 0.0]]]        # one checkpoint that moved class 0's weight
    >>> label_influence(h, [[0.5, 0.5]], U)   # labelled 0: the step lowered its loss
    array([[-0.5,  0.5]])
    """
    as_numpy = not isinstance(features, torch.Tensor)
    if as_numpy:
        features = np.asarray(features)
        features = torch.from_numpy(features if features.dtype.kind == "f" else features.astype(float))
    dtype = features.dtype if features.is_floating_point() else torch.get_default_dtype()
    features = features.to(dtype)
    proba = torch.as_tensor(proba, dtype=dtype, device=features.device)
    directions = torch.as_tensor(directions, dtype=dtype, device=features.device)
    if features.dim() != 2 or directions.dim() != 3 or directions.shape[2] != features.shape[1]:
        raise ValueError(
            f"features [n, d] and directions [T, K, d] must share d; got shapes "
            f"{tuple(features.shape)} and {tuple(directions.shape)}."
        )
    if proba.shape[-2:] != (features.shape[0], directions.shape[1]) or proba.dim() not in (2, 3):
        raise ValueError(
            f"proba must be [n, K] or [T, n, K] with n={features.shape[0]}, K={directions.shape[1]}; "
            f"got shape {tuple(proba.shape)}."
        )
    if proba.dim() == 2:  # one probability for every checkpoint: only the sum of the U_t matters
        v = features @ directions.sum(dim=0).T  # [n, K]
        expected = (proba * v).sum(dim=1)
    else:
        v_t = torch.einsum("nd,tkd->tnk", features, directions)  # [T, n, K]
        expected = (proba * v_t).sum(dim=(0, 2))
        v = v_t.sum(dim=0)
    influence = expected[:, None] - v  # [n, K]
    return influence.numpy() if as_numpy else influence
