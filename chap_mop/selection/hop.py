"""The worker's sub-epoch: one configuration's pass over this worker's shard, on a model that stays.

cerebro's sub-epoch loaded the configuration's full HDF5 model, traced ``fit`` or ``evaluate``
again, saved the full model and cleared the Keras session, on every visit. Here a worker keeps
each configuration's compiled model (:mod:`chap_mop.selection.model_cache`) and a hop moves only weights
and optimizer state (:mod:`chap_mop.selection.hop_checkpoint`):

* a visit brings the cached model up to the hop checkpoint, when the checkpoint is not the state
  the model already holds (e.g. it comes from another worker), by assigning the arrays; a model
  that is not cached is built once from cerebro's Keras checkpoint ``checkpoint.h5``;
* a training visit writes the hop checkpoint; the one that completes the configuration's epoch
  (its ``workers``-th) also rewrites ``checkpoint.h5``, the end-of-epoch model that the run's state,
  resume, the best model and the ensemble read. Both writes are atomic (temporary file, rename).

With ``seed`` set, each sub-epoch's shuffle is seeded from (seed, epoch, shard), so a run does the
same arithmetic whichever worker runs which visit and whether models are cached or rebuilt. The
seed goes to the shuffle itself (:func:`chap_mop.data.windows.make_transformation_fn`), never to
``tf.random.set_seed``, which would drop the cached models' compiled functions on every visit.
"""
import datetime
import os
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from chap_mop.selection import hop_checkpoint
from chap_mop.data.data_store import local_path
from chap_mop.selection.model_cache import CachedModel, ModelCache, variables_nbytes, worker_cache

def keras_checkpoint_token(path: Path) -> str:
    """Identity of a Keras checkpoint file, standing for the state it holds until a hop checkpoint exists."""
    stat = path.stat()
    return f"keras:{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"


def optimizer_variables(model) -> list:
    """The optimizer's variables, built first if it never trained (its step counter, then its slots)."""
    model.optimizer.build(model.trainable_variables)  # Keras returns at once when it is built already
    return list(model.optimizer.variables)


def assign(model, state: hop_checkpoint.HopState) -> None:
    """Give a compiled model the weights and optimizer state of a hop checkpoint."""
    model.set_weights(state.weights)
    variables = optimizer_variables(model)
    if len(variables) != len(state.optimizer):
        raise ValueError(f"hop checkpoint has {len(state.optimizer)} optimizer variables, the model {len(variables)}")
    for variable, value in zip(variables, state.optimizer):
        variable.assign(value)


def save_keras_checkpoint(model, path: Path) -> None:
    """Save the full model (with optimizer state) as HDF5 at ``path``, atomically."""
    temp = path.with_name(f".{path.stem}-{hop_checkpoint.new_token()}.h5")
    model.save(temp)
    os.replace(temp, path)


def model_for_visit(cache: ModelCache, run_id: str, run_dir: Path, keras_checkpoint: Path,
                    custom_objects: dict) -> CachedModel:
    """The configuration's model as its latest checkpoint has it: cached, brought up to date, or built."""
    hop_path = hop_checkpoint.path_in(run_dir)
    token = hop_checkpoint.token_of(hop_path)
    entry = cache.get(run_id)
    if entry is not None and entry.token == (token or keras_checkpoint_token(keras_checkpoint)):
        return entry
    if token is None or entry is None:
        with tf.keras.utils.custom_object_scope(custom_objects):
            model = tf.keras.models.load_model(keras_checkpoint)
        entry = CachedModel(model, keras_checkpoint_token(keras_checkpoint), 0, variables_nbytes(model))
    if token is not None:
        state = hop_checkpoint.read(hop_path)
        assign(entry.model, state)
        entry.token, entry.visits = state.token, state.visits
        entry.nbytes = variables_nbytes(entry.model)
    return entry


