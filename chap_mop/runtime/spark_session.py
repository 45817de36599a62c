"""A SparkSession whose executors can run this project's code, on local Spark or a cluster.

Executors get what they cannot be trusted to have: the environment of
:mod:`chap_mop.runtime.runtime_env` (``spark.executorEnv.*``), this package (zipped and shipped
with ``addPyFile``) and the same Python interpreter as the driver (``spark.pyspark.python``;
``PYSPARK_PYTHON`` overrides it, for workers whose interpreter lives elsewhere).

On a ``spark://`` or YARN master nothing else is needed from the workers but that interpreter
with this package installed: executors inherit nothing from the driver's environment.

The master is the one given; without one, spark-submit's ``--master`` or ``spark.master`` of
``spark-defaults.conf``, and ``local[*]`` only when neither sets one (spark-submit's own default,
which also applies when plain ``python`` starts Spark).
Where Spark listens follows ``SPARK_LOCAL_IP`` (driver, executors and, through
:func:`chap_mop.cerebro_compat.stack.patch_service_bind_address`, cerebro's services).
"""
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from chap_mop.runtime import runtime_env

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_zip(dest_dir: str) -> str:
    """Zip this package (sources only) into ``dest_dir`` and return the archive path."""
    staging = Path(dest_dir) / "src"
    shutil.copytree(PACKAGE_DIR, staging / PACKAGE_DIR.name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return shutil.make_archive(str(Path(dest_dir) / PACKAGE_DIR.name), "zip", staging)


def start_spark(master: str | None, app_name: str, conf: dict[str, str] | None = None):
    """Start (or join) a SparkSession on ``master`` that ships this package to its executors.

    :param master: Spark master URL: ``local[*]``, ``local[2]``, ``spark://host:7077``, ...; None:
        spark-submit's or ``spark-defaults.conf``'s, else ``local[*]``.
    :param app_name: Name shown in the Spark UI.
    :param conf: Extra Spark settings, applied last.
    """
    runtime_env.apply()
    # Read by spark-submit when it starts the driver's JVM, beside any options of the user's.
    submit_opts = os.environ.get("SPARK_SUBMIT_OPTS", "")
    if runtime_env.spark_submit_options() not in submit_opts:
        os.environ["SPARK_SUBMIT_OPTS"] = f"{submit_opts} {runtime_env.spark_submit_options()}".strip()
    python = os.environ.get("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    builder = (builder.appName(app_name)
               .config("spark.pyspark.python", python)
               .config("spark.pyspark.driver.python", sys.executable)
               .config("spark.ui.showConsoleProgress", "false")
               # cerebro's workers are one barrier job, which Spark refuses under dynamic allocation
               # (on by default on many YARN clusters); executors must stay for the whole run anyway.
               .config("spark.dynamicAllocation.enabled", "false"))
    for name, value in runtime_env.executor_env().items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    for name, value in (conf or {}).items():
        builder = builder.config(name, value)
    spark = builder.getOrCreate()
    try:
        spark.sparkContext.setLogLevel("WARN")
        spark.sparkContext.addPyFile(package_zip(tempfile.mkdtemp(prefix="chap_mop_pyfiles_")))
    except BaseException:
        spark.stop()
        raise
    return spark


@contextlib.contextmanager
def spark_for(spark, master: str | None, app_name: str, conf: dict[str, str] | None = None) -> Iterator:
    """``spark`` itself when given, else this process's active session, both left running; else a new
    session that is stopped on every way out.

    :param spark: a running SparkSession of the caller's, or None.
    """
    if spark is None:
        from pyspark.sql import SparkSession
        spark = SparkSession.getActiveSession()  # a notebook's or shell's own session: used, never stopped
        if spark is not None and master and spark.sparkContext.master != master:
            print(f"warning: running on this process's Spark session ({spark.sparkContext.master}), not {master}")
    if spark is not None:
        yield spark
        return
    session = start_spark(master, app_name, conf)
    try:
        yield session
    finally:
        session.stop()
