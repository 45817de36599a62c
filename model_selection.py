"""Step 2: choose the best CHAP CNN-BiLSTM configuration with cerebro's model hopper parallelism.

Every configuration of the search space visits every worker's partition of the training data
once per epoch (model hopping), then is validated on every partition of the validation data.
Successive halving (``--search sha``) and Hyperband stop the worst configurations at each rung.
Settings are the constants at the top of ``main()``; command-line flags override them.

    python model_selection.py --help
"""
import argparse
import contextlib
import functools
import json
import math
import sys
import time
from pathlib import Path

from chap_mop.runtime import runtime_env

# Before anything loads TensorFlow: how loud this run is, on the driver and on every executor.
runtime_env.configure(verbose=runtime_env.verbose_requested(sys.argv[1:]))

from chap_mop import cerebro_compat  # first import of cerebro: patches it
from chap_mop.selection import run_state
from chap_mop.cerebro_compat.hopping import DEFAULT_MODEL_CACHE_MB, HoppingBackend
from chap_mop.model.chap_model import build_chap_model
from chap_mop.data.data_store import held_out_dir, read_store
from chap_mop.selection.ensemble import read_members, save_members
from chap_mop.output.evaluation import evaluate, write_test_report
from chap_mop.selection.halving import DEFAULT_ETA, HalvingPlan, make_plan
from chap_mop.errors import InputError
from chap_mop.model.metrics import COUNT_METRICS, CUSTOM_OBJECTS, RECORDED_METRICS
from chap_mop.selection.progress import Progress
from chap_mop.output.results import METRIC_COLUMNS, RunLog, write_results
from chap_mop.runtime.spark_session import start_spark
from chap_mop.selection.tracking import MlflowTracker, TrackingError, epoch_listener
from chap_mop.data.windows import make_transformation_fn, sequence_length

PROJECT = Path(__file__).resolve().parent
HYPERPARAMETERS = {"lr": float, "l2_reg": float, "win_size": int, "amp_factor": int}
FEATURE_COLUMNS = ["id", "time", "data", "non_wear", "sleeping"]  # all read; only "data" enters the model
LABEL_COLUMNS = ["label"]
SHUFFLE_SEQUENCES = 256  # per worker; about 13 MB at 7 minutes


def estimator_gen_fn(params: dict, batch_size: int, seed: int | None = None):
    """A cerebro SparkEstimator of the CHAP model for one configuration.

    :param params: ``lr`` (Adam learning rate), ``l2_reg`` (L2 penalty), ``win_size`` (minutes
        per sequence), ``amp_factor`` (CNN width multiplier).
    :param batch_size: Sequences per training step.
    :param seed: initial weights from this seed (None: random), the same for every run that gives it.
    """
    from cerebro.keras import SparkEstimator
    import tensorflow as tf

    if seed is not None:
        tf.keras.utils.set_random_seed(seed)

    seq_len = sequence_length(params["win_size"])
    return SparkEstimator(
        model=build_chap_model(seq_len, params["amp_factor"], params["l2_reg"]),
        optimizer=tf.keras.optimizers.Adam(learning_rate=params["lr"]),
        # One softmax per window, integer labels: the loss that matches the model's head.
        loss="sparse_categorical_crossentropy",
        metrics=COUNT_METRICS,
        custom_objects=CUSTOM_OBJECTS,
        batch_size=batch_size,
        transformation_fn=make_transformation_fn(seq_len, shuffle_buffer=SHUFFLE_SEQUENCES))


def check_search_space(space: dict) -> dict:
    """Each known hyper-parameter maps to a non-empty list of values of the right type."""
    unknown = sorted(set(space) - set(HYPERPARAMETERS))
    if unknown:
        raise InputError(f"unknown hyper-parameter(s) {unknown}; expected names among {sorted(HYPERPARAMETERS)}")
    missing = sorted(set(HYPERPARAMETERS) - set(space))
    if missing:
        raise InputError(f"search space lacks {missing}; give each of {sorted(HYPERPARAMETERS)} a list of values")
    for name, values in space.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"hyper-parameter '{name}' has {values!r}; expected a non-empty list of values")
        cast = HYPERPARAMETERS[name]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and cast(v) == v
                   for v in values):
            raise InputError(f"hyper-parameter '{name}' has {values!r}; expected non-negative {cast.__name__} values")
    return {name: [HYPERPARAMETERS[name](v) for v in values] for name, values in space.items()}


def sequences_per_epoch(train, val, win_sizes: list[int], num_workers: int) -> dict:
    """Sequences per epoch for each window size; stop if a split or a worker would get none."""
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


