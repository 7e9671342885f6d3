import numpy as np
import pytest

from tidal_modal import td_entropy, td_margin


class TestTDEntropy:
    def test_values(self):
        p = np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
        np.testing.assert_allclose(td_entropy(p), [np.log(4), 0.0, np.log(2)])

    def test_refuses_1d(self):
        with pytest.raises(ValueError, match="2-D array"):
            td_entropy(np.array([0.5, 0.5]))


class TestTDMargin:
    def test_margin_is_taken_at_the_classifiers_label(self):
        p = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]])
        # label 0 holds the top: 0.5 - 0.3; label 1 does not: 0.3 - 0.5; a tie at the top: 0
        np.testing.assert_allclose(td_margin(p, [0, 1, 0]), [0.2, -0.2, 0.0])

    def test_differs_from_margin_of_argmax(self):
        p = np.array([[0.1, 0.2, 0.7]])
        assert td_margin(p, [0]) == pytest.approx(0.1 - 0.7)

    @pytest.mark.parametrize(
        "labels, match", [([0], "2 integer"), ([0.0, 1.0], "integer"), ([0, 3], r"0\.\.2")]
    )
    def test_bad_labels(self, labels, match):
        with pytest.raises(ValueError, match=match):
            td_margin(np.full((2, 3), 1 / 3), labels)
