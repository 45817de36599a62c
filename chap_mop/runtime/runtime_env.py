"""Environment that the Spark driver and every Spark executor need, and how loud they are.

Kept free of heavy imports so that the scripts can apply it before TensorFlow, Petastorm or
cerebro are imported. Quiet by default: the console shows the project's own lines and real
errors; ``--verbose`` (:func:`configure`) brings back TensorFlow's, Keras', cerebro's and Spark's
own lines. The choice travels to executors in :func:`executor_env` (``CHAP_MOP_VERBOSE``), and
each executor applies it when it imports :mod:`chap_mop.cerebro_compat`.
"""
import argparse
import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

VERBOSE_ENV = "CHAP_MOP_VERBOSE"
QUIET_LOG4J = Path(__file__).resolve().parent / "log4j2-quiet.properties"

# Warnings that tell a user of this project nothing they can act on: (start of message, category).
QUIET_WARNINGS = (
    ("", FutureWarning),
    ("", DeprecationWarning),
    ("", UnicodeWarning),  # petastorm 0.13's Unischema compares bytes with str on import
    # cerebro saves each sub-epoch's checkpoint as HDF5 through Keras 2, which calls that legacy
    ("You are saving your model as an HDF5 file", UserWarning),
)
# Python loggers of libraries that report progress or hints at WARNING level.
QUIET_LOGGERS = ("tensorflow", "absl", "py4j", "h5py")


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def verbose_requested(argv: list[str]) -> bool:
    """Whether ``argv`` asks for ``--verbose``: known before the script's imports load TensorFlow."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_known_args(argv)[0].verbose


def configure(verbose: bool) -> None:
    """Choose how loud this run is (driver and executors), then :func:`apply` it."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    apply()


def executor_env() -> dict[str, str]:
    """Environment variables every process of a run needs, set before TensorFlow is imported."""
    verbose = is_verbose()
    return {
        # cerebro-dl 1.1.1 is written against Keras 2; TensorFlow >= 2.16 ships Keras 3 as
        # ``tf.keras`` unless this is set.
        "TF_USE_LEGACY_KERAS": "1",
        # Keras' HDF5 checkpoints are written by several worker processes on shared storage.
        "HDF5_USE_FILE_LOCKING": "FALSE",
        # 3 hides TensorFlow's C++ errors too, such as "failed call to cuInit" on a machine
        # without a GPU; real failures still raise in Python with their message.
        "TF_CPP_MIN_LOG_LEVEL": "0" if verbose else "3",
        # the same filters for Python processes that run before they import this package
        "PYTHONWARNINGS": "default" if verbose else ",".join(
            f"ignore:{message}:{category.__name__}" for message, category in QUIET_WARNINGS),
        VERBOSE_ENV: "1" if verbose else "0",
    }


def apply() -> None:
    """Apply :func:`executor_env`, warning filters and logger levels in this process."""
    os.environ.update(executor_env())
    if is_verbose():
        return
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def spark_submit_options() -> str:
    """Java options for the Spark driver: a log4j2 setup without Spark's start-up hints when quiet."""
    return "" if is_verbose() else f"-Dlog4j2.configurationFile=file:{QUIET_LOG4J}"


@contextlib.contextmanager
def quiet_native_stderr():
    """Hold back what native libraries write to stderr (file descriptor 2) while this block runs.

    TensorFlow's shared libraries log while they load, before any log level applies (absl's "All
    log messages before absl::InitializeLog()", oneDNN and CUDA notes; tensorflow/tensorflow#100442).
    The text is shown if the block raises, and always under ``--verbose``.
    """
    if is_verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow() -> None:
    """Import TensorFlow and Keras 2 (tf-keras) once, quietly unless verbose."""
    apply()
    with quiet_native_stderr():
        import tensorflow  # noqa: F401
        import tf_keras  # noqa: F401


def limit_tf_threads_to_task_cpus() -> None:
    """*Executor side*: size TensorFlow's thread pools to the cores of this Spark task (``spark.task.cpus``).

    TensorFlow sizes its pools to every core of the machine, so cerebro's workers sharing a machine
    (one Spark task each) oversubscribed it: with 2 workers on 2 cores, each ran 2 intra-op
    threads. Called by each worker's task, and before an executor's first prediction
    (:func:`chap_mop.predict.inference.cached_model`), before TensorFlow runs anything in its process.
    """
    import tensorflow as tf
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return
    cpus = context.cpus()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # this (reused) Python worker ran TensorFlow before: its pools are fixed
        if tf.config.threading.get_intra_op_parallelism_threads() != cpus:
            warnings.warn(f"TensorFlow's thread pools were already fixed in this Spark worker; a task of "
                          f"{cpus} cores may use more threads", RuntimeWarning)
