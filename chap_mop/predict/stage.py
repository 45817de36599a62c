"""The prediction stage: sitting or not sitting for every 10-s window of every subject, on Spark.

The model is the best run of a results folder of the selection stage (or, with ``ensemble``, the
majority vote of its ensemble); the input is DeepPostures' pre-processed day files, laid out and
checked as the data stage does::

    <pre_processed_dir>/<subject_id>/<YYYY-MM-DD>.h5

Output, one CSV per subject in DeepPostures' format (see :mod:`chap_mop.predict.predictions`)::

    <predictions_dir>/<model name>/<subject_id>.csv     segment,timestamp,prediction

Each Spark task predicts one subject and writes its CSV itself, so the predictions folder must be
visible to every worker. :func:`predict` is the stage; ``chap-predict`` and ``make_predictions.py``
are its command line.
"""
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from chap_mop.errors import InputError
from chap_mop.files import check_writable
from chap_mop.predict import predictions
from chap_mop.runtime import runtime_env
from chap_mop.runtime.spark_progress import PROGRESS_EVERY_S

SUMMARY_FILE = "summary.json"
BEST_MODEL_FILE = "best_model.h5"
ENSEMBLE_NAME = "ensemble"


@dataclass
class PredictSettings:
    """What :func:`predict` predicts, with which model, and how.

    :param pre_processed_dir: folder of subject folders of day files: path, ``file://`` or ``hdfs://``
        URL, readable by every Spark worker.
    :param results: results folder of the selection stage; its best model (or ensemble) predicts.
    :param predictions_dir: folder for ``<model name>/<subject_id>.csv``: new, empty, or written here
        before; writable by every Spark worker.
    :param master: Spark master URL; None: spark-submit's or ``spark-defaults.conf``'s, else ``local[*]``.
    :param ensemble: predict with the results folder's ensemble (a majority vote).
    :param padding: ``drop``, ``zero`` or ``wrap``: the windows after a segment's last full sequence.
    :param output_label: add the label column (from the day files).
    :param no_segment: leave out the segment column.
    :param probabilities: add ``probability_sitting`` (the ensemble's: the mean of its members').
    :param batch_size: sequences per predict call.
    :param skip_bad_files: skip and list bad day files and empty subject folders instead of stopping.
    :param progress_every_s: seconds between progress lines.
    :param verbose: also show TensorFlow's, Keras' and Spark's own lines.
    """
    pre_processed_dir: str = "data/demo_h5"
    results: str = "results"
    predictions_dir: str = "predictions"
    master: str | None = None
    ensemble: bool = False
    padding: str = "drop"
    output_label: bool = False
    no_segment: bool = False
    probabilities: bool = False
    batch_size: int = 256
    skip_bad_files: bool = False
    progress_every_s: float = PROGRESS_EVERY_S
    verbose: bool = False

    def check(self) -> None:
        """:raises InputError: a batch size below 1 or an unknown padding."""
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: expected 1 or more")
        if self.padding not in predictions.PADDING_MODES:
            raise InputError(f"--padding {self.padding}: expected one of {list(predictions.PADDING_MODES)}")
        if not self.progress_every_s > 0:
            raise InputError(f"--progress-every {self.progress_every_s}: expected more than 0 seconds")


