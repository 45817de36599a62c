"""The columns of one 10-second window, and the layout of a prepared data store.

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

TRAIN_DIR = "train_data"
VAL_DIR = "val_data"
TEST_DIR = "test_data"  # only when prep_petastorm_data.py ran with --test-fraction
MANIFEST_NAME = "manifest.json"

SAMPLES_PER_WINDOW = 100  # 10 s at 10 Hz
AXES = 3  # X, Y, Z acceleration, g
WINDOW_SECONDS = 10
WINDOWS_PER_MINUTE = 60 // WINDOW_SECONDS

# The Parquet columns of one window, as prep writes them (``data``: Petastorm NdarrayCodec's .npy bytes);
# chap_mop.data.petastorm_metadata describes them to Petastorm.
WINDOW_ARROW_SCHEMA = pa.schema([
    pa.field("id", pa.string(), False), pa.field("time", pa.int64(), False), pa.field("data", pa.binary(), False),
    pa.field("non_wear", pa.int32(), False), pa.field("sleeping", pa.int32(), False),
    pa.field("label", pa.int32(), False),
])


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header that ``np.save`` writes for one array of ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                 "fortran_order": False, "shape": shape})
    return buffer.getvalue()


DATA_HEADER = np.frombuffer(_npy_header((SAMPLES_PER_WINDOW, AXES), np.float32), dtype=np.uint8)
# Uncompressed bytes of one row but its subject id: the .npy header and 1,200 bytes of data, a
# 4-byte offset, time and the three flags.
ROW_BYTES = DATA_HEADER.size + SAMPLES_PER_WINDOW * AXES * 4 + 4 + 8 + 3 * 4


def encode_windows(data: np.ndarray) -> pa.BinaryArray:
    """Encode windows the way Petastorm's ``NdarrayCodec`` does, all at once, as one Arrow column.

    :param data: (N, 100, 3) acceleration in g, any float dtype; cast to float32.
    :return: N ``.npy`` byte strings, each decoding with ``np.load`` to a (100, 3) float32
        array, byte for byte what ``NdarrayCodec.encode`` gives for the same window.
    """
    rows = np.ascontiguousarray(data, dtype="<f4").reshape(len(data), SAMPLES_PER_WINDOW * AXES).view(np.uint8)
    header = np.broadcast_to(DATA_HEADER, (len(data), DATA_HEADER.size))
    encoded = np.concatenate([header, rows], axis=1)
    offsets = np.arange(len(data) + 1, dtype=np.int32) * encoded.shape[1]
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(encoded.ravel())])


def window_table(subject: str, day: dict[str, np.ndarray]) -> pa.Table:
    """One day file's windows as Parquet columns of :data:`WINDOW_ARROW_SCHEMA`.

    :param day: ``time`` (N,) int64 s, ``data`` (N, 100, 3) g, ``non_wear``, ``sleeping``, ``label``
        (N,) int32, as :func:`chap_mop.data.h5_format.read_day_file` returns them.
    """
    rows = len(day["time"])
    return pa.Table.from_arrays([pa.repeat(pa.scalar(subject, pa.string()), rows),
                                 pa.array(day["time"], pa.int64()), encode_windows(day["data"]),
                                 *(pa.array(day[name], pa.int32()) for name in ("non_wear", "sleeping", "label"))],
                                schema=WINDOW_ARROW_SCHEMA)
