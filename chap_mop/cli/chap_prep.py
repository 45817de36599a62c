"""``chap-prep``: DeepPostures' pre-processed H5 day files -> the Petastorm store that selection reads."""
import argparse

from chap_mop.cli.common import (add_day_file_flags, add_progress_flag, add_spark_flags, alias_help, new_parser,
                                 run_program)
from chap_mop.data.prepare import PrepSettings


def build_parser(defaults: PrepSettings, description: str | None = None, prog: str | None = None
                 ) -> argparse.ArgumentParser:
    """The flags of the data stage, each defaulting to ``defaults``."""
    from chap_mop.data import prepare

    parser = new_parser(description or prepare.__doc__, prog)
    data = parser.add_argument_group("data")
    add_day_file_flags(data, "input", defaults.input, defaults.skip_bad_files, earlier=("--input",))
    split = parser.add_argument_group("split")
    split.add_argument("--train-fraction", type=float, default=defaults.train_fraction,
                       help="fraction of subjects (rounded down) that train; the rest validate (or test)")
    split.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                       help="fraction of subjects (rounded down, at least one when > 0) held out in test_data to "
                            "test the chosen model, never used for selection; 0: no test split")
    split.add_argument("--seed", type=int, default=defaults.seed, help="seed of the subject split")
    output = parser.add_argument_group("output")
    output.add_argument("--store", "--output", dest="output", default=defaults.output, metavar="DIR",
                        help=alias_help("store folder for train_data, val_data, test_data and manifest.json: "
                                        "path, file:// or hdfs:// URL; new, empty, or a store written here "
                                        "before, which is replaced", "--output"))
    output.add_argument("--partitions", type=int, default=defaults.partitions,
                        help="Parquet files per split (at most one per subject) and minimum row groups per split; "
                             "at least the number of cerebro workers (default: "
                             + (str(defaults.partitions) if defaults.partitions else "Spark's default parallelism")
                             + ")")
    output.add_argument("--row-group-size-mb", type=int, default=defaults.row_group_size_mb,
                        help="maximum Parquet row group size in MB, 1-2047; a worker holds one row group in memory")
    add_progress_flag(add_spark_flags(parser, defaults.master, defaults.verbose), defaults.progress_every_s)
    return parser


def main(argv: list[str] | None = None, defaults: PrepSettings | None = None, description: str | None = None
         ) -> None:
    """Parse ``argv`` (flags override ``defaults``) and prepare the store; exits non-zero on failure."""
    run_program(build_parser(defaults or PrepSettings(), description), argv, PrepSettings, prepare)


def prepare(settings: PrepSettings) -> None:
    from chap_mop.data.prepare import prepare_store

    prepare_store(settings)


if __name__ == "__main__":
    main()