def make_search(kind: str, samples: int, plan: HalvingPlan | None, backend, store, space: dict, epochs: int,
                metric: str, batch_size: int, seed: int | None, state: run_state.RunState, verbose: bool):
    from cerebro.tune import hp_choice
    from chap_mop.cerebro_compat.halving_search import ResumableHalvingSearch
    from chap_mop.cerebro_compat.resumable import SEARCHES

    common = dict(backend=backend, store=store, search_space={k: hp_choice(v) for k, v in space.items()},
                  estimator_gen_fn=functools.partial(estimator_gen_fn, batch_size=batch_size, seed=seed),
                  num_epochs=epochs, evaluation_metric=metric, label_columns=LABEL_COLUMNS,
                  # verbose 2: cerebro's lines and Keras' one line per sub-epoch; 0: chap_mop.selection.progress's only
                  feature_columns=FEATURE_COLUMNS, verbose=2 if verbose else 0, run_state=state)
    if plan:
        return ResumableHalvingSearch(plan=plan, **common)
    return SEARCHES[kind](**common) if kind == "grid" else SEARCHES[kind](num_models=samples, **common)


def plan_search(args: argparse.Namespace, space: dict) -> tuple[int, HalvingPlan | None]:
    """How many configurations the search trains, and the brackets of a halving search (else None)."""
    if args.search in ("sha", "hyperband"):
        if args.search == "hyperband" and args.samples is not None:
            raise InputError("--samples does not apply to --search hyperband: its brackets fix how many "
                             "configurations it draws")
        plan = make_plan(args.search, space, args.samples, args.eta, args.epochs, args.min_epochs)
        return len(plan.configurations), plan
    if args.eta != DEFAULT_ETA or args.min_epochs is not None:
        raise InputError(f"--eta and --min-epochs apply to --search sha and hyperband, not {args.search}")
    return math.prod(len(values) for values in space.values()) if args.search == "grid" else args.samples, None


def run_settings(args: argparse.Namespace, space: dict, manifest: dict) -> dict:
    """What defines a run, saved in its state; a resume must repeat all of it but ``epochs``."""
    return {"data_store": str(Path(args.data).resolve()), "manifest_sha256": run_state.manifest_fingerprint(manifest),
            "search": args.search, "search_space": space, "samples": None if args.search == "grid" else args.samples,
            "batch_size": args.batch_size, "metric": args.metric, "epochs": args.epochs, "seed": args.seed,
            **({"eta": args.eta, "min_epochs": args.min_epochs} if args.search in ("sha", "hyperband") else {})}


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


def build_ensemble(results_dir: Path, run_log: RunLog, state: run_state.RunState, size: int) -> list[dict]:
    """Save the top ``size`` configurations (never more than trained every epoch: successive halving's
    stopped ones are left out) as the ensemble; none for 1."""
    finished = [run_id for run_id in run_log.ranked() if run_log.epochs_done(run_id) == run_log.num_epochs]
    ranked = finished[:size]
    if 1 < size and len(ranked) < min(size, len(run_log.history)):
        print(f"ensemble: {len(ranked)} of --ensemble-size {size} configurations trained all {run_log.num_epochs} "
              "epochs" + ("; no ensemble" if len(ranked) < 2 else ""))
    if len(ranked) < 2:
        return []
    metric = "val_" + run_log.evaluation_metric
    checkpoints = {entry["run_id"]: results_dir / entry["checkpoint"] for entry in state.configurations}
    return save_members(results_dir, [{"run_id": run_id, "hyperparameters": run_log.params(run_id), "metric": metric,
                                       "value": run_log.history[run_id][metric][-1]} for run_id in ranked],
                        checkpoints)


def report_test(spark, test_dir: str, results_dir: Path, best_path: Path, members: list[dict], best_run: str) -> dict:
    """Evaluate the chosen model and the ensemble on the test subjects; write and print the test report."""
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


