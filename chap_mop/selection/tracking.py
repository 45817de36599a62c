"""MLflow tracking of a model selection run, logged from the Spark driver as epochs finish.

What goes where, in one experiment of an MLflow tracking server (``http(s)://``) or local store
(``file:``, ``sqlite:``)::

    parent run (named after the results folder)   params: the selection's settings (search_space as JSON, ...)
        metric best_val_<metric>, tag best_run_id; artifacts summary.json, report.html, models.csv, ...
    child run per configuration (tag mlflow.parentRunId; run name and tag cerebro_run_id: cerebro's run id)
        params: its hyper-parameters; metrics: each epoch's values, step = the epoch (1-based), NaN and
        infinities left out; artifact checkpoint/<its final checkpoint file>

The runs' ids (:meth:`MlflowTracker.state`) go into the run's saved state: a resumed selection logs
into the same runs. MLflow is imported in the methods only (the scripts run without it when tracking
is off). Any failure of the server or store is a :class:`TrackingError` of one line.
"""
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from chap_mop.runtime import runtime_env
from chap_mop.errors import InputError

if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

# For the connect check only: a server that is down fails it at once, not after MLflow's retries
# with backoff (minutes). Later calls keep MLflow's retries, which ride out a restart of the server.
CONNECT_CHECK_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# For the whole process: MLflow 3 refuses its file store (in maintenance mode) unless allowed, and a
# file: URI asks for it; no "View run <name> at: <url>" line on stdout whenever a run ends.
PROCESS_ENV = {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class TrackingError(InputError):
    """The MLflow tracking server or store cannot be used; the message names its URI and the reason."""


def _reason(error: BaseException) -> str:
    """What ``error`` says, in one line: for one that an OSError caused, the OSError's (e.g. "connection refused")."""
    innermost = error
    while (inner := innermost.__cause__ or innermost.__context__) is not None:
        innermost = inner
    if isinstance(innermost, OSError):
        error = innermost
        if error.strerror:
            return error.strerror.lower() + (f": {error.filename}" if error.filename else "")
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in ("http", "https")


@contextmanager
def _store_errors(tracking_uri: str, failure: str) -> Iterator[None]:
    """Raise what the server or store fails with as a :class:`TrackingError`: MLflow wraps HTTP errors
    (refused, timed out, error status) in MlflowException; local stores raise OSError and SQLAlchemy's errors."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError
    try:
        yield
    except (MlflowException, OSError, SQLAlchemyError) as error:
        kind = "server" if _is_server(tracking_uri) else "store"
        raise TrackingError(f"MLflow tracking {kind} {tracking_uri} {failure}: {_reason(error)}") from error


def _strings(values: dict) -> dict[str, str]:
    """Values as MLflow params: strings; dicts, lists and None as JSON."""
    return {str(key): value if isinstance(value, str)
            else json.dumps(value, default=str) if value is None or isinstance(value, (dict, list, tuple))
            else str(value) for key, value in values.items()}


def _metrics(values: dict[str, float], step: int) -> list["Metric"]:
    """The finite ``values`` as metrics of ``step`` (MLflow would keep NaN, and infinity as the largest float)."""
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items() if math.isfinite(value)]


class MlflowTracker:
    """One model selection run as MLflow runs: a parent run and one child run per configuration."""

    def __init__(self, client: "MlflowClient", tracking_uri: str, experiment_id: str):
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id: str | None = None
        self.child_run_ids: dict[str, str] = {}

    @classmethod
    def connect(cls, tracking_uri: str, experiment_name: str) -> "MlflowTracker":
        """Reach the server or store now, before any training, and set the experiment (created if missing).
        Raises :class:`TrackingError`, naming the URI and the reason, within about 10 s for a server."""
        for name, value in PROCESS_ENV.items():
            os.environ.setdefault(name, value)
        # MLflow's own INFO lines ("Creating initial MLflow database tables...") only under --verbose
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if runtime_env.is_verbose() else "WARNING")
        try:
            from mlflow.tracking import MlflowClient
        except ModuleNotFoundError as error:
            raise TrackingError(f"MLflow tracking to {tracking_uri} needs MLflow, which is not installed: pip install "
                                "'chap-mop[mlflow]'") from error
        added = {name: value for name, value in CONNECT_CHECK_ENV.items() if name not in os.environ}
        os.environ.update(added)  # a user's own settings win
        try:
            with _store_errors(tracking_uri, "is not reachable" if _is_server(tracking_uri) else "cannot be opened"):
                client = MlflowClient(tracking_uri=tracking_uri)
                experiment = client.get_experiment_by_name(experiment_name)
                experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        finally:
            for name in added:
                del os.environ[name]
        if experiment and experiment.lifecycle_stage != "active":
            raise TrackingError(f"MLflow experiment '{experiment_name}' at {tracking_uri} is deleted; restore it "
                                f"(mlflow experiments restore --experiment-id {experiment_id}) or name another")
        return cls(client, tracking_uri, experiment_id)

    def start(self, saved: dict | None, run_name: str, params: dict, tags: dict) -> None:
        """Create the parent run, or re-attach to the runs of ``saved`` (:meth:`state` of an earlier session):
        set them RUNNING again and log only the params not logged yet (MLflow refuses to change a param,
        so one whose value changed keeps its first value)."""
        from mlflow.entities import Param, RunTag
        if saved and (saved["tracking_uri"], saved["experiment_id"]) != (self.tracking_uri, self.experiment_id):
            raise TrackingError(f"the run was tracked in MLflow experiment {saved['experiment_id']} at "
                                f"{saved['tracking_uri']}; resume it with tracking there")
        failure = "failed to re-attach to the saved runs" if saved else "failed to create the parent run"
        with _store_errors(self.tracking_uri, failure):
            if saved:
                self.parent_run_id, self.child_run_ids = saved["parent_run_id"], dict(saved["child_run_ids"])
                for run_id in (self.parent_run_id, *self.child_run_ids.values()):
                    self.client.update_run(run_id, status="RUNNING")
                logged = self.client.get_run(self.parent_run_id).data.params
            else:
                self.parent_run_id = self.client.create_run(self.experiment_id, run_name=run_name).info.run_id
                logged = {}
            self.client.log_batch(self.parent_run_id,
                                  params=[Param(k, v) for k, v in _strings(params).items() if k not in logged],
                                  tags=[RunTag(k, v) for k, v in _strings(tags).items()])

    def state(self) -> dict:
        """The ids to save in the run's state, for :meth:`start` of a resumed session."""
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_run_id, "child_run_ids": dict(self.child_run_ids)}

    def log_epoch(self, run_id: str, hyperparameters: dict, epoch: int, metrics: dict[str, float]) -> None:
        """Log the metrics of ``epoch`` (1-based) of configuration ``run_id`` (cerebro's) in its child run,
        created on the first call with the hyper-parameters as its params."""
        from mlflow.entities import Param
        with _store_errors(self.tracking_uri, f"failed to log epoch {epoch} of {run_id}"):
            params = []
            if run_id not in self.child_run_ids:
                tags = {"mlflow.parentRunId": self.parent_run_id, "cerebro_run_id": run_id}
                self.child_run_ids[run_id] = self.client.create_run(self.experiment_id, run_name=run_id,
                                                                    tags=tags).info.run_id
                params = [Param(k, v) for k, v in _strings(hyperparameters).items()]
            self.client.log_batch(self.child_run_ids[run_id], metrics=_metrics(metrics, epoch), params=params)

    def log_best(self, metric: str, value: float, best_run_id: str) -> None:
        """On the parent run: metric ``best_val_<metric>`` and tag ``best_run_id``."""
        from mlflow.entities import RunTag
        with _store_errors(self.tracking_uri, "failed to log the best configuration"):
            self.client.log_batch(self.parent_run_id, metrics=_metrics({f"best_val_{metric}": value}, 0),
                                  tags=[RunTag("best_run_id", best_run_id)])

    def finish(self, artifacts: list[Path], checkpoints: dict[str, Path]) -> None:
        """Log the files of ``artifacts`` to the parent run and each configuration's final checkpoint
        (``checkpoints``: cerebro run id -> file) to its child run under ``checkpoint/``, leaving out
        files that do not exist; end all runs FINISHED."""
        with _store_errors(self.tracking_uri, "failed to log the run's files"):
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(self.parent_run_id, str(path))
            for run_id, path in checkpoints.items():
                if path.is_file():
                    self.client.log_artifact(self.child_run_ids[run_id], str(path), artifact_path="checkpoint")
        self._end("FINISHED")

    def fail(self) -> None:
        """End the parent run and the child runs FAILED, for a run that stops with an error."""
        self._end("FAILED")

    def _end(self, status: str) -> None:
        runs = [*self.child_run_ids.values(), *([self.parent_run_id] if self.parent_run_id else [])]
        with _store_errors(self.tracking_uri, f"failed to end the runs {status}"):
            for run_id in runs:
                self.client.set_terminated(run_id, status)


def epoch_listener(tracker: MlflowTracker, hyperparameters: dict[str, dict], saved: dict,
                   metric_names: list[str]):
    """A cerebro epoch listener that logs each configuration's epoch to its child run.

    :param hyperparameters: run id -> hyper-parameters (the search's ``run_hyperparameters``).
    :param saved: the run state's data: its ``"mlflow"`` entry gets the runs' ids before each save.
    :param metric_names: e.g. ``val_balanced_accuracy``; the derived ones exist once
        :meth:`chap_mop.output.results.RunLog.on_epoch_end` has run.
    """
    def on_epoch_end(estimators: list, estimator_results: dict) -> None:
        for estimator in estimators:
            run_id, epoch = estimator.getRunId(), estimator.getEpochs()
            results = estimator_results[run_id]
            tracker.log_epoch(run_id, hyperparameters[run_id], epoch,
                              {name: results[name][epoch - 1] for name in metric_names
                               if len(results.get(name, [])) >= epoch})
        saved["mlflow"] = tracker.state()

    return on_epoch_end
