"""Step 3: predict sitting or not sitting for every 10-s window of every subject, on Spark.

The model is the best run of a results folder of ``model_selection.py`` (or, with ``--ensemble``,
the majority vote of its ensemble); the input is DeepPostures' pre-processed day files, laid out
and checked as ``prep_petastorm_data.py`` does::

    <pre-processed-dir>/<subject_id>/<YYYY-MM-DD>.h5

Output, one CSV per subject in DeepPostures' format (see ``chap_mop/predict/predictions.py``)::

    <predictions-dir>/<model name>/<subject_id>.csv     segment,timestamp,prediction

Each Spark task predicts one subject and writes its CSV itself, so the predictions folder must
be visible to every worker. Settings are the constants at the top of ``main()``; flags override them.

Example: ``python make_predictions.py --pre-processed-dir data/demo_h5 --predictions-dir data/predictions
--model-checkpoint-path data/results``
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from chap_mop.runtime import runtime_env

# Before anything loads TensorFlow: how loud this run is, on the driver and on every executor.
runtime_env.configure(verbose=runtime_env.verbose_requested(sys.argv[1:]))

from chap_mop.predict import inference, predictions  # noqa: E402
from chap_mop.data import prep  # noqa: E402
from chap_mop.selection.ensemble import read_members  # noqa: E402
from chap_mop.errors import InputError  # noqa: E402
from chap_mop.data.schema import WINDOWS_PER_MINUTE  # noqa: E402
from chap_mop.runtime.spark_progress import PROGRESS_EVERY_S, job_progress  # noqa: E402
from chap_mop.runtime.spark_session import start_spark  # noqa: E402
from prep_petastorm_data import check_inputs  # noqa: E402

PROJECT = Path(__file__).resolve().parent
SUMMARY_FILE = "summary.json"
ENSEMBLE_NAME = "ensemble"


def model_files(results_dir: Path, ensemble: bool) -> tuple[str, list[str]]:
    """The model name and model files (best first) of a results folder of ``model_selection.py``.

    Without ``ensemble``: the best run (``summary.json``'s ``best_run_id``), from the summary's
    ``best_model`` or else ``<results_dir>/best_model.h5``; with it: ``ensemble`` and the members
    of ``ensemble.json``.

    :raises InputError: a missing folder, no readable ``summary.json``, no ensemble when asked.
    """
    summary_path = results_dir / SUMMARY_FILE
    if not results_dir.exists():
        raise InputError(f"{results_dir}: no such results folder; expected a results folder of model_selection.py")
    if not summary_path.is_file():
        raise InputError(f"{results_dir}: not a results folder of model_selection.py (no {SUMMARY_FILE})")
    if ensemble:
        return ENSEMBLE_NAME, [member["model"] for member in read_members(results_dir)]
    try:
        summary = json.loads(summary_path.read_text())
        name = summary["best_run_id"]
    except (ValueError, KeyError) as error:
        raise InputError(f"{summary_path}: not a summary of model_selection.py ({error!r})") from error
    saved = Path(summary.get("best_model", results_dir / "best_model.h5"))
    # a results folder copied elsewhere (e.g. off a cluster) names its old path: use the copy beside
    return name, [str(saved if saved.is_file() else results_dir / "best_model.h5")]


def predict(args: argparse.Namespace) -> tuple[int, int]:
    """Check the models, the predictions folder and every day file, then predict every subject.

    Nothing is written until all checks passed: the predictions folder is marked first, and each
    subject's CSV replaces only that subject's earlier CSV.

    :return: subjects written and windows predicted.
    """
    started = time.monotonic()
    name, files = model_files(Path(args.model_checkpoint_path).resolve(), args.ensemble)
    out_root = Path(args.predictions_dir).resolve()
    predictions.check_predictions_dir(out_root)
    runtime_env.import_tensorflow()
    seq_lens = [inference.windows_per_sequence(inference.load_model(path)) for path in files]
    in_fs, in_root, _ = prep.resolve(args.pre_processed_dir)

    # Timestamps are formatted where each CSV is written: the driver's TZ, when set, goes to the executors.
    spark = start_spark(args.master, "chap-predictions",
                        {"spark.executorEnv.TZ": os.environ["TZ"]} if "TZ" in os.environ else {})
    try:
        day_files, rows, skipped = check_inputs(spark, in_fs, in_root, args.skip_bad_files, args.progress_every)
        for problem in skipped:
            print(f"skipped {problem}")
        out_dir = predictions.claim_predictions_dir(out_root, name)
        settings = predictions.Settings(tuple(files), str(out_dir), args.padding, args.output_label,
                                        not args.no_segment, args.probabilities, args.batch_size)
        members = ", ".join(f"{Path(path).stem}: {seq_len} windows ({seq_len / WINDOWS_PER_MINUTE:g} min)"
                            for path, seq_len in zip(files, seq_lens))
        print(f"predicting {len(day_files)} subjects with {name} ({members}), padding {args.padding}, "
              f"on {args.master}")
        tasks = sorted(day_files.items(), key=lambda item: -rows[item[0]])  # largest first
        sc = spark.sparkContext
        with job_progress(sc, "predictions", lambda done, _: f"{done}/{len(tasks)} subjects done",
                          args.progress_every):
            written = (sc.parallelize(tasks, len(tasks))
                       .map(lambda item: predictions.predict_subject(in_fs, item[0], item[1], settings)).collect())
    finally:
        spark.stop()
    windows = sum(count for _, count in written)
    print(f"wrote {len(written)} subjects, {windows} windows predicted, to {out_dir} in "
          f"{time.monotonic() - started:.1f} s")
    return len(written), windows


def main() -> None:
    SPARK_MASTER_URL = "local[*]"
    PRE_PROCESSED_DIR = str(PROJECT / "data" / "demo_h5")  # readable by every Spark worker
    PREDICTIONS_DIR = str(PROJECT / "predictions")  # writable by every Spark worker
    MODEL_CHECKPOINT_PATH = str(PROJECT / "results")  # where model_selection.py writes by default
    PADDING = "drop"  # drop, zero or wrap: the windows after a segment's last full sequence
    BATCH_SIZE = 256  # sequences per predict call

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--master", default=SPARK_MASTER_URL, help="Spark master URL (default %(default)s)")
    parser.add_argument("--pre-processed-dir", default=PRE_PROCESSED_DIR,
                        help="folder of subject folders of <YYYY-MM-DD>.h5 day files: path, file:// or hdfs:// "
                             "URL (default %(default)s)")
    parser.add_argument("--predictions-dir", default=PREDICTIONS_DIR,
                        help="folder for <model name>/<subject_id>.csv: new, empty, or written here before; "
                             "visible to every worker (default %(default)s)")
    parser.add_argument("--model-checkpoint-path", default=MODEL_CHECKPOINT_PATH,
                        help="results folder of model_selection.py; its best model predicts (default %(default)s)")
    parser.add_argument("--ensemble", action="store_true",
                        help="predict with the results folder's ensemble (ensemble.json), a majority vote")
    parser.add_argument("--padding", default=PADDING, choices=predictions.PADDING_MODES,
                        help="windows after a segment's last full sequence: drop them, zero-pad, or wrap "
                             "(predict the last T windows) (default %(default)s)")
    parser.add_argument("--output-label", action="store_true", help="add the label column (from the H5 files)")
    parser.add_argument("--no-segment", action="store_true", help="leave out the segment column")
    parser.add_argument("--probabilities", action="store_true",
                        help="add probability_sitting (the ensemble's: mean of its members')")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="sequences per predict call (default %(default)s)")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="skip unreadable or malformed day files and empty subject folders, and list them, "
                             "instead of stopping at the first")
    parser.add_argument("--progress-every", type=float, default=PROGRESS_EVERY_S,
                        help="seconds between progress lines (default %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's, Keras' and Spark's own lines (for debugging)")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error("expected --batch-size >= 1")
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also in a pipe
    try:
        predict(args)
    except InputError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
