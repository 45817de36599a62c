"""The demo that ``make demo`` runs: synthetic subjects through the three programs, seeded end to end.

Each step is the command a person would type, printed before it runs::

    python -m chap_mop.dev.demo_data ...     # DeepPostures-style day files of synthetic subjects
    python prep_petastorm_data.py ...        # -> a Petastorm store, some subjects held out for testing
    python model_selection.py ...            # a small grid on model hopper parallelism
    python make_predictions.py ...           # the ensemble's predictions for every subject

Everything that draws a random number is seeded (the data, the subject split, the initial weights,
each sub-epoch's shuffle), and the partitions and workers are fixed at 2 whatever the machine's
cores, so every run gives the same model. The settings below are the only
definition of the demo: ``tests/test_model_selection.py`` runs the same selection and holds its
chosen model to the validation and test floor the README promises.
"""
import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

SEED = 0
DATA = {"subjects": 16, "days": 1, "hours": 8}  # chap_mop.dev.demo_data's flags
PREP = {"train_fraction": 0.6, "test_fraction": 0.2, "partitions": 2}  # 9 subjects train, 4 validate, 3 test
# Short BiLSTM windows give many sequences, so a few epochs take enough steps to learn.
SEARCH_SPACE = {"lr": [0.001], "l2_reg": [0.0001], "win_size": [1, 2], "amp_factor": [1]}
SELECTION = {"epochs": 3, "batch_size": 16, "workers": 2}
PROJECT = Path(__file__).resolve().parents[2]  # the clone that holds the three scripts
FLOOR = 0.80  # validation and test balanced accuracy per window that the chosen model reaches


def flags(settings: dict) -> list[str]:
    """``{"batch_size": 16}`` as ``["--batch-size", "16"]``."""
    return [word for name, value in settings.items() for word in (f"--{name.replace('_', '-')}", str(value))]


def data_command(folder: Path) -> list[str]:
    return ["-m", "chap_mop.dev.demo_data", "--out", str(folder / "demo_h5"), *flags(DATA), "--seed", str(SEED)]


def prep_command(folder: Path) -> list[str]:
    return ["prep_petastorm_data.py", "--pre-processed-dir", str(folder / "demo_h5"), "--store",
            str(folder / "petastorm"), *flags(PREP), "--seed", str(SEED)]


def selection_command(store: Path, results: Path) -> list[str]:
    """``model_selection.py`` with the demo's settings (``--overwrite``: each demo replaces the last)."""
    return ["model_selection.py", "--store", str(store), "--results", str(results), "--overwrite", *flags(SELECTION),
            "--seed", str(SEED), "--search-space", json.dumps(SEARCH_SPACE)]


def predict_command(folder: Path) -> list[str]:
    return ["make_predictions.py", "--pre-processed-dir", str(folder / "demo_h5"), "--results",
            str(folder / "results"), "--predictions-dir", str(folder / "predictions"), "--ensemble"]


def next_steps(folder: Path) -> str:
    """What a person does after the demo, in a few lines."""
    return "\n".join([
        "",
        "Demo done. Next:",
        f"  open {folder / 'results' / 'report.html'}   (leaderboard, learning curves, test report)",
        f"  predictions per subject: {folder / 'predictions'}/",
        "  your own data: python prep_petastorm_data.py --pre-processed-dir YOUR_H5_DIR --store YOUR_STORE, then",
        "                 python model_selection.py --store YOUR_STORE --results YOUR_RESULTS  (README: Your data)",
    ])


def run(words: list[str]) -> None:
    """Run ``python <words>`` (a script of the project's folder, or ``-m`` a module), shown first as the
    command a person would type there."""
    print(f"\n$ python {shlex.join(words)}", flush=True)
    script = PROJECT / words[0] if words[0].endswith(".py") else words[0]
    subprocess.run([sys.executable, str(script), *words[1:]], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chap_mop.dev.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), metavar="DIR",
                        help="folder for the demo's day files, store, results and predictions (default: %(default)s)")
    args = parser.parse_args(argv)
    folder = args.data
    try:
        for words in (data_command(folder), prep_command(folder),
                      selection_command(folder / "petastorm", folder / "results"), predict_command(folder)):
            run(words)
    except subprocess.CalledProcessError as error:
        parser.exit(error.returncode, f"demo: a step failed (exit {error.returncode}); its error is above\n")
    print(next_steps(folder))


if __name__ == "__main__":
    main()
