"""What a person sees: progress lines and their ETA, quiet TensorFlow start-up, Spark job progress."""
import subprocess
import sys
import time

import pytest

from chap_mop.runtime import runtime_env
from chap_mop.selection.progress import Progress, SubEpoch, sub_epoch_summary
from chap_mop.runtime.spark_progress import job_progress
from chap_mop.text import describe, format_duration
from conftest import PROJECT

PARAMS = {"model_a": {"lr": 0.001, "l2_reg": 0.0001, "win_size": 7, "amp_factor": 2},
          "model_b": {"lr": 0.0001, "l2_reg": 1e-05, "win_size": 9, "amp_factor": 4}}


def sub_epoch(run_id: str, worker: int, is_train: bool, seconds: float) -> SubEpoch:
    prefix = "train_" if is_train else "val_"
    # per-batch averages: 30 sitting windows (24 right), 10 not sitting (5 right)
    counts = {"sitting_windows": 30.0, "sitting_hits": 24.0, "not_sitting_windows": 10.0, "not_sitting_hits": 5.0}
    return SubEpoch(run_id, worker, is_train, epoch=1, seconds=seconds, steps=12,
                    metrics={prefix + "loss": 0.4123, **{prefix + name: value for name, value in counts.items()}})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sub_epoch_summary_derives_accuracies_from_counts():
    assert sub_epoch_summary(sub_epoch("model_a", 0, True, 1.0)) == "train loss 0.41 acc 0.72 bal 0.65"
    assert sub_epoch_summary(sub_epoch("model_a", 0, False, 1.0)).startswith("val loss 0.41")


def test_progress_line_and_eta_follow_the_measured_pace():
    lines, clock = [], Clock()
    progress = Progress(PARAMS, num_configurations=2, num_workers=2, num_epochs=1, clock=clock, out=lines.append)
    clock.now = 10.0  # two training sub-epochs of 10 s ran side by side on the 2 workers
    progress.on_sub_epoch(sub_epoch("model_a", 0, True, 10.0))
    progress.on_sub_epoch(sub_epoch("model_b", 1, True, 10.0))
    # left: 2 training + 4 validation sub-epochs (no validation measured yet: 10 s each) on 2 busy workers
    assert lines[-1] == ("epoch 1/1 | model 2/2 (lr 0.0001, l2 1e-05, 9 min, amp 4) on worker 1 | train loss 0.41 "
                         "acc 0.72 bal 0.65 | 2/8 sub-epochs | ETA 30 s")
    clock.now = 20.0
    progress.on_sub_epoch(sub_epoch("model_a", 1, True, 10.0))
    progress.on_sub_epoch(sub_epoch("model_b", 0, True, 10.0))
    clock.now = 22.0  # validation takes 2 s
    progress.on_sub_epoch(sub_epoch("model_a", 0, False, 2.0))
    assert lines[-1].endswith("| 5/8 sub-epochs | ETA 3 s")  # 3 x 2 s on 42/22 busy workers
    for worker, run_id in ((1, "model_b"), (1, "model_a"), (0, "model_b")):
        progress.on_sub_epoch(sub_epoch(run_id, worker, False, 2.0))
    assert lines[-1].endswith("| 8/8 sub-epochs | done") and len(lines) == 8


def test_progress_counts_the_epochs_of_a_resumed_run():
    lines, clock = [], Clock()
    progress = Progress(PARAMS, 2, 2, num_epochs=3, configuration_epochs_done=4, clock=clock, out=lines.append)
    clock.now = 5.0
    progress.on_sub_epoch(sub_epoch("model_a", 0, True, 5.0))
    assert "| 17/24 sub-epochs |" in lines[-1]


def test_text_helpers():
    assert describe(PARAMS["model_b"]) == "lr 0.0001, l2 1e-05, 9 min, amp 4"
    assert [format_duration(s) for s in (12.4, 245, 3 * 3600 + 12 * 60 + 5)] == ["12 s", "4 min 05 s", "3 h 12 min"]


@pytest.mark.parametrize("argv, verbose", [(["--epochs", "2"], False), (["--verbose"], True),
                                           (["--data", "x", "--verb"], True)])
def test_verbose_is_known_before_the_scripts_parse_their_flags(argv, verbose):
    assert runtime_env.verbose_requested(argv) is verbose


NATIVE_NOISE = """
import os, sys
from chap_mop.runtime import runtime_env
runtime_env.configure(verbose={verbose})
with runtime_env.quiet_native_stderr():
    os.write(2, b"I0000 native library noise\\n")
print("after", flush=True)
with runtime_env.quiet_native_stderr():
    os.write(2, b"what went wrong\\n")
    raise SystemExit("import failed")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_native_stderr_is_held_back_unless_it_explains_a_failure(verbose):
    run = subprocess.run([sys.executable, "-c", NATIVE_NOISE.format(verbose=verbose)], cwd=PROJECT,
                         capture_output=True, text=True, timeout=60)
    assert run.stdout == "after\n" and run.returncode == 1
    assert ("native library noise" in run.stderr) is verbose
    assert "what went wrong" in run.stderr and "import failed" in run.stderr


def test_executors_get_the_same_quiet_environment():
    runtime_env.configure(verbose=False)
    env = runtime_env.executor_env()
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3" and env[runtime_env.VERBOSE_ENV] == "0"
    assert "ignore:You are saving your model as an HDF5 file:UserWarning" in env["PYTHONWARNINGS"].split(",")


def test_job_progress_reports_tasks_done(spark, capsys):
    def slow(x):
        time.sleep(0.3)
        return x

    with job_progress(spark.sparkContext, "pass 9", lambda done, _: f"{done}/8 files", every_s=0.2):
        assert spark.sparkContext.parallelize(range(8), 8).map(slow).sum() == 28
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("pass 9: ") and " files, " in line for line in lines)
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None
