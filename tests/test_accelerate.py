"""Data-parallel training through Accelerate (tidal_modal.accelerate): every row's TD, exactly.

Two training processes on the gloo backend (``torchrun``, loopback only) run
``tests/accelerate_worker.py``; one process in this test is the reference.
"""

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tidal_modal import TiDALNetClassifier, tidal_entropy

pytest.importorskip("accelerate")

from accelerate import Accelerator  # noqa: E402 -- after the skip

from tidal_modal.accelerate import AcceleratedTiDALNetClassifier, DistributedTrainingDynamics  # noqa: E402
from tidal_modal.dynamics import TrainingDynamics  # noqa: E402

from .accelerate_worker import (  # noqa: E402
    BATCH_SIZE,
    EPOCHS,
    learnable,
    load_initial,
    mlp,
    query_indices,
    save_initial,
)

WORKER = Path(__file__).with_name("accelerate_worker.py")
REPO = WORKER.parents[1]
N_FEATURES, N_CLASSES = 5, 3


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(out, precision):
    """Run the worker on 2 processes; return what each wrote."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        GLOO_SOCKET_IFNAME="lo",  # loopback only
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(WORKER), str(out), precision,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [dict(np.load(out / f"rank{rank}.npz")) for rank in (0, 1)]


def single_process_net(**kwargs):
    return TiDALNetClassifier(
        mlp(N_FEATURES, N_CLASSES),
        max_epochs=EPOCHS,
        optimizer=torch.optim.SGD,
        lr=0.1,
        verbose=0,
        iterator_train__shuffle=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Rows (a multiple of both processes' batches), a pool, and an initial module state."""
    out = tmp_path_factory.mktemp("accelerate")
    rng = np.random.RandomState(0)
    X = rng.randn(6 * 2 * BATCH_SIZE, N_FEATURES).astype("float32")
    y = np.argmax(X[:, :N_CLASSES] + 0.5 * rng.randn(len(X), N_CLASSES), axis=1).astype("int64")
    pool = rng.randn(40, N_FEATURES).astype("float32")
    np.savez(out / "data.npz", X=X, y=y, pool=pool)
    save_initial(single_process_net().initialize(), out / "initial.pt")
    return out, X, y, pool


@pytest.fixture(scope="module")
def reference(data):
    """One process on batches of both processes' rows together, from the same initial state."""
    out, X, y, _ = data
    net = load_initial(single_process_net(batch_size=2 * BATCH_SIZE).initialize(), out / "initial.pt")
    return net.partial_fit(X, y)


@pytest.fixture(scope="module")
def ranks(data):
    out = data[0] / "fp32"
    out.mkdir()
    (out / "data.npz").symlink_to(data[0] / "data.npz")
    (out / "initial.pt").symlink_to(data[0] / "initial.pt")
    return launch(out, "no")


def test_two_processes_record_the_single_process_dynamics(ranks, reference, data):
    pool = data[3]
    first, second = ranks
    assert first["world_size"] == 2
    # every process holds every row's TD, gathered: the same numbers on both
    np.testing.assert_array_equal(first["ordered_td"], second["ordered_td"])
    np.testing.assert_array_equal(first["ordered_counts"], np.full(len(data[1]), EPOCHS))
    # and those of one process on the same batches (DDP averages the two halves' gradients)
    np.testing.assert_allclose(first["ordered_td"], reference.training_dynamics_, atol=2e-6)
    np.testing.assert_allclose(first["ordered_weights"], learnable(reference), atol=2e-6)
    deltas = np.stack([d.numpy() for d in reference.trajectory_.deltas])
    np.testing.assert_allclose(first["ordered_deltas"], deltas, atol=2e-6)
    # the unwrapped net predicts and queries as the single-process one
    assert str(first["ordered_module_type"]) == "Sequential"
    np.testing.assert_allclose(first["ordered_predict_td"], reference.predict_td(pool), atol=2e-6)
    np.testing.assert_array_equal(first["ordered_query"], query_indices(reference, pool))


def test_gradient_accumulation_covers_the_td_head(ranks, data, accelerator):
    # two batches of BATCH_SIZE rows per process, then one step: one process on 4 x BATCH_SIZE rows
    out, X, y, _ = data
    reference = load_initial(single_process_net(batch_size=4 * BATCH_SIZE).initialize(), out / "initial.pt")
    reference.partial_fit(X, y)
    for rank in ranks:
        np.testing.assert_allclose(rank["accumulated_td"], reference.training_dynamics_, atol=2e-6)
        np.testing.assert_allclose(rank["accumulated_weights"], learnable(reference), atol=2e-6)
    # the head's gradients wait for the step, as the module's do (skorch accumulates over module_ alone)
    net = accelerated_net(accelerator)
    seen = []
    accumulate = accelerator.accumulate

    def spy(*models):
        seen.append(models)
        return accumulate(*models)

    accelerator.accumulate = spy
    try:
        net.fit(X, y)
    finally:
        del accelerator.accumulate
    # one model over the module's and the head's parameters: one all-reduce per step for both
    params = set(net.module_.parameters()) | set(net.td_head_.parameters())
    assert seen and all(len(models) == 1 and set(models[0].parameters()) == params for models in seen)


