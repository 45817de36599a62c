"""Every runtime patch that cerebro-dl 1.1.1 needs on today's stack, in one place.

Import this module before anything imports cerebro or TensorFlow; importing it applies
all patches once. Each patch is a small function below, documented with the defect it
fixes, and has its own test in ``tests/test_cerebro_compat.py`` that fails without it.

The patches are written against cerebro-dl 1.1.1 exactly: on any other version the
import stops with a message instead of half-applying them.
"""
import importlib.metadata
import inspect
from collections.abc import Callable

from chap_mop import runtime_env

# Before TensorFlow is imported anywhere: cerebro needs Keras 2 (tf-keras) as tf.keras.
runtime_env.apply_to_driver()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CEREBRO_VERSION = "1.1.1"
DEFAULT_POLLING_PERIOD_S = 0.1
WORKER_SHUTDOWN_TIMEOUT_S = 60.0
LARGER_IS_BETTER = ("r2", "acc", "accuracy", "balanced_accuracy", "auc", "precision", "recall",
                    "f1", "sensitivity", "specificity")
TENSORBOARD_SUBDIR = "logs"

EpochListener = Callable[[list, dict], None]


def check_cerebro_version() -> None:
    """Refuse to patch a cerebro-dl other than the one these patches were written for."""
    installed = importlib.metadata.version("cerebro-dl")
    if installed != CEREBRO_VERSION:
        raise RuntimeError(
            f"cerebro-dl {installed} is installed, but chap_mop.cerebro_compat patches cerebro-dl "
            f"{CEREBRO_VERSION} only: install the pinned stack with `pip install -r requirements.txt`")


def patch_numpy_bool() -> None:
    """cerebro maps Spark BooleanType columns to ``np.bool``, an alias NumPy removed in 1.24."""
    if "bool" not in np.__dict__:
        np.bool = bool


def patch_optimizer_get_weights() -> None:
    """cerebro calls ``optimizer.get_weights()`` when it compiles a model; Keras 2.11+ optimizers
    lost that method (they kept ``set_weights`` and ``variables``).

    An optimizer that was never built has no state worth restoring (only its step counter),
    and ``set_weights`` refuses it, so it reports no weights.
    """
    optimizer_class = tf.keras.optimizers.Optimizer
    if hasattr(optimizer_class, "get_weights"):
        return

    def get_weights(self) -> list[np.ndarray]:
        if not getattr(self, "_built", False):
            return []
        return [variable.numpy() for variable in self.variables]

    optimizer_class.get_weights = get_weights


def is_larger_better(metric_name: str) -> bool:
    """True for metrics where larger is better (accuracies, AUC, ...), false for losses and errors.

    cerebro's own version knows only ``r2``, so selecting by accuracy picked the worst model.
    """
    return metric_name.lower() in LARGER_IS_BETTER


def patch_metric_direction() -> None:
    """Maximise accuracy-like evaluation metrics, and accept any recorded metric name.

    cerebro validates names against ``loss``/``acc``/``accuracy`` only; which metrics a run
    really records is checked by the caller before training starts (``model_selection.py``).
    """
    from cerebro.tune import base, grid, tpe
    for module in (base, grid, tpe):
        module.is_larger_better = is_larger_better
    base.is_valid_evaluation_metric = lambda name: isinstance(name, str) and bool(name)


def patch_polling_period() -> None:
    """Make the driver's polling period a ``SparkBackend(polling_period=...)`` setting.

    cerebro checks its workers every 2 s, which dominates short sub-epochs; the fast default
    here costs one cheap RPC per worker per period.
    """
    from cerebro.backend.spark.backend import SparkBackend
    original_init = SparkBackend.__init__
    if "polling_period" in inspect.signature(original_init).parameters:
        return

    def __init__(self, *args, polling_period: float = DEFAULT_POLLING_PERIOD_S, **kwargs):
        original_init(self, *args, **kwargs)
        self.settings.polling_period = polling_period

    SparkBackend.__init__ = __init__


