import pickle

import numpy as np
import torch
from skorch.dataset import Dataset

from tidal_modal.dynamics import IndexedDataset, TrainingDynamics


class TestIndexedDataset:
    def test_items_carry_their_row_index(self):
        X, y = np.arange(10.0).reshape(5, 2), np.array([0, 1, 0, 1, 1])
        ds = IndexedDataset(Dataset(X, y))
        Xi, (yi, i) = ds[3]  # an IndexedTarget
        np.testing.assert_array_equal(Xi, X[3])
        assert (yi, i) == (1, 3)
        assert len(ds) == 5
        assert ds.X is X and ds.y is y  # skorch's data_from_dataset still finds them


class TestTrainingDynamics:
    def test_running_mean_over_passes_matches_hand_computation(self):
        rng = np.random.RandomState(0)
        td = TrainingDynamics(n_samples=6)
        seen = {i: [] for i in range(6)}
        for _ in range(4):  # epochs, each a shuffled pass over rows 0..4 (row 5 never trained on)
            order = rng.permutation(5)
            for batch in np.array_split(order, 2):
                proba = torch.softmax(torch.randn(len(batch), 3), dim=1)
                target = td.update(torch.as_tensor(batch), proba)
                for row, p in zip(batch, proba, strict=True):
                    seen[row].append(p.numpy())
                expected = np.stack([np.mean(seen[row], axis=0) for row in batch])
                np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6)
        result = td.to_numpy()
        np.testing.assert_allclose(result[:5], [np.mean(seen[i], axis=0) for i in range(5)], rtol=1e-6)
        assert np.isnan(result[5]).all()

    def test_pickles_with_buffers_on_cpu(self):
        td = TrainingDynamics(n_samples=3)
        td.update(torch.tensor([0, 2]), torch.tensor([[0.2, 0.8], [0.6, 0.4]]))
        restored = pickle.loads(pickle.dumps(td))
        np.testing.assert_array_equal(restored.to_numpy(), td.to_numpy())