def model_files(results_dir: Path, ensemble: bool) -> tuple[str, list[str]]:
    """The model name and model files (best first) of a results folder of the selection stage.

    Without ``ensemble``: the best run (``summary.json``'s ``best_run_id``) and the folder's own
    ``best_model.h5``; with it: ``ensemble`` and the members of ``ensemble.json``. Every file is
    the one inside ``results_dir`` (a folder copied elsewhere predicts with its own models), checked
    against the SHA-256 that the run recorded.

    :raises InputError: a missing folder, no readable ``summary.json``, no ensemble when asked, a
        model file that is missing or not the one the run saved.
    """
    from chap_mop.selection.ensemble import read_members
    from chap_mop.selection.run_state import saved_model

    summary_path = results_dir / SUMMARY_FILE
    if not results_dir.exists():
        raise InputError(f"{results_dir}: no such results folder; expected a results folder of model_selection.py")
    if not summary_path.is_file():
        raise InputError(f"{results_dir}: not a results folder of model_selection.py (no {SUMMARY_FILE})")
    if ensemble:
        members = [Path(member["model"]).relative_to(results_dir) for member in read_members(results_dir)]
        return ENSEMBLE_NAME, [str(saved_model(results_dir, str(member))) for member in members]
    try:
        summary = json.loads(summary_path.read_text())
        name = summary["best_run_id"]
    except (ValueError, KeyError) as error:
        raise InputError(f"{summary_path}: not a summary of model_selection.py ({error!r})") from error
    return name, [str(saved_model(results_dir, BEST_MODEL_FILE))]


def predict(settings: PredictSettings, spark=None) -> tuple[int, int]:
    """Check the models, the predictions folder and every day file, then predict every subject.

    Nothing is written until all checks passed: the predictions folder is marked first, and each
    subject's CSV replaces only that subject's earlier CSV.

    :param spark: a session to run on (left running); None: start one and stop it on every way out.
    :return: subjects written and windows predicted.
    :raises InputError: bad settings, models, folders or day files, before anything is written.
    """
    from chap_mop.data import prep
    from chap_mop.data.prepare import check_inputs
    from chap_mop.data.schema import WINDOWS_PER_MINUTE
    from chap_mop.predict import inference
    from chap_mop.runtime.spark_progress import job_progress
    from chap_mop.runtime.spark_session import spark_for

    started = time.monotonic()
    runtime_env.configure(settings.verbose)
    settings.check()
    name, files = model_files(Path(settings.results).resolve(), settings.ensemble)
    out_root = Path(settings.predictions_dir).resolve()
    predictions.check_predictions_dir(out_root)
    check_writable(out_root, "predictions folder")
    runtime_env.import_tensorflow()
    seq_lens = [inference.windows_per_sequence(inference.load_model(path)) for path in files]
    in_fs, in_root, _ = prep.resolve(settings.pre_processed_dir)

    # Timestamps are formatted where each CSV is written: the driver's TZ, when set, goes to the executors.
    conf = {"spark.executorEnv.TZ": os.environ["TZ"]} if "TZ" in os.environ else {}
    with spark_for(spark, settings.master, "chap-predictions", conf) as session:
        day_files, rows, skipped = check_inputs(session, in_fs, in_root, settings.skip_bad_files,
                                                settings.progress_every_s)
        for problem in skipped:
            print(f"skipped {problem}")
        out_dir = predictions.claim_predictions_dir(out_root, name)
        job = predictions.Settings(tuple(files), str(out_dir), settings.padding, settings.output_label,
                                   not settings.no_segment, settings.probabilities, settings.batch_size)
        members = ", ".join(f"{Path(path).stem}: {seq_len} windows ({seq_len / WINDOWS_PER_MINUTE:g} min)"
                            for path, seq_len in zip(files, seq_lens))
        sc = session.sparkContext
        print(f"predicting {len(day_files)} subjects with {name} ({members}), padding {settings.padding}, "
              f"on {sc.master}")
        tasks = sorted(day_files.items(), key=lambda item: -rows[item[0]])  # largest first
        with job_progress(sc, "predictions", lambda done, _: f"{done}/{len(tasks)} subjects done",
                          settings.progress_every_s):
            written = (sc.parallelize(tasks, len(tasks))
                       .map(lambda item: predictions.predict_subject(in_fs, item[0], item[1], job)).collect())
    windows = sum(count for _, count in written)
    print(f"wrote {len(written)} subjects, {windows} windows predicted, to {out_dir} in "
          f"{time.monotonic() - started:.1f} s")
    return len(written), windows
