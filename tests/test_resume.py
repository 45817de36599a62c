"""A model selection whose driver (model_selection.py) is killed mid-epoch resumes with --resume on
real local Spark, and the results folder rules hold for the selection stage: a foreign folder is
refused, --overwrite removes only the run, a resume with other settings stops with one line. The
resumes and refusals run in this process; only the killed run needs a process of its own."""
import csv
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from chap_mop.selection import hop_checkpoint
from chap_mop.errors import InputError
from chap_mop.selection.run_state import CHECKPOINTS_DIR, STATE_NAME
from conftest import prepare_in_process, select_in_process

pytestmark = pytest.mark.slow

GRID = '{"lr": [0.001], "l2_reg": [0.001, 0.0001], "win_size": [1], "amp_factor": [1]}'
EPOCHS = 2
SCRIPT_TIMEOUT_S = 600


def selection_args(store: Path, results: Path, *extra: str, grid: str = GRID) -> list[str]:
    return ["--master", "local[2]", "--data", str(store), "--results", str(results), "--workers", "2",
            "--epochs", str(EPOCHS), "--batch-size", "16", "--search-space", grid, *extra]


def select(spark, store: Path, results: Path, grid: str = GRID, **settings) -> str:
    """The selection stage in this process with this module's settings; what it printed."""
    return select_in_process(spark, store, results, **{"epochs": EPOCHS} | settings,
                             search_space=json.loads(grid))[1]


def weights(checkpoint: Path) -> dict[str, np.ndarray]:
    """Every weight and optimizer variable of a Keras HDF5 checkpoint, by its path in the file."""
    arrays = {}
    with h5py.File(checkpoint, "r") as file:
        file.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                        else None)
    return arrays


def after_a_sub_epoch_of_epoch_2(output: str) -> bool:
    return f"\nepoch 2/{EPOCHS} | " in output  # the progress line of a finished sub-epoch