def main() -> None:
    SPARK_MASTER_URL = "local[*]"
    DATA_STORE_PATH = str(PROJECT / "data" / "petastorm")  # where prep_petastorm_data.py writes by default
    NUM_WORKERS = None  # None: Spark's default parallelism (local[*]: one per core)
    NUM_EPOCHS = 10
    BATCH_SIZE = 128  # sequences per step
    EVALUATION_METRIC = "balanced_accuracy"  # of the validation data; maximised
    SEARCH, NUM_SAMPLES = "grid", 8  # grid, random, tpe, sha or hyperband; samples for random and tpe
    ETA, MIN_EPOCHS = DEFAULT_ETA, None  # sha and hyperband: cut factor; first rung (None: derived)
    ENSEMBLE_SIZE = 3  # top configurations in the majority-vote ensemble (DeepPostures' CHAP); 1: none
    search_space = {"lr": [1e-3, 1e-4], "l2_reg": [1e-3, 1e-4], "win_size": [7, 9], "amp_factor": [2, 4]}
    RESULTS_DIR = str(PROJECT / "results")
    POLLING_PERIOD_S = cerebro_compat.DEFAULT_POLLING_PERIOD_S  # driver's check of its workers; cerebro's is 2 s
    SEED = None  # initial weights and shuffles; None: random, a number: the same run every time
    MODEL_CACHE_MB = DEFAULT_MODEL_CACHE_MB  # per worker: compiled models kept between hops
    MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT = None, "chap-model-selection"  # None: no MLflow tracking

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--master", default=SPARK_MASTER_URL, help="Spark master URL (default: %(default)s)")
    parser.add_argument("--data", default=DATA_STORE_PATH, help="data store written by prep_petastorm_data.py")
    parser.add_argument("--workers", type=int, default=NUM_WORKERS, help="cerebro workers (default: Spark's)")
    parser.add_argument("--epochs", type=int, default=NUM_EPOCHS, help="epochs per configuration")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="sequences per training step")
    parser.add_argument("--metric", default=EVALUATION_METRIC, choices=RECORDED_METRICS,
                        help="validation metric that picks the best run (accuracies maximised, loss minimised)")
    parser.add_argument("--search", default=SEARCH, choices=["grid", "random", "tpe", "sha", "hyperband"],
                        help="search strategy; sha: successive halving of the grid (or of --samples draws), "
                             "hyperband: several successive-halving brackets (README: Stopping bad configurations)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"configurations for random and tpe (default {NUM_SAMPLES}); for sha, random draws "
                             "instead of the grid")
    parser.add_argument("--eta", type=int, default=ETA,
                        help="sha and hyperband: each rung keeps the best 1/eta of its configurations "
                             "(default %(default)s)")
    parser.add_argument("--min-epochs", type=int, default=MIN_EPOCHS,
                        help="sha and hyperband: epochs of the first rung (default: sha fits about log_eta(n) "
                             "rungs below --epochs; hyperband 1)")
    parser.add_argument("--search-space", type=json.loads, default=search_space,
                        help='JSON, e.g. \'{"lr": [0.001], "l2_reg": [0.0001], "win_size": [7], "amp_factor": [1]}\'')
    parser.add_argument("--ensemble-size", type=int, default=ENSEMBLE_SIZE,
                        help="top configurations saved as a majority-vote ensemble (1: none; default %(default)s)")
    parser.add_argument("--results", default=RESULTS_DIR,
                        help="results folder: new or empty, or holding a run of this script (see --resume)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --results from its last completed epoch (a larger --epochs "
                             "extends a finished run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --results (only the files the run wrote are removed)")
    parser.add_argument("--polling-period", type=float, default=POLLING_PERIOD_S,
                        help="seconds between the driver's checks of its workers (default %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed of every configuration's initial weights and of each sub-epoch's shuffle, so "
                             "that a run repeats exactly (default: unseeded)")
    parser.add_argument("--model-cache-mb", type=float, default=MODEL_CACHE_MB,
                        help="MB of model variables each worker keeps between hops, least recently used "
                             "dropped first (0: rebuild the model on every visit; default %(default)s)")
    parser.add_argument("--mlflow-tracking-uri", default=MLFLOW_TRACKING_URI,
                        help="log the run to MLflow: a tracking server (http://host:5000) or a local store "
                             "(file:/path, sqlite:///path.db); off by default")
    parser.add_argument("--mlflow-experiment", default=MLFLOW_EXPERIMENT,
                        help="MLflow experiment, created if missing (default %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show cerebro's, Keras', TensorFlow's and Spark's own lines (for debugging)")
    args = parser.parse_args()
    if args.samples is None and args.search in ("random", "tpe"):
        args.samples = NUM_SAMPLES
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also in a pipe
    try:
        run(args)
    except InputError as error:
        parser.exit(2, f"error: {error}\n")
    except cerebro_compat.WorkerLostError as error:
        parser.exit(3, f"error: {error}. Model selection stopped; results folder {args.results} is incomplete: "
                       "check that the cluster's workers are ALIVE with free cores (master web UI), then re-run "
                       "with --resume to continue from the last completed epoch\n")


