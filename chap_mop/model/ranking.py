"""What "better" means, in one place: the class names, the metrics a run records, which direction
of each wins, and how configurations are ranked.

Free of TensorFlow, so that tables, reports and plans can rank without loading it. Every
ranking in the project (the best run, an ensemble's members, a halving rung's survivors, the
report's leaderboard) goes through :func:`rank_key`: best value first, a missing or NaN value
last, ties kept in the order given (``sorted`` is stable), so the earlier configuration wins.
Configurations are ranked by :func:`configuration_key`: failed ones (a loss that was not finite)
last, then those that trained the most epochs, then by their final value. A halving rung breaks
ties in the metric by :data:`HALVING_TIE_BREAKERS` (a model that predicts one class everywhere
scores exactly 0.5 balanced accuracy, so ties are common after one epoch).
"""
import math
from collections.abc import Sequence

SITTING, NOT_SITTING = 0, 1  # the model's class ids (labels in the store)
CLASS_NAMES = ("sitting", "not sitting")  # by class id
RECORDED_METRICS = ("loss", "accuracy", "balanced_accuracy")  # per epoch, for training and validation
METRIC_COLUMNS = [prefix + name for prefix in ("train_", "val_") for name in RECORDED_METRICS]
HALVING_TIE_BREAKERS = ("val_loss", "train_loss")  # lower first, then the earlier configuration
LARGER_IS_BETTER = ("r2", "acc", "accuracy", "balanced_accuracy", "auc", "precision", "recall",
                    "f1", "sensitivity", "specificity")


def is_larger_better(metric_name: str) -> bool:
    """True for metrics where larger is better (accuracies, AUC, ...), false for losses and errors.

    A ``train_`` or ``val_`` prefix is ignored.
    """
    return metric_name.lower().removeprefix("val_").removeprefix("train_") in LARGER_IS_BETTER


def rank_key(value, larger_is_better: bool) -> tuple[bool, float]:
    """Sort key putting the best value first and missing or NaN values last."""
    missing = not isinstance(value, (int, float)) or math.isnan(value)
    return missing, 0.0 if missing else (-value if larger_is_better else value)


def ranked(values: Sequence, larger_is_better: bool, tie_breakers: Sequence[Sequence] | None = None) -> list[int]:
    """Indices of ``values``, best first (NaN last); equal values by ``tie_breakers``, then the earlier.

    :param tie_breakers: per value, losses where lower is better (e.g. validation loss, then training
        loss), compared in turn when values are equal (NaN last).
    """
    def key(index: int) -> tuple:
        ties = tie_breakers[index] if tie_breakers is not None else ()
        return rank_key(values[index], larger_is_better), *(rank_key(loss, False) for loss in ties)

    return sorted(range(len(values)), key=key)


def best_index(values: Sequence, larger_is_better: bool) -> int:
    """Index of the best of ``values`` (NaN never, unless all are; ties to the earlier)."""
    return ranked(values, larger_is_better)[0]


def configuration_key(failed: bool, epochs: int, value, larger_is_better: bool) -> tuple[bool, int, bool, float]:
    """Sort key of a configuration: not failed first, then most epochs trained (successive halving
    stops some early), then best final ``value`` (NaN last)."""
    return failed, -epochs, *rank_key(value, larger_is_better)
