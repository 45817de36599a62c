"""A model selection run's saved state: what makes a results folder the project's, what a resume
needs after every completed epoch, and the only files ``--overwrite`` may remove.

Layout inside a results folder::

    run_state.json                        the marker: written when a run starts, rewritten
                                          (write, then rename) after every completed epoch
    run_state.json.prev                   the state before the last save, used (with a warning)
                                          when run_state.json cannot be read
    .chap_mop.lock                        held while a driver writes the run: a second is refused
    checkpoints/<run id>/epoch_<k>.h5     each configuration as it was at the end of its last
                                          completed epoch k: weights and optimizer state
    runs/<run id>/                        cerebro's working checkpoint (overwritten after every
                                          sub-epoch, so never trusted on resume) and TensorBoard logs
    models.csv, history.csv, summary.json, validation_<metric>.png, best_model.h5, report.html,
    ensemble.json, ensemble/<run id>.h5, test_report.json, test_per_subject.csv, test_confusion.png
                                          the outputs

A folder is the project's only when it holds ``run_state.json`` or ``run_state.json.prev`` (their
presence, not their contents, so a damaged state can still be replaced with ``--overwrite``).
Nothing here deletes a path that the state does not name, that is not one of the outputs above, or
that is not named with one of cerebro's run ids (``model_<i>_<time>``) in ``runs/``,
``checkpoints/`` and ``ensemble/`` (a stale or unreadable state may not name them all).
"""
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from chap_mop.errors import InputError
from chap_mop.files import LOCK_NAME, folder_lock, sha256_of

STATE_NAME = "run_state.json"
PREVIOUS_STATE_NAME = STATE_NAME + ".prev"
RUN_ID_PATTERN = re.compile(r"model_\d+_\d+")  # cerebro's run ids
STATE_FORMAT = 1
CHECKPOINTS_DIR = "checkpoints"
RUNS_DIR = "runs"
OUTPUT_NAMES = ("models.csv", "history.csv", "summary.json", "best_model.h5", "report.html", "ensemble.json",
                "test_report.json", "test_per_subject.csv", "test_confusion.png")
MEMBERS_DIR = "ensemble"  # ensemble/<run id>.h5, see chap_mop.selection.ensemble
OUTPUT_PATTERNS = ("validation_*.png",)
PARTIAL_SUFFIX = ".partial"
EPOCH_LOG_SUFFIX = ".epoch"  # TensorBoard event files of epoch k end in ".epoch<k>"
# Settings that must be equal for a run to be resumed: anything else would make a different run.
RESUME_KEYS = ("manifest_sha256", "search", "search_space", "samples", "batch_size", "metric", "eta", "min_epochs",
               "seed", "init_from_sha256", "class_weights")
FOREIGN_ENTRIES_SHOWN = 3


