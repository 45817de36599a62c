"""The model selection stage: choose the best CHAP CNN-BiLSTM configuration with cerebro's model
hopper parallelism.

Every configuration of the search space visits every worker's partition of the training data
once per epoch (model hopping), then is validated on every partition of the validation data.
Successive halving (``sha``) and Hyperband stop the worst configurations at each rung.
:func:`run_selection` is the stage; ``chap-select`` and ``model_selection.py`` are its command line.

Fine-tuning (``init_from``): every configuration starts from a saved CHAP model's weights
(:mod:`chap_mop.model.start_weights`), and the search space's ``trainable`` chooses which layers
train.

Order of a run: every setting and the store are checked, the start weights read, the results
folder is locked for this driver and checked and MLflow reached, all before Spark starts; then
the epochs; then the best model, the ensemble, the test report and the tables. Spark is stopped
on every way out (when the stage started it) and the lock released.
"""
import contextlib
import functools
import importlib.util
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from chap_mop.errors import InputError
from chap_mop.files import check_writable
from chap_mop.model.roles import DEFAULT_TRAINABLE
from chap_mop.model.start_weights import StartWeights, check_amp_factors, file_format, read_start_weights
from chap_mop.model.ranking import CLASS_NAMES, METRIC_COLUMNS, RECORDED_METRICS
from chap_mop.runtime import runtime_env
from chap_mop.selection import run_state
from chap_mop.selection.epoch_schedule import DEFAULT_POLLING_PERIOD_S
from chap_mop.selection.halving import DEFAULT_ETA, HalvingPlan
from chap_mop.selection.model_cache import DEFAULT_MODEL_CACHE_MB
from chap_mop.selection.search_space import check_search_space, plan_search

MLFLOW_MISSING = ("--mlflow-tracking-uri needs MLflow, which is not installed: pip install 'chap-mop[mlflow]' "
                  "(or -c requirements.txt '.[mlflow]' in a clone)")
DEFAULT_SEARCH_SPACE = {"lr": [1e-3, 1e-4], "l2_reg": [1e-3, 1e-4], "win_size": [7, 9], "amp_factor": [2, 4]}


@dataclass
class SelectionSettings:
    """What :func:`run_selection` searches, on which data, and where its results go.

    :param data: store written by the data stage (``chap-prep``).
    :param results: results folder: new or empty, or holding a run of this stage.
    :param master: Spark master URL; None: spark-submit's or ``spark-defaults.conf``'s, else ``local[*]``.
    :param workers: cerebro workers; None: Spark's default parallelism.
    :param epochs: epochs per configuration (the most, under halving).
    :param batch_size: sequences per training step.
    :param metric: validation metric that picks the best run (accuracies maximised, loss minimised).
    :param search: ``grid``, ``random``, ``tpe``, ``sha`` or ``hyperband``.
    :param samples: configurations for random and tpe (None: 8); for sha, random draws instead of the grid.
    :param eta: sha and hyperband: each rung keeps the best 1/eta.
    :param min_epochs: sha and hyperband: epochs of the first rung (None: derived).
    :param search_space: hyper-parameter -> list of values (``lr``, ``l2_reg``, ``win_size``, ``amp_factor``;
        with ``init_from`` also ``trainable``: ``all``, ``lstm_head`` or ``head``).
    :param init_from: start every configuration from this model's weights: a DeepPostures ``.pth``
        or a Keras ``.h5`` of this project (None: fresh weights from ``seed``).
    :param class_weights: loss weight of sitting and of not sitting windows (None: equal).
    :param ensemble_size: top configurations saved as a majority-vote ensemble (1: none).
    :param resume: continue the run in ``results`` from its last completed epoch.
    :param overwrite: replace the run in ``results`` (only the files the run wrote are removed).
    :param polling_period_s: seconds between the driver's checks of its workers.
    :param seed: seed of initial weights and of each sub-epoch's shuffle (None: unseeded).
    :param model_cache_mb: MB of model variables each worker keeps between hops (0: none).
    :param mlflow_tracking_uri: log the run to MLflow (needs the ``mlflow`` extra); None: off.
    :param mlflow_experiment: MLflow experiment, created if missing.
    :param verbose: also show cerebro's, Keras', TensorFlow's and Spark's own lines.
    """
    data: str = "data/petastorm"
    results: str = "results"
    master: str | None = None
    workers: int | None = None
    epochs: int = 10
    batch_size: int = 128
    metric: str = "balanced_accuracy"
    search: str = "grid"
    samples: int | None = None
    eta: int = DEFAULT_ETA
    min_epochs: int | None = None
    search_space: dict = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SEARCH_SPACE.items()})
    ensemble_size: int = 3
    resume: bool = False
    overwrite: bool = False
    polling_period_s: float = DEFAULT_POLLING_PERIOD_S
    seed: int | None = None
    model_cache_mb: float = DEFAULT_MODEL_CACHE_MB
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "chap-model-selection"
    verbose: bool = False
    init_from: str | None = None
    class_weights: list[float] | None = None


