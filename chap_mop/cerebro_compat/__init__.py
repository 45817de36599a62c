"""Every change this project makes to cerebro-dl 1.1.1, in one package, a module per concern.

Importing it changes nothing. :func:`enable` does it all, once, before cerebro is imported: it
imports TensorFlow quietly with Keras 2 as ``tf.keras`` (:mod:`chap_mop.runtime.runtime_env`),
bridges the pyarrow and NumPy pieces that cerebro and Petastorm call and today's releases removed
(:mod:`chap_mop.data.legacy_arrow`, outside this package because prep needs it without TensorFlow)
and applies every patch:

* :mod:`.stack`       fixes for today's TensorFlow and Keras 2, the polling period, bind address;
* :mod:`.selection`   what a search means: metric direction, random draws, TPE, run ids, epoch hooks;
* :mod:`.faults`      a lost worker ends the run with one clear error; clean teardown;
* :mod:`.data_path`   workers read their shard with :mod:`chap_mop.data.shard_reader`, not Petastorm;
* :mod:`.reporting`   the driver hears of every finished sub-epoch (a SparkBackend subclass);
* :mod:`.hopping`     an epoch's training and validation in one schedule, on models that stay on
  their workers between hops (a subclass of that; the worker's side is :mod:`chap_mop.selection.hop`);
* :mod:`.resumable`   grid, random and TPE searches that save every epoch and resume (subclasses,
  not patches);
* :mod:`.halving_search` successive halving and Hyperband on model hopping (a subclass of those).

The stages call :func:`enable` on the driver; cerebro's worker tasks call it on each executor before
they unpickle cerebro's code (:func:`chap_mop.cerebro_compat.faults.patch_clean_shutdown`). A user of
cerebro-dl's own API (``SparkBackend``, ``GridSearch`` on a DataFrame, ...) calls
:func:`chap_mop.enable_cerebro`, which is :func:`enable_for_cerebro_api`: :func:`enable`, plus what
the Python workers of a SparkSession the user starts need. Every patch keeps cerebro's behaviour on
stores that are not the project's (:mod:`.data_path` chooses by the store's schema). Import
the submodules only after it. The patches are written against cerebro-dl 1.1.1 exactly: on any
other version :func:`enable` stops with a message instead of half-applying them.
"""
import importlib.metadata
import os
import sys

from chap_mop.data import bridge_on_import, legacy_arrow
from chap_mop.runtime import runtime_env

CEREBRO_VERSION = "1.1.1"


def check_cerebro_version() -> None:
    """Refuse to patch a cerebro-dl other than the one these patches were written for."""
    installed = importlib.metadata.version("cerebro-dl")
    if installed != CEREBRO_VERSION:
        raise RuntimeError(
            f"cerebro-dl {installed} is installed, but chap_mop.cerebro_compat patches cerebro-dl "
            f"{CEREBRO_VERSION} only: install the pinned stack with `pip install -r requirements.txt`")


def enable() -> None:
    """Make cerebro-dl work on this stack in this process (idempotent); call before importing cerebro.

    TensorFlow is imported first, quietly and with Keras 2 (tf-keras) as ``tf.keras``, because cerebro
    needs Keras 2 and TensorFlow's libraries log while they load; then the pyarrow bridge, because
    cerebro imports Petastorm; then every patch.
    """
    runtime_env.import_tensorflow()
    legacy_arrow.install()
    apply_patches()


def apply_patches() -> None:
    """Check the cerebro-dl version and apply every patch (idempotent); :func:`enable` calls it."""
    check_cerebro_version()
    from chap_mop.cerebro_compat import data_path, faults, selection, stack
    stack.patch_optimizer_get_weights()
    stack.patch_polling_period()
    stack.patch_service_bind_address()
    selection.patch_metric_direction()
    selection.patch_tensorboard_logs()
    selection.patch_run_hyperparameters()
    selection.patch_random_search_dimensions()
    selection.patch_tpe_direction()
    faults.patch_clean_shutdown()
    faults.patch_worker_loss()
    data_path.patch_data_path()


def enable_for_cerebro_api() -> None:
    """:func:`enable`, and Spark Python workers that can run cerebro's own code, whoever starts Spark.

    The workers must run this environment's Python, where the package's ``.pth`` hook
    (:mod:`chap_mop.data.bridge_on_import`) bridges pyarrow as they import Petastorm:
    ``PYSPARK_PYTHON`` is set to this interpreter unless it is set already (Spark's default,
    ``python3`` on the ``PATH``, is often another environment's). They need Keras 2 as ``tf.keras``:
    :func:`chap_mop.runtime.runtime_env.executor_env` goes into this process's environment, which a
    SparkSession started later passes on to local workers, and into the environment of a
    SparkContext already running, which Spark sends with every Python function it runs.
    """
    bridge_on_import.register()  # this process, also when the package runs from a source tree
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    enable()
    from pyspark import SparkContext
    context = SparkContext._active_spark_context
    if context is not None:
        context.environment.update(runtime_env.executor_env())
