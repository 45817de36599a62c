"""Distributed model selection for DeepPostures' CHAP posture classifiers on Spark, with cerebro-dl's
model hopper parallelism.

The three stages, each a function that takes one settings object:

* :func:`chap_mop.data.prepare.prepare_store` (``chap-prep``): day files -> a Petastorm store;
* :func:`chap_mop.selection.stage.run_selection` (``chap-select``): the best configuration;
* :func:`chap_mop.predict.stage.predict` (``chap-predict``): predictions in DeepPostures' format.

Subpackages by stage and concern: ``data``, ``model``, ``selection``, ``predict``, ``output``,
``runtime``, ``cerebro_compat`` (every change to cerebro-dl), ``cli`` (the three programs) and
``dev`` (demo data and a local cluster, for developers). Importing any module changes nothing:
the stages set up what they need when they run.

cerebro-dl's own API (``SparkBackend``, ``SparkEstimator``, ``GridSearch``, ``RandomSearch``,
``TPESearch``, ``prepare_data`` on a DataFrame) works in this project's environment after
:func:`enable_cerebro`, for any model and dataset.
"""
__version__ = "1.0.0"


def enable_cerebro() -> None:
    """Make cerebro-dl 1.1.1 work on this stack, in this process and in the Spark Python workers of
    any SparkSession, before or after one starts (idempotent); call it before importing cerebro.

    TensorFlow is imported with Keras 2 as ``tf.keras``, pyarrow's removed pieces are bridged and
    cerebro is patched (:mod:`chap_mop.cerebro_compat`); the project's own reader serves only the
    stores that ``chap-prep`` writes, cerebro's readers every other.
    """
    from chap_mop import cerebro_compat
    cerebro_compat.enable_for_cerebro_api()