@dataclass
class Plan:
    """A checked run: the search space cast to types, configuration count, halving brackets, and
    the class weights as floats."""
    space: dict
    configurations: int
    halving: HalvingPlan | None
    samples: int | None
    class_weights: list[float] | None = None


def check_settings(settings: SelectionSettings) -> Plan:
    """Every setting that can be checked without the store or Spark.

    :raises InputError: the first setting out of range, naming it.
    """
    for name, value, least in (("--epochs", settings.epochs, 1), ("--batch-size", settings.batch_size, 1),
                               ("--workers", settings.workers, 1), ("--samples", settings.samples, 1),
                               ("--model-cache-mb", settings.model_cache_mb, 0)):
        if value is not None and value < least:
            raise InputError(f"{name} {value}: expected {least} or more")
    if not settings.polling_period_s > 0:
        raise InputError(f"--polling-period {settings.polling_period_s}: expected more than 0 seconds")
    space = check_search_space(settings.search_space)
    if settings.init_from is None and set(space.get("trainable", [DEFAULT_TRAINABLE])) != {DEFAULT_TRAINABLE}:
        raise InputError(f"trainable {space['trainable']} freezes layers of fresh random weights; it needs --init-from "
                         "a trained model (or leave trainable out)")
    if settings.init_from is not None:
        file_format(settings.init_from)
    class_weights = check_class_weights(settings.class_weights)
    configurations, halving = plan_search(settings.search, space, settings.samples, settings.eta, settings.epochs,
                                          settings.min_epochs)
    if settings.ensemble_size < 1:
        raise InputError(f"--ensemble-size {settings.ensemble_size}: expected 1 (no ensemble) or more configurations")
    if settings.metric not in RECORDED_METRICS:
        raise InputError(f"evaluation metric '{settings.metric}' is not recorded; expected one of "
                         f"{list(RECORDED_METRICS)}")
    if settings.mlflow_tracking_uri and importlib.util.find_spec("mlflow") is None:
        raise InputError(MLFLOW_MISSING)
    samples = settings.samples or (configurations if settings.search in ("random", "tpe") else None)
    return Plan(space, configurations, halving, None if settings.search == "grid" else samples, class_weights)


def check_class_weights(class_weights) -> list[float] | None:
    """``--class-weights`` as floats: None, or one non-negative finite weight per class (sitting,
    then not sitting), not all 0.

    :raises InputError: anything else, naming the value.
    """
    if class_weights is None:
        return None
    if (not isinstance(class_weights, (list, tuple)) or len(class_weights) != len(CLASS_NAMES)
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                       for w in class_weights) or not any(class_weights)):
        raise InputError(f"--class-weights {class_weights!r}: expected [{', '.join(CLASS_NAMES)}], "
                         f"{len(CLASS_NAMES)} non-negative numbers not all 0, e.g. [1.0, 2.0]")
    return [float(w) for w in class_weights]


