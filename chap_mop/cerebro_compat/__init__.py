"""Every change this project makes to cerebro-dl 1.1.1, in one package, a module per concern.

Import it before anything imports cerebro or TensorFlow; importing it sets the environment
cerebro needs (Keras 2 as ``tf.keras``), imports TensorFlow quietly (:mod:`chap_mop.runtime.runtime_env`),
bridges the pyarrow and NumPy pieces that cerebro and Petastorm call and today's releases removed
(:mod:`chap_mop.data.legacy_arrow`, outside this package because prep needs it without TensorFlow) and
applies every patch once:

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

The patches are written against cerebro-dl 1.1.1 exactly: on any other version the import stops
with a message instead of half-applying them.
"""
import importlib.metadata

from chap_mop.data import legacy_arrow
from chap_mop.runtime import runtime_env

# Before anything else imports TensorFlow: cerebro needs Keras 2 (tf-keras) as tf.keras, and
# TensorFlow's libraries log while they load.
runtime_env.import_tensorflow()
# Before anything imports cerebro or Petastorm: the pyarrow and NumPy pieces they call and today's lack.
legacy_arrow.install()

from chap_mop.cerebro_compat import data_path, faults, selection, stack  # noqa: E402
from chap_mop.cerebro_compat.faults import _WORKER_JOBS, WorkerLostError  # noqa: E402,F401
from chap_mop.cerebro_compat.selection import TENSORBOARD_SUBDIR  # noqa: E402,F401
from chap_mop.cerebro_compat.stack import DEFAULT_POLLING_PERIOD_S  # noqa: E402,F401

CEREBRO_VERSION = "1.1.1"


def check_cerebro_version() -> None:
    """Refuse to patch a cerebro-dl other than the one these patches were written for."""
    installed = importlib.metadata.version("cerebro-dl")
    if installed != CEREBRO_VERSION:
        raise RuntimeError(
            f"cerebro-dl {installed} is installed, but chap_mop.cerebro_compat patches cerebro-dl "
            f"{CEREBRO_VERSION} only: install the pinned stack with `pip install -r requirements.txt`")


def apply_patches() -> None:
    """Check the cerebro-dl version and apply every patch (idempotent)."""
    check_cerebro_version()
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


apply_patches()
