"""The steps of ``prep_petastorm_data.py``: find day files, check them, split, write, record.

Functions marked *executor side* run inside Spark tasks; the rest run on the driver and
only plan (lists of names and row counts), so the driver never reads a window.

Every input and output location is a URL or a plain path, resolved once to a ``pyarrow.fs`` FileSystem
and a path inside it (:func:`resolve`): plain paths and ``file://`` on a shared file system,
``hdfs://`` through pyarrow's Hadoop file system (which needs libhdfs and a Hadoop
``CLASSPATH`` on the driver and every worker).
"""
import json
import math
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from chap_mop.errors import InputError
from chap_mop.files import LOCK_NAME
from chap_mop.data.h5_format import DAY_FILE_SUFFIX, BadDayFileError, read_day_file
from chap_mop.data.schema import MANIFEST_NAME, ROW_BYTES, WINDOW_ARROW_SCHEMA, window_table
from chap_mop.data.shard_reader import parquet_files

STAGING_PREFIX = ".incomplete-"  # hidden, so readers of the output folder never take it for data
# Written into the output folder before anything else: the folder holds a store this project writes,
# also while a run that was killed left it without a manifest.
STORE_MARKER = ".chap_mop_store"
ENTRIES_SHOWN = 3


@dataclass(frozen=True)
class Problem:
    """A day file or subject folder that cannot be used, and why."""
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class SplitPlan:
    """One output dataset: its subjects, their row counts and which output file holds each.

    ``files`` lists, per Parquet file, the subjects it holds; ``max_rows_per_row_group`` is
    None unless row groups must be cut by count to reach the minimum number of row groups.
    """
    name: str
    folder: str
    subjects: list[str]
    rows: dict[str, int]
    files: list[list[str]]
    max_rows_per_row_group: int | None


def resolve(url: str) -> tuple[pafs.FileSystem, str, str]:
    """Resolve a plain path or URL to ``(file system, path inside it, URL for Spark)``.

    Spark wants ``file:///abs/path`` for local data, so plain paths become absolute file URLs.
    """
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    fs, path = pafs.FileSystem.from_uri(url)
    return fs, path.rstrip("/"), url.rstrip("/")


def find_day_files(fs: pafs.FileSystem, root: str) -> tuple[dict[str, list[str]], list[Problem]]:
    """List ``<root>/<subject>/*.h5``, hidden entries ignored, day files sorted by name (= by date).

    :return: subject folder name -> day file paths, and the subject folders without any day file.
    :raises InputError: ``root`` is missing, not a folder, or holds no subject folder.
    """
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input folder {root} does not exist")
    if info.type != pafs.FileType.Directory:
        raise InputError(f"input {root} is not a folder")
    folders = sorted((e for e in fs.get_file_info(pafs.FileSelector(root))
                      if e.type == pafs.FileType.Directory and not e.base_name.startswith(".")),
                     key=lambda e: e.base_name)
    if not folders:
        raise InputError(f"input folder {root} holds no subject folders "
                         f"(expected <subject>/<YYYY-MM-DD>{DAY_FILE_SUFFIX})")
    day_files, problems = {}, []
    for folder in folders:
        files = sorted(e.path for e in fs.get_file_info(pafs.FileSelector(folder.path))
                       if e.type == pafs.FileType.File and e.base_name.endswith(DAY_FILE_SUFFIX)
                       and not e.base_name.startswith("."))
        if files:
            day_files[folder.base_name] = files
        else:
            problems.append(Problem(folder.path, f"subject folder holds no day files (*{DAY_FILE_SUFFIX})"))
    return day_files, problems


def ignored_files(fs: pafs.FileSystem, root: str) -> list[str]:
    """Files in the input that are not day files, so that prep says it ignored them: those beside the
    subject folders and those in a subject folder without the ``.h5`` suffix (hidden entries aside).
    """
    ignored = []
    for entry in sorted(fs.get_file_info(pafs.FileSelector(root)), key=lambda e: e.base_name):
        if entry.base_name.startswith("."):
            continue
        if entry.type == pafs.FileType.File:
            ignored.append(entry.path)
        elif entry.type == pafs.FileType.Directory:
            ignored += sorted(e.path for e in fs.get_file_info(pafs.FileSelector(entry.path))
                              if not e.base_name.startswith(".") and not (
                                  e.type == pafs.FileType.File and e.base_name.endswith(DAY_FILE_SUFFIX)))
    return ignored


