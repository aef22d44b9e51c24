import numpy as np
import pytest

from models.prior_shift import shift_to_share


def test_two_even_chances_moved_to_a_quarter_move_by_the_logit_of_a_quarter():
    moved, offset = shift_to_share(np.array([0.5, 0.5]), 0.25)
    assert offset == pytest.approx(np.log(1 / 3))  # logit(0.25) - logit(0.5)
    assert moved == pytest.approx([0.25, 0.25])


def test_the_mean_becomes_the_share_and_the_order_is_kept():
    p = np.array([0.9, 0.1, 0.5, 0.3, 0.3])
    moved, offset = shift_to_share(p, 0.2)
    assert moved.mean() == pytest.approx(0.2, abs=1e-9)
    assert offset < 0
    assert (np.argsort(moved, kind="stable") == np.argsort(p, kind="stable")).all()
    assert moved[3] == moved[4]  # ties stay ties


def test_no_rows_and_bad_shares_are_said():
    moved, offset = shift_to_share(np.array([]), 0.2)
    assert len(moved) == 0 and offset == 0.0
    with pytest.raises(ValueError, match="share must be between 0 and 1, got 1.0"):
        shift_to_share(np.array([0.5]), 1.0)
    with pytest.raises(ValueError, match="probabilities must be finite"):
        shift_to_share(np.array([0.5, np.nan]), 0.2)


def test_rows_scored_apart_are_moved_by_a_given_offset_as_their_batch_was():
    from models.prior_shift import move_by

    assert move_by(np.array([0.5, 0.75]), np.log(1 / 3)) == pytest.approx([0.25, 0.5])  # odds 1 -> 1/3, 3 -> 1