def patch_tensorboard_logs() -> None:
    """Keep the TensorBoard logs (hparams and per-epoch scalars) of every run in the store.

    cerebro writes them to a temporary folder and syncs it to the store only after the folder
    was deleted, so nothing was kept. Here they are synced while the folder still exists, into
    ``<runs>/<run_id>/logs/``. Also calls the search's ``epoch_listeners`` after each epoch (cerebro
    has no hook between epochs): they see every run's metrics so far and may add derived ones.
    """
    from cerebro.tune import base

    def _write(store, run_id: str, write_fn) -> None:
        remote_store = store.to_remote(run_id, None)
        with remote_store.get_local_output_dir() as local_dir:
            with tf.summary.create_file_writer(f"{local_dir}/{TENSORBOARD_SUBDIR}").as_default():
                write_fn()
            remote_store.sync(local_dir)

    def _store_of(store, run_id: str):
        return store[run_id] if isinstance(store, dict) else store

    def log_hp_to_tensorboard(estimators, hparams, store, verbose):
        from tensorboard.plugins.hparams import api as hp
        for estimator, params in zip(estimators, hparams):
            run_id = estimator.getRunId()
            _write(_store_of(store, run_id), run_id, lambda: hp.hparams(params, trial_id=run_id))

    def log_epoch_metrics_to_tensorboard(estimators, estimator_results, store, verbose):
        for estimator in estimators:
            run_id, epoch = estimator.getRunId(), estimator.getEpochs()
            metrics = estimator_results[run_id]

            def write_scalars():
                for name, values in metrics.items():
                    tf.summary.scalar(name, values[epoch - 1], step=epoch)

            _write(_store_of(store, run_id), run_id, write_scalars)

    def _log_epoch_metrics(self, estimators, estimator_results):
        for listener in getattr(self, "epoch_listeners", []):
            listener(estimators, estimator_results)
        log_epoch_metrics_to_tensorboard(estimators, estimator_results, self.store, self.verbose)

    base.log_hp_to_tensorboard = log_hp_to_tensorboard
    base.log_epoch_metrics_to_tensorboard = log_epoch_metrics_to_tensorboard
    base.ModelSelection._log_epoch_metrics_to_tensorboard = _log_epoch_metrics


def patch_run_hyperparameters() -> None:
    """Map each run id to the hyper-parameters that produced it.

    cerebro's result lists ``model_N_<time>`` runs without saying which configuration each was.
    After this patch every search has ``run_hyperparameters`` ({run id: params}), filled as it
    builds its estimators, and ``fit``'s result carries the same mapping.
    """
    from cerebro.tune.base import ModelSelection
    original_wrapper = ModelSelection._estimator_gen_fn_wrapper
    if getattr(original_wrapper, "_chap_mop_patched", False):
        return

    def _estimator_gen_fn_wrapper(self, params):
        estimator = original_wrapper(self, params)
        if not hasattr(self, "run_hyperparameters"):
            self.run_hyperparameters = {}
        self.run_hyperparameters[estimator.getRunId()] = dict(params)
        return estimator

    _estimator_gen_fn_wrapper._chap_mop_patched = True
    ModelSelection._estimator_gen_fn_wrapper = _estimator_gen_fn_wrapper

    for method_name in ("fit", "fit_on_prepared_data"):
        setattr(ModelSelection, method_name, _attach_run_hyperparameters(getattr(ModelSelection, method_name)))


def _attach_run_hyperparameters(method):
    def wrapper(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        result.run_hyperparameters = dict(getattr(self, "run_hyperparameters", {}))
        return result

    wrapper.__doc__ = method.__doc__
    return wrapper


def patch_clean_shutdown() -> None:
    """Wait, when workers are torn down, for the Spark job that hosts them to end.

    cerebro runs its workers as one long barrier Spark job in a thread it does not keep, so a
    caller that stops Spark right after ``fit`` cancels that job and gets a Py4J stack trace.
    """
    from cerebro.backend.spark import backend as spark_backend
    if getattr(spark_backend._make_spark_thread, "_chap_mop_patched", False):
        return
    original_make_thread = spark_backend._make_spark_thread
    original_teardown = spark_backend.SparkBackend.teardown_workers

    def _make_spark_thread(*args, **kwargs):
        thread = original_make_thread(*args, **kwargs)
        _WORKER_JOB_THREADS.append(thread)
        return thread

    def teardown_workers(self):
        original_teardown(self)
        while _WORKER_JOB_THREADS:
            _WORKER_JOB_THREADS.pop().join(timeout=WORKER_SHUTDOWN_TIMEOUT_S)

    _make_spark_thread._chap_mop_patched = True
    spark_backend._make_spark_thread = _make_spark_thread
    spark_backend.SparkBackend.teardown_workers = teardown_workers


_WORKER_JOB_THREADS: list = []


def apply_patches() -> None:
    """Check the cerebro-dl version and apply every patch (idempotent)."""
    check_cerebro_version()
    patch_numpy_bool()
    patch_optimizer_get_weights()
    patch_metric_direction()
    patch_polling_period()
    patch_tensorboard_logs()
    patch_run_hyperparameters()
    patch_clean_shutdown()


apply_patches()