@contextmanager
def open_day_file(fs: pafs.FileSystem, path: str) -> Iterator[str | BinaryIO]:
    """A day file for :func:`read_day_file`: its path on a local file system (h5py reads a path
    natively, about a quarter faster than through a Python file object), else an open file."""
    if isinstance(fs, pafs.LocalFileSystem):
        yield path
    else:
        with fs.open_input_file(path) as file:
            yield file


def inspect_day_file(fs: pafs.FileSystem, subject: str, path: str) -> tuple[str, str, int, Problem | None]:
    """*Executor side.* Check one day file's structure and values, ``data`` included (finite values).

    Returns the fault instead of raising it, so that the driver can report every bad file.

    :return: ``(subject, path, rows, problem)``: rows is N, or 0 with the problem when bad.
    """
    try:
        with open_day_file(fs, path) as file:
            rows = len(read_day_file(file, name=path)["time"])
    except BadDayFileError as error:
        return subject, path, 0, Problem(path, error.problem)
    except OSError as error:  # permissions, a file that vanished, an I/O error
        return subject, path, 0, Problem(path, f"cannot be read ({error})")
    return subject, path, rows, None


def split_subjects(subjects: list[str], train_fraction: float, seed: int, test_fraction: float = 0.0
                   ) -> tuple[list[str], list[str], list[str]]:
    """Split subjects, not rows, into train, validation and test.

    Names are sorted before ``random.Random(seed)`` shuffles them, so the same subjects and seed
    always give the same split, whatever order the file system lists them in. The first
    ``floor(train_fraction * n)`` go to train, the last ``floor(test_fraction * n)`` (at least one
    when ``test_fraction > 0``) to test, the rest validate: without a test split, the split is the
    one earlier versions made.

    :return: train, validation and test subjects (test empty when ``test_fraction`` is 0), each sorted.
    :raises InputError: a split would get no subject.
    """
    names = sorted(subjects)
    random.Random(seed).shuffle(names)
    n_train = math.floor(train_fraction * len(names) + 1e-9)  # 0.7 * 10 must give 7, not 6
    n_test = max(1, math.floor(test_fraction * len(names) + 1e-9)) if test_fraction > 0 else 0
    train, val = sorted(names[:n_train]), sorted(names[n_train:len(names) - n_test])
    test = sorted(names[len(names) - n_test:]) if n_test else []
    if not train or not val or n_train + n_test > len(names):
        test_part = f" and test fraction {test_fraction}" if test_fraction else ""
        raise InputError(f"{len(names)} usable subject(s) with train fraction {train_fraction}{test_part} give "
                         f"{len(train)} train, {len(val)} validation" + (f" and {len(test)} test" if n_test else "")
                         + " subject(s); each split needs at least one: add subjects or change the fractions")
    return train, val, test


def assign_to_files(rows: dict[str, int], partitions: int) -> list[list[str]]:
    """Spread subjects over ``min(partitions, subjects with rows)`` files with similar row counts.

    Greedy, largest subject first, each to the file with the fewest rows so far; a subject is
    never divided, so that its windows stay contiguous and in order in one file. Subjects
    without rows get no file.

    :return: per file, its subjects sorted by name.
    """
    with_rows = sorted((s for s in rows if rows[s] > 0), key=lambda s: (-rows[s], s))
    files: list[list[str]] = [[] for _ in range(min(partitions, len(with_rows)))]
    totals = [0] * len(files)
    for subject in with_rows:
        lightest = totals.index(min(totals))
        files[lightest].append(subject)
        totals[lightest] += rows[subject]
    return [sorted(f) for f in files]


