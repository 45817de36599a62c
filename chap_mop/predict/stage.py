"""The prediction stage: sitting or not sitting for every 10-s window of every subject, on Spark.

The model is the best run of a results folder of the selection stage (or, with ``ensemble``, the
majority vote of its ensemble), or, with ``model``, one of DeepPostures' pre-trained models
(:mod:`chap_mop.predict.pretrained`); the input is DeepPostures' pre-processed day files, laid out
and checked as the data stage does::

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
from dataclasses import dataclass, field
from pathlib import Path

from chap_mop.errors import InputError
from chap_mop.files import check_writable
from chap_mop.predict import predictions, pretrained
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
    :param model: instead, one of DeepPostures' pre-trained models (:data:`pretrained.NAMES`), its
        name being the model folder of the predictions; ``CHAP`` is the vote of CHAP_A, _B and _C.
    :param pretrained_dir: with ``model``: the folder holding ``<model>.pth`` (DeepPostures'
        ``pre-trained-models-pt``), read on the driver only.
    :param predictions_dir: folder for ``<model name>/<subject_id>.csv``: new, empty, or written here
        before; writable by every Spark worker.
    :param master: Spark master URL; None: spark-submit's or ``spark-defaults.conf``'s, else ``local[*]``.
    :param ensemble: predict with the results folder's ensemble (a majority vote).
    :param padding: ``drop``, ``zero`` or ``wrap``: the windows after a segment's last full sequence.
    :param output_label: add the label column (from the day files).
    :param no_segment: leave out the segment column.
    :param probabilities: add ``probability_sitting`` (the ensemble's: the mean of its members').
    :param activpal_label_map: DeepPostures' ``--activpal-label-map``, JSON word -> label (0, 1, -1):
        the words written for predictions and labels; None: sitting, not-sitting, no-label.
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
    model: str | None = None
    pretrained_dir: str | None = None
    activpal_label_map: str | None = None

    def check(self) -> None:
        """:raises InputError: a batch size below 1, an unknown padding, bad ``model`` flags or label map."""
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: expected 1 or more")
        if self.padding not in predictions.PADDING_MODES:
            raise InputError(f"--padding {self.padding}: expected one of {list(predictions.PADDING_MODES)}")
        if not self.progress_every_s > 0:
            raise InputError(f"--progress-every {self.progress_every_s}: expected more than 0 seconds")
        pretrained.check_names(self.model, self.pretrained_dir, self.ensemble)
        predictions.label_words(self.activpal_label_map)


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


@dataclass
class Models:
    """The models that predict, as the driver finds, loads and (for DeepPostures' models) saves them.

    :param name: the model folder under the predictions folder.
    :param files: the model files the executors load, best first; for DeepPostures' models, set by
        :meth:`save_converted` once the predictions folder is claimed.
    :param sources: DeepPostures' models only: each member's ``.pth``, by member name.
    :param members: name and ``T`` (windows per sequence) of each model, best first; set by :meth:`load`.
    :param converted: DeepPostures' models only: each member's Keras model; set by :meth:`load`.
    """
    name: str
    files: list[str]
    sources: dict[str, Path] = field(default_factory=dict)
    members: list[tuple[str, int]] = field(default_factory=list)
    converted: list = field(default_factory=list)

    def load(self) -> None:
        """Load each model file (to learn its ``T``), or convert each ``.pth`` (seconds each).

        :raises InputError: a model file or ``.pth`` that is not a CHAP model; one line naming it.
        """
        from chap_mop.predict import inference

        runtime_env.import_tensorflow()  # Keras 2, quietly, before a model is built or loaded
        if self.sources:
            self.converted = [pretrained.convert(member, path) for member, path in self.sources.items()]
            self.members = [(member, pretrained.windows_per_sequence(member)) for member in self.sources]
            return
        self.members = [(Path(path).stem, inference.windows_per_sequence(inference.load_model(path)))
                        for path in self.files]

    def save_converted(self, out_root: Path) -> None:
        """Save each converted member into ``<out_root>/<member>/`` (made if missing), where executors load it."""
        self.files = []
        for (member, source), model in zip(self.sources.items(), self.converted):
            (out_root / member).mkdir(exist_ok=True)
            self.files.append(str(pretrained.save(model, pretrained.converted_path(out_root / member, source))))

    def job_members(self, out_root: Path) -> tuple[predictions.Member, ...]:
        """DeepPostures' CHAP vote: each member's column and own folder; nothing for any other model."""
        if not (self.sources and self.name == pretrained.CHAP):
            return ()
        return tuple(predictions.Member(pretrained.CHAP_MEMBERS[member], str(out_root / member))
                     for member in self.sources)


def find_models(settings: PredictSettings) -> Models:
    """The model files of a results folder, or the ``.pth`` files of DeepPostures' models; none read yet.

    :raises InputError: see :func:`model_files` and :func:`pretrained.checkpoint_files`.
    """
    if settings.model is not None:
        return Models(settings.model, [], pretrained.checkpoint_files(settings.model, settings.pretrained_dir))
    return Models(*model_files(Path(settings.results).resolve(), settings.ensemble))


def claim(out_root: Path, models: Models, settings: PredictSettings) -> predictions.Settings:
    """Claim the predictions folder ``out_root`` (:func:`predictions.claim_predictions_dir`), save the
    converted models in it, and say what each subject's task does."""
    out_dir = predictions.claim_predictions_dir(out_root, models.name)
    if models.sources:
        models.save_converted(out_root)
    return predictions.Settings(tuple(models.files), str(out_dir), settings.padding, settings.output_label,
                                not settings.no_segment, settings.probabilities, settings.batch_size,
                                predictions.label_words(settings.activpal_label_map), models.job_members(out_root))


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
    from chap_mop.runtime.spark_progress import job_progress
    from chap_mop.runtime.spark_session import spark_for

    started = time.monotonic()
    runtime_env.configure(settings.verbose)
    settings.check()
    models = find_models(settings)
    out_root = Path(settings.predictions_dir).resolve()
    predictions.check_predictions_dir(out_root)
    check_writable(out_root, "predictions folder")
    models.load()
    in_fs, in_root, _ = prep.resolve(settings.pre_processed_dir)

    # Timestamps are formatted where each CSV is written: the driver's TZ, when set, goes to the executors.
    conf = {"spark.executorEnv.TZ": os.environ["TZ"]} if "TZ" in os.environ else {}
    with spark_for(spark, settings.master, "chap-predictions", conf) as session:
        day_files, rows, skipped = check_inputs(session, in_fs, in_root, settings.skip_bad_files,
                                                settings.progress_every_s)
        for problem in skipped:
            print(f"skipped {problem}")
        job = claim(out_root, models, settings)
        members = ", ".join(f"{member}: {seq_len} windows ({seq_len / WINDOWS_PER_MINUTE:g} min)"
                            for member, seq_len in models.members)
        sc = session.sparkContext
        print(f"predicting {len(day_files)} subjects with {models.name} ({members}), padding {settings.padding}, "
              f"on {sc.master}")
        tasks = sorted(day_files.items(), key=lambda item: -rows[item[0]])  # largest first
        with job_progress(sc, "predictions", lambda done, _: f"{done}/{len(tasks)} subjects done",
                          settings.progress_every_s):
            written = (sc.parallelize(tasks, len(tasks))
                       .map(lambda item: predictions.predict_subject(in_fs, item[0], item[1], job)).collect())
    windows = sum(count for _, count in written)
    print(f"wrote {len(written)} subjects, {windows} windows predicted, to {job.out_dir} in "
          f"{time.monotonic() - started:.1f} s")
    return len(written), windows
