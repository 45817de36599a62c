"""Training that goes wrong is never silent: a configuration whose loss stops being finite is marked
failed and left out while the others go on, and a failure inside a worker's training ends the run
with that failure's message, not as a lost worker. Real Spark, real training, in this process."""
import csv
import json
import shutil

import pyarrow.parquet as pq
import pytest

from chap_mop.data.schema import TRAIN_DIR
from chap_mop.errors import TrainingError, WorkerLostError
from conftest import select_in_process

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")]

# Adam at a learning rate of 1e6 takes the CHAP model's loss to NaN within its first steps.
DIVERGING = {"lr": [1e6, 1e-3], "l2_reg": [1e-4], "win_size": [1], "amp_factor": [1]}


def test_a_configuration_whose_loss_is_not_finite_fails_alone(spark, store, tmp_path):
    results = tmp_path / "r"
    summary, printed = select_in_process(spark, store, results, epochs=2, seed=0, search_space=DIVERGING)
    models = {float(row["lr"]): row for row in csv.DictReader(open(results / "models.csv"))}
    failed, good = models[1e6], models[1e-3]
    assert failed["failed_at_epoch"] == "1" and failed["epochs"] == "1"  # trained no further
    assert good["failed_at_epoch"] == "" and good["epochs"] == "2"  # the other went on
    assert summary["best_run_id"] == good["run_id"]
    assert summary["failed"] == {failed["run_id"]: {"epoch": 1, "hyperparameters": {
        "lr": 1e6, "l2_reg": 1e-4, "win_size": 1, "amp_factor": 1}}}
    assert f"model 1 ({failed['run_id']}, " in printed and "failed in epoch 1: train_loss nan" in printed
    assert "ensemble: 1 of --ensemble-size 3 configurations trained all 2 epochs; no ensemble" in printed
    state = json.loads((results / "run_state.json").read_text())
    assert [entry.get("failed_at_epoch") for entry in state["configurations"]] == [1, None]
    ranked = (results / "report.html").read_text()
    assert ranked.index(good["run_id"]) < ranked.index(failed["run_id"])  # the leaderboard puts it last


def corrupt_data_pages(parquet_file) -> None:
    """Overwrite the page header of the ``data`` column of the file's first row group: its small
    columns (the driver's sequence count reads them) and its footer (the manifest check) stay whole."""
    metadata = pq.ParquetFile(parquet_file).metadata
    column = next(metadata.row_group(0).column(i) for i in range(metadata.num_columns)
                  if metadata.row_group(0).column(i).path_in_schema == "data")
    with open(parquet_file, "r+b") as handle:
        handle.seek(column.data_page_offset)
        handle.write(b"\xff" * 32)


def test_a_failure_inside_a_workers_training_is_reported_as_itself(spark, store, tmp_path):
    damaged = tmp_path / "store"
    shutil.copytree(store, damaged)
    corrupt_data_pages(sorted((damaged / TRAIN_DIR).glob("*.parquet"))[0])
    with pytest.raises(TrainingError) as raised:
        select_in_process(spark, damaged, tmp_path / "r", epochs=1,
                          search_space={**DIVERGING, "lr": [1e-3]})
    assert not isinstance(raised.value, WorkerLostError)
    message = str(raised.value)
    assert "failed in epoch 1 on worker" in message and "while training: " in message
    assert f"InputError: {damaged / TRAIN_DIR}" in message and "row group 0 cannot be read (Couldn't deserialize " \
        "thrift" in message and "the store is damaged; re-run prep_petastorm_data.py" in message
    trace = message.split("the worker's stack trace is in ")[1].split(")")[0]
    assert "Traceback" in open(trace).read()
    assert spark.range(3).count() == 3  # the session still works after the workers' teardown
