"""The worker's reader on a real store written by prep_petastorm_data.py: every row exactly as Petastorm
reads it, and the sequences of each of 2 workers over several row groups equal to an independent
count (cerebro's workers read through it in test_model_selection.py and test_resume.py)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from petastorm import make_reader

from chap_mop import cerebro_compat
cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
from chap_mop.data.data_store import read_split
from chap_mop.dev.demo_data import write_demo_dataset
from chap_mop.errors import InputError
from chap_mop.data.schema import TRAIN_DIR, VAL_DIR, WINDOW_ARROW_SCHEMA
from chap_mop.data.shard_reader import ShardReader, decode_windows, row_groups
from chap_mop.data.windows import cut_sequences, make_transformation_fn, sequence_length
from conftest import prepare_in_process
from test_windows import reference_sequences

WORKERS = 2
SMALL = ("id", "time", "non_wear", "sleeping", "label")


@pytest.fixture(scope="module")
def store(spark, tmp_path_factory):
    """5 demo subjects in row groups of about 770 windows (1 MB), several per subject and file."""
    root = tmp_path_factory.mktemp("reader")
    write_demo_dataset(root / "h5", subjects=5, days=2, hours_per_day=5, seed=5)
    prepare_in_process(spark, root / "h5", root / "store", partitions=WORKERS, row_group_size_mb=1)
    return root / "store"


def shard_rows(reader: ShardReader) -> dict[str, np.ndarray]:
    blocks = list(reader.read())
    return {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}


@pytest.mark.parametrize("split", [TRAIN_DIR, VAL_DIR])
def test_every_row_reads_back_exactly_as_petastorm_reads_it(store, split):
    groups = row_groups(str(store / split))
    assert len(groups) >= 2 * WORKERS and len({group.path for group in groups}) == WORKERS
    mine = shard_rows(ShardReader(str(store / split), 0, 1))
    with make_reader((store / split).as_uri(), reader_pool_type="dummy", shuffle_row_groups=False) as reader:
        theirs = list(reader)
    assert len(mine["time"]) == len(theirs) == sum(group.rows for group in groups)
    assert mine["data"].dtype == np.float32 and mine["data"].shape == (len(theirs), 100, 3)
    np.testing.assert_array_equal(mine["data"], np.stack([row.data for row in theirs]))
    for name in ("time", "non_wear", "sleeping", "label"):
        np.testing.assert_array_equal(mine[name], [getattr(row, name) for row in theirs])
    # Subject codes change exactly where the subject does.
    names = np.array([row.id for row in theirs])
    np.testing.assert_array_equal(np.diff(mine["id"]) != 0, names[1:] != names[:-1])


@pytest.mark.parametrize("win_size", [7, 9])
def test_each_workers_sequences_equal_an_independent_count(store, win_size):
    seq_len = sequence_length(win_size)
    split = read_split(str(store), TRAIN_DIR)
    counted = split.sequences_per_worker(seq_len, WORKERS)
    for worker in range(WORKERS):
        reader = ShardReader(str(store / TRAIN_DIR), worker, WORKERS)
        rows = shard_rows(reader)
        starts = reference_sequences(*(rows[name] for name in SMALL), seq_len)
        parts = list(cut_sequences(reader.read(), seq_len))
        data = np.concatenate([d for d, _ in parts])
        assert len(starts) == len(data) == counted[worker] > 0
        for sequence, start in zip(data, starts):
            np.testing.assert_array_equal(sequence[..., 0], rows["data"][start:start + seq_len])
        pipeline = make_transformation_fn(seq_len, shuffle_buffer=64)(reader)
        assert sum(int(batch["label"].shape[0]) for batch in pipeline.batch(16)) == counted[worker]


def test_a_sub_epochs_dataset_runs_without_autotuning_and_repeats_its_seeded_order(store):
    """cerebro's workers iterate this dataset in ``fit``; with tf.data's autotuning on, dropping the
    iterator at the end waited up to the autotuner's sleep (20 s measured)."""
    from chap_mop.cerebro_compat.data_path import sub_epoch_dataset
    seq_len = sequence_length(7)
    reader = ShardReader(str(store / TRAIN_DIR), 0, WORKERS)

    def labels(seed):
        dataset = sub_epoch_dataset(reader, make_transformation_fn(seq_len, shuffle_buffer=64), 16,
                                    lambda sequences: (sequences["data"], sequences["label"]), seed)
        assert dataset.options().autotune.enabled is False
        return np.concatenate([label for _, label in dataset.as_numpy_iterator()])

    first = labels(1)
    assert len(first) == read_split(str(store), TRAIN_DIR).sequences_per_worker(seq_len, WORKERS)[0]
    assert np.array_equal(labels(1), first)


def test_data_in_another_format_is_refused(tmp_path):
    day = {"time": np.arange(3, dtype=np.int64) * 10, "non_wear": np.zeros(3, np.int32),
           "sleeping": np.zeros(3, np.int32), "label": np.zeros(3, np.int32)}
    blobs = pa.array([np.zeros((100, 3), np.float64).tobytes()] * 3, pa.binary())  # float64, no .npy header
    table = pa.Table.from_arrays([pa.array(["a"] * 3), pa.array(day["time"]), blobs,
                                  *(pa.array(day[name]) for name in ("non_wear", "sleeping", "label"))],
                                 schema=WINDOW_ARROW_SCHEMA)
    (tmp_path / "split").mkdir()
    pq.write_table(table, tmp_path / "split" / "part-00000.parquet")
    with pytest.raises(InputError, match=r"row group 0: 'data' is not one \(100, 3\) float32 .npy array per row; "
                                         "re-run prep_petastorm_data.py"):
        list(ShardReader(str(tmp_path / "split"), 0, 1).read())
    assert decode_windows(pa.chunked_array([], pa.binary()), "empty").shape == (0, 100, 3)
