"""The worker's reader: one cerebro worker's shard of a split, read a row group at a time as columns.

cerebro shards a dataset by row group: worker ``w`` of ``n`` reads the row groups whose global
index ``i`` has ``i % n == w``, in order (files sorted by path, row groups in file order, as
Petastorm orders them). This reader keeps that shard, and reads each row group whole with
pyarrow, decoding the ``data`` column (Petastorm's ``NdarrayCodec``: one ``.npy`` blob of a
(100, 3) float32 array per row, all of the same length) into one (rows, 100, 3) float32 array
without touching rows one by one. Subject ids become small integers, consistent over the shard.

It replaces cerebro's ``make_reader`` with a local-disk cache of pickled rows: a row group is
read and decoded at about the speed of a memory copy, so a cache would not pay.
"""
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from chap_mop.errors import InputError
from chap_mop.data.schema import AXES, DATA_HEADER, SAMPLES_PER_WINDOW

COLUMNS = ("id", "time", "data", "non_wear", "sleeping", "label")
WINDOW_BYTES = SAMPLES_PER_WINDOW * AXES * 4  # float32


@dataclass(frozen=True)
class RowGroup:
    """One row group of a dataset: its file, its index in that file and its rows."""
    path: str
    index: int
    rows: int


def parquet_files(fs: pafs.FileSystem, dataset: str, missing_ok: bool = False) -> list[str]:
    """The data files of a dataset folder, sorted (Spark's ``part-NNNNN`` names follow partitions);
    none for a folder that does not exist when ``missing_ok``."""
    return sorted(entry.path for entry in fs.get_file_info(pafs.FileSelector(dataset, allow_not_found=missing_ok))
                  if entry.type == pafs.FileType.File and entry.base_name.endswith(".parquet"))


def row_groups(dataset_dir: str) -> list[RowGroup]:
    """Every row group of a Parquet dataset folder, in the global order cerebro shards by."""
    groups = []
    for path in parquet_files(pafs.LocalFileSystem(), dataset_dir):
        metadata = pq.read_metadata(path)
        groups += [RowGroup(path, i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups)]
    return groups


def decode_windows(column: pa.ChunkedArray, where: str) -> np.ndarray:
    """(rows, 100, 3) float32 g from a ``data`` column of ``.npy`` blobs, in one copy.

    :raises InputError: blobs that are not each a (100, 3) float32 ``.npy`` array, the one format
        this project's prep writes.
    """
    array = column.combine_chunks()
    rows = len(array)
    if rows == 0:
        return np.zeros((0, SAMPLES_PER_WINDOW, AXES), np.float32)
    width = DATA_HEADER.size + WINDOW_BYTES
    _, offsets, values = array.buffers()
    offsets = np.frombuffer(offsets, np.int32, rows + 1, array.offset * 4)
    blobs = np.frombuffer(values, np.uint8, rows * width, offsets[0]).reshape(rows, width) \
        if np.all(np.diff(offsets) == width) else None
    if blobs is None or not (blobs[:, :DATA_HEADER.size] == DATA_HEADER).all():
        raise InputError(f"{where}: 'data' is not one (100, 3) float32 .npy array per row; "
                         "re-run prep_petastorm_data.py")
    return np.ascontiguousarray(blobs[:, DATA_HEADER.size:]).view("<f4").reshape(rows, SAMPLES_PER_WINDOW, AXES)


@dataclass
class ShardReader:
    """Worker ``shard`` of ``shard_count``: its row groups of one split, read in order, any number of times.

    :param dataset_dir: local (or shared) path of a split's Parquet dataset.
    """
    dataset_dir: str
    shard: int
    shard_count: int
    _groups: list[RowGroup] | None = field(default=None, repr=False)
    _subject_codes: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def groups(self) -> list[RowGroup]:
        if self._groups is None:  # listed on the worker, at the first read
            self._groups = row_groups(self.dataset_dir)[self.shard::self.shard_count]
        return self._groups

    @classmethod
    def of_file(cls, dataset_dir: str, path: str) -> "ShardReader":
        """A reader of the row groups of one Parquet file of ``dataset_dir``: its subjects whole."""
        return cls(dataset_dir, 0, 1, _groups=[group for group in row_groups(dataset_dir) if group.path == path])

    def rows(self) -> int:
        return sum(group.rows for group in self.groups)

    def read(self) -> Iterator[dict[str, np.ndarray]]:
        """Each row group of the shard as columns: ``id`` (rows,) int64 subject codes, ``time`` (rows,)
        int64 s, ``data`` (rows, 100, 3) float32 g, ``non_wear``, ``sleeping`` (rows,) int32 0/1,
        ``label`` (rows,) int32 -1/0/1."""
        for group in self.groups:
            try:
                table = pq.ParquetFile(group.path).read_row_group(group.index, columns=list(COLUMNS))
            except (OSError, pa.ArrowException) as error:  # its footer read well: its pages are damaged
                reason = " ".join(str(error).split())
                raise InputError(f"{group.path} row group {group.index} cannot be read ({reason}): the store is "
                                 "damaged; re-run prep_petastorm_data.py") from error
            yield {"id": self._codes(table.column("id")),
                   "time": table.column("time").to_numpy().astype(np.int64, copy=False),
                   "data": decode_windows(table.column("data"), f"{group.path} row group {group.index}"),
                   **{name: table.column(name).to_numpy().astype(np.int32, copy=False)
                      for name in ("non_wear", "sleeping", "label")}}

    def subject_names(self) -> dict[int, str]:
        """Subject id of each code that :meth:`read` has given so far."""
        return {code: name for name, code in self._subject_codes.items()}

    def _codes(self, ids: pa.ChunkedArray) -> np.ndarray:
        """Subject ids as integers, the same for a subject in every row group of this reader."""
        encoded = pc.dictionary_encode(ids.combine_chunks())
        codes = np.array([self._subject_codes.setdefault(name, len(self._subject_codes))
                          for name in encoded.dictionary.to_pylist()], np.int64)
        return codes[encoded.indices.to_numpy()]

    def reset(self) -> None:
        """cerebro resets its readers after every sub-epoch; every :meth:`read` starts from the beginning."""
