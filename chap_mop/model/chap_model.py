"""The CHAP CNN-BiLSTM of DeepPostures (MSSE 2021), layer by layer as in its table.

Input: a sequence of ``T`` 10-second windows, (batch, T, 100, 3, 1) float32, g. Each window
goes through the same CNN; a bidirectional LSTM reads the whole sequence; a softmax gives
(batch, T, 2) probabilities of sitting (0) and not sitting (1) for every window.

=========================================  =======  ===========================
layer (TimeDistributed over the windows)   kernel   output per window, amp = 2
=========================================  =======  ===========================
Conv2D 32*amp, stride (2, 1), ReLU         (5, 3)   50 x 3 x 64
Conv2D 64*amp                              (5, 1)   25 x 3 x 128
Conv2D 128*amp                             (5, 1)   13 x 3 x 256
Conv2D 256*amp                             (5, 1)   7 x 3 x 512
Conv2D 256*amp                             (5, 1)   4 x 3 x 512
permute channels before rows, flatten               3072*amp
Dense 256*amp, linear (bottleneck)                  512
Bidirectional LSTM 128 + 128, all steps             256
Dense 2, softmax                                    2
=========================================  =======  ===========================

5,976,450 parameters at amp 2, 1,725,378 at amp 1.

Fine-tuning freezes layers by role (:mod:`chap_mop.model.roles`, :func:`set_trainable`).
"""
import tensorflow as tf

from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW
from chap_mop.model.roles import ROLES, TRAINABLE

INPUT_NAME = "data"  # cerebro feeds the Petastorm column of the same name into this input
CONV_LAYERS = [(32, (5, 3)), (64, (5, 1)), (128, (5, 1)), (256, (5, 1)), (256, (5, 1))]
LSTM_UNITS = 128
NUM_CLASSES = 2


def build_chap_model(seq_len: int, amp_factor: int, l2_reg: float) -> tf.keras.Model:
    """Build the CHAP model for sequences of ``seq_len`` windows.

    :param seq_len: Windows per sequence, ``T`` (6 per minute of window size).
    :param amp_factor: Width multiplier of the CNN and the bottleneck.
    :param l2_reg: L2 penalty on every kernel; given to the layers as they are built, so it
        enters the training loss.
    """
    layers = tf.keras.layers
    l2 = tf.keras.regularizers.l2(l2_reg)

    def per_window(layer):
        return layers.TimeDistributed(layer)

    inputs = tf.keras.Input((seq_len, SAMPLES_PER_WINDOW, AXES, 1), name=INPUT_NAME)
    x = inputs
    for filters, kernel in CONV_LAYERS:
        x = per_window(layers.Conv2D(filters * amp_factor, kernel, strides=(2, 1), padding="same",
                                     activation="relu", kernel_regularizer=l2))(x)
    x = per_window(layers.Permute((3, 1, 2)))(x)
    x = per_window(layers.Flatten())(x)
    # The bottleneck keeps the LSTM input at 256*amp instead of 3072*amp features per window.
    x = per_window(layers.Dense(256 * amp_factor, kernel_regularizer=l2))(x)
    x = layers.Bidirectional(layers.LSTM(LSTM_UNITS, return_sequences=True, kernel_regularizer=l2))(x)
    outputs = per_window(layers.Dense(NUM_CLASSES, activation="softmax", kernel_regularizer=l2))(x)
    return tf.keras.Model(inputs, outputs, name=f"chap_amp{amp_factor}_T{seq_len}")


def chap_layers(model: tf.keras.Model) -> dict[str, tf.keras.layers.Layer]:
    """The layers of a model from :func:`build_chap_model` by role (:data:`ROLES`); the Conv2D and
    Dense roles are the TimeDistributed wrappers, whose ``.layer`` holds the weights.

    :raises ValueError: ``model`` is not a CHAP model.
    """
    found = {"conv": [], "dense": [], "lstm": []}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, tf.keras.layers.TimeDistributed) else layer
        for kind, cls in (("conv", tf.keras.layers.Conv2D), ("dense", tf.keras.layers.Dense),
                          ("lstm", tf.keras.layers.Bidirectional)):
            if isinstance(inner, cls):
                found[kind].append(layer)
    if (len(found["conv"]), len(found["dense"]), len(found["lstm"])) != (len(CONV_LAYERS), 2, 1):
        raise ValueError(f"{model.name} is not a CHAP model from build_chap_model")
    return dict(zip(ROLES, [*found["conv"], found["dense"][0], found["lstm"][0], found["dense"][1]]))


def amp_factor_of(model: tf.keras.Model) -> int:
    """The amp factor a CHAP model was built with (its first convolution's filters / 32)."""
    return chap_layers(model)["conv1"].layer.filters // CONV_LAYERS[0][0]


def set_trainable(model: tf.keras.Model, trainable: str) -> None:
    """Freeze every layer that ``trainable`` (a key of :data:`chap_mop.model.roles.TRAINABLE`) does
    not train; before ``compile``, so that the optimizer never sees the frozen weights."""
    trained = TRAINABLE[trainable]
    for role, layer in chap_layers(model).items():
        layer.trainable = role in trained
