"""One process of a data-parallel fit, started twice by ``torchrun`` in tests/test_accelerate.py.

``python -m torch.distributed.run --nproc_per_node=2 tests/accelerate_worker.py DIR PRECISION``:
reads ``DIR/data.npz`` (the rows) and ``DIR/initial.pt`` (a TiDAL net's initial module and TD
head), trains, and writes what each process ends with to ``DIR/rank<R>.npz``:

- ``ordered_*``: ``partial_fit`` from the initial state on the rows in order (no shuffling),
  ``batch_size`` rows per process, which the test compares with one process on batches of
  ``2 * batch_size``;
- ``fresh_*``: a new module fitted on rows that do not fill the last batches (so Accelerate
  evens the shards out with repeated rows), shuffled, then warm-started for a second fit; then
  pickled, unpickled and queried.
"""

import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from tidal_modal import tidal_entropy
from tidal_modal.accelerate import AcceleratedTiDALNetClassifier

EPOCHS = 4
BATCH_SIZE = 8  # per process


def mlp(n_features, n_classes):
    return nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Linear(16, n_classes))


def save_initial(net, path):
    """Save a net's initial module and TD head (the head's shapes given by one forward pass)."""
    net.infer_td(torch.zeros(2, net.module_[0].in_features))
    torch.save({"module": net.module_.state_dict(), "td_head": net.td_head_.state_dict()}, path)


def load_initial(net, path):
    state = torch.load(path)
    net.infer_td(torch.zeros(2, net.module_[0].in_features))  # the head's shapes
    net.module_.load_state_dict(state["module"])
    net.td_head_.load_state_dict(state["td_head"])
    return net


def learnable(net):
    """Every trained parameter, the TD head's included, flattened into one array."""
    return torch.cat([p.detach().flatten() for _, p in net.get_all_learnable_params()]).numpy()


def query_indices(net, pool):
    """The rows ``tidal_entropy`` picks (modAL 0.4.2.1 returns them with their scores)."""
    picked = tidal_entropy(net, pool, n_instances=5)
    return picked[0] if isinstance(picked, tuple) else picked


def main(out, precision):
    accelerator = Accelerator(cpu=True, mixed_precision=precision)
    rank = accelerator.process_index
    data = np.load(out / "data.npz")
    X, y, pool = data["X"], data["y"], data["pool"]
    n_classes = int(y.max()) + 1
    result = {"world_size": accelerator.num_processes}

    def new_net(**kwargs):
        return AcceleratedTiDALNetClassifier(
            mlp(X.shape[1], n_classes),
            accelerator=accelerator,
            max_epochs=EPOCHS,
            batch_size=BATCH_SIZE,
            optimizer=torch.optim.SGD,
            lr=0.1,
            verbose=0,
            **kwargs,
        )

    # rows in order, from the test's initial state
    net = load_initial(new_net(iterator_train__shuffle=False).initialize(), out / "initial.pt")
    net.partial_fit(X, y)
    result.update(
        ordered_td=net.training_dynamics_,
        ordered_counts=net.dynamics_.counts.numpy(),
        ordered_td_dtype=str(net.dynamics_.sums.dtype),
        ordered_weights=learnable(net),
        ordered_deltas=np.stack([d.numpy() for d in net.trajectory_.deltas]),
        ordered_predict_td=net.predict_td(pool),
        ordered_query=query_indices(net, pool),
        ordered_module_type=type(net.module_).__name__,
    )

    # a new module (lazy TD head) on rows that leave the last batches short, shuffled
    torch.manual_seed(0)
    n = len(X) - 3
    net = new_net().fit(X[:n], y[:n])
    result.update(
        fresh_counts=net.dynamics_.counts.numpy(),
        fresh_td=net.training_dynamics_,
        fresh_n_checkpoints=len(net.trajectory_.deltas),
    )
    net.set_params(warm_start=True).fit(X[:n], y[:n])
    result.update(
        warm_counts=net.dynamics_.counts.numpy(),
        warm_epochs=len(net.history),
        warm_weights=learnable(net),
        warm_module_type=type(net.module_).__name__,
    )
    # gradient accumulation over two batches per process: one step on 2 x 2 x BATCH_SIZE rows
    net = load_initial(new_net(iterator_train__shuffle=False).initialize(), out / "initial.pt")
    accelerator.gradient_accumulation_steps = 2
    try:
        net.partial_fit(X, y)
    finally:
        accelerator.gradient_accumulation_steps = 1
    result.update(accumulated_td=net.training_dynamics_, accumulated_weights=learnable(net))
    restored = pickle.loads(pickle.dumps(net))
    result.update(
        pickled_predict_td=restored.predict_td(pool),
        predict_td=net.predict_td(pool),
    )
    np.savez(out / f"rank{rank}.npz", **result)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
