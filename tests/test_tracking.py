"""MLflow tracking of a selection run, read back with MLflow's own client: against a real tracking
server (SQLite store, artifacts served through it), local file and SQLite stores, and a server that
is not there."""
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chap_mop.selection.tracking import MlflowTracker, TrackingError
from conftest import PROJECT
from mlflow_server import free_port, mlflow_server

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras is tf-keras (Keras 2), as in the project's runs

HYPERPARAMETERS = {"model_0_1796171805": {"lr": 0.001, "l2_reg": 0.0001, "win_size": 7, "amp_factor": 2},
                   "model_1_1796171805": {"lr": 0.0001, "l2_reg": 0.001, "win_size": 9, "amp_factor": 4}}
SETTINGS = {"search": "grid", "epochs": 2, "batch_size": 16, "metric": "balanced_accuracy",
            "data_store": "/data/store", "workers": 2, "samples": None,
            "search_space": {"lr": [0.001, 0.0001], "win_size": [7, 9]}}
SETTINGS_AS_PARAMS = {"search": "grid", "epochs": "2", "batch_size": "16", "metric": "balanced_accuracy",
                      "data_store": "/data/store", "workers": "2", "samples": "null",
                      "search_space": '{"lr": [0.001, 0.0001], "win_size": [7, 9]}'}
METRICS = ("train_loss", "val_loss", "val_balanced_accuracy")


@pytest.fixture(autouse=True)
def restore_environ():
    """``connect`` sets MLflow's settings in ``os.environ`` when unset: each test leaves it as it found it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """One real MLflow tracking server for this module's tests (about 9 s to start)."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as uri:
        yield uri


def epoch_metrics(config: int, epoch: int) -> dict[str, float]:
    """Distinct values per configuration and epoch, and a NaN that must be left out."""
    return {"train_loss": 1.0 / (epoch + config), "val_loss": 2.0 / (epoch + config),
            "val_balanced_accuracy": 0.5 + 0.1 * epoch + 0.01 * config, "val_auc": math.nan}


def log_epochs(tracker: MlflowTracker, epochs: range) -> None:
    for epoch in epochs:
        for config, (run_id, hyperparameters) in enumerate(HYPERPARAMETERS.items()):
            tracker.log_epoch(run_id, hyperparameters, epoch, epoch_metrics(config, epoch))


def checkpoints(folder: Path, epoch: int) -> dict[str, Path]:
    """One small checkpoint file per configuration, as the run's checkpoints/<run id>/epoch_<k>.h5."""
    files = {run_id: folder / "checkpoints" / run_id / f"epoch_{epoch}.h5" for run_id in HYPERPARAMETERS}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"checkpoint")
    return files


