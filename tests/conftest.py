"""Shared test fixtures and helpers: a real local Spark session, the path to ../shared, script runs."""
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
FIXTURE_SUBJECT = SHARED / "fixtures" / "deeppostures_example"


@pytest.fixture(scope="session")
def spark():
    """One real local Spark session (2 cores) for the whole test run."""
    from chap_mop.spark_session import start_spark
    session = start_spark("local[2]", "chap-mop-tests", {"spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


@pytest.fixture
def real_fixture_subject() -> Path:
    """The real DeepPostures pre-processed example (one subject folder); skipped without ../shared."""
    if not FIXTURE_SUBJECT.is_dir():
        pytest.skip(f"{FIXTURE_SUBJECT} is absent: ../shared sits beside the project only on "
                    "the team's machines and in CI, not in a user's clone")
    return FIXTURE_SUBJECT


def run_script(script: str, *args: str, check: bool = True, timeout_s: float = 1200) -> subprocess.CompletedProcess:
    """Run one of the project's top-level scripts with this interpreter, output captured.

    :param check: fail the test, showing the script's output, when it exits non-zero.
    """
    result = subprocess.run([sys.executable, str(PROJECT / script), *args], cwd=PROJECT,
                            capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result
