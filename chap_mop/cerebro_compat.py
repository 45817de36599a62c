"""Every runtime patch that cerebro-dl 1.1.1 needs on today's stack, in one place.

Import this module before anything imports cerebro or TensorFlow; importing it applies
all patches once. Each patch is a small function below, documented with the defect it
fixes, and has its own test in ``tests/test_cerebro_compat.py`` that fails without it.

The patches are written against cerebro-dl 1.1.1 exactly: on any other version the
import stops with a message instead of half-applying them.
"""
import functools
import importlib.metadata
import inspect
import os
import struct
import threading
from dataclasses import dataclass
from typing import Any

from chap_mop import runtime_env

# Before TensorFlow is imported anywhere: cerebro needs Keras 2 (tf-keras) as tf.keras.
runtime_env.apply_to_driver()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from py4j.protocol import Py4JError, Py4JJavaError  # noqa: E402

CEREBRO_VERSION = "1.1.1"
DEFAULT_POLLING_PERIOD_S = 0.1
WORKER_SHUTDOWN_TIMEOUT_S = 60.0
# How long a failed call to a worker waits for Spark to say why (an executor's loss is noticed at
# once; a host that stopped answering only after Spark's network timeout, 120 s by default).
SPARK_FAILURE_WAIT_S = 30.0
# What a call to a worker's task service raises when the worker is gone: refused, reset or timed
# out connections (OSError), or a reply cut short (EOFError, struct.error while unpacking it).
RPC_ERRORS = (OSError, EOFError, struct.error)
LARGER_IS_BETTER = ("r2", "acc", "accuracy", "balanced_accuracy", "auc", "precision", "recall",
                    "f1", "sensitivity", "specificity")
TENSORBOARD_SUBDIR = "logs"


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
            if verbose >= 1:
                print(f"CEREBRO => Model: {run_id}, " + ", ".join(f"{k}: {v}" for k, v in params.items()))

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
        _add_negated_metric(self.evaluation_metric, estimator_results)
        log_epoch_metrics_to_tensorboard(estimators, estimator_results, self.store, self.verbose)

    base.log_hp_to_tensorboard = log_hp_to_tensorboard
    base.log_epoch_metrics_to_tensorboard = log_epoch_metrics_to_tensorboard
    base.ModelSelection._log_epoch_metrics_to_tensorboard = _log_epoch_metrics


def patch_random_search_dimensions() -> None:
    """Let RandomSearch draw its dimensions independently.

    Every cerebro distribution seeds its own ``RandomState(2020)``, so dimensions with as many
    options move in lockstep (always the 1st lr with the 1st l2_reg, ...). Here all dimensions of
    one search share a single seeded stream: still reproducible, no longer correlated.
    """
    from cerebro.backend import constants
    from cerebro.tune.grid import RandomSearch
    original = RandomSearch._generate_all_param_maps
    if getattr(original, "_chap_mop_patched", False):
        return

    def _generate_all_param_maps(self):
        shared = np.random.RandomState(constants.RANDOM_SEED)
        for dimension in self.search_space.values():
            dimension.rand = shared
        return original(self)

    _generate_all_param_maps._chap_mop_patched = True
    RandomSearch._generate_all_param_maps = _generate_all_param_maps


NEGATED_PREFIX = "negated_"


def patch_tpe_direction() -> None:
    """Let TPESearch optimise metrics where larger is better.

    hyperopt minimises, so cerebro's TPESearch refuses accuracy-like metrics. Here it minimises
    ``negated_<metric>``, which the epoch hook of :func:`patch_tensorboard_logs` adds to every
    run's results after the epoch listeners have run.
    """
    from cerebro.tune.tpe import TPESearch
    original_init = TPESearch.__init__
    if getattr(original_init, "_chap_mop_patched", False):
        return

    def __init__(self, *args, evaluation_metric: str = "loss", **kwargs):
        larger = is_larger_better(evaluation_metric)
        original_init(self, *args, evaluation_metric="loss" if larger else evaluation_metric, **kwargs)
        if larger:
            self.evaluation_metric = NEGATED_PREFIX + evaluation_metric

    __init__._chap_mop_patched = True
    TPESearch.__init__ = __init__


