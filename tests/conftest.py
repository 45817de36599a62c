"""Shared test fixtures: a real local Spark session and the path to ../shared."""
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
