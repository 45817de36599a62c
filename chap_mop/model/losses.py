"""The training loss: cross-entropy per window, optionally weighted by the window's true class.

DeepPostures' ``train_model.py --class-weights '[w_sitting, w_not_sitting]'`` multiplies each
window's cross-entropy by the weight of its true class; ``--class-weights`` here does the same
(and Keras then averages over the batch's windows, where DeepPostures summed). Without class
weights the loss is Keras' own ``sparse_categorical_crossentropy``, as it always was.
"""
import tensorflow as tf


UNWEIGHTED = "sparse_categorical_crossentropy"


class WeightedSparseCategoricalCrossentropy(tf.keras.losses.Loss):
    """Cross-entropy of (batch, T, 2) probabilities against (batch, T) class ids, each window's
    multiplied by ``class_weights[its class]``; saved with the model (``get_config``)."""

    def __init__(self, class_weights=(1.0, 1.0), name: str = "weighted_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(weight) for weight in class_weights]

    def call(self, y_true, y_pred):
        classes = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
        losses = tf.keras.losses.sparse_categorical_crossentropy(classes, y_pred)
        return losses * tf.gather(tf.constant(self.class_weights, losses.dtype), classes)

    def get_config(self) -> dict:
        return {**super().get_config(), "class_weights": self.class_weights}


def training_loss(class_weights: list[float] | None):
    """The loss to compile with: Keras' own without class weights, else the weighted one."""
    return UNWEIGHTED if class_weights is None else WeightedSparseCategoricalCrossentropy(class_weights)