def _add_negated_metric(evaluation_metric: str, estimator_results: dict) -> None:
    if not evaluation_metric.startswith(NEGATED_PREFIX):
        return
    source = "val_" + evaluation_metric[len(NEGATED_PREFIX):]
    for results in estimator_results.values():
        if source in results:
            results["val_" + evaluation_metric] = [-value for value in results[source]]


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


class WorkerLostError(RuntimeError):
    """cerebro's workers are gone: a worker's task, executor or host was lost mid-run, or the Spark
    job that hosts the workers failed. The message says which and quotes Spark's reason."""


@dataclass
class WorkerJob:
    """The barrier Spark job that hosts cerebro's workers, one Spark task per worker.

    :param failure: Spark's reason, once the job failed or was cancelled.
    :param lost: set when a worker stopped answering cerebro's driver.
    """
    spark_context: Any
    group: str
    thread: threading.Thread | None = None
    failure: str | None = None
    lost: bool = False

    def wait_for_failure(self, timeout_s: float) -> str | None:
        """Spark's reason for the job's failure, waiting up to ``timeout_s`` seconds for it."""
        self.thread.join(timeout_s)
        return self.failure

    def end(self, cancel: bool, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` seconds for the job to end; ``cancel`` it first if it still runs."""
        if cancel and self.thread.is_alive():
            self.spark_context.cancelJobGroup(self.group)
        self.thread.join(timeout_s)


_WORKER_JOBS: dict[str, WorkerJob] = {}  # by Spark job group; one per initialised SparkBackend


def spark_failure_reason(error: Exception) -> str:
    """What Spark says failed, in one line: its message without Java or Python stack frames."""
    message = str(error.java_exception.getMessage()) if isinstance(error, Py4JJavaError) else str(error)
    lines = []
    for line in message.splitlines():
        if line.startswith("Driver stacktrace"):
            break
        if line.strip() and not line[0].isspace():
            lines.append(line.strip())
    return " ".join(lines)


def patch_clean_shutdown() -> None:
    """Keep the Spark job that hosts cerebro's workers, and end it cleanly at teardown.

    cerebro runs its workers as one long barrier Spark job in a thread it does not keep, so a
    caller that stops Spark right after ``fit`` cancels that job and gets a Py4J stack trace, and a
    job that fails prints a Java stack trace from that thread. Here the job is a :class:`WorkerJob`
    whose (daemon) thread records Spark's reason instead, and still tells cerebro's driver service
    as cerebro does; teardown waits for the job to end, and cancels it first when its workers were
    lost, instead of telling dead workers to finish. Its tasks run cerebro's worker through
    :func:`_run_worker_task`, so that executors apply these patches too.
    """
    from cerebro.backend.spark import backend as spark_backend
    if getattr(spark_backend._make_spark_thread, "_chap_mop_patched", False):
        return
    original_teardown = spark_backend.SparkBackend.teardown_workers

    def _make_spark_thread(spark_context, spark_job_group, driver, result_queue, settings):
        job = WorkerJob(spark_context, spark_job_group)
        mapper = functools.partial(_run_worker_task, spark_backend._make_mapper(driver.addresses(), settings))

        def run_spark():
            completed = False
            try:
                spark_context.setJobGroup(spark_job_group, "Cerebro Spark Run", interruptOnCancel=True)
                tasks = spark_context.range(0, end=settings.num_workers, numSlices=settings.num_workers)
                result_queue.put(tasks.barrier().mapPartitions(mapper).collect())
                completed = True
            except Py4JError as error:  # Spark failed or cancelled the job; reported by whoever waits on it
                job.failure = spark_failure_reason(error)
            finally:
                if not completed:
                    driver.notify_spark_job_failed()  # ends the driver's wait for workers to register

        # A daemon thread: a job that outlives teardown's wait must not keep the process alive.
        job.thread = threading.Thread(target=run_spark, name=f"cerebro workers {spark_job_group}", daemon=True)
        _WORKER_JOBS[spark_job_group] = job
        job.thread.start()
        return job.thread

    def teardown_workers(self):
        job = _WORKER_JOBS.pop(self.spark_job_group, None)
        try:
            if job is None or not (job.lost or job.failure):
                original_teardown(self)
        finally:
            self.workers_initialized = self.data_loaders_initialized = False
            if job is not None:
                job.end(cancel=job.lost, timeout_s=WORKER_SHUTDOWN_TIMEOUT_S)

    _make_spark_thread._chap_mop_patched = True
    spark_backend._make_spark_thread = _make_spark_thread
    spark_backend.SparkBackend.teardown_workers = teardown_workers


def _run_worker_task(mapper, partition):
    """*Executor side*: run cerebro's worker task ``mapper`` in a Python that has imported this module.

    cloudpickle ships this function by reference, so unpickling it imports this module on the
    executor and applies the patches there too (e.g. :func:`patch_service_bind_address`).
    """
    return mapper(partition)


def patch_service_bind_address() -> None:
    """Bind cerebro's RPC services to ``SPARK_LOCAL_IP`` when it is set, as Spark binds its own.

    cerebro's driver service and each worker's task service listen on every interface of their
    host, whatever address Spark was pinned to (in the local test cluster: 127.0.0.1 only). The
    task services run on executors, which apply this patch through :func:`_run_worker_task`.
    """
    from cerebro.backend.spark import service_driver, service_task
    original = service_task.find_port
    if getattr(original, "_chap_mop_patched", False):
        return

    def find_port(server_factory):
        host = os.environ.get("SPARK_LOCAL_IP", "")  # "": every interface, cerebro's choice
        return original(lambda address: server_factory((host, address[1])))

    find_port._chap_mop_patched = True
    service_driver.find_port = service_task.find_port = find_port


def patch_worker_loss() -> None:
    """End the run with :class:`WorkerLostError`, within seconds, when a worker is lost.

    cerebro's driver polls each worker's task service over TCP. When a worker's executor or host
    dies, that call raised a bare ``ConnectionRefusedError`` from deep in the polling loop, the
    teardown that followed raised another while telling the dead worker to finish, and a Spark job
    that failed on its own went unnoticed until the next registration. After this patch, a call
    to a worker that fails, or any call once the workers' Spark job has failed, raises
    ``WorkerLostError`` naming the worker and quoting Spark's reason (waited for up to
    ``SPARK_FAILURE_WAIT_S``); teardown then cancels the job (see :func:`patch_clean_shutdown`).
    A job that fails before its workers register raises it too, instead of cerebro's "see the error
    above" with nothing above.
    """
    from cerebro.backend.spark import backend as spark_backend
    from cerebro.backend.spark.service_task import SparkTaskClient
    if getattr(SparkTaskClient._send, "_chap_mop_patched", False):
        return
    original_send = SparkTaskClient._send
    original_initialize = spark_backend.SparkBackend.initialize_workers

    def _send(self, req):
        job = getattr(self, "worker_job", None)
        if job is not None and job.failure:
            raise WorkerLostError(f"the Spark job hosting cerebro's workers failed: {job.failure}")
        try:
            return original_send(self, req)
        except RPC_ERRORS as error:
            message = (f"a Spark worker or executor was lost: cerebro's {self._service_name} stopped answering "
                       f"({str(error) or type(error).__name__})")
            if job is not None:
                job.lost = True
                failure = job.wait_for_failure(SPARK_FAILURE_WAIT_S)
                message += f"; Spark: {failure}" if failure else \
                    f"; Spark reported no failure within {SPARK_FAILURE_WAIT_S:.0f} s"
            raise WorkerLostError(message) from error

    def initialize_workers(self):
        known = set(_WORKER_JOBS)
        try:
            original_initialize(self)
        except Exception as error:  # cerebro raises a bare Exception when its job failed or timed out
            started = [_WORKER_JOBS.pop(group) for group in set(_WORKER_JOBS) - known]
            failure = next((job.failure for job in started if job.failure), None)  # before cancelling
            for job in started:
                job.end(cancel=True, timeout_s=WORKER_SHUTDOWN_TIMEOUT_S)
            if failure is None:
                raise
            raise WorkerLostError(f"the Spark job hosting cerebro's {self.settings.num_workers} workers failed "
                                  f"before they all started: {failure}") from error
        for client in self.task_clients:
            client.worker_job = _WORKER_JOBS[self.spark_job_group]

    _send._chap_mop_patched = True
    SparkTaskClient._send = _send
    spark_backend.SparkBackend.initialize_workers = initialize_workers


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
    patch_worker_loss()
    patch_service_bind_address()
    patch_random_search_dimensions()
    patch_tpe_direction()


apply_patches()