def sequences_per_epoch(train, val, win_sizes: list[int], num_workers: int) -> dict:
    """Sequences per epoch for each window size; stop if a split or a worker would get none."""
    from chap_mop.data.windows import sequence_length

    counts = {}
    for win_size in win_sizes:
        seq_len = sequence_length(win_size)
        per_split = {"train": train.sequences_per_worker(seq_len, num_workers),
                     "val": val.sequences_per_worker(seq_len, num_workers)}
        for split, per_worker in per_split.items():
            if min(per_worker) == 0:
                raise InputError(f"win_size {win_size} min ({seq_len} windows): {split} sequences per worker are "
                                 f"{per_worker}; every worker needs at least one. Use a smaller win_size, fewer "
                                 "workers, or more data")
        counts[win_size] = {split: sum(per_worker) for split, per_worker in per_split.items()}
        print(f"win_size {win_size} min: {counts[win_size]['train']} train and {counts[win_size]['val']} "
              f"validation sequences of {seq_len} windows per epoch")
    return counts


def run_settings(settings: SelectionSettings, plan: Plan, manifest: dict, start: StartWeights | None) -> dict:
    """What defines a run, saved in its state; a resume must repeat all of it but ``epochs`` (the
    start weights by their content, wherever the file now is)."""
    halving = settings.search in ("sha", "hyperband")
    return {"data_store": str(Path(settings.data).resolve()),
            "manifest_sha256": run_state.manifest_fingerprint(manifest),
            "search": settings.search, "search_space": plan.space, "samples": plan.samples,
            "batch_size": settings.batch_size, "metric": settings.metric, "epochs": settings.epochs,
            "seed": settings.seed, **({"eta": settings.eta, "min_epochs": settings.min_epochs} if halving else {}),
            **({"init_from": start.path, "init_from_sha256": start.sha256} if start else {}),
            **({"class_weights": plan.class_weights} if plan.class_weights else {})}


def start_description(start: StartWeights | None, seed: int | None) -> dict:
    """Where the weights started, for ``summary.json`` and the report."""
    return start.describe() if start else {"from": "random", "seed": seed}


def begin_run(results_dir: Path, earlier: run_state.RunState | None, resume: bool, settings: dict
              ) -> run_state.RunState:
    """The state this run saves into: the earlier run's (``resume``), or a new one that replaces it."""
    if resume:
        print(f"resuming {len(earlier.configurations)} configurations after epoch {earlier.epochs_completed()} of "
              f"{settings['epochs']}")
        earlier.record_resume(settings["epochs"], settings["workers"])
        return earlier
    if earlier is not None:
        print(f"--overwrite: removing the earlier run in {results_dir}")
        run_state.remove_run(earlier)
    return run_state.RunState.create(results_dir, settings)


def make_search(settings: SelectionSettings, plan: Plan, backend, store, state: run_state.RunState,
                start: StartWeights | None = None):
    """The cerebro search object of ``settings``: one of the project's resumable searches."""
    from cerebro.tune import hp_choice

    from chap_mop.cerebro_compat.halving_search import ResumableHalvingSearch
    from chap_mop.cerebro_compat.resumable import SEARCHES
    from chap_mop.selection.estimator import FEATURE_COLUMNS, LABEL_COLUMNS, estimator_gen_fn

    common = dict(backend=backend, store=store, search_space={k: hp_choice(v) for k, v in plan.space.items()},
                  estimator_gen_fn=functools.partial(estimator_gen_fn, batch_size=settings.batch_size,
                                                     seed=settings.seed, start=start,
                                                     class_weights=plan.class_weights),
                  num_epochs=settings.epochs, evaluation_metric=settings.metric, label_columns=LABEL_COLUMNS,
                  # verbose 2: cerebro's lines and Keras' one line per sub-epoch; 0: the project's progress only
                  feature_columns=FEATURE_COLUMNS, verbose=2 if settings.verbose else 0, run_state=state)
    if plan.halving:
        return ResumableHalvingSearch(plan=plan.halving, **common)
    search = SEARCHES[settings.search]
    return search(**common) if settings.search == "grid" else search(num_models=plan.samples, **common)


