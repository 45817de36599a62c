"""A run's saved state on real files: which folders a run may write into, what --overwrite removes,
what a resume refuses, and that a restored checkpoint is the end-of-epoch one (a real Keras model)."""
import hashlib

import numpy as np
import pytest

from chap_mop import cerebro_compat
cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
from chap_mop.selection.run_state import (CHECKPOINTS_DIR, PREVIOUS_STATE_NAME, RUNS_DIR, STATE_NAME,  # noqa: E402
                                          ResultsFolderError, RunState, open_results_folder, remove_run,
                                          saved_model)

import tensorflow as tf  # noqa: E402

SETTINGS = {"data_store": "/data/store", "manifest_sha256": "abc", "search": "grid",
            "search_space": {"lr": [0.001, 0.0001]}, "samples": None, "batch_size": 16,
            "metric": "balanced_accuracy", "epochs": 3, "workers": 2}


def test_a_missing_or_empty_folder_takes_a_new_run(tmp_path):
    assert open_results_folder(tmp_path / "new", resume=False, overwrite=False) is None
    assert open_results_folder(tmp_path, resume=False, overwrite=True) is None
    with pytest.raises(ResultsFolderError, match=f"nothing to resume: {tmp_path} holds no run"):
        open_results_folder(tmp_path, resume=True, overwrite=False)


def test_a_foreign_folder_is_refused_whatever_the_flags(tmp_path):
    (tmp_path / "thesis.txt").write_text("three years of work")
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    for resume, overwrite in [(False, False), (False, True), (True, False)]:
        with pytest.raises(ResultsFolderError, match=rf"results folder {tmp_path} is not empty and holds no run of "
                                                     r"this project \(4 entries: a, b, c, \.\.\.\)"):
            open_results_folder(tmp_path, resume, overwrite)
    assert (tmp_path / "thesis.txt").read_text() == "three years of work"
    with pytest.raises(ResultsFolderError, match="is a file; expected a folder"):
        open_results_folder(tmp_path / "thesis.txt", False, False)


def test_an_earlier_run_needs_resume_or_overwrite(tmp_path):
    RunState.create(tmp_path, SETTINGS)
    with pytest.raises(ResultsFolderError, match=r"holds an earlier run \(incomplete, 0 of 3 epochs\): pass --resume "
                                                 "to continue it or --overwrite to replace it"):
        open_results_folder(tmp_path, False, False)
    with pytest.raises(ResultsFolderError, match="--resume and --overwrite exclude each other"):
        open_results_folder(tmp_path, True, True)
    assert open_results_folder(tmp_path, True, False).settings == SETTINGS