def run(args: argparse.Namespace) -> None:
    started = time.time()
    space = check_search_space(args.search_space)
    num_configurations, plan = plan_search(args, space)
    if args.ensemble_size < 1:
        raise InputError(f"--ensemble-size {args.ensemble_size}: expected 1 (no ensemble) or more configurations")
    if args.metric not in RECORDED_METRICS:
        raise InputError(f"evaluation metric '{args.metric}' is not recorded; expected one of {list(RECORDED_METRICS)}")
    manifest, train, val = read_store(args.data)
    subjects = {name: len(split["subjects"]) for name, split in manifest["splits"].items()}
    print(f"Data store {args.data}: {subjects['train']} train subjects, {train.rows} windows in {train.row_groups} "
          f"row groups; {subjects['validation']} validation subjects, {val.rows} windows in {val.row_groups} row groups")
    results_dir = Path(args.results).resolve()
    settings = run_settings(args, space, manifest)
    earlier = run_state.open_results_folder(results_dir, args.resume, args.overwrite)
    if args.resume:
        earlier.check_resumable(settings)
        if earlier.complete and earlier.epochs_completed() == args.epochs:
            print(f"The run in {results_dir} is complete after {args.epochs} epochs; pass a larger --epochs "
                  "to extend it")
            return
    tracker = MlflowTracker.connect(args.mlflow_tracking_uri, args.mlflow_experiment) \
        if args.mlflow_tracking_uri else None

    spark = start_spark(args.master, "chap-model-selection")
    num_workers = args.workers or spark.sparkContext.defaultParallelism
    print(f"model selection: {args.search} search of {num_configurations} configurations x {args.epochs} epochs, "
          f"batch {args.batch_size}, best by val_{args.metric}, on {args.master} with {num_workers} workers; "
          f"results in {results_dir}")
    for line in plan.describe() if plan else []:
        print(line)
    if min(train.row_groups, val.row_groups) < num_workers:
        raise InputError(f"{num_workers} workers need at least {num_workers} row groups in each split; re-run "
                         f"prep_petastorm_data.py with --partitions {num_workers} or use --workers "
                         f"{min(train.row_groups, val.row_groups)}")
    sequences = sequences_per_epoch(train, val, space["win_size"], num_workers)
    state = begin_run(results_dir, earlier, args.resume, {**settings, "workers": num_workers})
    if tracker:
        tracker.start(state.data.get("mlflow") if args.resume else None, results_dir.name,
                      {**settings, "workers": num_workers, "master": args.master},
                      {"results_folder": str(results_dir)})
        state.data["mlflow"] = tracker.state()
        state.save()

    from cerebro.storage import LocalStore

    store = LocalStore(str(Path(args.data).resolve()), runs_path=str(results_dir / "runs"))
    backend = HoppingBackend(spark_context=spark.sparkContext, num_workers=num_workers,
                             polling_period=args.polling_period, verbose=int(args.verbose),
                             model_cache_mb=args.model_cache_mb, seed=args.seed)
    search = make_search(args.search, args.samples, plan, backend, store, space, args.epochs, args.metric,
                         args.batch_size, args.seed, state, args.verbose)
    search.run_hyperparameters = {}
    backend.sub_epoch_listeners.append(Progress(
        search.run_hyperparameters, num_configurations, num_workers, args.epochs,
        plan.configuration_epochs() if plan else None, state.configuration_epochs()).on_sub_epoch)
    run_log = RunLog(search, args.metric, args.epochs, search.stopped_at if plan else None)
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
        "evaluation_metric": "val_" + args.metric,
        "value": run_log.history[best_run]["val_" + args.metric][-1],
        "epochs": args.epochs, "workers": num_workers, "search": args.search, "master": args.master,
        "batch_size": args.batch_size,
        "wall_clock_seconds": state.data["wall_clock_seconds"], "resumes": state.data["resumes"],
        "sequences_per_epoch": {str(win): counts for win, counts in sequences.items()},
        "data_store": args.data, "best_model": str(best_path),
    }
    if plan:
        summary["halving"] = {**plan.to_json(), "configuration_epochs_trained": state.configuration_epochs()}
    members = build_ensemble(results_dir, run_log, state, args.ensemble_size)
    if members:
        summary["ensemble"] = [member["run_id"] for member in members]
    test_dir = held_out_dir(args.data, manifest)
    if test_dir:
        summary["test"] = report_test(spark, test_dir, results_dir, best_path, members, best_run)
    write_results(results_dir, run_log, summary)
    if tracker:
        tracker.log_best(args.metric, summary["value"], best_run)
        tracker.finish([results_dir / name for name in (*run_state.OUTPUT_NAMES, f"validation_{args.metric}.png")],
                       {entry["run_id"]: results_dir / entry["checkpoint"] for entry in state.configurations
                        if entry["checkpoint"]})
    state.finish()
    print(f"\nBest run {best_run} {summary['hyperparameters']}: val_{args.metric} = {summary['value']:.4f}")
    print(f"Results in {results_dir}: report.html, models.csv, history.csv, summary.json, best_model.h5, "
          "runs/*/logs (TensorBoard)")
    spark.stop()


if __name__ == "__main__":
    main()
