"""model_selection.py end to end on demo data: a 4-configuration grid, 2 workers, 2 epochs."""
import csv
import json

import numpy as np
import pytest

from chap_mop.demo_data import write_demo_dataset
from conftest import run_script


GRID = '{"lr": [0.001], "l2_reg": [0.001, 0.0001], "win_size": [1, 2], "amp_factor": [1]}'


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Petastorm store of 6 demo subjects written by prep_petastorm_data.py."""
    root = tmp_path_factory.mktemp("selection")
    write_demo_dataset(root / "h5", subjects=6, days=1, hours_per_day=8, seed=1)
    run_script("prep_petastorm_data.py", "--master", "local[2]", "--input", str(root / "h5"),
               "--output", str(root / "store"), "--partitions", "2")
    return root / "store"


@pytest.fixture(scope="module")
def selection(store, tmp_path_factory):
    results = tmp_path_factory.mktemp("results") / "out"
    run = run_script("model_selection.py", "--master", "local[2]", "--data", str(store), "--results", str(results),
                     "--workers", "2", "--epochs", "2", "--batch-size", "16", "--search-space", GRID)
    return results, run.stdout


def test_writes_every_result_file(selection):
    results, stdout = selection
    for name in ("models.csv", "history.csv", "summary.json", "validation_balanced_accuracy.png", "best_model.h5"):
        assert (results / name).is_file(), name
    models = list(csv.DictReader(open(results / "models.csv")))
    history = list(csv.DictReader(open(results / "history.csv")))
    assert len(models) == 4 and len(history) == 8
    assert {(m["l2_reg"], m["win_size"]) for m in models} == {("0.001", "1"), ("0.001", "2"), ("0.0001", "1"),
                                                              ("0.0001", "2")}
    for run in models:
        logs = list((results / "runs" / run["run_id"] / "logs").glob("events.out.tfevents.*"))
        assert len(logs) >= 3  # hparams + one per epoch
    assert f"Results in {results}" in stdout
    assert "Scheduling Model" in stdout and "=== epoch 2/2 done" in stdout


def test_best_run_is_the_best_validation_balanced_accuracy(selection):
    results, _ = selection
    summary = json.loads((results / "summary.json").read_text())
    models = list(csv.DictReader(open(results / "models.csv")))
    best = max(models, key=lambda m: float(m["val_balanced_accuracy"]))
    assert summary["best_run_id"] == best["run_id"]
    assert summary["evaluation_metric"] == "val_balanced_accuracy"
    assert summary["value"] == pytest.approx(float(best["val_balanced_accuracy"]))
    assert summary["value"] > 0.7  # demo data is learnable; chance is 0.5
    assert summary["workers"] == 2 and summary["epochs"] == 2
    assert set(summary["sequences_per_epoch"]) == {"1", "2"}
    assert all(c["train"] > c["val"] > 0 for c in summary["sequences_per_epoch"].values())


def test_best_model_loads_and_predicts(selection):
    from chap_mop import cerebro_compat  # noqa: F401
    import tensorflow as tf
    results, _ = selection
    model = tf.keras.models.load_model(results / "best_model.h5")
    seq_len = model.input_shape[1]
    probabilities = model.predict(np.zeros((3, seq_len, 100, 3, 1), np.float32), verbose=0)
    assert probabilities.shape == (3, seq_len, 2)


@pytest.mark.parametrize("args, message", [
    (["--search-space", '{"lr": [0.001], "l2_reg": [0.0], "win_size": [7], "amp_factor": [1], "dropout": [0.1]}'],
     "unknown hyper-parameter(s) ['dropout']"),
    (["--search-space", '{"lr": [], "l2_reg": [0.0], "win_size": [7], "amp_factor": [1]}'],
     "hyper-parameter 'lr' has []"),
    (["--search-space", '{"lr": [0.001], "l2_reg": [0.0], "win_size": [600], "amp_factor": [1]}'],
     "win_size 600 min (3600 windows): train sequences per worker are [0, 0]"),
    (["--metric", "auc"], "invalid choice: 'auc'"),
])
def test_bad_settings_stop_before_training(store, tmp_path, args, message):
    run = run_script("model_selection.py", "--master", "local[2]", "--data", str(store), "--workers", "2",
                     "--results", str(tmp_path / "r"), *args, check=False)
    assert run.returncode == 2 and message in run.stderr
    assert "Scheduling Model" not in run.stdout


def test_missing_store_is_named(tmp_path):
    run = run_script("model_selection.py", "--data", str(tmp_path / "nowhere"), check=False)
    assert run.returncode == 2 and f"{tmp_path / 'nowhere'}/manifest.json not found" in run.stderr
