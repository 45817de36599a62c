"""The sequences of 10-second windows that the CHAP BiLSTM reads.

Rules (DeepPostures' own training, docs section 3), for a window size of ``W`` minutes:

* a sequence holds ``T = 6 * W`` windows of one subject, in time order, exactly 10 s apart;
* a run of valid windows breaks at any window that is non-wear, sleeping or unlabelled (-1),
  at a change of subject, and wherever two neighbours are not exactly 10 s apart;
* each run is cut into non-overlapping chunks of ``T`` windows from its start; the remainder
  shorter than ``T`` is dropped.

:func:`count_sequences` applies the rules in NumPy (the driver's count before training);
:func:`cut_sequences` applies them to a worker's row groups, also in NumPy, and
:func:`make_transformation_fn` feeds its sequences to Keras through tf.data.
"""
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW, WINDOW_SECONDS, WINDOWS_PER_MINUTE

FIELDS = ("id", "time", "data", "non_wear", "sleeping", "label")


def sequence_length(win_size_minutes: int) -> int:
    """Windows per sequence: 6 per minute (7 min -> 42, 9 min -> 54)."""
    return WINDOWS_PER_MINUTE * int(win_size_minutes)


def run_starts(ids: np.ndarray, time: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N,) bool: True where a valid window starts a new run (its predecessor cannot continue it)."""
    continues = np.zeros(len(valid), dtype=bool)
    continues[1:] = valid[:-1] & (ids[1:] == ids[:-1]) & (np.diff(time) == WINDOW_SECONDS)
    return valid & ~continues


def count_sequences(ids: np.ndarray, time: np.ndarray, non_wear: np.ndarray, sleeping: np.ndarray,
                    label: np.ndarray, seq_len: int) -> int:
    """Number of full sequences of ``seq_len`` windows in one ordered stream of rows.

    :param ids: (N,) subject ids.  :param time: (N,) int64 window start, s.
    :param non_wear: (N,) 0/1.  :param sleeping: (N,) 0/1.  :param label: (N,) -1/0/1.
    """
    return len(sequence_starts(ids, time, non_wear, sleeping, label, seq_len)[0])


def sequence_starts(ids: np.ndarray, time: np.ndarray, non_wear: np.ndarray, sleeping: np.ndarray,
                    label: np.ndarray, seq_len: int) -> tuple[np.ndarray, int]:
    """Where every full sequence starts in one ordered stream of rows, and where its open end begins.

    A run is a contiguous range of valid rows, so sequence ``k`` of a run starting at row ``s`` is
    rows ``s + k T`` to ``s + (k + 1) T - 1``.

    :return: (sequences,) int64 start rows, and the first row of the last run's incomplete tail when
        the stream ends inside a run (it may continue in the rows that follow), else ``len(rows)``.
    """
    valid = (np.asarray(non_wear) == 0) & (np.asarray(sleeping) == 0) & (np.asarray(label) >= 0)
    first = run_starts(np.asarray(ids), np.asarray(time), valid)
    last = valid & ~np.append(valid[1:] & ~first[1:], False)  # valid rows the next row does not continue
    run_first, run_last = np.flatnonzero(first), np.flatnonzero(last)
    per_run = (run_last - run_first + 1) // seq_len
    offsets = np.arange(per_run.sum()) - np.repeat(np.cumsum(per_run) - per_run, per_run)
    starts = np.repeat(run_first, per_run) + offsets * seq_len
    tail = len(valid)
    if len(valid) and valid[-1]:
        tail = int(run_first[-1] + per_run[-1] * seq_len)
    return starts, tail


def cut_sequences(blocks: Iterable[dict[str, np.ndarray]], seq_len: int
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The sequences of a stream of row blocks (e.g. a worker's row groups), in order, vectorised.

    A run still open at the end of a block goes on into the next one, as if the blocks were one
    stream: its tail (fewer than T rows) is carried, and only the sequences that start in it are
    gathered from a joined copy.

    :param blocks: dicts of :data:`FIELDS` columns, ``data`` (rows, 100, 3) float32 g.
    :return: per block, data (k, T, 100, 3, 1) float32 g and labels (k, T) int32.
    """
    window = np.arange(seq_len)
    small_fields = [name for name in FIELDS if name != "data"]
    carry = {"time": np.zeros(0)}
    for block in blocks:
        n_carry = len(carry["time"])
        small = {name: np.concatenate([carry[name], block[name]]) if n_carry else block[name] for name in small_fields}
        starts, tail = sequence_starts(*(small[name] for name in small_fields), seq_len)
        in_carry = int(np.searchsorted(starts, n_carry))
        data = block["data"][(starts[in_carry:] - n_carry)[:, None] + window]
        if in_carry:
            joined = np.concatenate([carry["data"], block["data"][:seq_len]])
            data = np.concatenate([joined[starts[:in_carry, None] + window], data])
        yield data[..., None], small["label"][starts[:, None] + window]
        carry_data = block["data"][tail - n_carry:] if tail >= n_carry else \
            np.concatenate([carry["data"][tail:], block["data"]])  # a run through the whole block
        carry = {**{name: values[tail:] for name, values in small.items()}, "data": carry_data}


