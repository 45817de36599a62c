"""Checks and counts on a prepared data store, done on the driver before any training.

cerebro shards a Petastorm dataset by row group: worker ``w`` of ``n`` reads the row groups
whose global index ``i`` has ``i % n == w``, in order (:mod:`chap_mop.data.shard_reader`, whose row
group order this module uses too). Sequences never span two row groups that
a worker reads apart (their times are not 10 s apart), so counting per worker over exactly
those row groups gives the sequences each epoch really has.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from chap_mop import files
from chap_mop.errors import InputError
from chap_mop.data.schema import MANIFEST_NAME, TEST_DIR, TRAIN_DIR, VAL_DIR, WINDOW_ARROW_SCHEMA
from chap_mop.data.shard_reader import parquet_files, row_groups
from chap_mop.data.windows import count_sequences

SMALL_COLUMNS = ["id", "time", "non_wear", "sleeping", "label"]


class DataStoreError(InputError):
    """A data store that model selection cannot use; the message says what to do."""


@dataclass
class SplitInfo:
    """What the driver knows about one split (train or validation) before training."""
    path: str
    rows: int
    row_groups: int
    columns: dict[str, np.ndarray]  # SMALL_COLUMNS of each row group, in petastorm's order
    row_group_sizes: list[int]

    def sequences_per_worker(self, seq_len: int, num_workers: int) -> list[int]:
        """Full sequences of ``seq_len`` windows that each of ``num_workers`` workers reads per epoch."""
        bounds = np.concatenate([[0], np.cumsum(self.row_group_sizes)])
        counts = []
        for worker in range(num_workers):
            rows = np.concatenate([np.arange(bounds[i], bounds[i + 1])
                                   for i in range(worker, self.row_groups, num_workers)] or [np.arange(0)])
            counts.append(count_sequences(*(self.columns[name][rows] for name in SMALL_COLUMNS), seq_len))
        return counts


def local_path(url: str) -> str:
    """A local file system path for a plain path or a ``file://`` URL.

    :raises DataStoreError: a remote URL (``hdfs://``, ...): model selection reads local or shared stores.
    """
    path = files.local_path(url)
    if path is None:
        raise DataStoreError(f"{url}: only local or shared (NFS) paths are supported for the data store")
    return path


def is_window_split(url: str) -> bool:
    """Whether ``url`` is a split this project's prep wrote: a local or shared folder whose first
    Parquet file has the columns and types of :data:`WINDOW_ARROW_SCHEMA` (its footer only); any other
    dataset, or a remote URL, is not."""
    path = files.local_path(url)
    if path is None:
        return False
    try:
        data_files = parquet_files(pafs.LocalFileSystem(), path)
        schema = pq.read_schema(data_files[0]) if data_files else None
    except (OSError, pa.ArrowInvalid):
        return False
    return schema is not None and [(field.name, field.type) for field in schema] == \
        [(field.name, field.type) for field in WINDOW_ARROW_SCHEMA]


def read_manifest(store: str) -> dict:
    """The manifest that ``prep_petastorm_data.py`` writes last; its absence means an incomplete store."""
    path = f"{local_path(store).rstrip('/')}/{MANIFEST_NAME}"
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise DataStoreError(f"{path} not found: {store} is missing or incomplete; run chap-prep "
                             f"(prep_petastorm_data.py) --store {store} first") from error


def read_split(store: str, split_dir: str) -> SplitInfo:
    """Row groups and the small columns (no acceleration data) of one split, in petastorm's order."""
    path = f"{local_path(store).rstrip('/')}/{split_dir}"
    try:
        groups = row_groups(path)
        tables = [pq.ParquetFile(group.path).read_row_group(group.index, columns=SMALL_COLUMNS) for group in groups]
    except (OSError, pa.ArrowInvalid) as error:  # a missing folder, an unreadable file, a missing column
        raise DataStoreError(f"{path}: not a readable data store split ({error}); re-run prep_petastorm_data.py") \
            from error
    sizes = [table.num_rows for table in tables]
    if sum(sizes) == 0:
        raise DataStoreError(f"{path} holds no rows; re-run prep_petastorm_data.py on data with windows")
    columns = {name: np.concatenate([table.column(name).to_numpy(zero_copy_only=False) for table in tables])
               for name in SMALL_COLUMNS}
    return SplitInfo(path, sum(sizes), len(groups), columns, sizes)


def check_against_manifest(store: str, manifest: dict) -> None:
    """Every data file the manifest names is there with the rows it records, and no other (footers only).

    A store that lost a file would otherwise train on part of its data without a word.

    :raises DataStoreError: naming the first file that is missing, extra, or of another row count.
    """
    root = local_path(store).rstrip("/")
    for name, split in manifest["splits"].items():
        folder = f"{root}/{split.get('folder', name)}"
        try:
            found = {path.name: path for path in Path(folder).glob("*.parquet")}
        except OSError as error:
            raise DataStoreError(f"{folder}: cannot be listed ({error})") from error
        expected = split.get("file_rows")
        if expected is None:  # a store written before the manifest recorded its files: count them
            if len(found) != split["files"]:
                raise DataStoreError(f"{folder} holds {len(found)} Parquet files, its manifest {split['files']}; "
                                     "re-run prep_petastorm_data.py")
            continue
        for file_name, rows in expected.items():
            if file_name not in found:
                raise DataStoreError(f"{folder}/{file_name} is missing: the store is incomplete; re-run "
                                     "prep_petastorm_data.py")
            try:
                actual = pq.ParquetFile(found[file_name]).metadata.num_rows
            except (OSError, pa.ArrowInvalid) as error:
                raise DataStoreError(f"{found[file_name]}: not a readable Parquet file ({error}); re-run "
                                     "prep_petastorm_data.py") from error
            if actual != rows:
                raise DataStoreError(f"{found[file_name]} has {actual} rows, its manifest {rows}; re-run "
                                     "prep_petastorm_data.py")
        extra = sorted(set(found) - set(expected))
        if extra:
            raise DataStoreError(f"{folder}/{extra[0]} is not in the store's manifest; remove it or re-run "
                                 "prep_petastorm_data.py")


def read_store(store: str) -> tuple[dict, SplitInfo, SplitInfo]:
    """(manifest, train split, validation split) of a prepared store checked against its manifest, or a
    clear DataStoreError."""
    manifest = read_manifest(store)
    check_against_manifest(store, manifest)
    return manifest, read_split(store, TRAIN_DIR), read_split(store, VAL_DIR)


def held_out_dir(store: str, manifest: dict) -> str | None:
    """The test split's dataset folder, when the store has one (``--test-fraction``), else None."""
    return f"{local_path(store).rstrip('/')}/{TEST_DIR}" if "test" in manifest["splits"] else None
