"""The pieces of pyarrow and NumPy that Petastorm 0.13.1 and cerebro-dl 1.1.1 still call and that
pyarrow 15-16 and NumPy 2 removed, rebuilt on today's APIs for local and shared (NFS) paths.

Neither library has a newer release (Petastorm's maintainer calls it unmaintained, uber/petastorm#805),
so the project bridges what it runs of them instead of capping pyarrow at 14 and NumPy at 1.26:

* on import, Petastorm needs the modules ``pyarrow.filesystem`` (its ``LocalFileSystem``) and
  ``pyarrow.hdfs`` (``HadoopFileSystem``), and ``pyarrow.localfs`` for ``file://`` URLs; cerebro's
  ``LocalStore`` makes a ``pyarrow.LocalFileSystem`` to read checkpoints;
* Petastorm's metadata and readers call the legacy ``ParquetDataset`` (``validate_schema=``,
  ``metadata_nthreads=``, ``.pieces``, ``.paths``, ``.fs``, ``.common_metadata``, ``.partitions``)
  and ``ParquetDatasetPiece``: :class:`LegacyParquetDataset` and :class:`ParquetDatasetPiece` give
  them those on top of today's ``pyarrow.parquet``, in Petastorm's modules only;
* Petastorm's Unischema maps ``np.string_`` and ``np.unicode_``, removed in NumPy 2;
* Petastorm's file system factory of a local dataset, a lambda that Spark workers cannot run without
  the bridge, is a function of this module (:func:`local_filesystem`).

Covered: datasets on a local or shared file system, read by Petastorm's ``make_reader`` and
``make_batch_reader`` with the dummy or thread pool, and Petastorm's metadata tools. Not covered:
``hdfs://`` through Petastorm (:class:`HadoopFileSystem` refuses it), object stores, Hive-partitioned
datasets, and Petastorm's process pool, whose child processes do not run this module.

:func:`install` must run before Petastorm or cerebro is imported: :mod:`chap_mop.cerebro_compat` and
:mod:`chap_mop.data.petastorm_metadata` call it first, and in an environment where the package is
installed, :mod:`chap_mop.data.bridge_on_import` runs it in any process (a Spark Python worker that
unpickles cerebro's code) as Petastorm is imported. It is idempotent, and does nothing that the
installed pyarrow and NumPy still provide.
"""
import os
import shutil
import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Petastorm's modules that call pyarrow.parquet's legacy classes (as their module global ``pq``).
PETASTORM_PARQUET_USERS = ("petastorm.etl.dataset_metadata", "petastorm.reader", "petastorm.py_dict_reader_worker",
                           "petastorm.arrow_reader_worker")


class LocalFileSystem:
    """pyarrow's legacy local file system (``pyarrow.filesystem.LocalFileSystem``): the calls Petastorm makes."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def isfile(self, path: str) -> bool:
        return os.path.isfile(path)

    def ls(self, path: str) -> list[str]:
        return sorted(os.path.join(path, name) for name in os.listdir(path))

    def open(self, path: str, mode: str = "rb"):
        return open(path, mode)

    def mkdir(self, path: str, create_parents: bool = True) -> None:
        if create_parents:
            os.makedirs(path, exist_ok=True)
        else:
            os.mkdir(path)

    def rm(self, path: str, recursive: bool = False) -> None:
        if recursive and os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)

    def walk(self, path: str):
        return os.walk(path)

    def _isfilestore(self) -> bool:
        return True


class HadoopFileSystem:
    """``pyarrow.hdfs.HadoopFileSystem``, which Petastorm imports; the bridge does not cover HDFS."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("hdfs:// through Petastorm needs pyarrow's legacy HDFS client, removed in "
                                  "pyarrow 16; the project reads local or shared (NFS) paths only")