def child_runs(client, tracker: MlflowTracker) -> dict:
    """The experiment's runs nested under the tracker's parent run, by cerebro run id."""
    runs = client.search_runs([tracker.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'")
    return {run.data.tags["cerebro_run_id"]: run for run in runs}


def check_children(client, tracker: MlflowTracker, epochs: list[int]) -> None:
    """Two children named by their cerebro ids, their hyper-parameters as params, one step per epoch."""
    children = child_runs(client, tracker)
    assert sorted(children) == sorted(HYPERPARAMETERS)
    for config, (run_id, hyperparameters) in enumerate(HYPERPARAMETERS.items()):
        run = children[run_id]
        assert run.info.run_name == run_id and run.info.status == "FINISHED"
        assert run.data.params == {key: str(value) for key, value in hyperparameters.items()}
        assert "val_auc" not in run.data.metrics
        for name in METRICS:
            history = client.get_metric_history(run.info.run_id, name)
            assert [(m.step, m.value) for m in history] == [(e, epoch_metrics(config, e)[name]) for e in epochs]


def small_keras_model(path: Path):
    import tensorflow as tf
    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.save(path)
    return model


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")
def test_a_selection_run_is_a_parent_run_with_one_child_run_per_configuration(server, tmp_path, monkeypatch):
    import numpy as np
    import tensorflow as tf
    from mlflow.tracking import MlflowClient
    results = tmp_path / "results"
    results.mkdir()
    model = small_keras_model(results / "best_model.h5")
    (results / "summary.json").write_text(json.dumps({"best_run_id": "model_1_1796171805"}))

    tracker = MlflowTracker.connect(server, "full-flow")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # fail-fast for the connect check only
    tracker.start(None, "results", SETTINGS, {"chap_mop.results_dir": str(results)})
    log_epochs(tracker, range(1, 3))
    tracker.log_best("balanced_accuracy", 0.72, "model_1_1796171805")
    tracker.finish([results / name for name in ("summary.json", "report.html", "best_model.h5")],
                   checkpoints(results, 2))

    client = MlflowClient(tracking_uri=server)
    runs = client.search_runs([tracker.experiment_id])
    assert len(runs) == 3 and [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags] == \
        [tracker.parent_run_id]
    parent = client.get_run(tracker.parent_run_id)
    assert parent.info.run_name == "results" and parent.info.status == "FINISHED"
    assert parent.data.params == SETTINGS_AS_PARAMS
    assert parent.data.metrics == {"best_val_balanced_accuracy": 0.72}
    assert parent.data.tags["best_run_id"] == "model_1_1796171805"
    assert parent.data.tags["chap_mop.results_dir"] == str(results)
    assert sorted(f.path for f in client.list_artifacts(tracker.parent_run_id)) == ["best_model.h5", "summary.json"]
    check_children(client, tracker, [1, 2])
    for child in tracker.state()["child_run_ids"].values():
        assert [f.path for f in client.list_artifacts(child, "checkpoint")] == ["checkpoint/epoch_2.h5"]

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    downloaded = client.download_artifacts(tracker.parent_run_id, "best_model.h5", str(tmp_path / "downloaded"))
    loaded = tf.keras.models.load_model(downloaded)
    sample = np.ones((3, 4), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(sample, verbose=0), model.predict(sample, verbose=0))


def test_a_resumed_selection_logs_into_the_same_runs(server, tmp_path):
    from mlflow.tracking import MlflowClient
    first = MlflowTracker.connect(server, "resume")
    first.start(None, "results", SETTINGS, {})
    log_epochs(first, range(1, 3))
    first.fail()
    saved = json.loads(json.dumps(first.state()))  # as the run's state file keeps it
    client = MlflowClient(tracking_uri=server)
    ids = [saved["parent_run_id"], *saved["child_run_ids"].values()]
    assert {client.get_run(run_id).info.status for run_id in ids} == {"FAILED"}

    # a new session, resumed with more epochs and one more setting
    tracker = MlflowTracker.connect(server, "resume")
    tracker.start(saved, "results", {**SETTINGS, "epochs": 3, "resumed": True}, {})
    assert {client.get_run(run_id).info.status for run_id in ids} == {"RUNNING"}
    log_epochs(tracker, range(3, 4))
    tracker.finish([], checkpoints(tmp_path, 3))

    assert tracker.state() == saved
    assert len(client.search_runs([tracker.experiment_id])) == 3
    # MLflow refuses to change a param: epochs keeps its first value, the new setting is added
    assert client.get_run(saved["parent_run_id"]).data.params == {**SETTINGS_AS_PARAMS, "resumed": "True"}
    check_children(client, tracker, [1, 2, 3])


@pytest.mark.parametrize("scheme", ["file", "sqlite"])
def test_a_local_store_takes_the_same_runs(scheme, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts in ./mlruns
    uri = (tmp_path / "mlruns").as_uri() if scheme == "file" else f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "summary.json").write_text("{}")
    tracker = MlflowTracker.connect(uri, "local")
    tracker.start(None, "results", SETTINGS, {})
    log_epochs(tracker, range(1, 3))
    tracker.log_best("balanced_accuracy", 0.72, "model_1_1796171805")
    tracker.finish([tmp_path / "summary.json"], checkpoints(tmp_path, 2))

    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(tracker.parent_run_id).data.params == SETTINGS_AS_PARAMS
    assert [f.path for f in client.list_artifacts(tracker.parent_run_id)] == ["summary.json"]
    check_children(client, tracker, [1, 2])


def test_an_unreachable_server_is_one_line_naming_it_at_once():
    uri = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(TrackingError) as raised:
        MlflowTracker.connect(uri, "nowhere")
    assert time.monotonic() - began < 20
    assert str(raised.value) == f"MLflow tracking server {uri} is not reachable: connection refused"


def test_a_store_that_cannot_be_created_names_its_path(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TrackingError) as raised:
        MlflowTracker.connect(f"file://{tmp_path}/file/mlruns", "local")
    assert str(raised.value) == (f"MLflow tracking store file://{tmp_path}/file/mlruns cannot be opened: "
                                 f"not a directory: {tmp_path}/file/mlruns")


def test_a_deleted_experiment_is_refused_with_how_to_restore_it(tmp_path):
    from mlflow.tracking import MlflowClient
    uri = (tmp_path / "mlruns").as_uri()
    experiment_id = MlflowTracker.connect(uri, "gone").experiment_id
    MlflowClient(tracking_uri=uri).delete_experiment(experiment_id)
    with pytest.raises(TrackingError) as raised:
        MlflowTracker.connect(uri, "gone")
    assert str(raised.value) == (f"MLflow experiment 'gone' at {uri} is deleted; restore it "
                                 f"(mlflow experiments restore --experiment-id {experiment_id}) or name another")


def test_a_run_tracked_elsewhere_is_not_re_attached_and_a_lost_run_is_named(tmp_path):
    first = MlflowTracker.connect((tmp_path / "first").as_uri(), "local")
    first.start(None, "results", SETTINGS, {})
    other = MlflowTracker.connect((tmp_path / "other").as_uri(), "local")
    with pytest.raises(TrackingError, match="the run was tracked in MLflow experiment .* at file://.*/first; "):
        other.start(first.state(), "results", SETTINGS, {})
    lost = {**first.state(), "parent_run_id": "0123456789abcdef0123456789abcdef"}
    with pytest.raises(TrackingError, match="failed to re-attach to the saved runs: .*0123456789abcdef"):
        MlflowTracker.connect(first.tracking_uri, "local").start(lost, "results", SETTINGS, {})


def test_the_module_imports_without_mlflow():
    code = ("import sys; import chap_mop.selection.tracking as tracking; assert 'mlflow' not in sys.modules; "
            "sys.modules['mlflow'] = None\n"
            "try: tracking.MlflowTracker.connect('http://127.0.0.1:5000', 'x')\n"
            "except tracking.TrackingError as error: print(error)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ("MLflow tracking to http://127.0.0.1:5000 needs MLflow, which is not installed: "
                                     "pip install 'chap-mop[mlflow]'")
