"""The exceptions a person can act on, and the exit codes the programs give for them.

An :class:`InputError`'s message names the file or value at fault and says what is expected; the
programs print it as a single ``error: ...`` line, without a stack trace.

Exit codes of ``chap-prep``, ``chap-select`` and ``chap-predict`` (and the three scripts):

====  ==========================================================================
0     done
1     training failed (:class:`TrainingError`: one line naming the configuration and the
      worker's error), or any other failure (a bug, a full disk, ...): Python's stack trace
      says where
2     usage (an unknown flag or bad flag value) or bad input (:class:`InputError`)
3     a Spark worker was lost during model selection (:class:`WorkerLostError`):
      check the cluster, then ``--resume``
====  ==========================================================================
"""

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_WORKER_LOST = 0, 1, 2, 3


class InputError(ValueError):
    """Bad input (a path, a file, a setting); the message says what is wrong and what is expected."""


class WorkerLostError(RuntimeError):
    """cerebro's workers are gone: a worker's task, executor or host was lost mid-run, or the Spark
    job that hosts the workers failed. The message says which and quotes Spark's reason."""


class TrainingError(RuntimeError):
    """Model selection cannot go on: a configuration's training failed inside a worker (the message
    quotes the worker's error and names the configuration), or every configuration failed with a
    non-finite loss. The workers were not lost: fix the cause, then ``--resume``."""
