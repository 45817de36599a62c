"""What makes prep's Parquet files a Petastorm dataset: the Unischema of a window and the metadata file.

Petastorm's readers open a dataset through its ``_common_metadata``: the Arrow schema, the
pickled Unischema (which tells them how to decode each column) and the row groups of each file.
Driver side only: the executors that write the Parquet files need none of Petastorm.
"""
import functools
import json
import pickle

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql.types import IntegerType, LongType, StringType

from chap_mop.data import legacy_arrow
from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW, WINDOW_ARROW_SCHEMA

# Petastorm's keys in a dataset's ``_common_metadata``: the pickled Unischema, and the row groups of
# each file, which Petastorm's readers use instead of reading every footer.
UNISCHEMA_KEY = b"dataset-toolkit.unischema.v1"
ROW_GROUPS_PER_FILE_KEY = b"dataset-toolkit.num_row_groups_per_file.v1"



@functools.cache
def window_schema():
    """Petastorm's Unischema of one window (imports Petastorm, through the pyarrow bridge)."""
    legacy_arrow.install()  # Petastorm 0.13.1 imports pyarrow modules that pyarrow 16 removed
    from petastorm.codecs import NdarrayCodec, ScalarCodec
    from petastorm.unischema import Unischema, UnischemaField

    return Unischema("WindowSchema", [
        UnischemaField("id", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("time", np.int64, (), ScalarCodec(LongType()), False),
        UnischemaField("data", np.float32, (SAMPLES_PER_WINDOW, AXES), NdarrayCodec(), False),
        UnischemaField("non_wear", np.int32, (), ScalarCodec(IntegerType()), False),
        UnischemaField("sleeping", np.int32, (), ScalarCodec(IntegerType()), False),
        UnischemaField("label", np.int32, (), ScalarCodec(IntegerType()), False),
    ])


def write_petastorm_metadata(fs: pafs.FileSystem, dataset: str, row_groups_per_file: dict[str, int]) -> None:
    """Write the dataset's ``_common_metadata``: the Arrow schema, the pickled :func:`window_schema`
    and the row groups of each file (by file name)."""
    schema = WINDOW_ARROW_SCHEMA.with_metadata({
        UNISCHEMA_KEY: pickle.dumps(window_schema()),
        ROW_GROUPS_PER_FILE_KEY: json.dumps(row_groups_per_file).encode()})
    with fs.open_output_stream(f"{dataset}/_common_metadata") as out:
        pq.write_metadata(schema, out)
