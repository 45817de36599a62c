"""model_selection.py end to end with the demo's data and settings (``chap_mop.dev.demo``: a
2-configuration grid, 2 workers, 3 epochs, seeded) as a person runs it: its console, its files and
the floor its chosen model reaches; the selection stage in this process for the test split, the
ensemble and MLflow; its settings checks without Spark."""
import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from chap_mop.cli import chap_select
from chap_mop.dev import demo
from chap_mop.errors import InputError
from chap_mop.predict.stage import PredictSettings, predict
from chap_mop.selection.stage import SelectionSettings, check_settings
from conftest import run_script, select_in_process


@pytest.fixture(scope="module")
def selection(spark, tmp_path_factory):
    """The demo's day files and store made with the demo's own flags, then its model_selection.py
    command as a person runs it, output captured: its console is what is tested."""
    from chap_mop.cli import chap_prep
    from chap_mop.data.prepare import PrepSettings, prepare_store
    from chap_mop.dev import demo_data

    folder = tmp_path_factory.mktemp("demo")
    demo_data.main(demo.data_command(folder)[2:])
    args = chap_prep.build_parser(PrepSettings()).parse_args(demo.prep_command(folder)[1:])
    prepare_store(PrepSettings(**{name: getattr(args, name) for name in PrepSettings.__dataclass_fields__}), spark)
    results = folder / "results"
    run = run_script(*demo.selection_command(folder / "petastorm", results), "--master", "local[2]")
    return results, run.stdout, run.stderr


NOISE = ("cuInit", "oneDNN", "absl", "UnicodeWarning", "sitting_hits", "HDF5 file format", "CEREBRO",
         "log4j", "NativeCodeLoader", "Traceback")
PROGRESS_LINE = re.compile(r"epoch [1-3]/3 \| model [12]/2 \(lr 0\.001, l2 0\.0001, [12] min, amp 1\) on worker [01] \| "
                           r"(train|val) loss \d+\.\d\d acc [01]\.\d\d bal [01]\.\d\d \| (\d+)/24 sub-epochs \| "
                           r"(ETA (\d+ h \d\d min|\d+ min \d\d s|\d+ s)|done)")


pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")


@pytest.mark.slow
def test_writes_every_result_file(selection):
    results, stdout, _ = selection
    for name in ("models.csv", "history.csv", "summary.json", "validation_balanced_accuracy.png", "best_model.h5",
                 "report.html"):
        assert (results / name).is_file(), name
    models = list(csv.DictReader(open(results / "models.csv")))
    history = list(csv.DictReader(open(results / "history.csv")))
    assert len(models) == 2 and len(history) == 6
    assert sorted(m["win_size"] for m in models) == ["1", "2"]
    for run in models:
        logs = list((results / "runs" / run["run_id"] / "logs").glob("events.out.tfevents.*"))
        assert len(logs) >= 3  # hparams + one per epoch
    assert f"Results in {results}" in stdout