def run_selection(settings: SelectionSettings, spark=None) -> dict | None:
    """Check ``settings``, then run the search and write the results folder.

    :param spark: a session to run on (left running); None: start one and stop it on every way out.
    :return: the run's summary (as ``summary.json``); None when a resumed run was already complete.
    :raises InputError: bad settings, store or results folder, before Spark starts.
    :raises chap_mop.errors.WorkerLostError: a worker was lost; the run can be resumed.
    """
    started = time.time()
    runtime_env.configure(settings.verbose)
    plan = check_settings(settings)

    from chap_mop import cerebro_compat

    cerebro_compat.enable()  # before anything imports TensorFlow or cerebro

    from chap_mop.data.data_store import read_store
    from chap_mop.selection.tracking import MlflowTracker

    manifest, train, val = read_store(settings.data)
    subjects = {name: len(split["subjects"]) for name, split in manifest["splits"].items()}
    print(f"Data store {settings.data}: {subjects['train']} train subjects, {train.rows} windows in "
          f"{train.row_groups} row groups; {subjects['validation']} validation subjects, {val.rows} windows in "
          f"{val.row_groups} row groups")
    start = None
    if settings.init_from:
        start = read_start_weights(settings.init_from)
        check_amp_factors(start, plan.space["amp_factor"])
        print(f"Start weights: {start.path} ({start.format}, amp factor {start.amp_factor}); trainable layers: "
              f"{', '.join(plan.space.get('trainable', [DEFAULT_TRAINABLE]))}")
    results_dir = Path(settings.results).resolve()
    saved = run_settings(settings, plan, manifest, start)
    run_state.open_results_folder(results_dir, settings.resume, settings.overwrite)  # refuses without writing
    check_writable(results_dir, "results folder")
    with run_state.driver_lock(results_dir):  # one driver per results folder, from its checks to the end
        earlier = run_state.open_results_folder(results_dir, settings.resume, settings.overwrite)  # as locked
        if settings.resume:
            earlier.check_resumable(saved)
            if earlier.complete and earlier.epochs_completed() == settings.epochs:
                print(f"The run in {results_dir} is complete after {settings.epochs} epochs; pass a larger --epochs "
                      "to extend it")
                return None
        tracker = MlflowTracker.connect(settings.mlflow_tracking_uri, settings.mlflow_experiment) \
            if settings.mlflow_tracking_uri else None

        from chap_mop.runtime.spark_session import spark_for

        with spark_for(spark, settings.master, "chap-model-selection") as session:
            return _select(settings, plan, session, manifest, train, val, results_dir, saved, earlier, tracker,
                           started, start)