def plan_split(name: str, folder: str, subjects: list[str], rows: dict[str, int], partitions: int) -> SplitPlan:
    """Files and row-group cap of one split.

    cerebro hands each worker the row groups whose index modulo the worker count is its own, and
    Petastorm refuses a dataset with fewer row groups than workers: with fewer files than
    ``partitions``, rows per row group are capped at ``rows // partitions`` so that a split of at
    least ``partitions`` rows has at least ``partitions`` row groups.

    :raises InputError: the split has no rows at all (only empty day files).
    """
    split_rows = {s: rows[s] for s in subjects}
    total = sum(split_rows.values())
    if total == 0:
        raise InputError(f"the {name} split has no rows: its subjects {subjects} hold only empty day files")
    files = assign_to_files(split_rows, partitions)
    cap = total // partitions if len(files) < partitions and total >= partitions else None
    return SplitPlan(name, folder, subjects, split_rows, files, cap)


@dataclass(frozen=True)
class FileTask:
    """One Parquet file that one Spark task writes: its day files, in order, and its row-group size.

    :param dataset: the dataset folder (a path inside the output file system).
    :param index: the file's number, which orders it among the dataset's files.
    :param day_files: ``(subject, day file path)`` pairs, subject by subject, days by name.
    :param rows: the rows pass 1 counted in them.
    :param rows_per_row_group: rows of every row group but the file's last.
    """
    dataset: str
    index: int
    day_files: list[tuple[str, str]]
    rows: int
    rows_per_row_group: int

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"


