"""The Petastorm schema of one 10-second window, and the layout of a prepared data store.

``prep_petastorm_data.py`` writes, and ``model_selection.py`` reads::

    <store>/train_data/   Petastorm dataset, subjects chosen for training
    <store>/val_data/     Petastorm dataset, the remaining subjects
    <store>/manifest.json which subject went where, row counts, seed, fraction, input

``train_data`` and ``val_data`` are cerebro's own default folder names, so a
``cerebro.storage.LocalStore(<store>)`` finds them without extra arguments.
"""
import io

import numpy as np
import pyarrow as pa
from petastorm.codecs import NdarrayCodec, ScalarCodec
from petastorm.unischema import Unischema, UnischemaField
from pyspark.sql.types import IntegerType, LongType, StringType

TRAIN_DIR = "train_data"
VAL_DIR = "val_data"
MANIFEST_NAME = "manifest.json"

SAMPLES_PER_WINDOW = 100  # 10 s at 10 Hz
AXES = 3  # X, Y, Z acceleration, g
WINDOW_SECONDS = 10
WINDOWS_PER_MINUTE = 60 // WINDOW_SECONDS

WindowSchema = Unischema("WindowSchema", [
    UnischemaField("id", np.str_, (), ScalarCodec(StringType()), False),
    UnischemaField("time", np.int64, (), ScalarCodec(LongType()), False),
    UnischemaField("data", np.float32, (SAMPLES_PER_WINDOW, AXES), NdarrayCodec(), False),
    UnischemaField("non_wear", np.int32, (), ScalarCodec(IntegerType()), False),
    UnischemaField("sleeping", np.int32, (), ScalarCodec(IntegerType()), False),
    UnischemaField("label", np.int32, (), ScalarCodec(IntegerType()), False),
])


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header that ``np.save`` writes for one array of ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                 "fortran_order": False, "shape": shape})
    return buffer.getvalue()


_DATA_HEADER = np.frombuffer(_npy_header((SAMPLES_PER_WINDOW, AXES), np.float32), dtype=np.uint8)


def encode_windows(data: np.ndarray) -> pa.BinaryArray:
    """Encode windows the way Petastorm's ``NdarrayCodec`` does, all at once, as one Arrow column.

    :param data: (N, 100, 3) acceleration in g, any float dtype; cast to float32.
    :return: N ``.npy`` byte strings, each decoding with ``np.load`` to a (100, 3) float32
        array, byte for byte what ``NdarrayCodec.encode`` gives for the same window.
    """
    rows = np.ascontiguousarray(data, dtype="<f4").reshape(len(data), SAMPLES_PER_WINDOW * AXES).view(np.uint8)
    header = np.broadcast_to(_DATA_HEADER, (len(data), _DATA_HEADER.size))
    encoded = np.concatenate([header, rows], axis=1)
    offsets = np.arange(len(data) + 1, dtype=np.int32) * encoded.shape[1]
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(encoded.ravel())])
