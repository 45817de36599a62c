"""Fault handling: a lost worker ends the run within seconds with one clear error, and the Spark job
that hosts cerebro's workers ends cleanly at teardown.

Each patch is a function documented with the defect it fixes and tested in
``tests/test_cerebro_compat.py``; :func:`chap_mop.cerebro_compat.apply_patches` applies them.
"""
import functools
import pickle
import struct
import threading
from dataclasses import dataclass
from typing import Any

from py4j.protocol import Py4JError, Py4JJavaError

from chap_mop.errors import WorkerLostError
from chap_mop.runtime.runtime_env import limit_tf_threads_to_task_cpus

WORKER_SHUTDOWN_TIMEOUT_S = 60.0
# How long a failed call to a worker waits for Spark to say why (an executor's loss is noticed at
# once; a host that stopped answering only after Spark's network timeout, 120 s by default).
SPARK_FAILURE_WAIT_S = 30.0
# What a call to a worker's task service raises when the worker is gone: refused, reset or timed
# out connections (OSError), or a reply cut short (EOFError, struct.error while unpacking it).
RPC_ERRORS = (OSError, EOFError, struct.error)


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
    lost, instead of telling dead workers to finish; a second teardown (cerebro's ``fit`` tears down
    again on its way out) does nothing, instead of calling workers that have finished. Its tasks run
    cerebro's worker through :func:`_run_worker_task`, so that executors apply these patches before
    they unpickle cerebro's code.
    """
    from cerebro.backend.spark import backend as spark_backend
    from pyspark import cloudpickle
    if getattr(spark_backend._make_spark_thread, "_chap_mop_patched", False):
        return
    original_teardown = spark_backend.SparkBackend.teardown_workers

    def _make_spark_thread(spark_context, spark_job_group, driver, result_queue, settings):
        job = WorkerJob(spark_context, spark_job_group)
        mapper = functools.partial(_run_worker_task,
                                   cloudpickle.dumps(spark_backend._make_mapper(driver.addresses(), settings)))

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
        if not self.workers_initialized:  # torn down already (e.g. after a failed sub-epoch): told to finish
            return
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


def _run_worker_task(payload: bytes, partition):
    """*Executor side*: run cerebro's worker task in a Python that has applied every patch.

    ``payload`` is cerebro's pickled worker task. Spark unpickles this function (a reference to this
    module, which imports neither cerebro nor TensorFlow) before it runs; cerebro's task is
    unpickled here only after :func:`chap_mop.cerebro_compat.enable`, because unpickling it imports
    cerebro, Petastorm and TensorFlow. TensorFlow's threads are sized to the task's cores before
    any sub-epoch runs.
    """
    from chap_mop import cerebro_compat

    cerebro_compat.enable()
    limit_tf_threads_to_task_cpus()
    return pickle.loads(payload)(partition)


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