def test_overwrite_removes_the_run_and_nothing_else(tmp_path):
    state = RunState.create(tmp_path, SETTINGS)
    state.add_configuration("model_0_1", {"lr": 0.001})
    for path in [f"{RUNS_DIR}/model_0_1/checkpoint.h5", f"{RUNS_DIR}/model_0_1/logs/events.epoch1",
                 f"{CHECKPOINTS_DIR}/model_0_1/epoch_1.h5", "models.csv", "history.csv", "summary.json",
                 "best_model.h5", "validation_balanced_accuracy.png"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("written by the run")
    (tmp_path / "thesis.txt").write_text("mine")
    (tmp_path / RUNS_DIR / "my_notes.txt").write_text("mine too")
    remove_run(open_results_folder(tmp_path, False, True))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == \
        [RUNS_DIR, f"{RUNS_DIR}/my_notes.txt", "thesis.txt"]


@pytest.mark.parametrize("change, message", [
    ({"search_space": {"lr": [0.01]}}, r'search_space was {"lr": \[0.001, 0.0001\]}, now {"lr": \[0.01\]}'),
    ({"manifest_sha256": "def"}, r"the data store was re-prepared \(its manifest changed\)"),
    ({"search": "random", "samples": 8}, 'search was "grid", now "random"'),
    ({"batch_size": 32}, "batch_size was 16, now 32"),
    ({"metric": "loss"}, 'metric was "balanced_accuracy", now "loss"'),
])
def test_resume_refuses_other_settings(tmp_path, change, message):
    state = RunState.create(tmp_path, SETTINGS)
    with pytest.raises(ResultsFolderError, match=f"cannot resume the run in {tmp_path}: {message}"):
        state.check_resumable({**SETTINGS, **change})
    state.check_resumable({**SETTINGS, "epochs": 5, "workers": 4})  # more epochs, other workers: fine


def test_resume_refuses_fewer_epochs_than_completed(tmp_path):
    state = RunState.create(tmp_path, SETTINGS)
    state.add_configuration("model_0_1", {"lr": 0.001})
    state.configurations[0]["epochs_completed"] = 2
    with pytest.raises(ResultsFolderError, match="with --epochs 1: it has completed 2 epochs; pass --epochs 2"):
        state.check_resumable({**SETTINGS, "epochs": 1})


def fitted_model(model=None):
    if model is None:
        inputs = tf.keras.Input((3,))
        model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax")(inputs))
        model.compile(tf.keras.optimizers.Adam(learning_rate=0.1), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(len(model.optimizer.variables))
    model.fit(rng.normal(size=(32, 3)).astype("float32"), rng.integers(0, 2, 32), batch_size=8, verbose=0)
    return model


def test_restore_brings_back_the_end_of_epoch_checkpoint_not_the_working_one(tmp_path):
    state = RunState.create(tmp_path, SETTINGS)
    state.add_configuration("model_0_1", {"lr": 0.001})
    working = tmp_path / RUNS_DIR / "model_0_1" / "checkpoint.h5"
    logs = working.parent / "logs"
    logs.mkdir(parents=True)
    model = fitted_model()
    model.save(working)  # end of epoch 1, as cerebro leaves it
    end_of_epoch = (model.get_weights(), [v.numpy() for v in model.optimizer.variables])
    state.save_epoch({"model_0_1": working}, {"model_0_1": {"val_loss": [0.5]}}, {"model_0_1": 1})
    (logs / "events.out.tfevents.1.epoch1").write_text("epoch 1")

    fitted_model(model).save(working)  # a sub-epoch of epoch 2 overwrote it, then the driver died
    (logs / "events.out.tfevents.2.epoch2").write_text("epoch 2")
    (tmp_path / CHECKPOINTS_DIR / "model_0_1" / "epoch_2.h5").write_text("copied, state not yet saved")
    assert not np.array_equal(model.get_weights()[0], end_of_epoch[0][0])

    resumed = RunState.load(tmp_path)
    resumed.record_resume(3, 2)
    resumed.restore(resumed.configurations[0], working, logs)
    restored = tf.keras.models.load_model(working)
    for got, expected in zip(restored.get_weights(), end_of_epoch[0]):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip([v.numpy() for v in restored.optimizer.variables], end_of_epoch[1]):
        np.testing.assert_array_equal(got, expected)
    assert sorted(p.name for p in logs.iterdir()) == ["events.out.tfevents.1.epoch1"]
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS_DIR / "model_0_1").iterdir()) == ["epoch_1.h5"]
    saved = RunState.load(tmp_path).data["resumes"]
    assert saved[0]["after_epoch"] == 1
    assert saved[0]["restored"] == {"model_0_1": hashlib.sha256(working.read_bytes()).hexdigest()}


def test_a_configuration_without_a_completed_epoch_starts_afresh(tmp_path):
    state = RunState.create(tmp_path, SETTINGS)
    state.add_configuration("model_0_1", {"lr": 0.001})
    working = tmp_path / RUNS_DIR / "model_0_1" / "checkpoint.h5"
    working.parent.mkdir(parents=True)
    working.write_text("half-trained")
    state.record_resume(3, 2)
    state.restore(state.configurations[0], working, working.parent / "logs")
    assert not working.exists()  # cerebro builds the model again
    assert state.data["resumes"][0]["restored"] == {"model_0_1": None}


