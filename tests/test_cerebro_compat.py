"""One test per cerebro-dl patch: each exercises the cerebro code path that breaks without it."""
import importlib.metadata
import os

import pytest

from chap_mop import cerebro_compat
from chap_mop.errors import WorkerLostError

cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches

from chap_mop.cerebro_compat import faults  # noqa: E402
from chap_mop.cerebro_compat.selection import TENSORBOARD_SUBDIR  # noqa: E402
from chap_mop.selection.epoch_schedule import DEFAULT_POLLING_PERIOD_S  # noqa: E402

import numpy as np  # noqa: E402  (after the compat module, as the scripts do)
import tensorflow as tf  # noqa: E402


def tiny_estimator():
    from cerebro.keras import SparkEstimator
    inputs = tf.keras.Input((3,), name="x")
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax")(inputs))
    return SparkEstimator(model=model, optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3),
                          loss="sparse_categorical_crossentropy", batch_size=4)


def test_executor_environment_selects_keras_2():
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    assert "tf_keras" in tf.keras.__file__  # its name depends on which import reached it first


def test_refuses_other_cerebro_versions(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.2.0")
    with pytest.raises(RuntimeError, match=r"cerebro-dl 1\.2\.0 is installed.*patches cerebro-dl 1\.1\.1"):
        cerebro_compat.check_cerebro_version()


def test_boolean_columns_map_to_numpy_bool():
    from cerebro.backend.spark.util import numpy_type_to_str, spark_to_petastorm_type
    from pyspark.sql.types import BooleanType
    assert spark_to_petastorm_type(BooleanType) is np.bool  # NumPy 2 has np.bool again (1.24-1.26 did not)
    assert numpy_type_to_str(spark_to_petastorm_type(BooleanType)) == "Boolean"


def test_optimizer_get_weights_lets_cerebro_compile_and_resume():
    from cerebro.keras.spark.util import TFKerasUtil
    estimator = tiny_estimator()
    model = estimator._compile_model(TFKerasUtil)  # calls optimizer.get_weights()
    model.fit(np.zeros((8, 3), np.float32), np.zeros(8, np.int32), batch_size=4, verbose=0)
    weights = model.optimizer.get_weights()
    assert len(weights) == len(model.optimizer.variables) > 1
    assert float(weights[0]) == 2.0  # iterations: two steps of four
    assert estimator._compile_model(TFKerasUtil) is model  # a built optimizer's state is restored


@pytest.mark.parametrize("metric, larger", [("balanced_accuracy", True), ("accuracy", True), ("acc", True),
                                            ("r2", True), ("loss", False)])
def test_metric_direction(metric, larger):
    from cerebro.tune import base, grid, tpe
    for module in (base, grid, tpe):
        assert module.is_larger_better(metric) is larger
    assert base.is_valid_evaluation_metric(metric)


def test_polling_period_is_a_fast_setting(spark):
    from cerebro.backend import SparkBackend
    assert SparkBackend(spark.sparkContext, num_workers=1, verbose=0).settings.polling_period == \
        DEFAULT_POLLING_PERIOD_S < 2
    assert SparkBackend(spark.sparkContext, num_workers=1, verbose=0, polling_period=0.5
                        ).settings.polling_period == 0.5


def test_tensorboard_logs_are_kept_in_the_store(tmp_path):
    from cerebro.storage import LocalStore
    from cerebro.tune import base
    store = LocalStore(str(tmp_path / "store"), runs_path=str(tmp_path / "runs"))
    estimator = tiny_estimator()
    run_id = estimator.getRunId()
    base.log_hp_to_tensorboard([estimator], [{"lr": 0.001}], store, 0)
    estimator.setEpochs(1)
    base.log_epoch_metrics_to_tensorboard([estimator], {run_id: {"val_loss": [0.5]}}, store, 0)
    logs = sorted((tmp_path / "runs" / run_id / TENSORBOARD_SUBDIR).glob("events.out.tfevents.*"))
    assert len(logs) == 2
    tags = {value.tag for log in logs for event in tf.compat.v1.train.summary_iterator(str(log))
            for value in event.summary.value}
    assert "val_loss" in tags and any(tag.startswith("_hparams_") for tag in tags)


def test_epoch_listeners_see_every_run(tmp_path):
    from cerebro.storage import LocalStore
    from cerebro.tune import GridSearch, hp_choice
    store = LocalStore(str(tmp_path / "store"), runs_path=str(tmp_path / "runs"))
    search = GridSearch(None, store, lambda params: tiny_estimator(), {"a": hp_choice([1])}, 1)
    estimator = search._estimator_gen_fn_wrapper({"a": 1})
    estimator.setEpochs(1)
    seen = []
    search.epoch_listeners = [lambda estimators, results: seen.append(dict(results))]
    search._log_epoch_metrics_to_tensorboard([estimator], {estimator.getRunId(): {"val_loss": [0.1]}})
    assert seen == [{estimator.getRunId(): {"val_loss": [0.1]}}]


def test_run_ids_map_to_hyperparameters(tmp_path):
    from cerebro.storage import LocalStore
    from cerebro.tune import GridSearch, hp_choice
    store = LocalStore(str(tmp_path / "store"))
    search = GridSearch(None, store, lambda params: tiny_estimator(), {"a": hp_choice([1, 2])}, 1)
    estimators = [search._estimator_gen_fn_wrapper(params) for params in search.estimator_param_maps]
    assert {e.getRunId(): search.run_hyperparameters[e.getRunId()]["a"] for e in estimators} == \
        {estimators[0].getRunId(): 1, estimators[1].getRunId(): 2}


def test_patches_are_idempotent():
    from cerebro.backend.spark.backend import SparkBackend
    init = SparkBackend.__init__
    cerebro_compat.apply_patches()
    assert SparkBackend.__init__ is init


def test_random_search_dimensions_are_independent(tmp_path):
    from cerebro.storage import LocalStore
    from cerebro.tune import RandomSearch, hp_choice
    space = {"a": hp_choice([1, 2, 3, 4]), "b": hp_choice([1, 2, 3, 4])}
    search = RandomSearch(None, LocalStore(str(tmp_path)), lambda params: tiny_estimator(), space, 20, 1)
    pairs = [(params["a"], params["b"]) for params in search.estimator_param_maps]
    assert sum(a != b for a, b in pairs) > 5
    again = RandomSearch(None, LocalStore(str(tmp_path)), lambda params: tiny_estimator(),
                         {"a": hp_choice([1, 2, 3, 4]), "b": hp_choice([1, 2, 3, 4])}, 20, 1)
    assert [(p["a"], p["b"]) for p in again.estimator_param_maps] == pairs


def test_tpe_minimises_the_negation_of_accuracy_metrics(spark, tmp_path):
    from cerebro.backend import SparkBackend
    from cerebro.storage import LocalStore
    from cerebro.tune import TPESearch, hp_choice
    backend = SparkBackend(spark.sparkContext, num_workers=1, verbose=0)
    search = TPESearch(backend, LocalStore(str(tmp_path)), lambda params: tiny_estimator(),
                       {"a": hp_choice([1, 2])}, 2, 1, evaluation_metric="balanced_accuracy")
    assert search.evaluation_metric == "negated_balanced_accuracy"
    estimator = search._estimator_gen_fn_wrapper({"a": 1})
    estimator.setEpochs(1)
    results = {estimator.getRunId(): {"val_balanced_accuracy": [0.75]}}
    search._log_epoch_metrics_to_tensorboard([estimator], results)
    assert results[estimator.getRunId()]["val_negated_balanced_accuracy"] == [-0.75]


def test_teardown_ends_the_workers_spark_job(spark):
    from cerebro.backend import SparkBackend
    backend = SparkBackend(spark.sparkContext, num_workers=2, verbose=0)
    backend.initialize_workers()
    job = faults._WORKER_JOBS[backend.spark_job_group]
    assert job.thread.is_alive()
    backend.teardown_workers()
    assert not job.thread.is_alive() and job.failure is None  # ended on its own, not cancelled
    backend.teardown_workers()  # again, as cerebro's fit does after a failed sub-epoch: nothing to call


def listening_child(port: int):
    """The process of this test run (a PySpark worker, in local mode) that listens on ``port``."""
    import psutil
    for process in psutil.Process().children(recursive=True):
        if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp")):
            return process
    raise AssertionError(f"no child process listens on port {port}")


def test_lost_worker_ends_the_run_with_a_clear_error(spark):
    import time
    from cerebro.backend import SparkBackend
    backend = SparkBackend(spark.sparkContext, num_workers=2, verbose=0)
    backend.initialize_workers()
    client = backend.task_clients[1]
    job = faults._WORKER_JOBS[backend.spark_job_group]
    assert client.sub_epoch_completed().flag is False  # alive and idle
    listening_child(next(iter(client.addresses().values()))[0][1]).kill()  # the task of worker 1 dies
    started = time.monotonic()
    with pytest.raises(WorkerLostError,
                       match=r"worker or executor was lost: cerebro's task service #1 stopped answering "
                             r"\(\[Errno 111\] Connection refused\); Spark: Job aborted"):
        client.sub_epoch_completed()
    backend.teardown_workers()  # the finally of cerebro's fit: must neither hang nor raise
    assert time.monotonic() - started < 60
    assert not job.thread.is_alive() and backend.spark_job_group not in faults._WORKER_JOBS
    with pytest.raises(WorkerLostError, match="the Spark job hosting cerebro's workers failed"):
        backend.task_clients[0].sub_epoch_completed()  # noticed from the job, without any call failing
    assert spark.sparkContext.parallelize(range(4), 2).sum() == 6  # Spark itself carries on


def test_services_bind_to_spark_local_ip(monkeypatch):
    from cerebro.backend import secret
    from cerebro.backend.spark.service_driver import SparkDriverService
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    service = SparkDriverService(1, secret.make_secret_key(), None)
    try:
        assert service._server.socket.getsockname()[0] == "127.0.0.1"  # cerebro's own: "0.0.0.0"
    finally:
        service.shutdown()


def test_the_project_reader_serves_only_the_projects_stores(store, tmp_path):
    """A store that prep wrote gets the project's shard readers; any other Parquet dataset, or a remote
    one, keeps cerebro's Petastorm readers; on the executor, the dataset follows the reader's type."""
    import functools
    import types

    import pyarrow as pa
    import pyarrow.parquet as pq
    from cerebro.backend.spark import backend
    from chap_mop.cerebro_compat import data_path
    from chap_mop.data.data_store import is_window_split
    (tmp_path / "other").mkdir()
    pq.write_table(pa.table({"features": [[1.0, 2.0]], "label": [1.0]}), tmp_path / "other" / "part-0.parquet")
    assert is_window_split(str(store / "train_data")) and is_window_split((store / "train_data").as_uri())
    assert not is_window_split(str(tmp_path / "other")) and not is_window_split("hdfs://namenode/store/train_data")
    assert not is_window_split(str(tmp_path / "missing"))
    assert backend._data_readers_fn is data_path.shard_readers_fn

    def readers_fn(train):
        remote = types.SimpleNamespace(train_data_path=train, val_data_path="")
        return backend._data_readers_fn(remote, 2, None, 1000.0, 0, "thread", 1)

    assert readers_fn(str(store / "train_data")).func is data_path._shard_readers
    assert readers_fn(str(tmp_path / "other")).__qualname__ == "_data_readers_fn.<locals>._data_readers"
    # the executor's side, as cerebro's worker (reader, transformation) and the project's hop (and a seed) call it
    from chap_mop.data.shard_reader import ShardReader
    from chap_mop.data.windows import make_transformation_fn, sequence_length
    calls = []
    dataset_for = functools.partial(
        data_path._dataset_for, theirs=lambda *args: calls.append(args),
        ours=functools.partial(data_path.sub_epoch_dataset, batch_size=4, prep_fn=lambda batch: batch["label"]))
    dataset_for("a Petastorm reader", None)
    assert calls == [("a Petastorm reader", None)]
    reader = ShardReader(str(store / "train_data"), 0, 2)
    transformation = make_transformation_fn(sequence_length(1), shuffle_buffer=16)
    seeded = [np.concatenate(list(dataset_for(reader, transformation, seed=3).as_numpy_iterator())) for _ in range(2)]
    assert len(seeded[0]) > 0 and np.array_equal(*seeded)
