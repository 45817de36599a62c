"""The data path of cerebro's workers: the project's shard reader and dataset instead of Petastorm's,
for the stores this project's prep writes.

cerebro builds each worker's readers with Petastorm's ``make_reader`` (rows decoded one by one in
Python, then pickled into a local-disk cache) and feeds Keras through ``make_petastorm_dataset``:
about 3,700 windows/s per worker, far below what a GPU worker trains. Here only the two calls are
replaced; the readers are :class:`chap_mop.data.shard_reader.ShardReader` (the same shards: row groups
``i % n == w``, in order) and the dataset is the estimator's ``transformation_fn`` applied to the
reader (:func:`chap_mop.data.windows.make_transformation_fn`), batched and prefetched, tf.data's
autotuning off (:func:`fixed_pipeline_options`). The visits that use them are scheduled by
:mod:`chap_mop.cerebro_compat.hopping`. The project's reader understands one format, the windows of
:data:`chap_mop.data.schema.WINDOW_ARROW_SCHEMA`; any other store (a DataFrame that cerebro's own
``prepare_data`` wrote) keeps cerebro's readers and dataset, through the bridge of
:mod:`chap_mop.data.legacy_arrow`: the choice is made on the driver from the training split's schema
(:func:`chap_mop.data.data_store.is_window_split`), and on the executor from the reader's type.

The driver's look at the store (rows, column types, bytes per row) is the project's too:
cerebro's ``get_simple_meta_from_parquet`` reads it through pyarrow's legacy ``ParquetDataset``
(``.pieces``, ``.schema.to_arrow_schema()``), which pyarrow 15 removed.
"""
import functools
import os

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import tensorflow as tf

from chap_mop.data.data_store import is_window_split, local_path
from chap_mop.data.shard_reader import ShardReader, parquet_files

# cerebro's own functions that patch_data_path replaces, kept for the stores that are not the project's
_CEREBRO: dict[str, object] = {}


def _shard_readers(train_path: str, val_path: str, shard_count: int, index: int
                   ) -> tuple[ShardReader, ShardReader | None]:
    """*Executor side*: worker ``index``'s readers of the train and validation splits."""
    return (ShardReader(local_path(train_path), index, shard_count),
            ShardReader(local_path(val_path), index, shard_count) if val_path else None)


def shard_readers_fn(remote_store, shard_count: int, schema_fields, avg_row_size, cache_size_limit, pool_type,
                     num_readers):
    """cerebro's ``_data_readers_fn``: the project's readers of a window store (reader pool, cache and
    row size no longer apply), cerebro's Petastorm readers of any other."""
    if not is_window_split(remote_store.train_data_path):
        return _CEREBRO["data_readers_fn"](remote_store, shard_count, schema_fields, avg_row_size, cache_size_limit,
                                           pool_type, num_readers)
    return functools.partial(_shard_readers, remote_store.train_data_path, remote_store.val_data_path, shard_count)


PREFETCH_BATCHES = 2  # one batch trains while the next is read and cut


