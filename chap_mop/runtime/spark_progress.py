"""Progress of a long Spark job on the console: tasks done out of total, every few seconds.

Spark's own console progress bar is off (:mod:`chap_mop.runtime.spark_session`): it draws over other
lines and says "stage 3" where a person wants "files written". A thread polls Spark's status
tracker for the job group of the block and prints, e.g.::

    pass 2: 12/40 files written, about 91,000 windows/s, 35 s
"""
import contextlib
import threading
import time
import uuid
from typing import Callable

PROGRESS_EVERY_S = 10.0


def _tasks_done(spark_context, group: str) -> int:
    tracker = spark_context.statusTracker()
    done = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else []:
            stage = tracker.getStageInfo(stage_id)
            done += stage.numCompletedTasks if stage else 0
    return done


@contextlib.contextmanager
def job_progress(spark_context, label: str, describe: Callable[[int, float], str],
                 every_s: float = PROGRESS_EVERY_S):
    """Print ``label: describe(tasks done, seconds)`` every ``every_s`` s while the block's Spark jobs run."""
    group = f"chap-mop-{uuid.uuid4().hex[:8]}"
    spark_context.setJobGroup(group, label)
    started = time.monotonic()
    finished = threading.Event()

    def report():
        while not finished.wait(every_s):
            elapsed = time.monotonic() - started
            print(f"{label}: {describe(_tasks_done(spark_context, group), elapsed)}, {elapsed:.0f} s", flush=True)

    thread = threading.Thread(target=report, name=f"progress {label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        thread.join()
        for key in ("spark.jobGroup.id", "spark.job.description"):
            spark_context.setLocalProperty(key, None)