def test_save_epoch_keeps_the_checkpoints_of_the_state_and_of_the_previous_state(tmp_path):
    state = RunState.create(tmp_path, SETTINGS)
    state.add_configuration("model_0_1", {"lr": 0.001})
    working = tmp_path / "working.h5"
    for epoch in (1, 2, 3):
        working.write_text(f"epoch {epoch}")
        state.save_epoch({"model_0_1": working}, {"model_0_1": {"val_loss": [0.5] * epoch}}, {"model_0_1": epoch})
    kept = tmp_path / CHECKPOINTS_DIR / "model_0_1"
    # epoch 2's stays while run_state.json.prev names it: the previous state can stand in for a damaged one
    assert sorted(p.name for p in kept.iterdir()) == ["epoch_2.h5", "epoch_3.h5"]
    (tmp_path / STATE_NAME).write_text("{")
    assert RunState.load(tmp_path).configurations[0]["epochs_completed"] == 2
    state.finish()  # once complete, only the last epoch's remain
    assert [p.name for p in kept.iterdir()] == ["epoch_3.h5"] and (kept / "epoch_3.h5").read_text() == "epoch 3"
    entry = RunState.load(tmp_path).configurations[0]
    assert entry["epochs_completed"] == 3 and entry["history"] == {"val_loss": [0.5, 0.5, 0.5]}
    assert not list(tmp_path.glob(".*partial")) and (tmp_path / STATE_NAME).is_file()


# A damaged state is recoverable ---------------------------------------------------------------

def saved_twice(folder):
    """A run whose state was saved twice (so that run_state.json.prev holds the first save)."""
    state = RunState.create(folder, SETTINGS)
    state.add_configuration("model_0_1", {"lr": 0.001})
    return state


@pytest.mark.parametrize("damage", ["truncated", "a list", "deleted"])
def test_a_damaged_state_falls_back_to_the_previous_one_with_a_warning(tmp_path, capsys, damage):
    saved_twice(tmp_path)
    path = tmp_path / STATE_NAME
    if damage == "truncated":
        path.write_text(path.read_text()[:40])
    elif damage == "a list":
        path.write_text("[]")
    else:
        path.unlink()
    state = open_results_folder(tmp_path, resume=True, overwrite=False)  # the folder is still the project's
    assert state.settings == SETTINGS
    if damage != "deleted":
        assert f"warning: {path} is not a readable run state" in capsys.readouterr().out