def test_padding_rows_count_once_per_epoch(ranks, data):
    # 93 rows in batches of 8 on 2 processes: Accelerate repeats rows to even the shards out
    n = len(data[1]) - 3
    for rank in ranks:
        np.testing.assert_array_equal(rank["fresh_counts"], np.full(n, EPOCHS))
        np.testing.assert_allclose(rank["fresh_td"].sum(axis=1), 1, rtol=1e-5)
        assert int(rank["fresh_n_checkpoints"]) == EPOCHS
    np.testing.assert_array_equal(ranks[0]["fresh_td"], ranks[1]["fresh_td"])


def test_a_warm_started_fit_is_data_parallel_again(ranks):
    # skorch unwraps the module after a fit; were the second fit not wrapped again, each process
    # would train on its own shard alone and the weights would part
    for rank in ranks:
        assert int(rank["warm_epochs"]) == 2 * EPOCHS
        assert str(rank["warm_module_type"]) == "Sequential"
        assert (rank["warm_counts"] == EPOCHS).all()  # the TD restarts with each fit
    np.testing.assert_array_equal(ranks[0]["warm_weights"], ranks[1]["warm_weights"])


def test_a_pickled_net_predicts_the_same(ranks):
    for rank in ranks:
        np.testing.assert_array_equal(rank["pickled_predict_td"], rank["predict_td"])


def test_mixed_precision_keeps_the_td_in_float32(data, reference, tmp_path):
    out = tmp_path
    (out / "data.npz").symlink_to(data[0] / "data.npz")
    (out / "initial.pt").symlink_to(data[0] / "initial.pt")
    first, second = launch(out, "bf16")
    assert str(first["ordered_td_dtype"]) == "torch.float32"
    np.testing.assert_array_equal(first["ordered_td"], second["ordered_td"])
    np.testing.assert_array_equal(first["ordered_counts"], np.full(len(data[1]), EPOCHS))
    # bfloat16 forward passes (3 significant digits), float32 sums
    np.testing.assert_allclose(first["ordered_td"], reference.training_dynamics_, atol=0.02)
    assert not np.array_equal(first["ordered_td"], reference.training_dynamics_)


# --- one process, in this test's own process --------------------------------------------------


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def accelerated_net(accelerator, **kwargs):
    params = dict(
        max_epochs=EPOCHS,
        batch_size=2 * BATCH_SIZE,
        optimizer=torch.optim.SGD,
        lr=0.1,
        verbose=0,
        iterator_train__shuffle=False,
    )
    return AcceleratedTiDALNetClassifier(
        mlp(N_FEATURES, N_CLASSES), accelerator=accelerator, **{**params, **kwargs}
    )


def test_one_process_trains_as_the_tidal_net(accelerator, reference, data):
    out, X, y, pool = data
    net = load_initial(accelerated_net(accelerator).initialize(), out / "initial.pt")
    net.partial_fit(X, y)
    np.testing.assert_array_equal(net.training_dynamics_, reference.training_dynamics_)
    np.testing.assert_array_equal(net.predict_td(pool), reference.predict_td(pool))
    assert list(net.history[:, "train_td_loss"]) == list(reference.history[:, "train_td_loss"])


def test_a_new_module_gets_its_shapes_before_it_is_wrapped(accelerator, data):
    _, X, y, pool = data
    net = accelerated_net(accelerator, iterator_train__shuffle=True).fit(X, y)
    assert net.predict_td(pool).shape == (len(pool), N_CLASSES)
    assert len(net.trajectory_.deltas) == EPOCHS
    assert net.classes_.tolist() == list(range(N_CLASSES))
    assert isinstance(net.dynamics_, DistributedTrainingDynamics)


def test_the_log_follows_verbose(accelerator, data, capsys):
    _, X, y, _ = data
    accelerated_net(accelerator, max_epochs=1).fit(X, y)
    assert capsys.readouterr().out == ""  # skorch's accelerator.print sink ignores verbose
    accelerated_net(accelerator, max_epochs=1, verbose=1).fit(X, y)
    assert "train_td_loss" in capsys.readouterr().out


def test_a_wrapped_net_refuses_pickling_and_says_why(accelerator, data):
    _, X, y, pool = data
    net = accelerated_net(accelerator, unwrap_after_train=False, max_epochs=1).fit(X, y)
    with pytest.raises(TypeError, match="unwrap_after_train"):
        pickle.dumps(net)
    net.set_params(unwrap_after_train=True).partial_fit(X, y)
    assert pickle.loads(pickle.dumps(net)).predict_td(pool).shape == (len(pool), N_CLASSES)


