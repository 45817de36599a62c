"""The ensemble's vote and the test report's arithmetic, on constructed predictions."""
import numpy as np
import pytest

from chap_mop.output.evaluation import confusion, minute_confusion, minute_majority, scores
from chap_mop.predict.inference import classes, vote

_ = -1  # no prediction


def test_vote_is_the_majority_and_a_tie_goes_to_the_better_ranked_member():
    members = np.array([[0, 0, 1, 1, 0, _, _, _],   # best-ranked
                        [1, 0, 0, 1, 1, 1, _, 0],
                        [1, 1, 0, 0, _, 0, _, _]])
    assert vote(members).tolist() == [1, 0, 0, 1, 0, 1, _, 0]
    #  col 4: one vote each (member 3 has none) -> the best-ranked member's 0;
    #  col 5: the best has none, 1 vs 0 -> the better-ranked of the two, member 2


def test_members_of_two_window_sizes_vote_on_every_window_either_predicts():
    # T = 6 covers rows 0-11 of a 15-row run, T = 12 covers rows 0-11 too but from another start
    seq6 = np.full(15, _)
    seq6[:12] = 0
    seq12 = np.full(15, _)
    seq12[3:15] = 1
    voted = vote(np.stack([seq6, seq12]))
    assert voted.tolist() == [0] * 12 + [1] * 3  # rows 3-11: a tie, the better-ranked member's 0
    assert (voted != _).sum() == ((seq6 != _) | (seq12 != _)).sum()


def test_classes_follow_the_argmax_and_mark_windows_without_a_prediction():
    assert classes(np.array([0.9, 0.5, 0.49, np.nan], np.float32)).tolist() == [0, 0, 1, _]


def test_confusion_rows_are_true_classes_and_skip_missing_values():
    truth = np.array([0, 0, 1, 1, 1, _, 0])
    predicted = np.array([0, 1, 1, 1, 0, 0, _])
    assert confusion(truth, predicted).tolist() == [[1, 1], [1, 2]]
    report = scores(confusion(truth, predicted))
    assert report["accuracy"] == pytest.approx(3 / 5) and report["sensitivity"] == pytest.approx(0.5)
    assert report["specificity"] == pytest.approx(2 / 3)
    assert report["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2) and report["windows"] == 5


def test_minutes_are_the_majority_of_their_ten_second_windows():
    time = np.arange(18) * 10  # three minutes of six windows
    values = np.array([1, 1, 1, 1, 0, 0,   0, 0, 0, 1, 1, 1,   _, _, _, _, _, 1])
    minutes, majority = minute_majority(time, values)
    assert minutes.tolist() == [0, 1, 2] and majority.tolist() == [1, 0, 1]  # a 3-3 tie counts as sitting
    truth = np.array([1] * 6 + [0] * 6 + [_] * 6)  # minute 2 has no label: left out
    assert minute_confusion(time, truth, values).tolist() == [[1, 0], [0, 1]]