class ResultsFolderError(InputError):
    """A results folder that this command must not write into; the message says what to pass."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: beside it first, then renamed over it."""
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    partial.write_text(text)
    os.replace(partial, path)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` whole or not at all (copied beside it, then renamed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def _read_state(path: Path) -> dict:
    """The JSON of a run state file, checked for the keys every state has.

    :raises OSError: it cannot be read.  :raises ValueError: it is not a run state of this format.
    """
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("configurations"), list) or \
            not isinstance(data.get("settings"), dict):
        raise ValueError(f"expected a JSON object with settings and configurations, found {type(data).__name__}")
    if data.get("format") != STATE_FORMAT:
        raise ValueError(f"state format {data.get('format')!r}, expected {STATE_FORMAT}")
    return data


def manifest_fingerprint(manifest: dict) -> str:
    """SHA-256 of a data store's manifest: a re-prepared store has another."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


class RunState:
    """The saved state of one run in its results folder (``run_state.json`` and checkpoints).

    ``configurations`` lists, in the order the search created them: ``run_id``,
    ``hyperparameters``, ``epochs_completed``, ``history`` ({metric: per-epoch values}),
    ``checkpoint`` (path relative to the folder, or None before the first epoch), any
    search-specific ``extra`` (TPE's hyperopt values, a halving search's bracket), once
    successive halving stopped it, ``stopped_at_rung``, and once its loss was not finite after an
    epoch, ``failed_at_epoch``.
    """

    def __init__(self, folder: Path, data: dict):
        self.folder = folder
        self.data = data

    @classmethod
    def create(cls, folder: Path, settings: dict) -> "RunState":
        """Start a new run: create the folder and write its marker before anything else."""
        folder.mkdir(parents=True, exist_ok=True)
        state = cls(folder, {"format": STATE_FORMAT, "status": "running", "created": _now(),
                             "settings": settings, "configurations": [], "resumes": [],
                             "wall_clock_seconds": 0.0})
        state.save()
        return state

    @classmethod
    def load(cls, folder: Path) -> "RunState":
        """The saved state; the previous one, with a warning, when the current cannot be read.

        :raises ResultsFolderError: neither can be read, or the state holds impossible values.
        """
        path, previous = folder / STATE_NAME, folder / PREVIOUS_STATE_NAME
        try:
            data = _read_state(path)
        except (OSError, ValueError) as error:
            try:
                data = _read_state(previous)
            except (OSError, ValueError):
                raise ResultsFolderError(f"{path} is not a readable run state ({error}) and {previous.name} cannot "
                                         "stand in for it; pass --overwrite to replace the run") from error
            print(f"warning: {path} is not a readable run state ({error}); using {previous.name}, the state "
                  "before its last save (at most one epoch older)")
        state = cls(folder, data)
        state.check_values()
        return state

    def check_values(self) -> None:
        """Refuse a state whose values no run can have written (e.g. edited by hand).

        :raises ResultsFolderError: naming the configuration and the value.
        """
        try:
            self._check_values()
        except (TypeError, AttributeError, KeyError) as error:
            raise ResultsFolderError(f"{self.folder / STATE_NAME} holds a value of the wrong kind ({error!r}); pass "
                                     "--overwrite to replace the run") from error

    def _check_values(self) -> None:
        epochs = self.settings.get("epochs")
        if self.data.get("status") not in ("running", "complete"):
            raise ResultsFolderError(f"{self.folder / STATE_NAME}: status {self.data.get('status')!r}, expected "
                                     "running or complete; pass --overwrite to replace the run")
        for entry in self.configurations:
            done, history = entry["epochs_completed"], entry.get("history")
            history = {} if history is None else history
            if not isinstance(entry["run_id"], str) or not isinstance(history, dict) or \
                    not isinstance(entry.get("checkpoint") or "", str):
                raise TypeError(f"configuration {entry.get('run_id')!r}")
            lengths = {len(values) for values in history.values()}
            problem = None
            if not isinstance(done, int) or done < 0 or (isinstance(epochs, int) and done > epochs):
                problem = f"epochs_completed {done!r} (expected 0 to {epochs})"
            elif lengths and lengths != {done}:
                problem = f"epochs_completed {done} but {sorted(lengths)} epochs of history"
            elif entry.get("failed_at_epoch") is not None and not (
                    isinstance(entry["failed_at_epoch"], int) and 1 <= entry["failed_at_epoch"] <= done):
                problem = f"failed_at_epoch {entry['failed_at_epoch']!r} (expected 1 to {done})"
            elif done and not (entry.get("checkpoint") and (self.folder / entry["checkpoint"]).is_file()):
                problem = f"no checkpoint file for its {done} completed epochs ({entry.get('checkpoint')})"
            if problem:
                raise ResultsFolderError(f"{self.folder / STATE_NAME}: configuration {entry.get('run_id')} has "
                                         f"{problem}; pass --overwrite to replace the run")

    def save(self) -> None:
        """Write the state whole (beside it, then renamed), keeping the one it replaces as ``.prev``."""
        self.data["updated"] = _now()
        current = self.folder / STATE_NAME
        if current.is_file():
            atomic_copy(current, self.folder / PREVIOUS_STATE_NAME)
        atomic_write_text(current, json.dumps(self.data, indent=1, default=float) + "\n")

    @property
    def settings(self) -> dict:
        return self.data["settings"]

    @property
    def configurations(self) -> list[dict]:
        return self.data["configurations"]

    @property
    def complete(self) -> bool:
        return self.data["status"] == "complete"

    def epochs_completed(self) -> int:
        """Epochs that every configuration still training has completed (0 before the first);
        configurations that successive halving stopped or that failed count only where they stopped."""
        live = [c for c in self.configurations if not (c.get("stopped_at_rung") or c.get("failed_at_epoch"))] \
            or self.configurations
        return min((c["epochs_completed"] for c in live), default=0)

    def configuration_epochs(self) -> int:
        """Epochs completed by all configurations together."""
        return sum(c["epochs_completed"] for c in self.configurations)

    def check_resumable(self, settings: dict) -> None:
        """Stop, naming the first difference, unless ``settings`` continue this run."""
        for key in RESUME_KEYS:
            saved, given = self.settings.get(key), settings.get(key)
            if saved != given:
                what = "the data store was re-prepared (its manifest changed)" if key == "manifest_sha256" \
                    else f"{key} was {json.dumps(saved)}, now {json.dumps(given)}"
                raise ResultsFolderError(f"cannot resume the run in {self.folder}: {what}; use the run's own "
                                         "settings, or --overwrite to start a new run there")
        done = max((c["epochs_completed"] for c in self.configurations), default=0)
        if self.settings.get("eta") is not None and settings["epochs"] != self.settings["epochs"]:
            raise ResultsFolderError(f"cannot resume the {self.settings['search']} run in {self.folder} with --epochs "
                                     f"{settings['epochs']}: its rungs were planned for --epochs "
                                     f"{self.settings['epochs']}; pass that, or --overwrite to start a new run there")
        if settings["epochs"] < done:
            raise ResultsFolderError(f"cannot resume the run in {self.folder} with --epochs {settings['epochs']}: "
                                     f"it has completed {done} epochs; pass --epochs {done} or more")

    def add_configuration(self, run_id: str, hyperparameters: dict, extra: dict | None = None) -> None:
        self.configurations.append({"run_id": run_id, "hyperparameters": hyperparameters, "epochs_completed": 0,
                                    "history": {}, "checkpoint": None, "extra": extra or {}})
        self.save()

    def mark_stopped(self, run_id: str, rung: int) -> None:
        """Successive halving stopped ``run_id`` at ``rung``; saved with the epoch (:meth:`save_epoch`)."""
        self._entry(run_id)["stopped_at_rung"] = rung

    def mark_failed(self, run_id: str, epoch: int) -> None:
        """``run_id``'s loss was not finite after ``epoch``; saved with the epoch (:meth:`save_epoch`)."""
        self._entry(run_id)["failed_at_epoch"] = epoch

    def _entry(self, run_id: str) -> dict:
        return next(c for c in self.configurations if c["run_id"] == run_id)

    def configuration(self, index: int) -> dict | None:
        return self.configurations[index] if index < len(self.configurations) else None

    def save_epoch(self, checkpoints: dict[str, Path], history: dict[str, dict], epochs: dict[str, int]) -> None:
        """Record the completed epoch of some configurations, checkpoints first, then the state.

        :param checkpoints: run id -> cerebro's checkpoint, as it is at the end of the epoch.
        :param history: run id -> every metric so far, one value per completed epoch.
        :param epochs: run id -> epochs completed.
        """
        by_id = {c["run_id"]: c for c in self.configurations}
        for run_id, source in checkpoints.items():
            kept = Path(CHECKPOINTS_DIR) / run_id / f"epoch_{epochs[run_id]}.h5"
            atomic_copy(source, self.folder / kept)
            by_id[run_id].update(checkpoint=str(kept), epochs_completed=epochs[run_id],
                                 history={name: list(values) for name, values in history[run_id].items()})
        self.save()
        self.drop_unnamed_checkpoints()

    def drop_unnamed_checkpoints(self) -> None:
        """Delete the end-of-epoch checkpoints that neither this state nor ``run_state.json.prev`` names:
        the previous state can stand in for a damaged one only with its own checkpoints."""
        named = {entry["checkpoint"] for entry in self.configurations if entry.get("checkpoint")}
        try:
            named |= {entry.get("checkpoint") for entry in _read_state(self.folder / PREVIOUS_STATE_NAME)
                      ["configurations"] if isinstance(entry, dict)}
        except (OSError, ValueError):
            pass
        for entry in self.configurations:
            folder = self.folder / CHECKPOINTS_DIR / entry["run_id"]
            for path in folder.glob("epoch_*.h5") if folder.is_dir() else []:
                if str(path.relative_to(self.folder)) not in named:
                    path.unlink(missing_ok=True)

    def restore(self, entry: dict, working_checkpoint: Path, logs_dir: Path) -> str | None:
        """Put one configuration back as it was after its last completed epoch, before training resumes.

        cerebro's working checkpoint becomes the saved end-of-epoch checkpoint (or is removed when no
        epoch completed, so that cerebro builds the model afresh); checkpoints the state does not name
        and TensorBoard files of later epochs go.

        The latest resume record (:meth:`record_resume`) notes, per run id, the SHA-256 of the checkpoint
        restored, or None when the configuration starts afresh.
        """
        kept_dir = self.folder / CHECKPOINTS_DIR / entry["run_id"]
        for stale in kept_dir.glob("*"):
            if entry["checkpoint"] is None or stale != self.folder / entry["checkpoint"]:
                stale.unlink()
        for log in logs_dir.glob(f"*{EPOCH_LOG_SUFFIX}*"):
            if int(log.name.rsplit(EPOCH_LOG_SUFFIX, 1)[1]) > entry["epochs_completed"]:
                log.unlink()
        if entry["checkpoint"] is None:
            working_checkpoint.unlink(missing_ok=True)
            digest = None
        else:
            atomic_copy(self.folder / entry["checkpoint"], working_checkpoint)
            digest = sha256_of(working_checkpoint)
        self.data["resumes"][-1]["restored"][entry["run_id"]] = digest
        self.save()

    def record_resume(self, epochs: int, workers: int) -> None:
        """Note that the run continues now, for ``epochs`` in all, on ``workers`` workers."""
        self.data["resumes"].append({"at": _now(), "after_epoch": self.epochs_completed(), "restored": {}})
        self.data["status"] = "running"
        self.data.pop("models", None)  # the outputs are written anew when the run completes
        self.settings.update(epochs=epochs, workers=workers)
        self.save()

    def add_session_time(self, seconds: float) -> None:
        """Add this session's wall-clock seconds to the run's total over every session."""
        self.data["wall_clock_seconds"] = round(self.data["wall_clock_seconds"] + seconds, 1)
        self.save()

    def finish(self, models: list[str] = ()) -> None:
        """Mark the run complete, after every output was written.

        :param models: the saved models (paths relative to the folder), whose SHA-256 the state keeps
            so that a copied, truncated or replaced file is refused when it is loaded.
        """
        self.data["models"] = {name: sha256_of(self.folder / name) for name in models}
        self.data["status"] = "complete"
        self.save()  # .prev is now the state before this one, which names the same checkpoints
        self.drop_unnamed_checkpoints()  # so those of the epoch before go


def saved_model(folder: Path, name: str) -> Path:
    """A model that a finished run saved in ``folder``, checked against the SHA-256 its state recorded.

    :param name: its path relative to the folder, e.g. ``best_model.h5``.
    :raises ResultsFolderError: the file is missing, or differs from the one the run saved.
    """
    path = folder / name
    if not path.is_file():
        raise ResultsFolderError(f"{path} is missing: the results folder lost its model; re-run model selection "
                                 "or copy the whole folder again")
    try:
        state = _read_state(folder / STATE_NAME)
    except (OSError, ValueError):
        state = {}  # a folder without a readable state: summary.json alone names the model
    if state.get("status") == "running":
        raise ResultsFolderError(f"the run in {folder} is not complete (its models may be half replaced); finish "
                                 "it with model selection's --resume, then predict")
    recorded = state.get("models", {}).get(name)
    if recorded and sha256_of(path) != recorded:
        raise ResultsFolderError(f"{path} is not the model this run saved (its SHA-256 differs from "
                                 f"{STATE_NAME}'s); copy the whole results folder again")
    return path


def _entries(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name != LOCK_NAME)


def remove_interrupted_writes(folder: Path) -> list[Path]:
    """Remove what an interrupted write of this project left in a run's folder: the ``.<name>.partial``
    files of its state, outputs and checkpoints (written beside their target, then renamed) and
    ``runs/<run id>/.hop-*.npz`` (hop checkpoints mid-write). Nothing else is touched.

    :return: the files removed.
    """
    from chap_mop.selection.hop_checkpoint import TEMP_PREFIX

    names = "|".join(re.escape(name) for name in (STATE_NAME, PREVIOUS_STATE_NAME, *OUTPUT_NAMES))
    patterns = {folder: rf"\.({names}|validation_[\w.-]+\.png){re.escape(PARTIAL_SUFFIX)}",
                folder / MEMBERS_DIR: rf"\.{RUN_ID_PATTERN.pattern}\.h5{re.escape(PARTIAL_SUFFIX)}"}
    for subdir, pattern in ((CHECKPOINTS_DIR, rf"\.epoch_\d+\.h5{re.escape(PARTIAL_SUFFIX)}"),
                            (RUNS_DIR, rf"{re.escape(TEMP_PREFIX)}[\w-]+\.npz")):
        if (folder / subdir).is_dir():
            patterns.update({path: pattern for path in (folder / subdir).iterdir()
                             if path.is_dir() and RUN_ID_PATTERN.fullmatch(path.name)})
    left = [path for place, pattern in patterns.items() if place.is_dir() for path in place.iterdir()
            if path.is_file() and re.fullmatch(pattern, path.name)]
    for path in left:
        path.unlink(missing_ok=True)
    return left


@contextlib.contextmanager
def driver_lock(folder: Path) -> Iterator[None]:
    """Hold ``<folder>/.chap_mop.lock`` while a driver writes the run (:func:`chap_mop.files.folder_lock`).

    :raises ResultsFolderError: another driver holds the folder.
    """
    with folder_lock(folder, "results folder", ResultsFolderError):
        yield


def open_results_folder(folder: Path, resume: bool, overwrite: bool) -> RunState | None:
    """Check that a run may write into ``folder``, before Spark starts.

    :return: the earlier run, to continue (``resume``) or to remove with :func:`remove_run` once the
        new run's settings are checked (``overwrite``); None for a folder that is missing or empty.
    :raises ResultsFolderError: the folder holds files of something else, or an earlier run and
        neither ``resume`` nor ``overwrite`` says what to do with it.
    """
    if resume and overwrite:
        raise ResultsFolderError("--resume and --overwrite exclude each other: continue the run or replace it")
    if folder.exists() and not folder.is_dir():
        raise ResultsFolderError(f"results folder {folder} is a file; expected a folder")
    entries = _entries(folder) if folder.is_dir() else []
    if not ((folder / STATE_NAME).is_file() or (folder / PREVIOUS_STATE_NAME).is_file()):
        if entries:
            shown = ", ".join(entries[:FOREIGN_ENTRIES_SHOWN]) + (", ..." if len(entries) > FOREIGN_ENTRIES_SHOWN else "")
            raise ResultsFolderError(f"results folder {folder} is not empty and holds no run of this project "
                                     f"({len(entries)} entries: {shown}); choose a new or empty folder")
        if resume:
            raise ResultsFolderError(f"nothing to resume: {folder} holds no run ({STATE_NAME} is missing)")
        return None
    if overwrite:
        try:
            return RunState.load(folder)
        except ResultsFolderError as error:  # a damaged state: --overwrite replaces the run all the same
            print(f"warning: {error.args[0].split('; pass --overwrite')[0]}; replacing the run")
            return RunState(folder, {"settings": {}, "configurations": [], "unreadable": True})
    state = RunState.load(folder)
    if resume:
        return state
    progress = "complete" if state.complete else "incomplete"
    raise ResultsFolderError(f"results folder {folder} holds an earlier run ({progress}, {state.epochs_completed()} "
                             f"of {state.settings['epochs']} epochs): pass --resume to continue it or --overwrite "
                             "to replace it")


def remove_run(state: RunState) -> None:
    """Remove exactly what the run wrote into its folder; anything else in it stays.

    The run's configurations are those its state names and the folders and files named with
    cerebro's run ids in ``runs/``, ``checkpoints/`` and ``ensemble/``.
    """
    folder = state.folder
    # Besides the run ids the state names, those cerebro named in the run's folders: a state read from
    # .prev, or an unreadable one, may not name the configurations of its last save.
    run_ids = {entry["run_id"] for entry in state.configurations}
    run_ids |= {path.name.removesuffix(".h5") for subdir in (RUNS_DIR, CHECKPOINTS_DIR, MEMBERS_DIR)
                if (folder / subdir).is_dir() for path in (folder / subdir).iterdir()
                if RUN_ID_PATTERN.fullmatch(path.name.removesuffix(".h5"))}
    for run_id in run_ids:
        for subdir in (RUNS_DIR, CHECKPOINTS_DIR):
            shutil.rmtree(folder / subdir / run_id, ignore_errors=True)
        (folder / MEMBERS_DIR / f"{run_id}.h5").unlink(missing_ok=True)
    for subdir in (RUNS_DIR, CHECKPOINTS_DIR, MEMBERS_DIR):
        if (folder / subdir).is_dir() and not any((folder / subdir).iterdir()):
            (folder / subdir).rmdir()
    outputs = [folder / name for name in OUTPUT_NAMES]
    outputs += [path for pattern in OUTPUT_PATTERNS for path in folder.glob(pattern)]
    for path in outputs + [folder / STATE_NAME, folder / PREVIOUS_STATE_NAME, folder / f".{STATE_NAME}{PARTIAL_SUFFIX}"]:
        path.unlink(missing_ok=True)
