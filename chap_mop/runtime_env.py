"""Environment that the Spark driver and every Spark executor need.

Kept free of heavy imports so that both scripts can apply it before TensorFlow,
Petastorm or cerebro are imported.
"""
import os
import warnings

# cerebro-dl 1.1.1 is written against Keras 2; TensorFlow >= 2.16 ships Keras 3 as
# ``tf.keras`` unless this is set before TensorFlow is imported.
EXECUTOR_ENV: dict[str, str] = {
    "TF_USE_LEGACY_KERAS": "1",
    # Keras' HDF5 checkpoints are written by several worker processes on shared storage.
    "HDF5_USE_FILE_LOCKING": "FALSE",
    # Quieter TensorFlow start-up: progress lines matter more than its C++ banner.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # petastorm 0.13 and cerebro use pyarrow's legacy dataset API; pyarrow 14 warns on every call.
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def apply_to_driver() -> None:
    """Set :data:`EXECUTOR_ENV` in this process (the driver) before TensorFlow loads."""
    for name, value in EXECUTOR_ENV.items():
        os.environ[name] = value
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
