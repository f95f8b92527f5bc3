"""PreSelect's predictive strength on hand-made loss tables."""

import numpy as np
import pytest

from winnow.scorers.preselect import predictive_strength, preselect_labels


def test_hand_worked_strengths():
    benchmark = [0.2, 0.5, 0.8]  # model 2 best, then 1, then 0: 3 ordered pairs
    losses = [
        [3.0, 2.0, 1.0],  # better model, lower loss on every pair: S = 3/3
        [1.0, 2.0, 3.0],  # exactly reversed: 0/3
        [2.0, 3.0, 1.0],  # (2>1 yes, 2>0 yes, 1>0 no): 2/3
        [2.0, 2.0, 1.0],  # tie between models 0 and 1 is no evidence: (2>1 yes, 2>0 yes, 1>0 tie): 2/3
        [1.0, 1.0, 1.0],  # all tied: 0/3
    ]
    np.testing.assert_allclose(predictive_strength(np.array(losses), np.array(benchmark)), [1, 0, 2 / 3, 2 / 3, 0])


def test_tied_benchmark_scores_are_not_compared():
    benchmark = [0.5, 0.5, 0.9]  # models 0 and 1 tie: only pairs (2,0) and (2,1) count
    losses = [[2.0, 3.0, 1.0], [1.0, 3.0, 2.0]]
    np.testing.assert_allclose(predictive_strength(np.array(losses), np.array(benchmark)), [1.0, 0.5])
    with pytest.raises(ValueError, match="no order"):
        predictive_strength(np.ones((2, 2)), np.array([0.3, 0.3]))
    with pytest.raises(ValueError, match="documents x 3 models"):
        predictive_strength(np.ones((2, 2)), np.array([0.1, 0.2, 0.3]))


def test_labels_balance_positives_with_the_lowest_strengths():
    strength = np.array([1.0, 0.0, 0.5, 1.0, 0.0, 0.25, 1.0])
    positives, negatives = preselect_labels(strength)
    assert sorted(positives) == [0, 3, 6]
    assert len(negatives) == 3 and set(negatives[:2]) == {1, 4} and negatives[2] == 5
