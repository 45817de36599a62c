"""chap_mop.model.ranking: the one rule for metric direction and ranking, without TensorFlow."""
import math
import subprocess
import sys

import pytest

from chap_mop.model.ranking import best_index, is_larger_better, rank_key, ranked

NAN = math.nan


@pytest.mark.parametrize("metric, larger", [("balanced_accuracy", True), ("val_accuracy", True),
                                            ("loss", False), ("val_loss", False), ("r2", True)])
def test_direction_of_each_metric(metric, larger):
    assert is_larger_better(metric) is larger


def test_nan_and_missing_values_rank_last_and_ties_go_to_the_earlier():
    assert ranked([0.5, NAN, 0.9, 0.9, None], True) == [2, 3, 0, 1, 4]
    assert ranked([0.5, NAN, 0.2, 0.2], False) == [2, 3, 0, 1]
    assert best_index([NAN, 0.1], True) == 1
    assert rank_key(NAN, True) > rank_key(-1e9, True)


def test_ranking_does_not_load_tensorflow():
    code = "import sys; import chap_mop.model.ranking, chap_mop.output.report; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
