"""Both scripts against a real Spark standalone cluster on 127.0.0.1: a Master and two 1-core Workers
started with pyspark's own launcher (``chap_mop.dev.local_cluster``), whose daemons inherit none of this
test's environment, so the scripts must ship everything their executors need.

Every process a test starts (cluster daemons, executors, the scripts and their driver JVMs) is
tracked by process id and stopped in the fixtures' teardown, also when the test fails. The module
shares one cluster and one store prepared on it; the test that kills a worker comes last.
"""
import csv
import json
import time
from pathlib import Path

import psutil
import pytest

from chap_mop.dev import local_cluster
from chap_mop.dev.demo_data import write_demo_dataset
from chap_mop.model import deeppostures
from conftest import TrackedScript, local_standalone_cluster
from test_pretrained import random_state, write_state_dict

# Two configurations of amp_factor 1: amp 2 trains 8 times slower, and the cluster path does not depend on it.
GRID = '{"lr": [0.001], "l2_reg": [0.001, 0.0001], "win_size": [1], "amp_factor": [1]}'
FINE_TUNING = GRID.replace("}", ', "trainable": ["lstm_head"]}')
SCRIPT_TIMEOUT_S = 300  # a script that runs longer than this on the tiny demo data hangs
WORKER_LOSS_BOUND_S = 180  # from killing a worker to model_selection.py's exit
TRAINING_STARTED = " sub-epochs | "  # the first progress line: one sub-epoch done, the others training


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One 2-worker cluster for the module (conftest's ``cluster`` starts one per test)."""
    with local_standalone_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(scope="module")
def work(cluster, tmp_path_factory) -> Path:
    """A folder holding ``store``: 4 demo subjects x 1 day x 1.5 hours prepared by prep_petastorm_data.py
    on the cluster (relative paths, resolved by the driver in this folder)."""
    demo_h5 = tmp_path_factory.mktemp("cluster_h5") / "h5"
    write_demo_dataset(demo_h5, subjects=4, days=1, hours_per_day=1.5, seed=3)
    work = tmp_path_factory.mktemp("cluster_work")
    prep = TrackedScript("prep_petastorm_data.py", ["--master", cluster.master_url, "--pre-processed-dir", str(demo_h5),
                                                    "--store", "store", "--partitions", "2"], work, work / "prep.log")
    try:
        assert prep.wait(SCRIPT_TIMEOUT_S) == 0, prep.tail()
    finally:
        prep.stop()
    return work


def listening_addresses(processes: list[psutil.Process]) -> set[str]:
    """The IPv4 addresses the given processes listen on (TCP; Java lists them IPv4-mapped, as ::ffff:a.b.c.d)."""
    addresses = set()
    for process in processes:
        try:
            addresses |= {c.laddr.ip.removeprefix("::ffff:") for c in process.net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
    return addresses


def select(scripts, cluster, work: Path, results: str, epochs: int, extra: list[str] = ()) -> TrackedScript:
    # --data: the earlier name of --store, still accepted
    return scripts("model_selection.py", ["--master", cluster.master_url, "--data", "store", "--results", results,
                                          "--workers", "2", "--epochs", str(epochs), "--batch-size", "8",
                                          "--search-space", GRID, *extra], work, work / f"{results}.log")


def test_both_scripts_run_successive_halving_fine_tuning_on_a_standalone_cluster(cluster, scripts, work):
    """prep, then a successive-halving selection of 2 configurations x 2 epochs (eta 2) on 2 workers,
    fine-tuning a DeepPostures-format checkpoint that only the driver reads, its CNN frozen, with class
    weights: the cluster's processes listen on 127.0.0.1 only, the executors write the checkpoints into
    the shared results folder, rung 1 keeps one configuration and a worker idles in epoch 2, and each
    configuration (each started on its own worker) ends with the checkpoint's CNN and its own BiLSTM.
    (Hyperband's brackets are the same machinery: test_halving runs them on local Spark.)"""
    manifest = json.loads((work / "store" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["row_groups"] >= 2 and manifest["splits"]["validation"]["row_groups"] >= 2
    write_state_dict(work / "CUSTOM_MODEL.pth", random_state())  # amp 1, DeepPostures' layout

    selection = select(scripts, cluster, work, "sha", epochs=2,
                       extra=["--search", "sha", "--eta", "2", "--init-from", "CUSTOM_MODEL.pth",
                              "--class-weights", "[1, 2]", "--search-space", FINE_TUNING])
    selection.wait_for_log(TRAINING_STARTED, SCRIPT_TIMEOUT_S)
    # While the workers train: the daemons, executors, driver and cerebro's services listen on 127.0.0.1 only.
    selection.sample_tree()
    assert listening_addresses(cluster.processes() + list(selection.tree.values())) == {local_cluster.HOST}
    assert selection.wait(SCRIPT_TIMEOUT_S) == 0, selection.tail()
    assert not selection.leftovers(), "the driver's processes outlived model_selection.py"

    results = work / "sha"
    models = list(csv.DictReader(open(results / "models.csv")))
    assert len(models) == 2 and len({m["l2_reg"] for m in models}) == 2
    assert sorted(int(m["epochs"]) for m in models) == [1, 2]
    assert sum(m["stopped_at_rung"] == "1" for m in models) == 1
    summary = json.loads((results / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["epochs"] == 2 and summary["search"] == "sha"
    assert summary["best_run_id"] in {m["run_id"] for m in models if m["epochs"] == "2"}
    # sha: after rung 1 one configuration is left for 2 workers.
    assert "epoch 2/2: 1 live configuration on 2 workers, 1 idle" in selection.output()
    # The executors, not the driver, wrote the checkpoints: into the shared results folder.
    assert all(any((results / "runs" / m["run_id"]).glob("*.h5")) for m in models)
    assert summary["start_weights"]["from"] == str(work / "CUSTOM_MODEL.pth") and summary["class_weights"] == [1, 2]
    from test_fine_tuning import changed_roles, checkpoint_of, role_weights  # TensorFlow, in this test only
    start = role_weights(deeppostures.build_from_checkpoint(work / "CUSTOM_MODEL.pth", 6))
    for model in models:
        assert changed_roles(start, role_weights(checkpoint_of(results, model))) == {"bilstm", "head"}


def test_losing_a_worker_ends_model_selection_with_a_clear_error(cluster, scripts, work):
    """Last in the module: it leaves the cluster one worker."""
    selection = select(scripts, cluster, work, "lost", epochs=20)  # far longer than the test waits
    selection.wait_for_log(TRAINING_STARTED, SCRIPT_TIMEOUT_S)

    killed = local_cluster.kill_worker(cluster, 0)  # the Worker, its executor and its Python workers
    killed_at = time.monotonic()
    assert len(killed) >= 3
    assert selection.wait(WORKER_LOSS_BOUND_S) == 3, selection.tail()
    seconds = time.monotonic() - killed_at
    error = [line for line in selection.output().splitlines() if line.startswith("error: ")]
    assert len(error) == 1, selection.tail()
    # Which notices first depends on timing: the driver's call to the lost worker, or Spark aborting
    # the workers' barrier job; either way the line quotes Spark's "worker lost".
    assert ("a Spark worker or executor was lost" in error[0] or
            "the Spark job hosting cerebro's workers failed" in error[0]) and "worker lost" in error[0], error[0]
    assert "re-run with --resume" in error[0]
    assert "Traceback" not in selection.output()
    assert seconds < WORKER_LOSS_BOUND_S
    assert not selection.leftovers(), "the driver's processes outlived model_selection.py"

    # The run resumes on the worker that is left, from the shared results folder: no epoch had
    # completed, so both configurations start afresh with their run ids.
    run_ids = [entry["run_id"] for entry in json.loads((work / "lost" / "run_state.json").read_text())
               ["configurations"]]
    resumed = scripts("model_selection.py", ["--master", cluster.master_url, "--data", "store", "--results",
                                             "lost", "--workers", "1", "--epochs", "1", "--batch-size", "8",
                                             "--search-space", GRID, "--resume"], work, work / "resume.log")
    assert resumed.wait(SCRIPT_TIMEOUT_S) == 0, resumed.tail()
    assert "resuming 2 configurations after epoch 0 of 1" in resumed.output()
    assert sorted(m["run_id"] for m in csv.DictReader(open(work / "lost" / "models.csv"))) == sorted(run_ids)