class ParquetDatasetPiece:
    """One file of a dataset, or one row group of it (``row_group``), as pyarrow's legacy piece."""

    def __init__(self, path: str, open_file_func=LocalFileSystem().open, file_options: dict | None = None,
                 row_group: int | None = None, partition_keys: list | None = None):
        if partition_keys:
            raise NotImplementedError(f"{path}: Hive-partitioned datasets are not bridged")
        self.path = str(path)
        self.open_file_func = open_file_func
        self.row_group = row_group
        self.partition_keys: list = []

    def __eq__(self, other) -> bool:
        return isinstance(other, ParquetDatasetPiece) and (self.path, self.row_group) == (other.path, other.row_group)

    def __hash__(self) -> int:
        return hash((self.path, self.row_group))

    def __repr__(self) -> str:
        return f"ParquetDatasetPiece({self.path!r}, row_group={self.row_group!r})"

    def _file(self, file=None) -> pq.ParquetFile:
        return pq.ParquetFile(file if file is not None else self.open_file_func(self.path))

    def get_metadata(self) -> pq.FileMetaData:
        with self.open_file_func(self.path) as handle:
            return pq.ParquetFile(handle).metadata

    def read(self, columns=None, use_threads: bool = True, partitions=None, file=None,
             use_pandas_metadata: bool = False) -> pa.Table:
        """The piece's rows (its row group, or the whole file) of ``columns``."""
        columns = list(columns) if columns is not None else None
        parquet_file = self._file(file)
        try:
            if self.row_group is not None:
                return parquet_file.read_row_group(self.row_group, columns=columns, use_threads=use_threads,
                                                   use_pandas_metadata=use_pandas_metadata)
            return parquet_file.read(columns=columns, use_threads=use_threads, use_pandas_metadata=use_pandas_metadata)
        finally:
            if file is None:
                parquet_file.close()


class LegacyParquetDataset:
    """A dataset folder (or one file) as pyarrow's legacy ``ParquetDataset`` presented it to Petastorm.

    Pieces are the data files (names not starting with ``_`` or ``.``), sorted by path; the summary
    files ``_common_metadata`` and ``_metadata`` are read when present.
    """

    def __init__(self, path_or_paths, filesystem=None, schema=None, metadata=None, split_row_groups: bool = False,
                 validate_schema: bool = True, filters=None, metadata_nthreads: int = 1, **_ignored):
        if not isinstance(path_or_paths, (str, os.PathLike)):
            raise NotImplementedError("the bridge opens one dataset path, not a list of paths")
        if filters:
            raise NotImplementedError("Petastorm's filters= on a dataset are not bridged")
        if filesystem is not None and not isinstance(filesystem, LocalFileSystem):
            raise NotImplementedError(f"{path_or_paths}: only local or shared (NFS) paths are bridged, "
                                      f"not {type(filesystem).__name__}")
        self.paths = str(path_or_paths)
        self.fs = filesystem or LocalFileSystem()
        self.partitions = None
        self.metadata_path = self._summary("_metadata")
        self.common_metadata_path = self._summary("_common_metadata")
        self.metadata = pq.read_metadata(self.metadata_path) if self.metadata_path else None
        self.common_metadata = pq.read_metadata(self.common_metadata_path) if self.common_metadata_path else None
        self.pieces = [ParquetDatasetPiece(path, open_file_func=self.fs.open) for path in self._data_files()]

    def _summary(self, name: str) -> str | None:
        path = os.path.join(self.paths, name)
        return path if os.path.isdir(self.paths) and os.path.isfile(path) else None

    def _data_files(self) -> list[str]:
        if os.path.isfile(self.paths):
            return [self.paths]
        files = []
        for folder, dirs, names in os.walk(self.paths):
            dirs[:] = sorted(name for name in dirs if not name.startswith(("_", ".")))
            files += [os.path.join(folder, name) for name in names if not name.startswith(("_", "."))]
        return sorted(files)