@pytest.mark.slow
def test_console_shows_progress_and_tables_without_noise(selection):
    """Every sub-epoch (2 configurations x 2 workers x 3 epochs x train and validation) has its
    line, the epoch tables are there, and no start-up noise from the driver or the executors."""
    _, stdout, stderr = selection
    progress = [PROGRESS_LINE.fullmatch(line) for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(progress) == 24 and all(progress), stdout
    assert [int(match.group(2)) for match in progress] == list(range(1, 25))
    assert progress[-1].group(3) == "done" and progress[0].group(3).startswith("ETA")
    assert all(f"=== epoch {epoch}/3 done" in stdout for epoch in range(1, 4))
    for word in NOISE:
        assert word not in stdout and word not in stderr, word
    assert len(stdout.splitlines()) < 70 and len(stderr.splitlines()) <= 1, stderr  # Java's incubator line


@pytest.mark.slow
def test_report_is_self_contained_and_lists_every_configuration(selection):
    results, _, _ = selection
    page = (results / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)
    assert page.count("data:image/png;base64,") == 3  # learning curves; hyper-parameters vs metric; test confusion
    for run in csv.DictReader(open(results / "models.csv")):
        assert f">{run['run_id']}<" in page


@pytest.mark.slow
def test_best_run_is_the_best_validation_balanced_accuracy(selection):
    results, _, _ = selection
    summary = json.loads((results / "summary.json").read_text())
    models = list(csv.DictReader(open(results / "models.csv")))
    best = max(models, key=lambda m: float(m["val_balanced_accuracy"]))
    assert summary["best_run_id"] == best["run_id"]
    assert summary["evaluation_metric"] == "val_balanced_accuracy"
    assert summary["value"] == pytest.approx(float(best["val_balanced_accuracy"]))
    assert summary["workers"] == 2 and summary["epochs"] == 3
    assert set(summary["sequences_per_epoch"]) == {"1", "2"}
    assert all(c["train"] > c["val"] > 0 for c in summary["sequences_per_epoch"].values())


@pytest.mark.slow
def test_the_demos_chosen_model_reaches_the_floor_on_validation_and_test_subjects(selection):
    """What the README promises of make demo: seeded, so a drop below the floor is a change in the demo
    data generator, the demo's settings or the training, not chance."""
    results, stdout, _ = selection
    summary = json.loads((results / "summary.json").read_text())
    assert summary["value"] >= demo.FLOOR, f"validation balanced accuracy {summary['value']:.4f}"
    for which in ("best window", "ensemble window"):
        reached = summary["test"][which]["balanced_accuracy"]
        assert reached >= demo.FLOOR, f"test balanced accuracy of the {which.split()[0]} {reached:.4f}"
    assert summary["test"]["subjects"] == 3


@pytest.mark.slow
def test_best_model_loads_and_predicts(selection):
    from chap_mop import cerebro_compat
    cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
    import tensorflow as tf
    results, _, _ = selection
    model = tf.keras.models.load_model(results / "best_model.h5")
    seq_len = model.input_shape[1]
    probabilities = model.predict(np.zeros((3, seq_len, 100, 3, 1), np.float32), verbose=0)
    assert probabilities.shape == (3, seq_len, 2)


@pytest.mark.parametrize("space, message", [
    ({"lr": [0.001], "l2_reg": [0.0], "win_size": [7], "amp_factor": [1], "dropout": [0.1]},
     "unknown hyper-parameter(s) ['dropout']"),
    ({"lr": [], "l2_reg": [0.0], "win_size": [7], "amp_factor": [1]}, "hyper-parameter 'lr' has []"),
    ({"lr": [0.001], "l2_reg": [0.0], "win_size": [7]}, "search space lacks ['amp_factor']"),
    ({"lr": [0.001], "l2_reg": [-1.0], "win_size": [7], "amp_factor": [1]}, "expected non-negative float values"),
    ([0.001], "expected a JSON object"),
])
def test_bad_search_spaces_are_refused_before_anything_starts(space, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check_settings(SelectionSettings(search_space=space))


@pytest.mark.parametrize("settings, message", [
    ({"ensemble_size": 0}, "--ensemble-size 0: expected 1"),
    ({"metric": "auc"}, "evaluation metric 'auc' is not recorded"),
    ({"search": "bayes"}, "search 'bayes': expected one of"),
    ({"batch_size": 0}, "--batch-size 0: expected 1 or more"),
    ({"epochs": 0}, "--epochs 0: expected 1 or more"),
    ({"workers": -1}, "--workers -1: expected 1 or more"),
    ({"samples": 0, "search": "random"}, "--samples 0: expected 1 or more"),
    ({"model_cache_mb": -1}, "--model-cache-mb -1: expected 0 or more"),
    ({"polling_period_s": 0}, "--polling-period 0: expected more than 0 seconds"),
])
def test_bad_settings_are_refused_before_anything_starts(settings, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check_settings(SelectionSettings(**settings))


def test_a_window_longer_than_a_workers_data_stops_before_training(spark, store, tmp_path):
    space = {"lr": [0.001], "l2_reg": [0.0], "win_size": [600], "amp_factor": [1]}
    with pytest.raises(InputError, match=re.escape("win_size 600 min (3600 windows): train sequences per worker "
                                                   "are [0, 0]")):
        select_in_process(spark, store, tmp_path / "r", search_space=space)
    assert not (tmp_path / "r").exists()  # nothing written: the results folder is claimed after the checks


def test_the_flags_reject_an_unknown_metric_as_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        chap_select.main(["--metric", "auc"])
    assert stop.value.code == 2 and "invalid choice: 'auc'" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_store_is_one_line_and_exit_code_2(tmp_path):
    """The script end to end: a bad input is one ``error:`` line and exit code 2, no traceback."""
    run = run_script("model_selection.py", "--data", str(tmp_path / "nowhere"), check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nowhere'}/manifest.json not found")


TWO_CONFIGURATIONS = {"lr": [0.001], "l2_reg": [0.001, 0.0001], "win_size": [1], "amp_factor": [1]}


def tracked_selection(spark, store, results, tracking_uri: str, epochs: int, **extra) -> str:
    """A tracked selection in this process; what it printed."""
    return select_in_process(spark, store, results, epochs=epochs, search_space=TWO_CONFIGURATIONS,
                             mlflow_tracking_uri=tracking_uri, mlflow_experiment="chap-test", **extra)[1]


def read_back(tracking_uri: str, results) -> tuple:
    """The parent run and the child runs of the selection in ``results``, read with MlflowClient."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("chap-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and parents[0].info.run_name == results.name
    return client, parents[0], children


def check_child_runs(client, children, results, epochs: int) -> None:
    models = {row["run_id"]: row for row in csv.DictReader(open(results / "models.csv"))}
    assert sorted(child.data.tags["cerebro_run_id"] for child in children) == sorted(models)
    for child in children:
        row = models[child.data.tags["cerebro_run_id"]]
        assert child.data.params == {name: row[name] for name in ("lr", "l2_reg", "win_size", "amp_factor")}
        for metric in ("train_loss", "val_loss", "val_balanced_accuracy"):
            history = client.get_metric_history(child.info.run_id, metric)
            assert sorted(point.step for point in history) == list(range(1, epochs + 1)), metric
        assert max(history, key=lambda point: point.step).value == pytest.approx(float(row["val_balanced_accuracy"]))
        assert [a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")] == \
            [f"checkpoint/epoch_{epochs}.h5"]
        assert child.info.status == "FINISHED"


@pytest.mark.slow
def test_mlflow_server_gets_a_parent_and_a_child_run_per_configuration(spark, store, tmp_path):
    """A real `mlflow server` (SQLite, served artifacts); runs read back with MlflowClient. The run is
    --verbose, which brings cerebro's own lines back."""
    from chap_mop import cerebro_compat
    cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
    import tensorflow as tf
    from mlflow_server import mlflow_server
    from chap_mop.runtime import runtime_env
    with mlflow_server(tmp_path) as uri:
        results = tmp_path / "tracked"
        try:
            printed = tracked_selection(spark, store, results, uri, 2, verbose=True)
        finally:
            runtime_env.configure(False)  # quiet again for the tests after this one
        assert "Scheduling Model" in printed and "CEREBRO" in printed
        client, parent, children = read_back(uri, results)
        check_child_runs(client, children, results, epochs=2)
        summary = json.loads((results / "summary.json").read_text())
        assert parent.data.tags["best_run_id"] == summary["best_run_id"] and parent.info.status == "FINISHED"
        assert parent.data.params["search"] == "grid" and parent.data.params["epochs"] == "2"
        assert {"summary.json", "report.html", "best_model.h5"} <= {a.path for a in client.list_artifacts(
            parent.info.run_id)}
        model = tf.keras.models.load_model(client.download_artifacts(parent.info.run_id, "best_model.h5",
                                                                     str(tmp_path)))
        assert model.output_shape[-1] == 2


def test_unreachable_tracking_server_is_one_line_before_training(store, tmp_path):
    from mlflow_server import free_port
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InputError) as error:
        select_in_process(None, store, tmp_path / "r", mlflow_tracking_uri=uri)  # no session: it would start one
    assert str(error.value) == f"MLflow tracking server {uri} is not reachable: connection refused"
    assert not (tmp_path / "r").exists()  # stopped before Spark would have started


@pytest.fixture(scope="module")
def held_out(selection):
    """The demo's store (3 test subjects) and results (its 2-member ensemble of 1- and 2-minute
    windows, its test report), and what the selection printed."""
    results, stdout, _ = selection
    return results.parent / "petastorm", results, stdout


def independent_predictions(store, model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, classes) of every test subject's windows: sequences by the training rules, argmax per window."""
    import pyarrow.parquet as pq
    from chap_mop.data.shard_reader import decode_windows
    from chap_mop.data.windows import sequence_starts
    seq_len = model.input_shape[1]
    subjects = []
    for path in sorted((store / "test_data").glob("*.parquet")):
        table = pq.read_table(path)
        ids = np.array(table.column("id").to_pylist())
        for subject in dict.fromkeys(ids):
            rows = np.flatnonzero(ids == subject)
            column = {name: table.column(name).to_numpy()[rows] for name in ("time", "non_wear", "sleeping", "label")}
            starts, _ = sequence_starts(np.zeros(len(rows)), column["time"], column["non_wear"], column["sleeping"],
                                        column["label"], seq_len)
            data = decode_windows(table.column("data").take(rows), str(path))
            predicted = np.full(len(rows), -1)
            if len(starts):
                window_rows = starts[:, None] + np.arange(seq_len)
                output = model.predict(data[window_rows][..., None], verbose=0)
                predicted[window_rows.ravel()] = output.argmax(axis=-1).ravel()
            subjects.append((column["label"], predicted))
    return subjects


def numpy_confusion(pairs) -> list[list[int]]:
    matrix = np.zeros((2, 2), int)
    for labels, predicted in pairs:
        both = (labels >= 0) & (predicted >= 0)
        np.add.at(matrix, (labels[both], predicted[both]), 1)
    return matrix.tolist()


@pytest.mark.slow
def test_test_report_matches_the_saved_models_own_predictions(held_out):
    from chap_mop import cerebro_compat
    cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
    import tensorflow as tf
    from chap_mop.predict.inference import vote
    from chap_mop.model.metrics import CUSTOM_OBJECTS
    store, results, stdout = held_out
    report = json.loads((results / "test_report.json").read_text())
    manifest = json.loads((store / "manifest.json").read_text())
    assert report["subjects"] == len(manifest["splits"]["test"]["subjects"]) == 3
    best = tf.keras.models.load_model(results / "best_model.h5", custom_objects=CUSTOM_OBJECTS, compile=False)
    assert report["best window"]["confusion_matrix"] == numpy_confusion(independent_predictions(store, best))

    members = json.loads((results / "ensemble.json").read_text())["members"]
    assert [m["rank"] for m in members] == [1, 2] and members[0]["run_id"] == report["ensemble_members"][0]
    assert sorted(m["windows_per_sequence"] for m in members) == [6, 12]
    per_member = [independent_predictions(store, tf.keras.models.load_model(results / m["model"], compile=False))
                  for m in members]
    voted = [(labels, vote(np.stack([member[i][1] for member in per_member])))
             for i, (labels, _) in enumerate(per_member[0])]
    assert report["ensemble window"]["confusion_matrix"] == numpy_confusion(voted)
    assert "Test (3 subjects never used for selection): best run balanced accuracy" in stdout
    summary = json.loads((results / "summary.json").read_text())
    assert summary["test"]["best window"] == report["best window"] and summary["ensemble"] == report["ensemble_members"]
    rows = list(csv.DictReader(open(results / "test_per_subject.csv")))
    assert sorted(row["subject"] for row in rows) == sorted(manifest["splits"]["test"]["subjects"])
    assert (results / "test_confusion.png").stat().st_size > 0
    assert (results / "report.html").read_text().count("data:image/png;base64,") == 3  # + the confusion matrices


@pytest.mark.slow
def test_selection_never_reads_the_test_subjects(held_out):
    store, results, _ = held_out
    manifest = json.loads((store / "manifest.json").read_text())
    summary = json.loads((results / "summary.json").read_text())
    test_subjects = set(manifest["splits"]["test"]["subjects"])
    assert not test_subjects & set(manifest["splits"]["train"]["subjects"] + manifest["splits"]["validation"]["subjects"])
    # sequences per epoch are counted over train and validation only
    from chap_mop.data.data_store import read_store
    from chap_mop.data.windows import sequence_length
    _, train, val = read_store(str(store))
    assert summary["sequences_per_epoch"]["1"] == {"train": sum(train.sequences_per_worker(sequence_length(1), 2)),
                                                   "val": sum(val.sequences_per_worker(sequence_length(1), 2))}


@pytest.mark.slow
def test_predictions_of_the_chosen_model_and_the_ensemble_for_the_test_subjects(spark, held_out, tmp_path):
    """The prediction stage on the test subjects' day files, best model and ensemble."""
    store, results, _ = held_out
    manifest = json.loads((store / "manifest.json").read_text())
    day_files = tmp_path / "h5"
    for subject in manifest["splits"]["test"]["subjects"]:
        shutil.copytree(Path(manifest["input"].removeprefix("file://")) / subject, day_files / subject)
    summary = json.loads((results / "summary.json").read_text())
    for ensemble, model_name in ((False, summary["best_run_id"]), (True, "ensemble")):
        written, _ = predict(PredictSettings(pre_processed_dir=str(day_files), predictions_dir=str(tmp_path / "out"),
                                             results=str(results), output_label=True, ensemble=ensemble), spark)
        for subject in manifest["splits"]["test"]["subjects"]:
            rows = list(csv.reader(open(tmp_path / "out" / model_name / f"{subject}.csv")))
            assert rows[0] == ["segment", "timestamp", "label", "prediction"] and len(rows) > 100
            assert {row[3] for row in rows[1:]} <= {"sitting", "not-sitting"}
        assert written == len(manifest["splits"]["test"]["subjects"])


@pytest.mark.slow
def test_a_copied_results_folder_predicts_with_its_own_model_and_refuses_a_damaged_one(spark, held_out, tmp_path):
    """``cp -a R R_v1``, then a new run replaces R's model: R_v1 still predicts with R_v1's own model,
    even with a summary that names R's path; a truncated model in R_v1 is refused in one line."""
    from chap_mop.predict import predictions
    store, results, _ = held_out
    original, copy = tmp_path / "R", tmp_path / "R_v1"
    shutil.copytree(results, original)
    shutil.copytree(results, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "best_model": str(original / "best_model.h5")}))
    other = json.loads((results / "ensemble.json").read_text())["members"][-1]["model"]
    shutil.copy(original / other, original / "best_model.h5")  # R's new best model, of another window size
    manifest = json.loads((store / "manifest.json").read_text())
    subject = manifest["splits"]["test"]["subjects"][0]
    day_files = tmp_path / "h5"
    shutil.copytree(Path(manifest["input"].removeprefix("file://")) / subject, day_files / subject)

    predict(PredictSettings(pre_processed_dir=str(day_files), predictions_dir=str(tmp_path / "out"),
                            results=str(copy), probabilities=True), spark)
    own = tmp_path / "own"
    own.mkdir()
    files = sorted(str(p) for p in (day_files / subject).glob("*.h5"))
    import pyarrow.fs as pafs
    predictions.predict_subject(pafs.LocalFileSystem(), subject, files, predictions.Settings(
        (str(copy / "best_model.h5"),), str(own), "drop", False, True, True, 256))
    written = (tmp_path / "out" / summary["best_run_id"] / f"{subject}.csv").read_text()
    assert written == (own / f"{subject}.csv").read_text() and len(written.splitlines()) > 100

    with open(copy / "best_model.h5", "r+b") as model:
        model.truncate(1000)
    with pytest.raises(InputError, match=f"{copy / 'best_model.h5'} is not the model this run saved"):
        predict(PredictSettings(pre_processed_dir=str(day_files), predictions_dir=str(tmp_path / "out2"),
                                results=str(copy)), spark)


def test_an_unwritable_results_folder_is_one_line_before_spark(store):
    with pytest.raises(InputError, match=r"results folder /sys/kernel/chap_results cannot be written \("):
        select_in_process(None, store, Path("/sys/kernel/chap_results"))  # sysfs: not writable, even for root
