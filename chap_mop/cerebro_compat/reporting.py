"""The driver hears of every finished sub-epoch: which configuration, on which worker, how long,
and its metrics.

cerebro's backend says nothing of its sub-epochs but its own print lines (or nothing, at
``verbose=0``). :class:`ReportingBackend`, a subclass, wraps each worker's task client to see a
sub-epoch start and finish, and calls its ``sub_epoch_listeners`` with a :class:`SubEpoch`. It
needs each sub-epoch function tagged with its ``run_id``, as
:class:`chap_mop.cerebro_compat.hopping.HoppingBackend` builds them.
"""
import time

from cerebro.backend import SparkBackend

from chap_mop.selection.progress import SubEpoch


class ReportingBackend(SparkBackend):
    """cerebro's SparkBackend that reports each finished sub-epoch to ``sub_epoch_listeners``."""

    def __init__(self, *args, sub_epoch_listeners: list | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sub_epoch_listeners = list(sub_epoch_listeners or [])
        self._epoch_of: dict[str, int] = {}  # run id -> 1-based epoch of its running visits, set per epoch

    def initialize_workers(self):
        super().initialize_workers()
        self.task_clients = [_ReportingTaskClient(client, worker, self)
                             for worker, client in enumerate(self.task_clients)]

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