class _LegacyParquetModule(types.ModuleType):
    """``pyarrow.parquet`` as Petastorm's modules see it: the legacy dataset and piece, the rest as is.

    It pickles as a call of :func:`legacy_parquet_module`: cloudpickle captures it with the globals
    of a function it pickles by value (cerebro's closures that call Petastorm), and a module object
    of a subclass has no pickling of its own.
    """
    ParquetDataset = LegacyParquetDataset
    ParquetDatasetPiece = ParquetDatasetPiece

    def __getattr__(self, name: str):
        return getattr(pq, name)

    def __reduce__(self):
        return legacy_parquet_module, ()


_LEGACY_PARQUET = _LegacyParquetModule("pyarrow.parquet")


def legacy_parquet_module() -> _LegacyParquetModule:
    """The one ``pyarrow.parquet`` of Petastorm's modules in this process."""
    return _LEGACY_PARQUET


def _missing(module_name: str) -> bool:
    try:
        __import__(module_name)
    except ImportError:
        return True
    return False


def _install_modules() -> None:
    """``pyarrow.filesystem``, ``pyarrow.hdfs``, ``pyarrow.localfs`` and ``pyarrow.LocalFileSystem``."""
    if _missing("pyarrow.filesystem"):
        module = types.ModuleType("pyarrow.filesystem", "pyarrow's legacy file systems, bridged by chap_mop")
        module.FileSystem = module.LocalFileSystem = LocalFileSystem
        sys.modules["pyarrow.filesystem"] = pa.filesystem = module
    if _missing("pyarrow.hdfs"):
        module = types.ModuleType("pyarrow.hdfs", "pyarrow's legacy HDFS client, refused by chap_mop's bridge")
        module.HadoopFileSystem = HadoopFileSystem
        sys.modules["pyarrow.hdfs"] = pa.hdfs = module
    if not hasattr(pa, "localfs"):
        pa.localfs = LocalFileSystem()
    if not hasattr(pa, "LocalFileSystem"):  # cerebro's LocalStore makes one for its reads
        pa.LocalFileSystem = LocalFileSystem


def _install_numpy_aliases() -> None:
    """``np.string_`` and ``np.unicode_``, which NumPy 2 removed (Petastorm's Unischema maps them)."""
    if "string_" not in np.__dict__:
        np.string_ = np.bytes_
    if "unicode_" not in np.__dict__:
        np.unicode_ = np.str_


def _install_parquet_dataset() -> None:
    """Give Petastorm's modules the legacy ``ParquetDataset`` and ``ParquetDatasetPiece``."""
    for name in PETASTORM_PARQUET_USERS:
        __import__(name)
        sys.modules[name].pq = _LEGACY_PARQUET


def local_filesystem() -> LocalFileSystem:
    """``pyarrow.localfs``, bridged in whichever process calls it (a Spark Python worker that unpickled
    a Petastorm file system factory without importing Petastorm)."""
    _install_modules()
    return pa.localfs


def _install_filesystem_factory() -> None:
    """Petastorm's file system factory of a local dataset as :func:`local_filesystem`.

    ``FilesystemResolver`` makes it as ``lambda: pyarrow.localfs``, which cloudpickle ships by value
    to the Spark workers of Petastorm's metadata jobs: there, unpickling a lambda imports only
    pyarrow, which has no ``localfs``. A module function pickles by reference, so unpickling it
    imports this module first.
    """
    from petastorm import fs_utils
    resolver = fs_utils.FilesystemResolver
    if getattr(resolver.__init__, "_chap_mop_patched", False):
        return
    original_init = resolver.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if isinstance(self._filesystem, LocalFileSystem):
            self._filesystem_factory = local_filesystem

    __init__._chap_mop_patched = True
    resolver.__init__ = __init__


def install_before_petastorm() -> None:
    """The pieces Petastorm needs while it is imported: pyarrow's legacy modules, NumPy's aliases."""
    _install_modules()
    _install_numpy_aliases()


def install() -> None:
    """Bridge every removed piece this module covers (idempotent); call it before importing Petastorm
    or cerebro (:mod:`chap_mop.data.bridge_on_import` calls it as Petastorm is imported)."""
    install_before_petastorm()
    _install_parquet_dataset()
    _install_filesystem_factory()