def shuffled_blocks(blocks: Iterable[tuple[np.ndarray, np.ndarray]], carried: int, rng: np.random.Generator
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The sequences of ``blocks`` in a random order, as blocks again.

    Each block is shuffled together with ``carried`` sequences held back from the blocks before it,
    so that sequences of one row group (a few subjects) mix with earlier ones; the held sequences
    come out, shuffled, after the last block. The order depends on ``rng`` alone, not on
    TensorFlow's seeds.

    :param blocks: data (k, T, 100, 3, 1) float32 g and labels (k, T) int32, as :func:`cut_sequences` gives.
    """
    held: tuple[np.ndarray, np.ndarray] | None = None
    for data, labels in blocks:
        if held is not None:
            data, labels = np.concatenate([held[0], data]), np.concatenate([held[1], labels])
        out, rest = np.split(rng.permutation(len(data)), [max(len(data) - carried, 0)])
        if len(out):
            yield data[out], labels[out]
        held = data[rest], labels[rest]
    if held is not None and len(held[0]):
        yield held


def make_transformation_fn(seq_len: int, shuffle_buffer: int = 0) -> Callable[..., tf.data.Dataset]:
    """cerebro ``transformation_fn`` turning a worker's shard into a tf.data pipeline of CHAP sequences.

    The shard's row groups are read and cut by :func:`cut_sequences` (and shuffled by
    :func:`shuffled_blocks`) in a tf.data generator (NumPy, no per-row work), one element per
    sequence; cerebro's dataset function batches and prefetches them, so reading overlaps training.

    The shuffle is NumPy's, seeded per call: seeding TensorFlow instead (``tf.random.set_seed``
    before each sub-epoch) clears its cache of compiled functions, so every visit of a cached model
    paid for building its ``fit`` and ``evaluate`` graphs again (measured: an amp-1 visit of 2.5 s
    took 3.2 to 6.2 s).

    :param seq_len: Windows per sequence, ``T``.
    :param shuffle_buffer: Sequences carried from one row group to the next to shuffle their order
        (0: keep time order). A shard is read in order, so without it a batch holds one subject's
        consecutive sequences.
    :return: A function from a :class:`chap_mop.data.shard_reader.ShardReader` (and a shuffle seed, None
        for a fresh one) to a dataset of ``{"data": (T, 100, 3, 1) float32, "label": (T,) int32}``.
    """
    signature = (tf.TensorSpec((None, seq_len, SAMPLES_PER_WINDOW, AXES, 1), tf.float32),
                 tf.TensorSpec((None, seq_len), tf.int32))

    def transform(reader, seed: int | None = None) -> tf.data.Dataset:
        def sequence_blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            blocks = cut_sequences(reader.read(), seq_len)
            return shuffled_blocks(blocks, shuffle_buffer, np.random.default_rng(seed)) if shuffle_buffer else blocks

        blocks = tf.data.Dataset.from_generator(sequence_blocks, output_signature=signature)
        return blocks.unbatch().map(lambda data, label: {"data": data, "label": label})

    return transform