def sub_epoch_seed(seed: int, epoch: int, shard: int, is_train: bool) -> int:
    return zlib.crc32(f"{seed}:{epoch}:{shard}:{int(is_train)}".encode())


def sub_epoch_trainer(estimator, metadata, keras_utils, run_id: str, workers: int, cache_mb: float,
                      seed: int | None) -> Callable:
    """cerebro's sub-epoch function (``fn(data_reader, is_train, starting_epoch, local_task_index)``)
    for one configuration, returning ``(metrics, steps)`` as cerebro's does.

    :param workers: cerebro's workers; a configuration's epoch is one training visit to each.
    :param cache_mb: each worker's limit of cached model variables, MB (0: rebuild on every visit).
    """
    from cerebro.backend.spark.backend import KerasStepCounter, _pin_gpu_fn

    label_columns, feature_columns = estimator.getLabelCols(), estimator.getFeatureCols()
    user_callbacks, custom_objects = estimator.getCallbacks(), estimator.getCustomObjects()
    metrics_names = [name.__name__ if callable(name) else name for name in estimator.getMetrics()]
    verbose = estimator.getVerbose()
    input_shapes, output_shapes = estimator.get_model_shapes()
    model = estimator.getModel()
    make_dataset = keras_utils.make_dataset_fn(feature_columns, label_columns, metadata, input_shapes, output_shapes,
                                               model.input_names, model.output_names, estimator.getBatchSize())
    transformation_fn = estimator.getTransformationFn()
    remote_store = estimator.getStore().to_remote(run_id, None)
    run_dir, keras_checkpoint = Path(local_path(remote_store.run_path)), Path(local_path(remote_store.checkpoint_path))
    pin_gpu = _pin_gpu_fn()

    def train(data_reader, is_train: bool, starting_epoch: int, local_task_index: int = 0):
        begin = time.time()
        pin_gpu(local_task_index)  # as cerebro: memory growth, and this worker's GPU only
        cache = worker_cache(cache_mb)
        entry = model_for_visit(cache, run_id, run_dir, keras_checkpoint, custom_objects)
        shuffle_seed = None if seed is None else sub_epoch_seed(seed, starting_epoch, data_reader.shard, is_train)
        dataset = make_dataset(data_reader, transformation_fn, seed=shuffle_seed)
        step_counter = KerasStepCounter()
        callbacks = [step_counter, *user_callbacks]
        initialization_s, begin = time.time() - begin, time.time()
        if is_train:
            history = entry.model.fit(dataset, initial_epoch=starting_epoch, epochs=starting_epoch + 1,
                                      callbacks=callbacks, verbose=verbose).history
            result = {"train_" + name: values for name, values in history.items()}
        else:
            values = entry.model.evaluate(dataset, callbacks=callbacks, verbose=verbose)
            result = {name: [value] for name, value in zip(["val_loss"] + ["val_" + m for m in metrics_names], values)}
        training_s, begin = time.time() - begin, time.time()
        if is_train:
            entry.visits += 1
            entry.token = hop_checkpoint.write(hop_checkpoint.path_in(run_dir), entry.model.get_weights(),
                                               [v.numpy() for v in optimizer_variables(entry.model)], entry.visits)
            if entry.visits % workers == 0:
                save_keras_checkpoint(entry.model, keras_checkpoint)
        cache.put(run_id, entry)
        if verbose >= 1:
            # One write with its newline: the workers share the Spark daemon's unbuffered stdout, and
            # print's separate write of "\n" let another worker's line join this one.
            sys.stdout.write(f"CEREBRO => Time: {datetime.datetime.now():%Y-%m-%d %H:%M:%S}, Model: {run_id}, "
                             f"Mode: {'TRAIN' if is_train else 'VALID'}, Initialization Time: {initialization_s}, "
                             f"Training Time: {training_s}, Finalization Time: {time.time() - begin}\n")
        data_reader.reset()
        return result, step_counter.get_step_count()

    return train
