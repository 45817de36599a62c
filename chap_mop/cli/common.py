"""What the three programs share: help layout, shared flags, and how errors become exit codes."""
import argparse
import sys
from collections.abc import Callable
from dataclasses import fields

from chap_mop import __version__
from chap_mop.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_WORKER_LOST, InputError, TrainingError, WorkerLostError

MASTER_DEFAULT_HELP = "default: spark-submit's --master or spark.master of spark-defaults.conf, else local[*]"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each flag's default after its help (unless the help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def new_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with the project's help layout and ``--version``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s (chap-mop) {__version__}")
    return parser


def add_spark_flags(parser: argparse.ArgumentParser, master: str | None, verbose: bool = False
                    ) -> argparse._ArgumentGroup:
    """The ``Spark`` group: ``--master`` and ``--verbose``; returns it for more flags."""
    group = parser.add_argument_group("Spark")
    group.add_argument("--master", default=master, metavar="URL",
                       help="Spark master URL: local[2], spark://host:7077, yarn ... ("
                            + (f"default: {master}" if master else MASTER_DEFAULT_HELP) + ")")
    group.add_argument("--verbose", action="store_true", default=verbose,
                       help="also show Spark's, TensorFlow's, Keras' and cerebro's own lines (for debugging)")
    return group


def add_day_file_flags(group: argparse._ArgumentGroup, dest: str, folder: str, skip_bad_files: bool,
                       earlier: tuple[str, ...] = ()) -> None:
    """``--pre-processed-dir`` (DeepPostures' day files) and ``--skip-bad-files``, as prep and predict read them.

    :param earlier: earlier names of ``--pre-processed-dir`` that are still accepted.
    """
    text = ("folder of subject folders of <YYYY-MM-DD>.h5 day files: path, file:// or hdfs:// URL, readable by every "
            "Spark worker")
    group.add_argument("--pre-processed-dir", *earlier, dest=dest, default=folder, metavar="DIR",
                       help=alias_help(text, ", ".join(earlier)) if earlier else text)
    group.add_argument("--skip-bad-files", action="store_true", default=skip_bad_files,
                       help="skip unreadable or malformed day files and empty subject folders, and list them, "
                            "instead of stopping at the first")


def add_progress_flag(group: argparse._ArgumentGroup, progress_every_s: float) -> None:
    """``--progress-every``: seconds between the progress lines of a long Spark job."""
    group.add_argument("--progress-every", dest="progress_every_s", type=float, default=progress_every_s,
                       metavar="SECONDS", help="seconds between progress lines of each Spark job")


def alias_help(text: str, earlier: str) -> str:
    """Help of a flag that also answers to an earlier name."""
    return f"{text}; {earlier} is its earlier name, still accepted"


def run_stage(parser: argparse.ArgumentParser, stage: Callable[[], object],
              worker_lost_advice: str = "") -> None:
    """Run ``stage``; bad input exits 2, failed training 1 and a lost worker 3, each with one ``error:`` line.

    :param worker_lost_advice: what to do after a lost worker, appended to its line.
    """
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also in a pipe
    try:
        stage()
    except InputError as error:
        parser.exit(EXIT_BAD_INPUT, f"error: {error}\n")
    except TrainingError as error:
        parser.exit(EXIT_FAILURE, f"error: {error}\n")
    except WorkerLostError as error:
        parser.exit(EXIT_WORKER_LOST, f"error: {error}{worker_lost_advice}\n")


def run_program(parser: argparse.ArgumentParser, argv: list[str] | None, settings_type: type,
                stage: Callable[[object], object], worker_lost_advice: Callable[[object], str] | None = None) -> None:
    """Parse ``argv`` into a ``settings_type`` (flags' ``dest`` are its field names) and run ``stage`` on it.

    :param worker_lost_advice: what to do after a lost worker, from the settings.
    """
    args = parser.parse_args(argv)
    settings = settings_type(**{field.name: getattr(args, field.name) for field in fields(settings_type)})
    run_stage(parser, lambda: stage(settings), worker_lost_advice(settings) if worker_lost_advice else "")
