"""How well the chosen model and the top-k ensemble do on the test subjects, who never took part
in selection: an estimate of how they do on people they have not seen.

On Spark, one task per Parquet file of ``test_data`` (its subjects whole, in time order): the task
loads the models once, cuts each subject's sequences by the training rules
(:func:`chap_mop.data.windows.sequence_starts`, as DeepPostures' ``--run-test``), predicts every window
with each member, votes (:func:`chap_mop.predict.inference.vote`) and returns confusion counts per subject,
for the 10-s windows and for minutes (the majority of a minute's 10-s predictions against the
majority of its labels, as the MSSE paper reports; a tie counts as sitting). The driver adds them up.

Files in the results folder: ``test_report.json`` (every figure below), ``test_per_subject.csv``,
``test_confusion.png``.
"""
import json
from functools import partial
from pathlib import Path

import numpy as np

from chap_mop.predict.inference import cached_model, classes, predict_sequences, vote, windows_per_sequence
from chap_mop.data.shard_reader import ShardReader, row_groups
from chap_mop.data.windows import sequence_starts
from chap_mop.model.ranking import NOT_SITTING, SITTING
from chap_mop.output.plots import confusion_figure, pyplot

SMALL = ("time", "non_wear", "sleeping", "label")


def confusion(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(2, 2) counts, rows the true class, columns the predicted one, over windows that have both."""
    both = (truth >= 0) & (predicted >= 0)
    return np.bincount(2 * truth[both] + predicted[both], minlength=4).reshape(2, 2)


def minute_majority(time: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per minute (``time // 60``) with at least one value >= 0: the majority class (tie: sitting).

    :return: (minutes,) minute numbers and their classes.
    """
    keep = values >= 0
    minutes, index = np.unique(time[keep] // 60, return_inverse=True)
    not_sitting = np.bincount(index, weights=values[keep] == NOT_SITTING, minlength=len(minutes))
    total = np.bincount(index, minlength=len(minutes))
    return minutes, (not_sitting > total / 2).astype(np.int64)


def minute_confusion(time: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    label_minutes, labels = minute_majority(time, truth)
    predicted_minutes, predictions = minute_majority(time, predicted)
    common, in_labels, in_predictions = np.intersect1d(label_minutes, predicted_minutes, return_indices=True)
    return confusion(labels[in_labels], predictions[in_predictions])


def scores(matrix: np.ndarray, unit: str = "windows") -> dict:
    """How many ``unit`` (windows or minutes), accuracy, balanced accuracy, sensitivity (recall of
    sitting) and specificity (of not sitting)."""
    matrix = np.asarray(matrix, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(matrix) / matrix.sum(axis=1)
    return {unit: int(matrix.sum()), "accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)),
            "balanced_accuracy": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
            "sensitivity": float(recall[SITTING]), "specificity": float(recall[NOT_SITTING]),
            "confusion_matrix": matrix.astype(int).tolist()}


def subject_predictions(subject: dict[str, np.ndarray], models: list, batch_size: int) -> np.ndarray:
    """(members, N) classes of every window of one subject that each member's sequences cover."""
    ids = np.zeros(len(subject["time"]), np.int64)
    member_classes = []
    for model in models:
        starts, _ = sequence_starts(ids, *(subject[name] for name in SMALL), windows_per_sequence(model))
        member_classes.append(classes(predict_sequences(model, subject["data"], starts, batch_size)))
    return np.stack(member_classes)


def _subjects(reader: ShardReader):
    """Each subject of a file whole: (name, columns), from its row groups in order."""
    pending: list[dict] = []
    for block in reader.read():
        cuts = np.flatnonzero(np.diff(block["id"])) + 1
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(block["id"])]):
            part = {name: values[start:stop] for name, values in block.items()}
            if pending and pending[-1]["id"][0] != part["id"][0]:
                yield _joined(reader, pending)
                pending = []
            pending.append(part)
    if pending:
        yield _joined(reader, pending)


def _joined(reader: ShardReader, parts: list[dict]) -> tuple[str, dict]:
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return reader.subject_names()[int(columns["id"][0])], columns


def evaluate_file(dataset_dir: str, model_paths: list[str], batch_size: int, path: str) -> list[dict]:
    """*Executor side*: confusion counts of every subject in one Parquet file of the test split.

    :param model_paths: ensemble members best first; the first is the chosen model.
    :return: per subject: ``subject``, and window and minute confusion matrices of ``best`` and ``ensemble``.
    """
    models = [cached_model(model_path) for model_path in model_paths]
    results = []
    for name, subject in _subjects(ShardReader.of_file(dataset_dir, path)):
        predicted = subject_predictions(subject, models, batch_size)
        truth = subject["label"].astype(np.int64)
        outcome = {"subject": name}
        for who, chosen in (("best", predicted[0]), ("ensemble", vote(predicted))):
            outcome[who] = {"window": confusion(truth, chosen.astype(np.int64)).tolist(),
                            "minute": minute_confusion(subject["time"], truth, chosen.astype(np.int64)).tolist()}
        results.append(outcome)
    return results


def evaluate(spark, dataset_dir: str, model_paths: list[str], batch_size: int = 256) -> list[dict]:
    """Per-subject confusion counts of the test split at ``dataset_dir``, one Spark task per file."""
    files = sorted({group.path for group in row_groups(dataset_dir)})
    per_file = (spark.sparkContext.parallelize(files, len(files))
                .map(partial(evaluate_file, dataset_dir, model_paths, batch_size)).collect())
    return [subject for subjects in per_file for subject in subjects]


def write_test_report(results_dir: Path, per_subject: list[dict], members: list[dict]) -> dict:
    """Add up the subjects, write the three test files and return the report (``summary["test"]``)."""
    report = {"subjects": len(per_subject), "ensemble_members": [member["run_id"] for member in members]}
    units = {"window": "windows", "minute": "minutes"}
    for who in ("best", "ensemble") if len(members) > 1 else ("best",):
        for level, unit in units.items():
            report[f"{who} {level}"] = scores(np.sum([subject[who][level] for subject in per_subject], axis=0), unit)
    rows = [{"subject": subject["subject"],
             **{f"{who}_{level}_{key}": scores(subject[who][level], unit)[key]
                for who in ("best", "ensemble") if f"{who} window" in report
                for level, unit in units.items() for key in (unit, "balanced_accuracy")}}
            for subject in per_subject]
    (results_dir / "test_report.json").write_text(json.dumps(report, indent=2) + "\n")
    from chap_mop.output.results import write_csv
    write_csv(results_dir / "test_per_subject.csv", rows)
    plot_confusion(results_dir / "test_confusion.png", report)
    return report


def plot_confusion(path: Path, report: dict) -> None:
    """One heat map per model and level of ``report`` (e.g. ``best window``), as a PNG at ``path``."""
    panels = {key: report[key]["confusion_matrix"] for key in report if key.endswith(("window", "minute"))}
    figure = confusion_figure(panels, {key: f"{key}: bal {report[key]['balanced_accuracy']:.3f}" for key in panels})
    figure.savefig(path, dpi=110)
    pyplot().close(figure)


def report_test(spark, test_dir: str, results_dir: Path, best_path: Path, members: list[dict], best_run: str) -> dict:
    """Evaluate the chosen model and the ensemble on the test subjects; write and print the test report.

    :param members: the ensemble's members as saved (best first), or [] for the best run alone.
    :return: the report, as ``summary.json``'s ``test`` entry.
    """
    from chap_mop.selection.ensemble import read_members

    model_paths = [member["model"] for member in read_members(results_dir)] if members else [str(best_path)]
    report = write_test_report(results_dir, evaluate(spark, test_dir, model_paths), members or [{"run_id": best_run}])
    line = f"Test ({report['subjects']} subjects never used for selection):"
    for who in ("best", "ensemble"):
        if f"{who} window" in report:
            window, minute = report[f"{who} window"], report[f"{who} minute"]
            name = "best run" if who == "best" else f"ensemble of {len(members)}"
            line += (f" {name} balanced accuracy {window['balanced_accuracy']:.4f} per window, "
                     f"{minute['balanced_accuracy']:.4f} per minute;")
    print(line.rstrip(";"))
    return report
