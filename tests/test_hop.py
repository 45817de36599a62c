"""Model hops that move weights, not models: the epoch schedule, the hop checkpoint, the worker's
model cache, and a hopped run against the same sub-epochs replayed on one worker without the cache."""
import json
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from chap_mop import cerebro_compat
cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
from chap_mop.selection import hop, hop_checkpoint
from chap_mop.selection.epoch_schedule import EpochSchedule
from chap_mop.selection.model_cache import MB, CachedModel, ModelCache, variables_nbytes
from conftest import select_in_process

CONFIG = {"lr": 0.001, "l2_reg": 0.0001, "win_size": 7, "amp_factor": 1}


def run_schedule(schedule: EpochSchedule, durations: dict[tuple[int, bool], float]) -> list[tuple[float, int, int, bool]]:
    """Simulate workers that take ``durations[(configuration, is_train)]`` seconds per visit; return
    (start time, worker, configuration, is_train) of every visit, in the order they start."""
    now, free_at, log, running = 0.0, {w: 0.0 for w in range(schedule.workers)}, [], {}
    while not schedule.done():
        for worker in range(schedule.workers):
            if worker in running and free_at[worker] <= now:
                schedule.finish(*running.pop(worker))
            if worker not in running and (task := schedule.next_for(worker)):
                schedule.start(task[0], worker, task[1])
                running[worker] = (task[0], worker, task[1])
                free_at[worker] = now + durations[task]
                log.append((now, worker, *task))
        now = min([t for w, t in free_at.items() if w in running] or [now + 1])
    return log


def test_each_configuration_trains_on_every_shard_once_in_its_fixed_order_then_validates_on_each():
    schedule = EpochSchedule(epochs=[3, 3, 3], workers=2)
    assert [schedule.shard_order(i) for i in range(3)] == [[1, 0], [0, 1], [1, 0]]
    log = run_schedule(schedule, {(i, t): (3.0 if i == 1 else 1.0) * (1 if t else 0.2) for i in range(3) for t in (0, 1)})
    for i in range(3):
        assert [w for _, w, c, t in log if c == i and t] == schedule.shard_order(i)
        assert sorted(w for _, w, c, t in log if c == i and not t) == [0, 1]
        last_training = max(start for start, _, c, t in log if c == i and t)
        assert min(start for start, _, c, t in log if c == i and not t) > last_training


def test_validation_fills_the_gaps_before_the_epochs_training_ends():
    """A slow configuration still training while a fast one is done: the fast one validates at once."""
    durations = {(0, True): 1.0, (1, True): 5.0, (0, False): 0.5, (1, False): 0.5}
    log = run_schedule(EpochSchedule([0, 0], 2), durations)
    first_validation = min(start for start, _, _, is_train in log if not is_train)
    training_ends = max(start + durations[(c, True)] for start, _, c, is_train in log if is_train)
    assert first_validation < training_ends


def test_configurations_of_equal_cost_start_on_different_workers_so_no_worker_idles():
    """The benchmark's grid: amp 1 and amp 2 alternate (costs 1, 3.5, 1, 3.5, as their parameter
    counts). Ranked by cost, the two heavy ones start on different workers and every epoch ends when
    the per-worker load is done; started by index, both heavy ones began on one worker."""
    durations = {(i, t): (19.5 if i % 2 else 3.0) if t else (1.5 if i % 2 else 0.5) for i in range(4) for t in (True, False)}
    per_worker_load = sum(durations.values())  # each visit once per worker
    for epoch in range(3):
        balanced = EpochSchedule([epoch] * 4, 2, costs=[1, 3.5, 1, 3.5])
        assert balanced.shard_order(1)[0] != balanced.shard_order(3)[0]
        makespan = max(start + durations[(c, t)] for start, _, c, t in run_schedule(balanced, durations))
        assert makespan == pytest.approx(per_worker_load)
        by_index = EpochSchedule([epoch] * 4, 2)
        assert max(start + durations[(c, t)] for start, _, c, t in run_schedule(by_index, durations)) > 1.2 * makespan


def test_costs_that_do_not_match_the_configurations_are_refused():
    with pytest.raises(ValueError, match="3 costs for 2 configurations"):
        EpochSchedule([0, 0], 2, costs=[1, 2, 3])


def test_a_hop_checkpoint_round_trips_weights_optimizer_state_and_visits(tmp_path):
    path = hop_checkpoint.path_in(tmp_path)
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)]
    token = hop_checkpoint.write(path, weights, [np.array(7, np.int64), np.zeros(3, np.float32)], visits=5)
    state = hop_checkpoint.read(path)
    assert state.token == token == hop_checkpoint.token_of(path)
    assert state.visits == 5 and int(state.optimizer[0]) == 7
    np.testing.assert_array_equal(state.weights[0], weights[0])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert hop_checkpoint.token_of(tmp_path / "other" / hop_checkpoint.HOP_FILE) is None


WRITER = """
import sys, numpy as np
from pathlib import Path
from chap_mop.selection import hop_checkpoint
hop_checkpoint.write(Path(sys.argv[1]), [np.ones(400 * 2 ** 20 // 4, np.float32)], [], visits=2)
"""


