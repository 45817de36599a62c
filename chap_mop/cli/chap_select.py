"""``chap-select``: choose the best CHAP configuration with cerebro's model hopper parallelism."""
import argparse
import json

from chap_mop.cli.common import add_spark_flags, alias_help, new_parser, run_program
from chap_mop.model.ranking import RECORDED_METRICS
from chap_mop.selection.search_space import DEFAULT_SAMPLES, SEARCHES
from chap_mop.selection.stage import SelectionSettings


def search_space(text: str) -> dict:
    """``--search-space``'s JSON (and ``--class-weights``')."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from error


def build_parser(defaults: SelectionSettings, description: str | None = None, prog: str | None = None
                 ) -> argparse.ArgumentParser:
    """The flags of the selection stage, each defaulting to ``defaults``."""
    from chap_mop.selection import stage

    parser = new_parser(description or stage.__doc__, prog)
    data = parser.add_argument_group("data")
    data.add_argument("--store", "--data", dest="data", default=defaults.data, metavar="DIR",
                      help=alias_help("data store written by chap-prep (prep_petastorm_data.py)", "--data"))
    search = parser.add_argument_group("search")
    search.add_argument("--search", default=defaults.search, choices=SEARCHES,
                        help="search strategy; sha: successive halving of the grid (or of --samples draws), "
                             "hyperband: several successive-halving brackets")
    search.add_argument("--search-space", type=search_space, default=json.dumps(defaults.search_space),
                        metavar="JSON", help="each hyper-parameter's values: lr, l2_reg, win_size (minutes), "
                                             "amp_factor; with --init-from also trainable: all, lstm_head (the "
                                             "CNN frozen) or head")
    search.add_argument("--samples", type=int, default=defaults.samples,
                        help="configurations for random and tpe; for sha, random draws instead of the grid "
                             f"(default: {defaults.samples or f'{DEFAULT_SAMPLES} for random and tpe, the grid for sha'})")
    search.add_argument("--epochs", type=int, default=defaults.epochs,
                        help="epochs per configuration (the most, under sha and hyperband)")
    search.add_argument("--metric", default=defaults.metric, choices=RECORDED_METRICS,
                        help="validation metric that picks the best run (accuracies maximised, loss minimised)")
    search.add_argument("--eta", type=int, default=defaults.eta,
                        help="sha and hyperband: each rung keeps the best 1/eta of its configurations")
    search.add_argument("--min-epochs", type=int, default=defaults.min_epochs,
                        help="sha and hyperband: epochs of the first rung (default: "
                             + (str(defaults.min_epochs) if defaults.min_epochs else
                                "sha fits about log_eta(n) rungs below --epochs; hyperband 1") + ")")
    search.add_argument("--batch-size", type=int, default=defaults.batch_size, help="sequences per training step")
    search.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of every configuration's initial weights and of each sub-epoch's shuffle, so "
                             "that a run repeats exactly (default: "
                             + (str(defaults.seed) if defaults.seed is not None else "unseeded") + ")")
    search.add_argument("--class-weights", type=search_space, default=defaults.class_weights, metavar="JSON",
                        help="loss weight of sitting and of not-sitting windows, as DeepPostures' train_model.py "
                             "has it, e.g. '[1.0, 2.0]' (default: "
                             + (json.dumps(defaults.class_weights) if defaults.class_weights else "equal") + ")")
    fine_tuning = parser.add_argument_group("fine-tuning")
    fine_tuning.add_argument("--init-from", default=defaults.init_from, metavar="PATH",
                             help="start every configuration from this model's weights: a DeepPostures .pth (e.g. "
                                  "CHAP_ALL_ADULTS.pth) or a Keras .h5 of this project (e.g. an earlier "
                                  "best_model.h5); the search space's amp_factor must be the model's (default: "
                                  + (defaults.init_from or "fresh weights") + ")")
    run = parser.add_argument_group("run")
    run.add_argument("--resume", action="store_true", default=defaults.resume,
                     help="continue the run in --results from its last completed epoch (a larger --epochs extends "
                          "a finished run)")
    run.add_argument("--overwrite", action="store_true", default=defaults.overwrite,
                     help="replace the run in --results (only the files the run wrote are removed)")
    run.add_argument("--polling-period", dest="polling_period_s", type=float, default=defaults.polling_period_s,
                     metavar="SECONDS", help="seconds between the driver's checks of its workers")
    run.add_argument("--model-cache-mb", type=float, default=defaults.model_cache_mb,
                     help="MB of model variables each worker keeps between hops, least recently used dropped "
                          "first (0: rebuild the model on every visit)")
    output = parser.add_argument_group("output")
    output.add_argument("--results", default=defaults.results, metavar="DIR",
                        help="results folder: new or empty, or holding a run of this program (see --resume)")
    output.add_argument("--ensemble-size", type=int, default=defaults.ensemble_size,
                        help="top configurations saved as a majority-vote ensemble (1: none)")
    output.add_argument("--mlflow-tracking-uri", default=defaults.mlflow_tracking_uri, metavar="URI",
                        help="log the run to MLflow (needs pip install 'chap-mop[mlflow]'): a tracking server "
                             "(http://host:5000) or a local store (file:/path, sqlite:///path.db) (default: "
                             + (defaults.mlflow_tracking_uri or "off") + ")")
    output.add_argument("--mlflow-experiment", default=defaults.mlflow_experiment,
                        help="MLflow experiment, created if missing")
    spark = add_spark_flags(parser, defaults.master, defaults.verbose)
    spark.add_argument("--workers", type=int, default=defaults.workers,
                       help="cerebro workers (default: "
                            + (str(defaults.workers) if defaults.workers else "Spark's default parallelism") + ")")
    return parser


def main(argv: list[str] | None = None, defaults: SelectionSettings | None = None, description: str | None = None
         ) -> None:
    """Parse ``argv`` (flags override ``defaults``) and run the selection; exits non-zero on failure."""
    run_program(build_parser(defaults or SelectionSettings(), description), argv, SelectionSettings, select,
                worker_lost_advice)


def select(settings: SelectionSettings) -> None:
    from chap_mop.selection.stage import run_selection

    run_selection(settings)


def worker_lost_advice(settings: SelectionSettings) -> str:
    return (f". Model selection stopped; results folder {settings.results} is incomplete: check that the cluster's "
            "workers are ALIVE with free cores (master web UI), then re-run with --resume to continue from the "
            "last completed epoch")


if __name__ == "__main__":
    main()