def test_overwrite_always_works_on_a_folder_the_project_marked(tmp_path):
    saved_twice(tmp_path)
    for name in (STATE_NAME, PREVIOUS_STATE_NAME):
        (tmp_path / name).write_text("{")
    (tmp_path / CHECKPOINTS_DIR / "model_0_1").mkdir(parents=True)
    (tmp_path / CHECKPOINTS_DIR / "model_0_1" / "epoch_1.h5").write_text("written by the run")
    (tmp_path / "thesis.txt").write_text("mine")
    with pytest.raises(ResultsFolderError, match="pass --overwrite to replace the run"):
        open_results_folder(tmp_path, resume=True, overwrite=False)
    remove_run(open_results_folder(tmp_path, resume=False, overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.txt"]


def test_impossible_values_in_the_state_are_refused_before_training(tmp_path):
    state = saved_twice(tmp_path)
    state.configurations[0]["epochs_completed"] = 5  # edited by hand, beyond the run's 3 epochs
    state.save()
    state.save()  # the previous state holds the edit too
    with pytest.raises(ResultsFolderError, match=r"configuration model_0_1 has epochs_completed 5 \(expected 0 to "
                                                 r"3\); pass --overwrite"):
        open_results_folder(tmp_path, resume=True, overwrite=False)


def test_a_saved_model_is_checked_against_the_digest_the_run_recorded(tmp_path):
    state = saved_twice(tmp_path)
    (tmp_path / "best_model.h5").write_bytes(b"the model")
    state.finish(["best_model.h5"])
    assert saved_model(tmp_path, "best_model.h5") == tmp_path / "best_model.h5"
    (tmp_path / "best_model.h5").write_bytes(b"another model")
    with pytest.raises(ResultsFolderError, match="best_model.h5 is not the model this run saved"):
        saved_model(tmp_path, "best_model.h5")
    (tmp_path / "best_model.h5").unlink()
    with pytest.raises(ResultsFolderError, match="best_model.h5 is missing"):
        saved_model(tmp_path, "best_model.h5")


def test_an_unwritable_folder_is_one_line(tmp_path):
    from chap_mop.errors import InputError
    from chap_mop.files import check_writable
    check_writable(tmp_path / "new" / "results", "results folder")
    assert not (tmp_path / "new").exists() and not list(tmp_path.iterdir())  # nothing created, nothing left
    with pytest.raises(InputError, match=r"results folder /sys/kernel/chap_results cannot be written \("):
        check_writable("/sys/kernel/chap_results", "results folder")  # sysfs: not writable, even for root
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="cannot be written"):
        check_writable(tmp_path / "a_file" / "results", "results folder")


# One driver per folder; what an interrupted write left is removed ------------------------------

def test_a_second_driver_is_refused_and_a_dead_drivers_lock_taken_over(tmp_path, capsys):
    import json
    import os
    import socket
    from chap_mop.selection.run_state import LOCK_NAME, driver_lock
    with driver_lock(tmp_path):
        with pytest.raises(ResultsFolderError, match=rf"results folder {tmp_path} is in use by another process \(host "
                                                     rf"{socket.gethostname()}, process {os.getpid()}, since "):
            with driver_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()  # released on the way out
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid() + 1,
                                                  "started": "2026-12-03T10:00:00"}))
    with driver_lock(tmp_path):  # a driver killed with SIGKILL left it (the kernel released its lock): taken over
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert "warning: taking over" in capsys.readouterr().out
        with pytest.raises(ResultsFolderError, match="in use by another process"):  # taken over by one driver only
            with driver_lock(tmp_path):
                pass
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "another-host", "pid": 1, "started": "then"}))
    with pytest.raises(ResultsFolderError, match="in use by another process \\(host another-host"):
        with driver_lock(tmp_path):
            pass


def test_the_lock_is_the_kernels_and_ends_with_its_process(tmp_path):
    """A lock held by another process, whatever its file says, refuses; once that process is killed,
    the lock is free at once."""
    import subprocess
    import sys
    from chap_mop.errors import InputError
    from chap_mop.files import LOCK_NAME, folder_lock
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from chap_mop.files import folder_lock\n"
                               f"with folder_lock(Path({str(tmp_path)!r}), 'output folder'):\n"
                               "    print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / LOCK_NAME).write_text("{}")  # what the file says does not matter
        with pytest.raises(InputError, match=f"output folder {tmp_path} is in use"):
            with folder_lock(tmp_path, "output folder"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path, "output folder"):
        pass


def test_half_written_files_of_an_interrupted_run_are_removed_and_nothing_else(tmp_path):
    from chap_mop.selection.run_state import remove_interrupted_writes
    left = [".run_state.json.partial", ".models.csv.partial", f"{RUNS_DIR}/model_0_1/.hop-ab12.npz",
            f"{CHECKPOINTS_DIR}/model_0_1/.epoch_2.h5.partial"]
    kept = ["notes.partial", ".mine.partial", f"{RUNS_DIR}/model_0_1/hop.npz", f"{RUNS_DIR}/other/.hop-x.npz",
            f"{CHECKPOINTS_DIR}/model_0_1/epoch_1.h5"]
    for name in left + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert sorted(str(p.relative_to(tmp_path)) for p in remove_interrupted_writes(tmp_path)) == sorted(left)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)


@pytest.mark.parametrize("edit", [{"history": []}, {"checkpoint": 3}, {"epochs_completed": "2"}])
def test_a_state_with_values_of_the_wrong_kind_is_one_line_and_overwrite_replaces_it(tmp_path, edit):
    state = saved_twice(tmp_path)
    state.configurations[0].update(edit)
    state.save()
    state.save()
    with pytest.raises(ResultsFolderError, match="pass --overwrite to replace the run"):
        open_results_folder(tmp_path, resume=True, overwrite=False)
    remove_run(open_results_folder(tmp_path, resume=False, overwrite=True))
    assert not list(tmp_path.iterdir())
