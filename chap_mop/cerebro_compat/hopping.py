"""Model hopping without rebuilding models: a SparkBackend subclass that runs an epoch's training and
validation visits in one schedule, with the project's worker sub-epoch.

cerebro's ``train_for_one_epoch`` ran an epoch as two phases (every training visit, then every
validation visit), in a timing-dependent order, with a sub-epoch that rebuilt the model from a full
HDF5 file on every visit. :meth:`HoppingBackend.train_epoch` replaces the two calls: the visits come
from :class:`chap_mop.selection.epoch_schedule.EpochSchedule` (fixed shard order, configurations of similar
cost starting on different workers, validation as soon as a configuration has trained on every
shard) and run :func:`chap_mop.selection.hop.sub_epoch_trainer` (cached models, weights-only hop
checkpoints). What cerebro does around them stays: its task clients, its initial Keras checkpoint
of a new configuration, its per-sub-epoch results and their step-weighted means, its epoch count,
and its console lines under ``--verbose``.
"""
import datetime
import re
from pathlib import Path

import numpy as np
from cerebro.backend.spark import backend as spark_backend
from cerebro.backend.spark import util as spark_util

from chap_mop.cerebro_compat.reporting import ReportingBackend
from chap_mop.errors import TrainingError
from chap_mop.selection.epoch_schedule import EpochSchedule
from chap_mop.selection.hop import sub_epoch_trainer
from chap_mop.selection.model_cache import DEFAULT_MODEL_CACHE_MB



def _say(text: str) -> None:
    print(f"CEREBRO => Time: {datetime.datetime.now():%Y-%m-%d %H:%M:%S}, {text}")


WORKER_ERROR_NAME = "worker_error.txt"  # runs/<run id>/worker_error.txt: the worker's whole stack trace
ERROR_LINE_CHARS = 300


# "OSError: ...", "chap_mop.errors.InputError: ...": the exception at the root of a worker's error,
# which TensorFlow wraps in "Graph execution error:" and stack frames.
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception)): (.+)$")


def error_line(error: str) -> str:
    """The first exception line of a worker's error text (``OSError: ...``), else its first line."""
    lines = [line.strip() for line in error.splitlines()]
    for line in lines:
        match = EXCEPTION_LINE.match(line)
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    return next((line for line in lines if line), "no message")


def worker_failure(store, model, worker: int, is_train: bool, error: str) -> TrainingError:
    """The error of a sub-epoch that failed inside a worker: one line naming the configuration, the
    epoch, the worker and the worker's own message; its whole stack trace is kept in the run's folder.

    :param error: cerebro's report of the failure: the exception's text, then its stack trace.
    """
    run_id = model.getRunId()
    saved = Path(store.get_localized_path(store.get_run_path(run_id))) / WORKER_ERROR_NAME
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(error)
    first = error_line(error)
    if len(first) > ERROR_LINE_CHARS:
        first = first[:ERROR_LINE_CHARS] + "..."
    return TrainingError(f"configuration {run_id} failed in epoch {model.getEpochs() + 1} on worker {worker} "
                         f"while {'training' if is_train else 'validating'}: {first} (the worker's stack trace is in "
                         f"{saved}); the workers were not lost: fix the cause, then --resume")


def step_weighted(results: list[tuple[dict, int]]) -> dict[str, float]:
    """cerebro's epoch value of each metric: its sub-epoch values weighted by their steps."""
    steps = np.array([count for _, count in results], float)
    return {name: float(np.sum([metrics[name][0] * count for (metrics, _), count in zip(results, steps)]) / steps.sum())
            for name in results[0][0]}


class HoppingBackend(ReportingBackend):
    """cerebro's SparkBackend with :meth:`train_epoch`.

    :param model_cache_mb: each worker's limit of cached model variables, MB (0: rebuild every visit).
    :param seed: seeds each sub-epoch's shuffle (None: unseeded).
    """

    def __init__(self, *args, model_cache_mb: float = DEFAULT_MODEL_CACHE_MB, seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_cache_mb, self.seed = model_cache_mb, seed

    def _trainer(self, estimator, store, metadata: dict):
        """The sub-epoch function of a configuration, after cerebro's checks and initial checkpoint."""
        run_id = estimator.getRunId()
        estimator._check_params(metadata)
        keras_utils = estimator._get_keras_utils()
        if not estimator._has_checkpoint(run_id):
            remote_store = store.to_remote(run_id, None)
            with remote_store.get_local_output_dir() as run_output_dir:
                estimator._compile_model(keras_utils).save(f"{run_output_dir}/{remote_store.checkpoint_filename}")
                remote_store.sync(run_output_dir)
        trainer = sub_epoch_trainer(estimator, metadata, keras_utils, run_id, self._num_workers(),
                                    self.model_cache_mb, self.seed)
        trainer.run_id = run_id
        return trainer

    def train_epoch(self, models: list, store, feature_cols: list[str], label_cols: list[str]
                    ) -> tuple[dict[str, dict], dict[str, dict]]:
        """Train ``models`` for one epoch and validate them, by model hopping.

        :return: (training, validation) results, run id -> {metric: epoch value}, as two calls of
            cerebro's ``train_for_one_epoch`` return them.
        """
        verbose = self.settings.verbose
        if verbose >= 1:
            _say("Starting EPOCH Training")
        self._epoch_of = {model.getRunId(): model.getEpochs() + 1 for model in models}
        _, _, metadata, _ = spark_util.get_simple_meta_from_parquet(store, schema_cols=label_cols + feature_cols)
        trainers = [self._trainer(model, store, metadata) for model in models]
        # A configuration's parameter count stands for its cost per visit: known before it trains,
        # the same in every run, so the shard order it sets stays independent of timing.
        schedule = EpochSchedule([model.getEpochs() for model in models], self._num_workers(),
                                 costs=[model.getModel().count_params() for model in models])
        running: dict[int, tuple[int, bool]] = {}
        results: dict[bool, dict[int, list]] = {True: {}, False: {}}
        while not schedule.done():
            if spark_backend.exit_event.is_set():
                raise RuntimeError("cerebro's driver was asked to exit")
            for worker in range(self._num_workers()):
                if worker in running:
                    status = self.task_clients[worker].sub_epoch_completed()
                    if not status.flag:
                        continue
                    index, is_train = running.pop(worker)
                    if status.sub_epoch_result["status"] == "FAILED":
                        self.teardown_workers()
                        raise worker_failure(store, models[index], worker, is_train, status.sub_epoch_result["error"])
                    schedule.finish(index, worker, is_train)
                    results[is_train].setdefault(index, []).append(status.sub_epoch_result["result"])
                    if verbose >= 1:
                        _say(f"Completed Model: {models[index].getRunId()}, on Worker: {worker}")
                task = schedule.next_for(worker)
                if task is None:
                    continue
                index, is_train = task
                if verbose >= 1:
                    _say(f"Scheduling Model: {models[index].getRunId()}, on Worker: {worker}")
                self.task_clients[worker].execute_sub_epoch(fn=trainers[index], store_prefix_path=store.prefix_path,
                                                            train=is_train, initial_epoch=models[index].getEpochs())
                schedule.start(index, worker, is_train)
                running[worker] = task
            spark_backend.exit_event.wait(self.settings.polling_period)
        for model in models:
            model.setEpochs(model.getEpochs() + 1)
        return tuple({models[index].getRunId(): step_weighted(visits) for index, visits in results[phase].items()}
                     for phase in (True, False))
