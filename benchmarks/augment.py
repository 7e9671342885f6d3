"""Training-batch augmentation in torch (no torchvision): random shifts with zero padding, flips.

The TiDAL reference code trains on ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip``
views, so every epoch sees each labeled image shifted anew, and a row's training dynamics (the
mean of the softmax outputs of its training forward passes) is a mean over those views.
:class:`AugmentRows` does the same as a ``collate_fn`` of the training iterator: the training
step, and with it the recording of the TD, gets the augmented batch; prediction and query
scoring never do. The random draws come from torch's global generator, which the benchmark
seeds before each fit, so every strategy of a seed trains its initial fit on the same views.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tidal_modal.dynamics import collate_rows

__all__ = ["AugmentRows", "random_flip", "random_shift"]


def random_shift(images, pad, generator=None):
    """Shift each image by its own random offset of up to ``pad`` pixels per axis, filling with zeros.

    The same as padding by ``pad`` and cropping a random window of the original size.

    Parameters
    ----------
    images : torch.Tensor of shape (n, channels, height, width)
    pad : int
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor of the same shape
    """
    if pad == 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=images.device)
    left = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=images.device)
    rows = top + torch.arange(height, device=images.device)  # [n, height]
    cols = left + torch.arange(width, device=images.device)  # [n, width]
    batch = torch.arange(n, device=images.device)[:, None, None]
    # advanced indices around a slice put their dimensions first: [n, height, width, channels]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(images, generator=None):
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


@dataclass(frozen=True)
class AugmentRows:
    """A training ``collate_fn`` that augments a batch's flat image rows; labels and indices pass as is.

    Parameters
    ----------
    image_shape : tuple of int
        ``(channels, height, width)`` of the flat rows.
    shift : int, default=0
        Largest random shift in pixels (the crop's padding); 0 for none.
    flip : bool, default=False
        Random horizontal flips. Right for natural images (CIFAR), wrong for digits: a
        mirrored 2, 3, 4, 5, 7 or 9 is no digit at all.

    Examples
    --------
    >>> from tidal_modal import TiDALNetClassifier
    >>> net = TiDALNetClassifier(  # doctest: +SKIP
    ...     module, iterator_train__collate_fn=AugmentRows((1, 28, 28), shift=3)
    ... )
    """

    image_shape: tuple
    shift: int = 0
    flip: bool = False

    def augment(self, X):
        """Augmented copies of the rows ``X`` ``[n, prod(image_shape)]``, same shape."""
        images = random_shift(X.reshape(-1, *self.image_shape), self.shift)
        if self.flip:
            images = random_flip(images)
        return images.reshape(X.shape)

    def __call__(self, rows):
        X, target = collate_rows(rows)
        return [self.augment(X), target]