def fixed_pipeline_options() -> tf.data.Options:
    """tf.data options of a sub-epoch's dataset: autotuning off.

    The autotuning thread sleeps between optimizations for a period that doubles up to 60 s, and
    dropping the iterator at the end of ``fit`` or ``evaluate`` waited for it: measured, a 20-s
    training visit stalled 20 s more with both cores idle. A sub-epoch's pipeline is sequential
    NumPy work far faster than training, so a fixed prefetch gives it all autotuning would.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def sub_epoch_dataset(reader: ShardReader, transformation_fn, batch_size: int, prep_fn, seed: int | None = None
                      ) -> tf.data.Dataset:
    """*Executor side*: the sub-epoch's dataset: sequences of the reader, shuffled from ``seed`` (None:
    a fresh one), batched, as Keras inputs."""
    dataset = transformation_fn(reader, seed).batch(batch_size).map(prep_fn).prefetch(PREFETCH_BATCHES)
    return dataset.with_options(fixed_pipeline_options())


def _dataset_for(reader, transformation_fn, seed: int | None = None, *, ours, theirs) -> tf.data.Dataset:
    """*Executor side*: the sub-epoch's dataset of a :class:`ShardReader` (``ours``), or of cerebro's
    Petastorm reader (``theirs``, which shuffles in its ``transformation_fn``)."""
    if isinstance(reader, ShardReader):
        return ours(reader, transformation_fn, seed=seed)
    return theirs(reader, transformation_fn)


def make_dataset_fn(feature_columns, label_columns, metadata, input_shapes, output_shapes, input_names,
                    output_names, batch_size):
    """cerebro's ``TFKerasUtil.make_dataset_fn``: :func:`sub_epoch_dataset` for readers of
    :mod:`chap_mop.data.shard_reader`, cerebro's own dataset for its Petastorm readers."""
    from cerebro.keras.spark.util import _prep_data_fn
    prep_fn = _prep_data_fn(False, input_names, label_columns, input_shapes, output_shapes, output_names)
    theirs = _CEREBRO["make_dataset_fn"](feature_columns, label_columns, metadata, input_shapes, output_shapes,
                                         input_names, output_names, batch_size)
    return functools.partial(_dataset_for, ours=functools.partial(sub_epoch_dataset, batch_size=batch_size,
                                                                  prep_fn=prep_fn), theirs=theirs)


def _rows_and_bytes(split_dir: str) -> tuple[int, int]:
    """(rows, uncompressed bytes) of a split's row groups, from the files' footers."""
    rows = total_bytes = 0
    for path in parquet_files(pafs.LocalFileSystem(), split_dir):
        metadata = pq.read_metadata(path)
        rows += metadata.num_rows
        total_bytes += sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    return rows, total_bytes


def store_metadata(store, schema_cols: list[str], dataset_idx=None) -> tuple[int, int, dict, float]:
    """cerebro's ``get_simple_meta_from_parquet`` on today's pyarrow: (train rows, validation rows,
    each column's Spark type and format, mean uncompressed bytes per train row)."""
    from cerebro.backend import constants
    from cerebro.backend.spark.util import pyarrow_to_spark_data_type
    train_dir = local_path(store.get_train_data_path(dataset_idx))
    val_dir = local_path(store.get_val_data_path(dataset_idx))
    if not os.path.isdir(train_dir):
        raise ValueError(f"{train_dir} path does not exist in the store")
    train_rows, train_bytes = _rows_and_bytes(train_dir)
    if train_rows == 0:
        raise ValueError(f"No rows found in training dataset: {train_dir}")
    val_rows = _rows_and_bytes(val_dir)[0] if os.path.isdir(val_dir) else 0
    schema = pq.read_schema(parquet_files(pafs.LocalFileSystem(), train_dir)[0])
    metadata = {column: {"spark_data_type": pyarrow_to_spark_data_type(schema.field(column).type),
                         "is_sparse_vector_only": False, "shape": None,
                         "intermediate_format": constants.NOCHANGE, "max_size": None}
                for column in schema_cols}
    return train_rows, val_rows, metadata, train_bytes / train_rows


def patch_data_path() -> None:
    """Give cerebro's workers the project's shard readers and their tf.data pipeline on the project's
    stores, and its driver the project's look at any store (idempotent)."""
    from cerebro.backend.spark import backend
    from cerebro.backend.spark import util as spark_util
    from cerebro.keras.spark.util import TFKerasUtil
    if backend._data_readers_fn is shard_readers_fn:
        return
    _CEREBRO.update(data_readers_fn=backend._data_readers_fn, make_dataset_fn=TFKerasUtil.make_dataset_fn)
    backend._data_readers_fn = shard_readers_fn
    TFKerasUtil.make_dataset_fn = staticmethod(make_dataset_fn)
    spark_util.get_simple_meta_from_parquet = store_metadata
