"""The driver hears of every finished sub-epoch: which configuration, on which worker, how long,
and its metrics.

cerebro's ``SparkBackend.train_for_one_epoch`` schedules sub-epochs in one loop and says nothing
of them but its own print lines (or nothing, at ``verbose=0``). :class:`ReportingBackend`, a
subclass, wraps each worker's task client to see a sub-epoch start and finish, and calls its
``sub_epoch_listeners`` with a :class:`SubEpoch`. The one patch here tags each sub-epoch trainer
with its run id, which cerebro keeps only inside the trainer's closure.
"""
import time
from dataclasses import dataclass

from cerebro.backend import SparkBackend


@dataclass
class SubEpoch:
    """A finished sub-epoch: one configuration's pass over one worker's partition.

    :param epoch: 1-based epoch it belongs to.  :param seconds: from scheduling to the driver
        seeing it finish.  :param steps: batches.  :param metrics: cerebro's per-batch averages
        of this partition, e.g. ``{"train_loss": 0.41, "train_sitting_hits": 31.2, ...}``.
    """
    run_id: str
    worker: int
    is_train: bool
    epoch: int
    seconds: float
    steps: int
    metrics: dict[str, float]


class ReportingBackend(SparkBackend):
    """cerebro's SparkBackend that reports each finished sub-epoch to ``sub_epoch_listeners``."""

    def __init__(self, *args, sub_epoch_listeners: list | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sub_epoch_listeners = list(sub_epoch_listeners or [])
        self._epoch_of: dict[str, int] = {}

    def initialize_workers(self):
        super().initialize_workers()
        self.task_clients = [_ReportingTaskClient(client, worker, self)
                             for worker, client in enumerate(self.task_clients)]

    def train_for_one_epoch(self, models, store, feature_cols, label_cols, is_train=True):
        # A model's epoch count goes up after its training epoch, before its validation.
        self._epoch_of = {model.getRunId(): model.getEpochs() + int(is_train) for model in models}
        return super().train_for_one_epoch(models, store, feature_cols, label_cols, is_train=is_train)

    def _report(self, sub_epoch: SubEpoch) -> None:
        for listener in self.sub_epoch_listeners:
            listener(sub_epoch)


class _ReportingTaskClient:
    """A worker's task client, as cerebro uses it, that tells its backend of finished sub-epochs."""

    def __init__(self, client, worker: int, backend: ReportingBackend):
        self._client, self._worker, self._backend = client, worker, backend
        self._running: tuple[str, bool, float] | None = None

    def execute_sub_epoch(self, fn, store_prefix_path, train=True, initial_epoch=0):
        self._running = (fn.run_id, train, time.monotonic())
        return self._client.execute_sub_epoch(fn=fn, store_prefix_path=store_prefix_path, train=train,
                                              initial_epoch=initial_epoch)

    def sub_epoch_completed(self):
        status = self._client.sub_epoch_completed()
        if status.flag and self._running is not None and status.sub_epoch_result["status"] != "FAILED":
            run_id, is_train, started = self._running
            results, steps = status.sub_epoch_result["result"]
            self._running = None
            self._backend._report(SubEpoch(
                run_id=run_id, worker=self._worker, is_train=is_train, epoch=self._backend._epoch_of[run_id],
                seconds=time.monotonic() - started, steps=int(steps),
                metrics={name: float(values[0]) for name, values in results.items()}))
        return status

    def __getattr__(self, name):
        return getattr(self._client, name)


def patch_trainer_run_id() -> None:
    """Tag every sub-epoch trainer cerebro builds with ``run_id``, so a task client can tell whose
    sub-epoch it runs (cerebro passes the trainer alone)."""
    from cerebro.backend.spark import backend as spark_backend
    original = spark_backend._get_remote_trainer
    if getattr(original, "_chap_mop_patched", False):
        return

    def _get_remote_trainer(estimator, *args, **kwargs):
        trainer = original(estimator, *args, **kwargs)
        trainer.run_id = estimator.getRunId()
        return trainer

    _get_remote_trainer._chap_mop_patched = True
    spark_backend._get_remote_trainer = _get_remote_trainer