def test_a_checkpoint_truncated_mid_write_is_never_loaded(tmp_path):
    """A worker killed while it writes leaves the previous checkpoint in place and a partial temporary file."""
    path = hop_checkpoint.path_in(tmp_path)
    before = hop_checkpoint.write(path, [np.zeros(3, np.float32)], [], visits=1)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.glob(f"{hop_checkpoint.TEMP_PREFIX}*") if p.stat().st_size > 2 ** 20]:
        assert writer.poll() is None and time.monotonic() < deadline, "the writer ended before it was killed"
        time.sleep(0.01)
    writer.kill()
    writer.wait()
    partial = next(tmp_path.glob(f"{hop_checkpoint.TEMP_PREFIX}*"))
    assert hop_checkpoint.token_of(path) == before
    assert hop_checkpoint.read(path).visits == 1
    with pytest.raises((zipfile.BadZipFile, ValueError, EOFError)):
        np.load(partial)["weight_0"]


def compiled_model(amp_factor: int):
    from chap_mop.selection.estimator import estimator_gen_fn
    estimator = estimator_gen_fn({**CONFIG, "amp_factor": amp_factor}, batch_size=4, seed=0)
    model = estimator._compile_model(estimator._get_keras_utils())
    hop.optimizer_variables(model)  # built, as after a first training visit
    return model


def test_the_least_recently_used_models_are_dropped_at_the_memory_limit():
    models = [compiled_model(1) for _ in range(3)]
    nbytes = variables_nbytes(models[0])
    assert nbytes == 3 * 4 * models[0].count_params() + 8  # weights, Adam's two moments, its step counter
    cache = ModelCache(limit_mb=2.5 * nbytes / MB)
    for i, model in enumerate(models):
        cache.put(f"run{i}", CachedModel(model, f"token{i}", 0, variables_nbytes(model)))
    assert cache.run_ids() == ["run1", "run2"] and cache.evicted == 1
    cache.get("run1")  # used: run2 is now the least recently used
    cache.put("run0", CachedModel(models[0], "token0", 0, nbytes))
    assert cache.run_ids() == ["run1", "run0"] and cache.evicted == 2
    off = ModelCache(limit_mb=0)
    off.put("run0", CachedModel(models[0], "token0", 0, nbytes))
    assert off.run_ids() == []


REPLAY = """
import functools, json, sys
from pathlib import Path
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)  # as each cerebro worker task of 1 core
tf.config.threading.set_inter_op_parallelism_threads(1)
from chap_mop import cerebro_compat
cerebro_compat.enable()
from cerebro.backend.spark import util as spark_util
from cerebro.storage import LocalStore
from cerebro.tune.base import estimator_gen_fn_wrapper
from chap_mop.selection import estimator as model_selection
from chap_mop.selection import hop
from chap_mop.selection.epoch_schedule import EpochSchedule
from chap_mop.data.shard_reader import ShardReader

store_dir, runs, config, epochs, workers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), 2
store = LocalStore(store_dir, runs_path=runs)
estimator = estimator_gen_fn_wrapper(functools.partial(model_selection.estimator_gen_fn, batch_size=16, seed=0),
                                     config, model_selection.FEATURE_COLUMNS, model_selection.LABEL_COLUMNS, store, 0)
columns = model_selection.LABEL_COLUMNS + model_selection.FEATURE_COLUMNS
_, _, metadata, _ = spark_util.get_simple_meta_from_parquet(store, schema_cols=columns)
keras_utils = estimator._get_keras_utils()
run_id = estimator.getRunId()
checkpoint = Path(store.get_localized_path(store.get_checkpoint_path(run_id)))
checkpoint.parent.mkdir(parents=True)
estimator._compile_model(keras_utils).save(checkpoint)
train = hop.sub_epoch_trainer(estimator, metadata, keras_utils, run_id, workers, cache_mb=0, seed=0)
from tensorflow.python.eager import context
tf_seed = context.global_seed()  # 0 here, from estimator_gen_fn; unset in a Spark worker
for epoch in range(epochs):
    for shard in EpochSchedule([epoch], workers).shard_order(0):
        train(ShardReader(store_dir + "/train_data", shard, workers), True, epoch)
# Seeding TensorFlow in a visit would drop every cached model's compiled functions.
assert context.global_seed() == tf_seed, "a sub-epoch set TensorFlow's global seed"
print(checkpoint)
"""


def keras_weights(path) -> list[np.ndarray]:
    from chap_mop.predict.inference import load_model
    return load_model(path).get_weights()


@pytest.mark.slow
def test_hopping_over_two_workers_equals_the_same_sub_epochs_on_one_worker_without_the_cache(spark, store, tmp_path):
    """The hopped run in this process; the replay in a process of its own, whose TensorFlow runs on one
    thread from the start, as a worker task of one core does."""
    results = tmp_path / "results"
    select_in_process(spark, store, results, epochs=2, seed=0, ensemble_size=1,
                      search_space={name: [value] for name, value in CONFIG.items()})
    state = json.loads((results / "run_state.json").read_text())
    hopped = keras_weights(results / state["configurations"][0]["checkpoint"])
    replay = subprocess.run([sys.executable, "-c", REPLAY, str(store), str(tmp_path / "replay"), json.dumps(CONFIG), "2"],
                            capture_output=True, text=True, check=True, timeout=900)
    alone = keras_weights(replay.stdout.strip().splitlines()[-1])
    assert len(hopped) == len(alone)
    for got, expected in zip(hopped, alone):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