def rows_per_row_group(row_group_size_mb: int, max_rows: int | None) -> int:
    """Rows in a row group of at most ``row_group_size_mb`` MiB (uncompressed) and ``max_rows``."""
    by_size = max(1, row_group_size_mb * 2 ** 20 // ROW_BYTES)
    return min(by_size, max_rows) if max_rows else by_size


def write_parquet_file(in_fs: pafs.FileSystem, out_fs: pafs.FileSystem, task: FileTask) -> tuple[str, str, int, int]:
    """*Executor side*: read the task's day files, each once and whole, and write them as one Parquet file.

    Columns go straight from each day file's arrays to pyarrow (no window is ever a Python or JVM
    row); rows are buffered only until a full row group can be written, so memory stays at about a
    row group and a day file whatever the file's size.

    :return: ``(dataset folder, file name, row groups, rows)``.
    """
    path = f"{task.dataset}/{task.name}"
    pending, pending_rows = [], 0
    with out_fs.open_output_stream(path) as sink, \
            pq.ParquetWriter(sink, WINDOW_ARROW_SCHEMA, use_dictionary=["id"]) as writer:
        for subject, day_file in task.day_files:
            with open_day_file(in_fs, day_file) as file:
                pending.append(window_table(subject, read_day_file(file, name=day_file)))
            pending_rows += pending[-1].num_rows
            while pending_rows >= task.rows_per_row_group:
                buffered = pa.concat_tables(pending)
                writer.write_table(buffered.slice(0, task.rows_per_row_group), row_group_size=task.rows_per_row_group)
                pending = [buffered.slice(task.rows_per_row_group)]
                pending_rows -= task.rows_per_row_group
        if pending_rows:
            writer.write_table(pa.concat_tables(pending), row_group_size=task.rows_per_row_group)
    with out_fs.open_input_file(path) as file:
        footer = pq.read_metadata(file)
    return task.dataset, task.name, footer.num_row_groups, footer.num_rows


def windows_written(fs: pafs.FileSystem, datasets: list[str]) -> int:
    """About how many windows pass 2 has written so far into ``datasets``, read from the driver.

    A finished file's footer gives its rows. A file still being written has no footer yet, but its
    row groups are on disk as they are written: its bytes count at the bytes per window of the
    finished files (or :data:`ROW_BYTES` before any has finished, the uncompressed size).
    """
    rows = finished_bytes = partial_bytes = 0
    for dataset in datasets:
        for info in fs.get_file_info(parquet_files(fs, dataset, missing_ok=True)):
            try:
                with fs.open_input_file(info.path) as file:
                    rows += pq.read_metadata(file).num_rows
                finished_bytes += info.size
            except (OSError, pa.ArrowInvalid):  # no footer yet
                partial_bytes += info.size
    bytes_per_window = finished_bytes / rows if rows else ROW_BYTES
    return rows + int(partial_bytes / bytes_per_window)


def footers(fs: pafs.FileSystem, dataset: str) -> dict[str, pq.FileMetaData]:
    """The Parquet footer of each data file of a dataset, by file name."""
    found = {}
    for path in parquet_files(fs, dataset):
        with fs.open_input_file(path) as file:
            found[path.rsplit("/", 1)[-1]] = pq.ParquetFile(file).metadata
    return found


def split_summary(fs: pafs.FileSystem, dataset: str, plan: SplitPlan) -> dict:
    """The manifest entry of one written split: its plan, and the files (with their rows) and row
    groups it got, from one read of each file's footer."""
    written = footers(fs, dataset)
    return {"folder": plan.folder, "subjects": plan.subjects, "rows": sum(plan.rows.values()),
            "rows_per_subject": plan.rows, "subjects_per_file": plan.files,
            "max_rows_per_row_group": plan.max_rows_per_row_group,
            "files": len(written), "row_groups": sum(footer.num_row_groups for footer in written.values()),
            "file_rows": {name: footer.num_rows for name, footer in written.items()}}


def check_output(fs: pafs.FileSystem, root: str) -> None:
    """Make sure ``root`` is new, empty, or a store this project wrote; change nothing.

    :raises InputError: ``root`` is a file, or a non-empty folder without the project's marker or
        manifest.
    """
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise InputError(f"output {root} is a file; expected a folder")
    if info.type == pafs.FileType.Directory:
        names = sorted(entry.base_name for entry in fs.get_file_info(pafs.FileSelector(root))
                       if entry.base_name != LOCK_NAME)  # this prep's own lock
        if names and STORE_MARKER not in names and not _is_manifest(fs, f"{root}/{MANIFEST_NAME}"):
            shown = ", ".join(names[:ENTRIES_SHOWN]) + (", ..." if len(names) > ENTRIES_SHOWN else "")
            raise InputError(f"output folder {root} is not empty and holds no data store of this project "
                             f"({len(names)} entries: {shown}); choose a new or empty folder")


def claim_output(fs: pafs.FileSystem, root: str) -> None:
    """:func:`check_output`, then create ``root`` if needed and mark it as a store of this project.

    :raises InputError: as :func:`check_output`, or ``root`` cannot be written.
    """
    check_output(fs, root)
    try:
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/{STORE_MARKER}") as out:
            out.write(b"A data store written by prep_petastorm_data.py, which may replace it.\n")
    except OSError as error:
        raise InputError(f"output folder {root} cannot be written ({error}); choose a writable folder") from error


def _is_manifest(fs: pafs.FileSystem, path: str) -> bool:
    """True for a manifest that this project wrote (an earlier store, before the marker existed)."""
    try:
        with fs.open_input_file(path) as file:
            return "splits" in json.loads(file.read())
    except (OSError, ValueError):  # missing, unreadable or not JSON: not ours
        return False


def new_staging(fs: pafs.FileSystem, root: str) -> str:
    """Remove the staging folders of killed runs in ``root`` and name a new one for this run.

    :return: the name of a new, hidden staging folder inside ``root``.
    """
    for entry in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if entry.base_name.startswith(STAGING_PREFIX):
            delete_if_exists(fs, entry.path)
    return f"{STAGING_PREFIX}{uuid.uuid4().hex}"


def unmark_store(fs: pafs.FileSystem, root: str) -> None:
    """Make ``root`` an incomplete store (delete its manifest) just before its datasets are swapped."""
    delete_if_exists(fs, f"{root}/{MANIFEST_NAME}")


def delete_if_exists(fs: pafs.FileSystem, path: str) -> None:
    """Remove a file or a folder tree; nothing happens when ``path`` does not exist."""
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def write_manifest(fs: pafs.FileSystem, root: str, manifest: dict) -> None:
    """Write ``<root>/manifest.json`` whole or not at all (written beside it, then renamed)."""
    partial = f"{root}/.{MANIFEST_NAME}.partial"
    with fs.open_output_stream(partial) as out:
        out.write(json.dumps(manifest, indent=2).encode())
    fs.move(partial, f"{root}/{MANIFEST_NAME}")