def _select(settings: SelectionSettings, plan: Plan, spark, manifest: dict, train, val, results_dir: Path,
            saved: dict, earlier, tracker, started: float, start: StartWeights | None) -> dict:
    """The run itself, on a running Spark session: the checks that need Spark, the search, the best
    model, the ensemble, the test report and the tables."""
    from cerebro.storage import LocalStore

    from chap_mop.cerebro_compat.hopping import HoppingBackend
    from chap_mop.data.data_store import held_out_dir
    from chap_mop.output.evaluation import report_test
    from chap_mop.output.results import RunLog, write_results
    from chap_mop.selection.ensemble import build_ensemble
    from chap_mop.selection.progress import Progress
    from chap_mop.selection.tracking import TrackingError, epoch_listener

    master = spark.sparkContext.master
    num_workers = settings.workers or spark.sparkContext.defaultParallelism
    print(f"model selection: {settings.search} search of {plan.configurations} configurations x {settings.epochs} "
          f"epochs, batch {settings.batch_size}, best by val_{settings.metric}, on {master} with {num_workers} "
          f"workers; results in {results_dir}")
    for line in plan.halving.describe() if plan.halving else []:
        print(line)
    if min(train.row_groups, val.row_groups) < num_workers:
        raise InputError(f"{num_workers} workers need at least {num_workers} row groups in each split; re-run "
                         f"prep_petastorm_data.py with --partitions {num_workers} or use --workers "
                         f"{min(train.row_groups, val.row_groups)}")
    sequences = sequences_per_epoch(train, val, plan.space["win_size"], num_workers)
    removed = run_state.remove_interrupted_writes(results_dir)
    if removed:
        print(f"removed {len(removed)} half-written file(s) of an interrupted run, e.g. {removed[0]}")
    state = begin_run(results_dir, earlier, settings.resume, {**saved, "workers": num_workers})
    if tracker:
        tracker.start(state.data.get("mlflow") if settings.resume else None, results_dir.name,
                      {**saved, "workers": num_workers, "master": master}, {"results_folder": str(results_dir)})
        state.data["mlflow"] = tracker.state()
        state.save()

    store = LocalStore(str(Path(settings.data).resolve()), runs_path=str(results_dir / "runs"))
    backend = HoppingBackend(spark_context=spark.sparkContext, num_workers=num_workers,
                             polling_period=settings.polling_period_s, verbose=int(settings.verbose),
                             model_cache_mb=settings.model_cache_mb, seed=settings.seed)
    search = make_search(settings, plan, backend, store, state, start)
    search.run_hyperparameters = {}
    backend.sub_epoch_listeners.append(Progress(
        search.run_hyperparameters, plan.configurations, num_workers, settings.epochs,
        plan.halving.configuration_epochs() if plan.halving else None, state.configuration_epochs()).on_sub_epoch)
    run_log = RunLog(search, settings.metric, settings.epochs, search.stopped_at if plan.halving else None,
                     search.failed)
    run_log.history.update({entry["run_id"]: entry["history"] for entry in state.configurations if entry["history"]})
    search.epoch_listeners = [run_log.on_epoch_end]
    if tracker:
        search.epoch_listeners.append(epoch_listener(tracker, search.run_hyperparameters, state.data, METRIC_COLUMNS))
    try:
        result = search.fit_on_prepared_data()
    except BaseException:
        if tracker:
            with contextlib.suppress(TrackingError):  # the run's own error is the one to report
                tracker.fail()
        raise
    finally:
        state.add_session_time(time.time() - started)

    best_run = result.get_best_model().getRunId()
    best_path = results_dir / "best_model.h5"
    result.get_best_model().keras().save(best_path, include_optimizer=False)
    summary = {
        "best_run_id": best_run, "hyperparameters": result.run_hyperparameters[best_run],
        "evaluation_metric": "val_" + settings.metric,
        "value": run_log.history[best_run]["val_" + settings.metric][-1],
        "epochs": settings.epochs, "workers": num_workers, "search": settings.search, "master": master,
        "batch_size": settings.batch_size,
        "wall_clock_seconds": state.data["wall_clock_seconds"], "resumes": state.data["resumes"],
        "sequences_per_epoch": {str(win): counts for win, counts in sequences.items()},
        "data_store": settings.data, "best_model": best_path.name,  # relative: the folder can move
        "start_weights": start_description(start, settings.seed),
        **({"class_weights": plan.class_weights} if plan.class_weights else {}),
    }
    if search.failed:
        summary["failed"] = {run_id: {"epoch": epoch, "hyperparameters": result.run_hyperparameters[run_id]}
                             for run_id, epoch in search.failed.items()}
    if plan.halving:
        summary["halving"] = {**plan.halving.to_json(), "configuration_epochs_trained": state.configuration_epochs()}
    members = build_ensemble(results_dir, run_log, state.configurations, settings.ensemble_size)
    if members:
        summary["ensemble"] = [member["run_id"] for member in members]
    test_dir = held_out_dir(settings.data, manifest)
    if test_dir:
        summary["test"] = report_test(spark, test_dir, results_dir, best_path, members, best_run)
    write_results(results_dir, run_log, summary)
    if tracker:
        tracker.log_best(settings.metric, summary["value"], best_run)
        tracker.finish([results_dir / name for name in (*run_state.OUTPUT_NAMES, f"validation_{settings.metric}.png")],
                       {entry["run_id"]: results_dir / entry["checkpoint"] for entry in state.configurations
                        if entry["checkpoint"]})
    state.finish([best_path.name, *(member["model"] for member in members)])
    print(f"\nBest run {best_run} {summary['hyperparameters']}: val_{settings.metric} = {summary['value']:.4f}")
    print(f"Results in {results_dir}: report.html, models.csv, history.csv, summary.json, best_model.h5, "
          "runs/*/logs (TensorBoard)")
    return summary
