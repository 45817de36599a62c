"""The package as a user installs it: ``pip install -c requirements.txt .`` in a new virtual
environment (core only: no MLflow), its three console scripts, ``spark-submit`` choosing the master,
and the stages in this process against the programs.

The new environment sees the dependencies this one has installed (TensorFlow, Spark, ...) through
a ``.pth`` file naming a folder of links to them, leaving out MLflow and this package, so pip finds
every dependency satisfied at the lock's versions and installs the package alone: seconds, where
installing the dependencies again took minutes. ``make setup`` has already resolved the same lock
with every extra.
"""
import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import PROJECT, prepare_in_process, run_script, select_in_process

pytestmark = pytest.mark.slow
LOCK = PROJECT / "requirements.txt"
ONE_CONFIGURATION = {"lr": [0.001], "l2_reg": [0.0001], "win_size": [1], "amp_factor": [1]}


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=1200, **kwargs)


LEFT_OUT = ("chap_mop", "chap-mop", "__editable__", "mlflow", "pip")  # this package, the extra, the new env's own pip


def dependencies_without_the_extras(folder: Path) -> Path:
    """``folder`` holding a link to each entry of this environment's site-packages but those of
    :data:`LEFT_OUT` (and ``.pth`` files, which only a site folder runs)."""
    folder.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not entry.name.lower().startswith(LEFT_OUT) and entry.suffix != ".pth":
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> Path:
    """The bin folder of a new virtual environment holding the package installed without extras."""
    root = tmp_path_factory.mktemp("core")
    env = root / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(f"{dependencies_without_the_extras(root / 'dependencies')}\n")
    installed = run([python, "-m", "pip", "install", "--no-input", "-c", LOCK, PROJECT])
    assert installed.returncode == 0, installed.stderr[-3000:]
    # Every dependency was found at the lock's version: pip installed the package, and at most the
    # lock's setuptools over the one venv ships.
    done = [line for line in installed.stdout.splitlines() if line.startswith("Successfully installed ")]
    assert len(done) == 1 and "chap-mop-1.0.0" in done[0].split(), installed.stdout[-3000:]
    assert {name.rsplit("-", 1)[0] for name in done[0].split()[2:]} <= {"chap-mop", "setuptools"}, done
    return env / "bin"


def test_the_core_install_has_the_three_programs_and_no_mlflow(core, tmp_path):
    for program in ("chap-prep", "chap-select", "chap-predict"):
        version = run([core / program, "--version"], cwd=tmp_path)
        assert version.returncode == 0 and version.stdout.strip() == f"{program} (chap-mop) 1.0.0", version
        helped = run([core / program, "--help"], cwd=tmp_path)
        assert helped.returncode == 0 and "--master URL" in helped.stdout and "(default: " in helped.stdout
    listed = run([core / "python", "-m", "pip", "list", "--format", "json"])
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "chap-mop" in names and not {name for name in names if name.startswith("mlflow")}
    assert run([core / "python", "-c", "import mlflow"]).returncode == 1


def test_the_core_install_bridges_petastorm_in_any_process(core, tmp_path):
    """The wheel puts chap_mop_bridge.pth at the top of site-packages: a bare import of Petastorm works
    in any Python of the environment, as in Spark's Python workers."""
    site = run([core / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    assert (Path(site) / "chap_mop_bridge.pth").is_file()
    imported = run([core / "python", "-c", "import petastorm, sys; print('pyarrow.filesystem' in sys.modules)"],
                   cwd=tmp_path)
    assert imported.returncode == 0 and imported.stdout.strip() == "True", imported.stderr[-2000:]


def test_tracking_without_the_mlflow_extra_is_one_line_before_spark(core, tmp_path):
    stopped = run([core / "chap-select", "--store", tmp_path / "store", "--mlflow-tracking-uri", "http://127.0.0.1:5000"],
                  cwd=tmp_path)
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines() == [
        "error: --mlflow-tracking-uri needs MLflow, which is not installed: pip install 'chap-mop[mlflow]' "
        "(or -c requirements.txt '.[mlflow]' in a clone)"]
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def small(spark, tmp_path_factory) -> Path:
    """4 demo subjects of 2 hours: their day files and a store prepared in this process."""
    from chap_mop.dev.demo_data import write_demo_dataset
    root = tmp_path_factory.mktemp("small")
    write_demo_dataset(root / "h5", subjects=4, days=1, hours_per_day=2, seed=2)
    prepare_in_process(spark, root / "h5", root / "store", train_fraction=0.5, partitions=1)
    return root


def test_the_prep_script_writes_the_store_the_stage_writes(small, tmp_path):
    run_script("prep_petastorm_data.py", "--master", "local[1]", "--pre-processed-dir", small / "h5",
               "--store", tmp_path / "store", "--train-fraction", "0.5", "--partitions", "1")
    ours, theirs = (json.loads((root / "manifest.json").read_text()) for root in (small / "store", tmp_path / "store"))
    assert {k: v for k, v in ours.items() if k != "input"} == {k: v for k, v in theirs.items() if k != "input"}
    for split in ("train_data", "val_data"):
        assert pq.read_table(small / "store" / split).equals(pq.read_table(tmp_path / "store" / split)), split


def test_spark_submit_chooses_the_master_and_the_program_matches_the_stage(spark, small, tmp_path):
    """``spark-submit --master local[1]`` runs the installed chap-select on local[1]; the same seeded
    settings in this process give the same history."""
    program = Path(sys.executable).parent / "chap-select"
    module = run([sys.executable, "-c", "import chap_mop.cli.chap_select as m; print(m.__file__)"]).stdout.strip()
    assert program.is_file()
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    settings = ["--store", small / "store", "--epochs", "1", "--batch-size", "16", "--seed", "0",
                "--ensemble-size", "1", "--search-space", json.dumps(ONE_CONFIGURATION)]
    submitted = run([Path(sys.executable).parent / "spark-submit", "--master", "local[1]", module, *settings,
                     "--results", tmp_path / "submitted"], env=env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert " on local[1] with 1 workers;" in submitted.stdout
    summary, _ = select_in_process(spark, small / "store", tmp_path / "in_process", epochs=1, seed=0, workers=1,
                                   ensemble_size=1, search_space=ONE_CONFIGURATION)
    history = [(tmp_path / name / "history.csv").read_text().splitlines() for name in ("submitted", "in_process")]
    columns = history[0][0].split(",")
    rows = [dict(zip(columns, lines[1].split(","))) for lines in history]
    for name in ("train_loss", "val_loss", "val_balanced_accuracy"):
        assert float(rows[0][name]) == pytest.approx(float(rows[1][name]), rel=1e-3), name
    assert summary["master"] == "local[2]"  # this process's own session