@pytest.fixture(scope="module")
def killed_and_resumed(spark, store, tmp_path_factory, request):
    """A run killed (SIGKILL, its whole process tree) during epoch 2, then resumed."""
    from conftest import TrackedScript
    work = tmp_path_factory.mktemp("killed")
    results = work / "results"
    killed = TrackedScript("model_selection.py", selection_args(store, results), work, work / "killed.log")
    request.addfinalizer(killed.stop)
    killed.wait_for(after_a_sub_epoch_of_epoch_2, "a completed sub-epoch of epoch 2", SCRIPT_TIMEOUT_S)
    killed.stop()
    alive = [p for p in killed.tree.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes of the killed run still run: {alive}"

    before = json.loads((results / STATE_NAME).read_text())
    kept = {c["run_id"]: results / c["checkpoint"] for c in before["configurations"]}
    hops = {run_id: hop_checkpoint.path_in(results / "runs" / run_id) for run_id in kept}
    snapshot = {"state": before, "digests": {r: hashlib.sha256(p.read_bytes()).hexdigest() for r, p in kept.items()},
                "end_of_epoch_1": {r: weights(p) for r, p in kept.items()},
                "hop_visits": {r: hop_checkpoint.read(p).visits for r, p in hops.items() if p.exists()}}
    return results, snapshot, select(spark, store, results, resume=True)


def test_the_kill_came_after_epoch_1_and_during_epoch_2(killed_and_resumed):
    _, snapshot, _ = killed_and_resumed
    assert [c["epochs_completed"] for c in snapshot["state"]["configurations"]] == [1, 1]
    assert snapshot["state"]["status"] == "running"
    # A training sub-epoch of epoch 2 moved a configuration on: its hop checkpoint is past epoch 1's 2 visits.
    assert max(snapshot["hop_visits"].values()) > 2


def test_resume_starts_epoch_2_from_the_end_of_epoch_1(killed_and_resumed):
    results, snapshot, stdout = killed_and_resumed
    assert f"resuming 2 configurations after epoch 1 of {EPOCHS}" in stdout
    summary = json.loads((results / "summary.json").read_text())
    [resume] = summary["resumes"]
    assert resume["after_epoch"] == 1
    # The checkpoint each worker loads for epoch 2 is the end-of-epoch-1 one, byte for byte, so its
    # weights and optimizer state are too.
    assert resume["restored"] == snapshot["digests"]
    assert all(snapshot["end_of_epoch_1"][r] for r in resume["restored"])
    # The killed run's later hop checkpoints were discarded: the hops counted again from the restored epoch.
    for run_id in resume["restored"]:
        assert hop_checkpoint.read(hop_checkpoint.path_in(results / "runs" / run_id)).visits == 2 * (EPOCHS - 1)


def test_resumed_run_ends_with_the_files_of_an_uninterrupted_run(killed_and_resumed):
    results, snapshot, stdout = killed_and_resumed
    history = list(csv.DictReader(open(results / "history.csv")))
    run_ids = sorted(c["run_id"] for c in snapshot["state"]["configurations"])
    assert sorted((h["run_id"], int(h["epoch"])) for h in history) == \
        [(run_id, epoch) for run_id in run_ids for epoch in range(1, EPOCHS + 1)]
    for entry in snapshot["state"]["configurations"]:  # epoch 1 was not trained again
        [first] = [h for h in history if h["run_id"] == entry["run_id"] and h["epoch"] == "1"]
        assert float(first["val_loss"]) == pytest.approx(entry["history"]["val_loss"][0])
    models = list(csv.DictReader(open(results / "models.csv")))
    assert sorted(m["run_id"] for m in models) == run_ids and {m["epochs"] for m in models} == {str(EPOCHS)}
    for name in ("summary.json", "validation_balanced_accuracy.png", "best_model.h5"):
        assert (results / name).is_file(), name
    for run_id in run_ids:
        logs = sorted(p.name.rsplit(".", 1)[1] for p in (results / "runs" / run_id / "logs").iterdir())
        assert logs == [f"epoch{epoch}" for epoch in range(1, EPOCHS + 1)] + ["hparams"]
        assert [p.name for p in (results / CHECKPOINTS_DIR / run_id).iterdir()] == [f"epoch_{EPOCHS}.h5"]
    assert json.loads((results / STATE_NAME).read_text())["status"] == "complete"
    assert "Best run" in stdout


def refusal(spark, store: Path, results: Path, **settings) -> str:
    """The one-line error of a selection that must stop before training."""
    with pytest.raises(InputError) as error:
        printed = select(spark, store, results, **settings)
        raise AssertionError(f"not refused:\n{printed}")
    return str(error.value)


def test_a_foreign_results_folder_is_refused_before_spark_starts(store, tmp_path):
    (tmp_path / "thesis.txt").write_text("three years of work")
    assert refusal(None, store, tmp_path) == (f"results folder {tmp_path} is not empty and holds no run of this "
                                              "project (1 entries: thesis.txt); choose a new or empty folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.txt"]
    assert (tmp_path / "thesis.txt").read_text() == "three years of work"


def test_an_earlier_run_is_kept_without_resume_or_overwrite(killed_and_resumed, store):
    results, _, _ = killed_and_resumed
    assert refusal(None, store, results) == (f"results folder {results} holds an earlier run (complete, {EPOCHS} of "
                                             f"{EPOCHS} epochs): pass --resume to continue it or --overwrite to "
                                             "replace it")


def test_resume_with_another_search_space_is_refused(killed_and_resumed, store):
    results, _, _ = killed_and_resumed
    grid = GRID.replace('"lr": [0.001]', '"lr": [0.01]')
    assert refusal(None, store, results, grid=grid, resume=True).startswith(
        f"cannot resume the run in {results}: search_space was ")


def test_resume_on_a_re_prepared_store_is_refused(spark, killed_and_resumed, store, tmp_path):
    results, _, _ = killed_and_resumed
    other = tmp_path / "store"
    prepare_in_process(spark, store.parent / "h5", other, seed=7)
    assert refusal(None, other, results, resume=True) == (
        f"cannot resume the run in {results}: the data store was re-prepared (its manifest changed); use the run's "
        "own settings, or --overwrite to start a new run there")


def test_overwrite_replaces_the_run_and_keeps_foreign_files(spark, killed_and_resumed, store):
    results, snapshot, _ = killed_and_resumed
    (results / "notes.txt").write_text("mine")
    old_ids = {c["run_id"] for c in snapshot["state"]["configurations"]}
    select(spark, store, results, overwrite=True, epochs=1)
    assert (results / "notes.txt").read_text() == "mine"
    new_ids = {m["run_id"] for m in csv.DictReader(open(results / "models.csv"))}
    assert not new_ids & old_ids
    assert {p.name for p in (results / "runs").iterdir()} == new_ids
    assert json.loads((results / "summary.json").read_text())["resumes"] == []
