"""Predicting windows with trained CHAP models, alone or as a majority-vote ensemble.

A model predicts whole sequences of ``T`` windows ((k, T, 100, 3, 1) in, (k, T, 2) out); each
window it covers gets the probability of sitting. Members of an ensemble may have different
``T``: each predicts with its own sequences, and a window's ensemble prediction is the majority
of the members that predicted it, ties going to the better-ranked member (:func:`vote`).

Classes are 0 = sitting, 1 = not sitting (:mod:`chap_mop.model.metrics`); ``-1`` marks a window
without a prediction.
"""
from pathlib import Path

import numpy as np

from chap_mop.runtime import runtime_env
from chap_mop.errors import InputError
from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW

NO_PREDICTION = -1
_LOADED: dict[str, object] = {}  # path -> model, per Python process (Spark reuses its Python workers)


def load_model(path: Path | str):
    """A CHAP model saved by this project (``best_model.h5`` or an ensemble member), uncompiled.

    :raises InputError: a missing file, or a model whose input is not (T, 100, 3, 1).
    """
    import tensorflow as tf
    from chap_mop.model.metrics import CUSTOM_OBJECTS

    if not Path(path).is_file():
        raise InputError(f"{path}: no such model file; expected a model that model_selection.py saved")
    try:
        model = tf.keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a Keras model this project can load ({error})") from error
    shape = tuple(model.input_shape[1:])
    if len(shape) != 4 or shape[1:] != (SAMPLES_PER_WINDOW, AXES, 1):
        raise InputError(f"{path}: model input is {shape}, expected (T, {SAMPLES_PER_WINDOW}, {AXES}, 1)")
    return model


def cached_model(path: Path | str):
    """*Executor side.* :func:`load_model` once per Python process and path (Spark reuses its workers).

    Before the first model, TensorFlow is imported quietly and, in a Spark task, its thread pools
    are sized to the task's cores (``spark.task.cpus``), as cerebro's workers are.
    """
    key = str(Path(path).resolve())
    if key not in _LOADED:
        runtime_env.import_tensorflow()
        runtime_env.limit_tf_threads_to_task_cpus()
        _LOADED[key] = load_model(key)
    return _LOADED[key]


def windows_per_sequence(model) -> int:
    """``T`` of a CHAP model, from its input shape."""
    return int(model.input_shape[1])


def predict_sequences(model, data: np.ndarray, starts: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probability of sitting for every window that a sequence starting at ``starts`` covers.

    Where sequences overlap (``--padding wrap``), the earlier sequence's prediction is kept.

    :param data: (N, 100, 3) float32 g, one stream of windows.
    :param starts: (k,) first row of each sequence of ``T`` windows, ascending.
    :return: (N,) float32; NaN for windows no sequence covers.
    """
    seq_len = windows_per_sequence(model)
    probability = np.full(len(data), np.nan, np.float32)
    offsets = np.arange(seq_len)
    for first in range(0, len(starts), batch_size):
        rows = np.asarray(starts[first:first + batch_size])[:, None] + offsets
        output = model.predict_on_batch(data[rows][..., None])
        sitting = np.asarray(output)[..., 0].ravel()
        flat = rows.ravel()
        flat_unique, first_seen = np.unique(flat, return_index=True)
        fresh = np.isnan(probability[flat_unique])
        probability[flat_unique[fresh]] = sitting[first_seen[fresh]]
    return probability


def classes(probability: np.ndarray) -> np.ndarray:
    """Class per window from the probability of sitting, as the model's argmax decides; -1 for NaN."""
    predicted = np.where(probability >= 0.5, 0, 1)
    return np.where(np.isnan(probability), NO_PREDICTION, predicted).astype(np.int8)


def vote(predictions: np.ndarray) -> np.ndarray:
    """Majority vote per window of the members' classes, members ranked best first.

    :param predictions: (members, N) classes 0/1, or -1 where a member has no prediction.
    :return: (N,) the class most members that predicted the window gave; on a tie, the class of the
        best-ranked member among them; -1 where no member predicted the window.
    """
    predictions = np.asarray(predictions)
    sitting, not_sitting = (predictions == 0).sum(axis=0), (predictions == 1).sum(axis=0)
    has = predictions != NO_PREDICTION
    best_ranked = predictions[has.argmax(axis=0), np.arange(predictions.shape[1])]
    majority = np.where(sitting > not_sitting, 0, np.where(not_sitting > sitting, 1, best_ranked))
    return np.where(has.any(axis=0), majority, NO_PREDICTION).astype(np.int8)
