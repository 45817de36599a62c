"""The bridge of pyarrow's and NumPy's removed pieces (chap_mop.data.legacy_arrow) on the pinned stack: each
bridged piece used as Petastorm or cerebro uses it, on a real store written by prep_petastorm_data.py."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from chap_mop import cerebro_compat
cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
from chap_mop.data import legacy_arrow
from chap_mop.data.data_store import read_split
from chap_mop.data.schema import TRAIN_DIR, VAL_DIR
from tests.conftest import PROJECT


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=300)


def test_petastorm_and_cerebro_import_in_any_process_through_the_installed_hook():
    """The package's ``.pth`` registers the hook when Python starts: a bare ``import petastorm`` works in
    any process of the environment, and cerebro's import chooses Keras 2; without the hook it fails."""
    env = {name: value for name, value in os.environ.items() if name != "TF_USE_LEGACY_KERAS"}
    bare = subprocess.run([sys.executable, "-c", "import os, sys; import petastorm, petastorm.hdfs.namenode, "
                           "cerebro.backend.spark.util; print(os.environ.get('TF_USE_LEGACY_KERAS'), "
                           "'pyarrow.filesystem' in sys.modules)"],
                          cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0 and bare.stdout.split() == ["1", "True"], bare.stderr[-2000:]
    without = python("import sys; sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "
                     "'BridgeOnImport']; import petastorm")
    assert without.returncode == 1 and "No module named 'pyarrow.filesystem'" in without.stderr


def test_the_bridged_modules_unpickle_in_a_process_that_never_imported_petastorm():
    from pyspark import cloudpickle
    payload = cloudpickle.dumps((pa.filesystem, pa.hdfs.HadoopFileSystem, pa.localfs))
    code = ("import pickle, sys; fs, hdfs, local = pickle.loads(sys.stdin.buffer.read()); "
            "print(fs.__name__, hdfs.__name__, local.isdir('/'), 'petastorm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], input=payload, cwd="/", capture_output=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == [b"pyarrow.filesystem", b"HadoopFileSystem", b"True",
                                                            b"False"], done.stderr[-2000:]


def test_importing_numpy_or_pyarrow_alone_installs_nothing():
    done = python("import sys, numpy, pyarrow; assert 'pyarrow.filesystem' not in sys.modules; "
                  "assert not hasattr(pyarrow, 'localfs'); assert 'chap_mop.data.legacy_arrow' not in sys.modules")
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_bridge_pickles_by_reference(tmp_path):
    """cloudpickle ships the bridged ``pq`` and Petastorm's local file system factory to Spark's Python
    workers as references into this package, which the worker imports as it unpickles them."""
    import petastorm.reader
    from petastorm.fs_utils import FilesystemResolver
    from pyspark import cloudpickle
    bridged = petastorm.reader.pq
    assert pickle.loads(cloudpickle.dumps(bridged)) is bridged
    factory = FilesystemResolver(tmp_path.as_uri()).filesystem_factory()
    payload = cloudpickle.dumps(factory)
    assert b"chap_mop.data.legacy_arrow" in payload
    assert isinstance(pickle.loads(payload)(), legacy_arrow.LocalFileSystem)


def test_petastorm_reads_the_store_through_the_legacy_dataset(store):
    from petastorm import make_reader
    expected = read_split(str(store), TRAIN_DIR)
    with make_reader(store.as_uri() + "/" + TRAIN_DIR, reader_pool_type="dummy", shuffle_row_groups=False,
                     num_epochs=1) as reader:
        rows = [(row.id, row.time, row.data.shape, row.data.dtype) for row in reader]
    assert len(rows) == expected.rows
    assert [time for _, time, _, _ in rows] == list(expected.columns["time"])
    assert {(shape, dtype) for _, _, shape, dtype in rows} == {((100, 3), np.dtype(np.float32))}


def test_unischema_maps_numpy_string_types_to_spark():
    from petastorm.unischema import _numpy_to_spark_mapping
    from pyspark.sql.types import StringType
    from chap_mop.data.petastorm_metadata import window_schema
    assert _numpy_to_spark_mapping()[np.str_] == StringType()  # the mapping names np.string_ and np.unicode_
    assert window_schema().as_spark_schema()["id"].dataType == StringType()


def test_cerebro_local_store_reads_checkpoints(tmp_path):
    from cerebro.storage import LocalStore
    (tmp_path / "checkpoint.h5").write_bytes(b"weights")
    assert LocalStore(str(tmp_path)).read(str(tmp_path / "checkpoint.h5")) == b"weights"


def test_cerebro_reads_store_metadata_without_the_legacy_dataset(store):
    from cerebro.backend.spark import util as spark_util
    from cerebro.storage import LocalStore
    from pyspark.sql.types import LongType, StringType
    train_rows, val_rows, metadata, row_bytes = spark_util.get_simple_meta_from_parquet(
        LocalStore(str(store)), ["id", "time", "data", "label"])
    assert (train_rows, val_rows) == (read_split(str(store), TRAIN_DIR).rows, read_split(str(store), VAL_DIR).rows)
    assert metadata["id"]["spark_data_type"] is StringType and metadata["time"]["spark_data_type"] is LongType
    assert row_bytes > 100 * 3 * 4  # every row holds a (100, 3) float32 window


def test_hdfs_through_petastorm_is_refused_plainly():
    with pytest.raises(NotImplementedError, match="hdfs:// through Petastorm"):
        pa.hdfs.HadoopFileSystem("namenode")
