"""Shared test fixtures and helpers: a real local Spark session, the path to ../shared, the stages
called in this process on that session, script runs, scripts run in the background with their whole
process tree tracked, and a real standalone Spark cluster on 127.0.0.1.

Markers (declared in pytest.ini): a test that uses a Spark fixture is marked ``spark`` here, one
that uses the standalone cluster ``cluster``; modules that train models mark themselves ``slow``.
``make test-fast`` runs the tests with none of these.
"""
import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from chap_mop.data import legacy_arrow
from chap_mop.dev import local_cluster

legacy_arrow.install()  # before any test module imports Petastorm, as the project's entry points do

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
FIXTURE_SUBJECT = SHARED / "fixtures" / "deeppostures_example"


@pytest.fixture(scope="session")
def spark():
    """One real local Spark session (2 cores) for the whole test run."""
    from chap_mop.runtime.spark_session import start_spark
    session = start_spark("local[2]", "chap-mop-tests", {"spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


PT_FIXTURES = SHARED / "fixtures" / "deeppostures_pt"  # DeepPostures-format .pth files, random weights (its README)


def shared_fixture(path: Path) -> Path:
    """``path`` under ../shared; the test is skipped without it."""
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared sits beside the project only on the team's machines and in CI, "
                    "not in a user's clone")
    return path


@pytest.fixture
def real_fixture_subject() -> Path:
    """The real DeepPostures pre-processed example (one subject folder); skipped without ../shared."""
    return shared_fixture(FIXTURE_SUBJECT)


@pytest.fixture
def pt_fixtures() -> Path:
    """DeepPostures-format checkpoints with PyTorch's own logits; skipped without ../shared."""
    return shared_fixture(PT_FIXTURES)


SPARK_FIXTURES = {"spark", "store", "scripts", "local_run"}  # a test that uses one of these needs Spark
CLUSTER_FIXTURES = {"cluster"}


def pytest_collection_modifyitems(items) -> None:
    """Mark every test by the expensive fixtures it uses, so that the fast lane can leave it out."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if names & (SPARK_FIXTURES | CLUSTER_FIXTURES):
            item.add_marker(pytest.mark.spark)


def prepare_in_process(spark, h5: Path, store: Path, **settings) -> tuple[dict, str]:
    """The data stage in this process on ``spark``, 2 partitions unless given: the manifest and what it printed."""
    from chap_mop.data.prepare import PrepSettings, prepare_store
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        manifest = prepare_store(PrepSettings(input=str(h5), output=str(store), **{"partitions": 2} | settings), spark)
    return manifest, printed.getvalue()


def select_in_process(spark, store: Path, results: Path, **settings) -> tuple[dict | None, str]:
    """The selection stage in this process on ``spark`` (2 workers, batch 16 unless given): its summary
    and what it printed."""
    from chap_mop.selection.stage import SelectionSettings, run_selection
    printed = io.StringIO()
    settings = {"workers": 2, "batch_size": 16} | settings
    with contextlib.redirect_stdout(printed):
        summary = run_selection(SelectionSettings(data=str(store), results=str(results), **settings), spark)
    return summary, printed.getvalue()


@pytest.fixture(scope="session")
def store(spark, tmp_path_factory) -> Path:
    """Petastorm store of 6 demo subjects (1 day of 2 h each), 2 partitions: enough for every rule of
    model selection (hops, halving, resume, tracking), too little to learn much."""
    from chap_mop.dev.demo_data import write_demo_dataset
    root = tmp_path_factory.mktemp("selection")
    write_demo_dataset(root / "h5", subjects=6, days=1, hours_per_day=2, seed=1)
    prepare_in_process(spark, root / "h5", root / "store")
    return root / "store"


def run_script(script: str, *args: str, check: bool = True, timeout_s: float = 1200) -> subprocess.CompletedProcess:
    """Run one of the project's top-level scripts with this interpreter, output captured.

    :param check: fail the test, showing the script's output, when it exits non-zero.
    """
    result = subprocess.run([sys.executable, str(PROJECT / script), *args], cwd=PROJECT,
                            capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


class TrackedScript:
    """A project script run as a subprocess, its output in a log file and its process tree tracked.

    The tree (the script, its Spark driver JVM) is sampled while the script runs, so that
    :meth:`stop` can end exactly those processes, even ones that outlive the script.
    """

    def __init__(self, script: str, args: list[str], cwd: Path, log: Path):
        self.log = log
        # The driver binds to 127.0.0.1 only, as the cluster does; output unbuffered for wait_for_log.
        env = dict(os.environ, SPARK_LOCAL_IP=local_cluster.HOST, PYTHONUNBUFFERED="1")
        with open(log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, str(PROJECT / script), *args], cwd=cwd, env=env,
                                            stdout=out, stderr=subprocess.STDOUT)
        self.tree = {self.process.pid: psutil.Process(self.process.pid)}

    def sample_tree(self) -> None:
        try:
            for child in self.tree[self.process.pid].children(recursive=True):
                self.tree.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout_s: float) -> None:
        """Wait until ``text`` appears in the output; fail if the script exits or ``timeout_s`` passes."""
        self.wait_for(lambda output: text in output, f"'{text}'", timeout_s)

    def wait_for(self, seen: Callable[[str], bool], what: str, timeout_s: float) -> None:
        """Wait until ``seen(output)``; fail if the script exits or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while not seen(self.output()):
            self.sample_tree()
            assert self.process.poll() is None, f"exited {self.process.returncode} before {what}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s} s:\n{self.tail()}"
            time.sleep(0.5)

    def wait(self, timeout_s: float) -> int:
        """The exit code; fails the test if the script runs longer than ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            self.sample_tree()
            assert time.monotonic() < deadline, f"still running after {timeout_s} s:\n{self.tail()}"
            time.sleep(0.5)
        return self.process.returncode

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    def leftovers(self, grace_s: float = 30) -> list[psutil.Process]:
        """Processes of the tree still running ``grace_s`` seconds after the script ended."""
        _, alive = psutil.wait_procs([p for pid, p in self.tree.items() if pid != self.process.pid], timeout=grace_s)
        return alive

    def stop(self) -> None:
        """SIGKILL whatever of the tree still runs (cerebro's SIGTERM handler itself raises an exception)."""
        self.sample_tree()
        for process in self.tree.values():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        self.process.wait()
        psutil.wait_procs(list(self.tree.values()), timeout=10)


@pytest.fixture
def scripts():
    """Starts scripts with ``scripts(name, args, cwd, log)``; stops all of them on teardown."""
    started: list[TrackedScript] = []

    def run(script: str, args: list[str], cwd: Path, log: Path) -> TrackedScript:
        started.append(TrackedScript(script, args, cwd, log))
        return started[-1]

    yield run
    for script in started:
        script.stop()


@contextlib.contextmanager
def local_standalone_cluster(folder: Path):
    """A 2-worker, 1-core-each local cluster while the block runs; then stopped and checked to leave nothing."""
    state_file = folder / "cluster.json"
    started = local_cluster.start(state_file, workers=2, cores=1, memory="3g")
    try:
        yield started
    finally:
        if state_file.is_file():
            local_cluster.stop(state_file)
        assert not started.processes(), "Spark processes of the test cluster outlived its teardown"


@pytest.fixture
def cluster(tmp_path):
    """A fresh 2-worker, 1-core-each local cluster for one test."""
    with local_standalone_cluster(tmp_path) as started:
        yield started
