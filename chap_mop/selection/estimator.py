"""One configuration of the search as the cerebro estimator that model hopping trains."""
from chap_mop.data.windows import make_transformation_fn, sequence_length
from chap_mop.model import start_weights
from chap_mop.model.chap_model import build_chap_model, set_trainable
from chap_mop.model.roles import DEFAULT_TRAINABLE
from chap_mop.model.losses import training_loss
from chap_mop.model.metrics import COUNT_METRICS, CUSTOM_OBJECTS

FEATURE_COLUMNS = ["id", "time", "data", "non_wear", "sleeping"]  # all read; only "data" enters the model
LABEL_COLUMNS = ["label"]
SHUFFLE_SEQUENCES = 256  # per worker; about 13 MB at 7 minutes


def estimator_gen_fn(params: dict, batch_size: int, seed: int | None = None,
                     start: start_weights.StartWeights | None = None, class_weights: list[float] | None = None):
    """A cerebro SparkEstimator of the CHAP model for one configuration.

    :param params: ``lr`` (Adam learning rate), ``l2_reg`` (L2 penalty), ``win_size`` (minutes
        per sequence), ``amp_factor`` (CNN width multiplier); optionally ``trainable`` (which
        layers train, a key of :data:`chap_mop.model.chap_model.TRAINABLE`; default all).
    :param batch_size: Sequences per training step.
    :param seed: initial weights from this seed (None: random), the same for every run that gives it.
    :param start: initial weights from a saved model instead (``--init-from``).
    :param class_weights: loss weight of each class, sitting then not sitting (None: equal).
    """
    from cerebro.keras import SparkEstimator
    import tensorflow as tf

    if seed is not None:
        tf.keras.utils.set_random_seed(seed)

    seq_len = sequence_length(params["win_size"])
    model = build_chap_model(seq_len, params["amp_factor"], params["l2_reg"])
    if start is not None:
        start_weights.apply(model, start)
    set_trainable(model, params.get("trainable", DEFAULT_TRAINABLE))  # before cerebro compiles it
    return SparkEstimator(
        model=model,
        optimizer=tf.keras.optimizers.Adam(learning_rate=params["lr"]),
        # One softmax per window, integer labels: the loss that matches the model's head.
        loss=training_loss(class_weights),
        metrics=COUNT_METRICS,
        custom_objects=CUSTOM_OBJECTS,
        batch_size=batch_size,
        transformation_fn=make_transformation_fn(seq_len, shuffle_buffer=SHUFFLE_SEQUENCES))
