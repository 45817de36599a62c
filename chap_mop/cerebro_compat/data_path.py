"""The data path of cerebro's workers: the project's shard reader and dataset instead of Petastorm's.

cerebro builds each worker's readers with Petastorm's ``make_reader`` (rows decoded one by one in
Python, then pickled into a local-disk cache) and feeds Keras through ``make_petastorm_dataset``:
about 3,700 windows/s per worker, far below what a GPU worker trains. Here only the two calls are
replaced; the readers are :class:`chap_mop.shard_reader.ShardReader` (the same shards: row groups
``i % n == w``, in order) and the dataset is the estimator's ``transformation_fn`` applied to the
reader (:func:`chap_mop.windows.make_transformation_fn`), batched and prefetched. Model hopping
itself stays as cerebro schedules it.
"""
import functools

import tensorflow as tf

from chap_mop.data_store import local_path
from chap_mop.shard_reader import ShardReader

def _shard_readers(train_path: str, val_path: str, shard_count: int, index: int
                   ) -> tuple[ShardReader, ShardReader | None]:
    """*Executor side*: worker ``index``'s readers of the train and validation splits."""
    return (ShardReader(local_path(train_path), index, shard_count),
            ShardReader(local_path(val_path), index, shard_count) if val_path else None)


def shard_readers_fn(remote_store, shard_count: int, schema_fields, avg_row_size, cache_size_limit, pool_type,
                     num_readers):
    """cerebro's ``_data_readers_fn`` signature; reader pool, cache and row size no longer apply."""
    return functools.partial(_shard_readers, remote_store.train_data_path, remote_store.val_data_path, shard_count)


def _make_dataset(reader: ShardReader, transformation_fn, batch_size: int, prep_fn) -> tf.data.Dataset:
    """*Executor side*: the sub-epoch's dataset: sequences of the reader, batched, as Keras inputs."""
    return transformation_fn(reader).batch(batch_size).map(prep_fn).prefetch(tf.data.AUTOTUNE)


def make_dataset_fn(feature_columns, label_columns, metadata, input_shapes, output_shapes, input_names,
                    output_names, batch_size):
    """cerebro's ``TFKerasUtil.make_dataset_fn`` signature, for readers of :mod:`chap_mop.shard_reader`."""
    from cerebro.keras.spark.util import _prep_data_fn
    prep_fn = _prep_data_fn(False, input_names, label_columns, input_shapes, output_shapes, output_names)
    return functools.partial(_make_dataset, batch_size=batch_size, prep_fn=prep_fn)


def patch_data_path() -> None:
    """Give cerebro's workers the project's shard readers and their tf.data pipeline."""
    from cerebro.backend.spark import backend
    from cerebro.keras.spark.util import TFKerasUtil
    backend._data_readers_fn = shard_readers_fn
    TFKerasUtil.make_dataset_fn = staticmethod(make_dataset_fn)
