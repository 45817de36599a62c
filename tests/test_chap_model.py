"""The CHAP model has the paper's parameter counts, a per-window softmax, and an L2 that counts."""
import numpy as np
import pytest

from chap_mop import cerebro_compat
cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
from chap_mop.model.chap_model import build_chap_model
from chap_mop.model.metrics import accuracy_from_counts

import tensorflow as tf  # noqa: E402


@pytest.mark.parametrize("amp_factor, params", [(2, 5_976_450), (1, 1_725_378)])
def test_parameter_counts_of_the_paper(amp_factor, params):
    assert build_chap_model(42, amp_factor, 1e-4).count_params() == params


def test_bottleneck_and_one_softmax_per_window():
    model = build_chap_model(54, 1, 1e-4)
    dense_widths = [layer.layer.units for layer in model.layers
                    if isinstance(layer, tf.keras.layers.TimeDistributed)
                    and isinstance(layer.layer, tf.keras.layers.Dense)]
    assert dense_widths == [256, 2]
    probabilities = model.predict(np.zeros((2, 54, 100, 3, 1), np.float32), verbose=0)
    assert probabilities.shape == (2, 54, 2)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


def test_l2_enters_the_loss():
    x = np.random.default_rng(0).normal(size=(2, 6, 100, 3, 1)).astype(np.float32)
    y = np.zeros((2, 6), np.int32)
    losses = {}
    for l2 in (0.0, 1e-2):
        tf.keras.utils.set_random_seed(1)
        model = build_chap_model(6, 1, l2)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        losses[l2] = model.evaluate(x, y, verbose=0)
    assert losses[1e-2] > losses[0.0] + 0.1


def test_balanced_accuracy_from_counts():
    counts = {"sitting_windows": np.array([30.0, 10.0]), "sitting_hits": np.array([15.0, 10.0]),
              "not_sitting_windows": np.array([10.0, 0.0]), "not_sitting_hits": np.array([10.0, 0.0])}
    accuracy, balanced = accuracy_from_counts(counts)
    np.testing.assert_allclose(accuracy, [25 / 40, 1.0])
    np.testing.assert_allclose(balanced, [(0.5 + 1.0) / 2, 1.0])
