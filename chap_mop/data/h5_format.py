"""DeepPostures' pre-processed day files: ``<root>/<subject_id>/<YYYY-MM-DD>.h5``.

Each file holds five datasets of one common length N, one row per 10-second window:

====================  ============  ===================  =========================================
dataset               shape         dtype as written     meaning
====================  ============  ===================  =========================================
``time``              (N,)          float64, s           window start, seconds since the epoch
``data``              (N, 100, 3)   float64, g           X, Y, Z acceleration at 10 Hz
``non_wear``          (N,)          int64, 0/1           1 when the device was not worn
``sleeping``          (N,)          int64, 0/1           1 when the subject was in bed
``label``             (N,)          int64, -1/0/1        0 sitting, 1 not sitting, -1 no label
====================  ============  ===================  =========================================

Other DeepPostures versions may store float32 data or int32 flags, so any numeric dtype is
read and cast to the Petastorm schema (see :mod:`chap_mop.data.schema`).
"""
from typing import BinaryIO

import h5py
import numpy as np

from chap_mop.errors import InputError
from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW

DATASETS = ("time", "data", "non_wear", "sleeping", "label")
LABELS = (-1, 0, 1)
DAY_FILE_SUFFIX = ".h5"


class BadDayFileError(InputError):
    """A day file that does not follow DeepPostures' format; the message names file and fault."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def write_day_file(path: str, time: np.ndarray, data: np.ndarray, non_wear: np.ndarray,
                   sleeping: np.ndarray, label: np.ndarray) -> None:
    """Write one day file exactly as DeepPostures does: float64 time and data, int64 flags.

    :param time: (N,) window start, seconds since the epoch.
    :param data: (N, 100, 3) acceleration, g.
    :param non_wear: (N,) 0/1.  :param sleeping: (N,) 0/1.  :param label: (N,) -1/0/1.
    """
    columns = {"time": np.asarray(time, np.float64), "data": np.asarray(data, np.float64),
               "non_wear": np.asarray(non_wear, np.int64), "sleeping": np.asarray(sleeping, np.int64),
               "label": np.asarray(label, np.int64)}
    with h5py.File(path, "w") as f:
        for name in DATASETS:
            values = columns[name]
            # DeepPostures appends to resizable, chunked datasets; an empty day has no chunks.
            f.create_dataset(name, data=values, maxshape=(None,) + values.shape[1:],
                             chunks=True if len(values) else None)


def read_day_file(source: str | BinaryIO, name: str | None = None, with_data: bool = True
                  ) -> dict[str, np.ndarray]:
    """Read and check one day file, cast to the Petastorm schema's dtypes.

    :param source: A local path, or an open binary file object (e.g. from a pyarrow file system).
    :param name: The file's name for error messages (defaults to ``source`` when it is a path).
    :param with_data: Also read ``data``, the (N, 100, 3) array that holds nearly all the bytes;
        without it only shapes are checked, which makes a quick inspection pass.
    :return: ``time`` (N,) int64 s, ``data`` (N, 100, 3) float32 g (when ``with_data``),
        ``non_wear``, ``sleeping`` (N,) int32 0/1, ``label`` (N,) int32 -1/0/1.
    :raises BadDayFileError: not HDF5, a missing dataset, a wrong shape or dtype, datasets of
        unequal length, a value outside its allowed set, a ``time`` that is not strictly increasing,
        or (when ``with_data``) NaN or infinity in ``data``.
    """
    name = name or str(source)
    try:
        handle = h5py.File(source, "r")
    except OSError as error:
        raise BadDayFileError(name, f"not a readable HDF5 file ({error})") from error
    with handle:
        missing = [d for d in DATASETS if d not in handle or not isinstance(handle[d], h5py.Dataset)]
        if missing:
            raise BadDayFileError(name, f"missing dataset(s) {missing}; expected all of {list(DATASETS)}")
        _check_shapes(handle, name)
        columns = {d: handle[d][()] for d in DATASETS if d != "data"}
        if with_data:
            columns["data"] = handle["data"][()].astype(np.float32)
    return _cast_and_check_values(columns, name)


def _check_shapes(handle: h5py.File, name: str) -> None:
    for dataset in DATASETS:
        if handle[dataset].dtype.kind not in "iuf":
            raise BadDayFileError(name, f"dataset '{dataset}' has dtype {handle[dataset].dtype}, "
                                        "expected a numeric dtype")
    data_shape = handle["data"].shape
    if len(data_shape) != 3 or data_shape[1:] != (SAMPLES_PER_WINDOW, AXES):
        raise BadDayFileError(name, f"dataset 'data' has shape {data_shape}, "
                                    f"expected (N, {SAMPLES_PER_WINDOW}, {AXES})")
    for dataset in DATASETS:
        if dataset != "data" and len(handle[dataset].shape) != 1:
            raise BadDayFileError(name, f"dataset '{dataset}' has shape {handle[dataset].shape}, expected (N,)")
    lengths = {d: handle[d].shape[0] for d in DATASETS}
    if len(set(lengths.values())) != 1:
        raise BadDayFileError(name, f"datasets have unequal lengths {lengths}, expected one common N")


def _cast_and_check_values(columns: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    time = columns["time"]
    if not np.all(np.isfinite(time)):
        raise BadDayFileError(name, "dataset 'time' holds NaN or infinite values")
    out = {"time": np.rint(time).astype(np.int64)}
    back = np.flatnonzero(np.diff(out["time"]) <= 0)
    if len(back):
        first = int(back[0])
        raise BadDayFileError(name, f"dataset 'time' is not strictly increasing: {len(back)} step(s) back or "
                                    f"repeated, first at row {first + 1} ({out['time'][first]} s, then "
                                    f"{out['time'][first + 1]} s)")
    for dataset, allowed in [("non_wear", (0, 1)), ("sleeping", (0, 1)), ("label", LABELS)]:
        values = columns[dataset]
        bad = ~np.isin(values, allowed)
        if bad.any():
            raise BadDayFileError(name, f"dataset '{dataset}' holds {int(bad.sum())} value(s) outside "
                                        f"{set(allowed)}, first {values[bad][0]!r} at row {int(np.argmax(bad))}")
        out[dataset] = values.astype(np.int32)
    if "data" in columns:
        bad = ~np.isfinite(columns["data"]).all(axis=(1, 2))
        if bad.any():
            raise BadDayFileError(name, f"dataset 'data' holds NaN or infinite values in {int(bad.sum())} window(s), "
                                        f"first at row {int(np.argmax(bad))}")
        out["data"] = columns["data"]
    return out
