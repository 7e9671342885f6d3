"""skorch callbacks of the TiDAL network."""

from skorch.callbacks import Callback
from skorch.dataset import get_len

__all__ = ["EpochTDLoss"]


class EpochTDLoss(Callback):
    """Record each epoch's mean TD (KL) loss in ``net.history`` as ``train_td_loss``.

    The batch losses are summed on the training device and read once per epoch, so recording
    costs no device-to-host copy per batch.
    """

    def on_epoch_begin(self, net, **kwargs):
        self.total_, self.count_ = 0.0, 0

    def on_batch_end(self, net, batch=None, training=False, td_loss=None, **kwargs):
        if training and td_loss is not None:
            n = get_len(batch[0])
            self.total_ = self.total_ + td_loss * n
            self.count_ += n

    def on_epoch_end(self, net, **kwargs):
        if self.count_:
            net.history.record("train_td_loss", float(self.total_ / self.count_))
