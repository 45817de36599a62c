"""Per-window metrics that stay exact when cerebro averages them over workers.

cerebro combines a model's sub-epoch results from its workers by a step-weighted mean. A
recall or an accuracy averaged that way is only approximately the recall of the whole epoch.
A count per batch is different: ``sum(count_w / steps_w * steps_w) / sum(steps_w)`` is the
epoch's total count divided by its number of batches. So the model records four counts per
batch (windows of each class, and those of them predicted right), and :func:`add_derived_metrics`
turns the epoch averages into exact accuracy and balanced accuracy (mean of per-class recall).

Labels are 0 = sitting, 1 = not sitting; every window of a sequence is labelled (see
:mod:`chap_mop.data.windows`), so no window is masked.
"""
import numpy as np
import tensorflow as tf

from chap_mop.model.losses import WeightedSparseCategoricalCrossentropy
from chap_mop.model.ranking import NOT_SITTING, SITTING


def _count(y_true: tf.Tensor, y_pred: tf.Tensor, true_class: int, hits_only: bool) -> tf.Tensor:
    """Windows of ``true_class`` in a batch (only those predicted right when ``hits_only``).

    :param y_true: (batch, T) class ids.  :param y_pred: (batch, T, 2) class probabilities.
    """
    is_class = tf.equal(tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int64), true_class)
    if hits_only:
        is_class &= tf.equal(tf.argmax(y_pred, axis=-1), true_class)
    return tf.reduce_sum(tf.cast(is_class, tf.float32))


def sitting_windows(y_true, y_pred):
    return _count(y_true, y_pred, SITTING, hits_only=False)


def sitting_hits(y_true, y_pred):
    return _count(y_true, y_pred, SITTING, hits_only=True)


def not_sitting_windows(y_true, y_pred):
    return _count(y_true, y_pred, NOT_SITTING, hits_only=False)


def not_sitting_hits(y_true, y_pred):
    return _count(y_true, y_pred, NOT_SITTING, hits_only=True)


COUNT_METRICS = [sitting_windows, sitting_hits, not_sitting_windows, not_sitting_hits]
# What a saved model needs to load with its compile settings: the metrics, and the weighted loss.
CUSTOM_OBJECTS = {**{fn.__name__: fn for fn in COUNT_METRICS},
                  WeightedSparseCategoricalCrossentropy.__name__: WeightedSparseCategoricalCrossentropy}
DERIVED_METRICS = ("accuracy", "balanced_accuracy")


def accuracy_from_counts(counts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, balanced accuracy) from per-batch averages of the four counts, element-wise.

    A class with no windows has no recall; balanced accuracy is then the other class's recall.
    """
    windows = np.stack([counts["sitting_windows"], counts["not_sitting_windows"]])
    hits = np.stack([counts["sitting_hits"], counts["not_sitting_hits"]])
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = hits.sum(axis=0) / windows.sum(axis=0)
        recall = np.where(windows > 0, hits / windows, np.nan)
    present = np.isfinite(recall).sum(axis=0)
    balanced = np.where(present > 0, np.nansum(recall, axis=0) / np.maximum(present, 1), np.nan)
    return accuracy, balanced


def add_derived_metrics(results: dict[str, list[float]]) -> None:
    """Add ``{train,val}_accuracy`` and ``{train,val}_balanced_accuracy`` to one run's results.

    :param results: cerebro's per-run history, e.g. ``{"train_sitting_hits": [per epoch], ...}``.
    """
    for prefix in ("train_", "val_"):
        names = [prefix + fn.__name__ for fn in COUNT_METRICS]
        if not all(name in results for name in names):
            continue
        epochs = min(len(results[name]) for name in names)
        counts = {fn.__name__: np.asarray(results[prefix + fn.__name__][:epochs], dtype=float)
                  for fn in COUNT_METRICS}
        accuracy, balanced = accuracy_from_counts(counts)
        results[prefix + "accuracy"] = accuracy.tolist()
        results[prefix + "balanced_accuracy"] = balanced.tolist()