def test_a_cold_refit_of_a_still_wrapped_net_trains_its_new_modules(accelerator, data):
    # unwrap_after_train=False keeps the wrapper; a fit without warm_start builds new modules,
    # and the wrapper that training passes run through must be theirs, not the last fit's
    _, X, y, _ = data
    net = accelerated_net(accelerator, unwrap_after_train=False, max_epochs=1).fit(X, y)
    net.fit(X, y)
    assert net._pair.module is net.module_ and net._pair.head is net.td_head_


def test_an_unpickled_net_leaves_the_device_to_the_accelerator(accelerator, data, recwarn):
    _, X, y, pool = data
    net = pickle.loads(pickle.dumps(accelerated_net(accelerator, max_epochs=1).fit(X, y)))
    assert net.device is None  # skorch would set "cpu", which the accelerator refuses
    assert not [w for w in recwarn if "device" in str(w.message)]
    net.set_params(warm_start=True).fit(X, y)
    assert len(net.history) == 2


def test_the_strategies_work_on_the_trained_net(accelerator, data):
    _, X, y, pool = data
    net = accelerated_net(accelerator).fit(X, y)
    picked = tidal_entropy(net, pool, n_instances=3)
    picked = picked[0] if isinstance(picked, tuple) else picked
    assert len(set(picked.tolist())) == 3


# --- the buffer ----------------------------------------------------------------------------------


class OneProcess:
    """An accelerator of a single process: its reduce returns the tensor itself (and is counted)."""

    reductions = 0

    def reduce(self, tensor, reduction="sum"):
        self.reductions += 1
        return tensor


def test_distributed_dynamics_equal_the_single_process_ones_without_repeats():
    rng = torch.Generator().manual_seed(0)
    process = OneProcess()
    single, gathered = TrainingDynamics(6), DistributedTrainingDynamics(6, process)
    for _ in range(3):
        for index in (torch.tensor([4, 0, 2]), torch.tensor([1, 5, 3])):
            proba = torch.softmax(torch.randn(3, 2, generator=rng), dim=1)
            torch.testing.assert_close(gathered.update(index, proba), single.update(index, proba))
        gathered.end_epoch()
    np.testing.assert_array_equal(gathered.to_numpy(), single.to_numpy())
    assert process.reductions == 3  # one all-reduce per epoch, sums and counts together


def test_a_row_seen_twice_in_an_epoch_counts_once_with_the_mean_of_its_views():
    dynamics = DistributedTrainingDynamics(2, OneProcess())
    first, second = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])
    dynamics.update(torch.tensor([0]), first)
    target = dynamics.update(torch.tensor([0]), second)
    torch.testing.assert_close(target, torch.tensor([[0.75, 0.25]]))
    dynamics.update(torch.tensor([1]), second)
    dynamics.end_epoch()
    torch.testing.assert_close(dynamics.counts, torch.tensor([1.0, 1.0]))
    target = dynamics.update(torch.tensor([0]), second)  # epoch 2: (0.75 + 0.5) / 2
    torch.testing.assert_close(target, torch.tensor([[0.625, 0.375]]))


def test_half_precision_probabilities_are_summed_in_float32():
    dynamics = DistributedTrainingDynamics(2, OneProcess())
    dynamics.update(torch.tensor([0, 1]), torch.full((2, 2), 0.5, dtype=torch.bfloat16))
    assert dynamics.sums.dtype == dynamics.epoch_sums.dtype == torch.float32
    single = TrainingDynamics(2)
    single.update(torch.tensor([0, 1]), torch.full((2, 2), 0.5, dtype=torch.float16))
    assert single.sums.dtype == torch.float32


def test_callbacks_a_validation_split_and_save_params_work(accelerator, data, tmp_path):
    from skorch.callbacks import EpochScoring
    from skorch.dataset import ValidSplit

    _, X, y, pool = data
    scoring = EpochScoring("accuracy", on_train=False, name="valid_accuracy")
    net = accelerated_net(accelerator, train_split=ValidSplit(4), callbacks=[scoring]).fit(X, y)
    assert 0 <= net.history[-1, "valid_accuracy"] <= 1 and net.history[-1, "train_td_loss"] > 0
    assert np.isnan(net.training_dynamics_[:, 0]).sum() == len(X) // 4  # validation rows get none
    files = dict(f_params=tmp_path / "params.pt", f_trajectory=tmp_path / "trajectory.pt")
    net.save_params(**files)
    loaded = accelerated_net(accelerator).initialize()
    loaded.load_params(**files)
    np.testing.assert_array_equal(loaded.predict_td(pool), net.predict_td(pool))
    assert len(loaded.trajectory_) == EPOCHS
