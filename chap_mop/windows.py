"""The sequences of 10-second windows that the CHAP BiLSTM reads.

Rules (DeepPostures' own training, docs section 3), for a window size of ``W`` minutes:

* a sequence holds ``T = 6 * W`` windows of one subject, in time order, exactly 10 s apart;
* a run of valid windows breaks at any window that is non-wear, sleeping or unlabelled (-1),
  at a change of subject, and wherever two neighbours are not exactly 10 s apart;
* each run is cut into non-overlapping chunks of ``T`` windows from its start; the remainder
  shorter than ``T`` is dropped.

:func:`count_sequences` applies the rules in NumPy (the driver's count before training);
:func:`make_transformation_fn` applies them in tf.data inside cerebro's ``transformation_fn``,
so each worker builds sequences from its own partition while it streams it.
"""
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from chap_mop.schema import AXES, SAMPLES_PER_WINDOW, WINDOW_SECONDS, WINDOWS_PER_MINUTE

FIELDS = ("id", "time", "data", "non_wear", "sleeping", "label")
# Rows are gathered into blocks before the vectorised run search; a run that reaches the end
# of a block is carried into the next one, so the block size changes speed, never results.
DEFAULT_BLOCK_ROWS = 2048


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
    valid = (np.asarray(non_wear) == 0) & (np.asarray(sleeping) == 0) & (np.asarray(label) >= 0)
    starts = np.flatnonzero(run_starts(np.asarray(ids), np.asarray(time), valid))
    if len(starts) == 0:
        return 0
    valid_before = np.concatenate([[0], np.cumsum(valid)])
    ends = np.append(starts[1:], len(valid))
    run_lengths = valid_before[ends] - valid_before[starts]  # valid rows from a start to the next
    return int(np.sum(run_lengths // seq_len))


def make_transformation_fn(seq_len: int, block_rows: int = DEFAULT_BLOCK_ROWS, shuffle_buffer: int = 0
                           ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """cerebro ``transformation_fn`` turning a stream of Petastorm rows into CHAP sequences.

    :param seq_len: Windows per sequence, ``T``.
    :param block_rows: Rows per vectorised block (a speed setting only).
    :param shuffle_buffer: Sequences held to shuffle their order (0: keep time order). cerebro
        reads each partition in order, so without it a batch holds one subject's consecutive
        sequences.
    :return: A function mapping a dataset of rows (``id``, ``time``, ``data`` (100, 3) float32 g,
        ``non_wear``, ``sleeping``, ``label``) to a dataset of
        ``{"data": (T, 100, 3, 1) float32, "label": (T,) int32}``, one element per sequence.
    """
    def transform(rows: tf.data.Dataset) -> tf.data.Dataset:
        blocks = rows.map(lambda row: {name: getattr(row, name) for name in FIELDS}).batch(block_rows)
        empty_carry = {
            "id": tf.zeros([0], tf.string), "time": tf.zeros([0], tf.int64),
            "data": tf.zeros([0, SAMPLES_PER_WINDOW, AXES], tf.float32),
            "non_wear": tf.zeros([0], tf.int32), "sleeping": tf.zeros([0], tf.int32),
            "label": tf.zeros([0], tf.int32),
        }
        sequences = blocks.scan(empty_carry, lambda carry, block: _cut_block(carry, block, seq_len)).unbatch()
        return sequences.shuffle(shuffle_buffer) if shuffle_buffer else sequences

    return transform


def _cut_block(carry: dict, block: dict, seq_len: int) -> tuple[dict, dict]:
    """One scan step: (open run carried from earlier blocks + this block) -> (new carry, sequences)."""
    rows = {name: tf.concat([carry[name], block[name]], axis=0) for name in FIELDS}
    valid = (rows["non_wear"] == 0) & (rows["sleeping"] == 0) & (rows["label"] >= 0)
    continues = tf.concat([[False], valid[:-1] & tf.equal(rows["id"][1:], rows["id"][:-1])
                           & tf.equal(rows["time"][1:] - rows["time"][:-1], WINDOW_SECONDS)], axis=0)
    starts = valid & ~continues

    valid_index = tf.where(valid)[:, 0]  # positions of valid rows in ``rows``
    run_of_valid = tf.cumsum(tf.cast(tf.gather(starts, valid_index), tf.int32)) - 1
    num_runs = tf.reduce_sum(tf.cast(starts, tf.int32))
    run_first = tf.math.unsorted_segment_min(tf.range(tf.size(valid_index)), run_of_valid, num_runs)
    run_length = tf.math.unsorted_segment_sum(tf.ones_like(run_of_valid), run_of_valid, num_runs)
    position = tf.range(tf.size(valid_index)) - tf.gather(run_first, run_of_valid)
    complete = (position // seq_len + 1) * seq_len <= tf.gather(run_length, run_of_valid)
    # The last run is still open when the block ends on a valid row: keep its tail for the next block.
    open_run = tf.logical_and(valid[-1], tf.equal(run_of_valid, num_runs - 1))
    keep = tf.boolean_mask(valid_index, complete)
    carried = tf.boolean_mask(valid_index, open_run & ~complete)

    new_carry = {name: tf.gather(rows[name], carried) for name in FIELDS}
    sequences = {
        "data": tf.reshape(tf.gather(rows["data"], keep), [-1, seq_len, SAMPLES_PER_WINDOW, AXES, 1]),
        "label": tf.reshape(tf.gather(rows["label"], keep), [-1, seq_len]),
    }
    return new_carry, sequences
