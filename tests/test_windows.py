"""Sequences cut from blocks of rows match an independent walk in plain Python, for 7- and 9-minute
windows, whatever the block boundaries; the tf.data pipeline delivers them all."""
import numpy as np
import pytest

from chap_mop import cerebro_compat
cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches
from chap_mop.dev.demo_data import generate_subject
from chap_mop.data.windows import (FIELDS, count_sequences, cut_sequences, make_transformation_fn, sequence_length,
                              shuffled_blocks)


def reference_sequences(ids, time, non_wear, sleeping, label, seq_len):
    """Start rows of every sequence, by walking the rows one at a time (independent of chap_mop)."""
    starts, run = [], []
    for i in range(len(ids)):
        valid = non_wear[i] == 0 and sleeping[i] == 0 and label[i] != -1
        continues = bool(run) and ids[i] == ids[run[-1]] and time[i] - time[run[-1]] == 10 and run[-1] == i - 1
        if not valid:
            run = []
            continue
        run = run + [i] if continues else [i]
        if len(run) == seq_len:
            starts.append(run[0])
            run = []
    return starts


@pytest.fixture(scope="module")
def stream():
    """Rows of three generated subjects back to back, plus a subject change without a time gap."""
    parts = []
    for index in range(3):
        for _, columns in generate_subject(f"s{index}", days=2, hours_per_day=24 if index == 0 else 9, seed=3):
            parts.append({"id": np.full(len(columns["time"]), f"s{index}"), **columns})
    rows = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    # s2 picks up exactly 10 s after s1 ends: only the subject change breaks the run there.
    first_s2 = np.flatnonzero(rows["id"] == "s2")[0]
    rows["time"][first_s2:] += rows["time"][first_s2 - 1] + 10 - rows["time"][first_s2]
    rows["time"] = rows["time"].astype(np.int64)
    rows["data"] = rows["data"].astype(np.float32)
    for name in ("non_wear", "sleeping", "label"):
        rows[name] = rows[name].astype(np.int32)
    return rows


class Blocks:
    """Rows handed out in blocks of ``size``, as a worker's reader hands out row groups."""

    def __init__(self, rows: dict, size: int):
        self.rows, self.size = rows, size

    def read(self):
        for start in range(0, len(self.rows["time"]), self.size):
            yield {name: self.rows[name][start:start + self.size] for name in FIELDS}


def cut(rows: dict, seq_len: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    parts = list(cut_sequences(Blocks(rows, block_size).read(), seq_len))
    return np.concatenate([data for data, _ in parts]), np.concatenate([label for _, label in parts])


@pytest.mark.parametrize("win_size", [7, 9])
def test_sequences_match_independent_count(stream, win_size):
    seq_len = sequence_length(win_size)
    small = {name: stream[name] for name in ("id", "time", "non_wear", "sleeping", "label")}
    expected_starts = reference_sequences(*small.values(), seq_len)
    assert len(expected_starts) > 20
    assert count_sequences(*small.values(), seq_len) == len(expected_starts)

    data, label = cut(stream, seq_len, block_size=500)
    assert data.shape == (len(expected_starts), seq_len, 100, 3, 1) and label.shape == (len(expected_starts), seq_len)
    for sequence, labels, start in zip(data, label, expected_starts):
        np.testing.assert_array_equal(sequence[..., 0], stream["data"][start:start + seq_len])
        np.testing.assert_array_equal(labels, stream["label"][start:start + seq_len])


def test_block_boundaries_change_nothing(stream):
    seq_len = sequence_length(7)
    head = {name: values[:6000] for name, values in stream.items()}
    whole = cut(head, seq_len, block_size=6000)
    assert len(whole[0]) > 0
    for block_size in (1, 7, seq_len - 1, seq_len, 64, 4096):
        data, label = cut(head, seq_len, block_size)
        np.testing.assert_array_equal(data, whole[0])
        np.testing.assert_array_equal(label, whole[1])


def test_rules_on_a_hand_made_stream():
    seq_len = 3
    time = np.array([0, 10, 20, 30, 40, 50, 60, 80, 90, 100, 110, 120], dtype=np.int64)
    ids = np.array(["a"] * 9 + ["b"] * 3)
    label = np.array([0, 1, 0, 1, -1, 0, 0, 1, 1, 0, 1, 0], dtype=np.int32)
    zeros = np.zeros(len(time), np.int32)
    # a: 0-30 is one run (one sequence, remainder 1 dropped); 40 unlabelled; 50-60 then a 20-s gap;
    # 80-90 (too short); b: 100-120 is one sequence although 100 follows 90 by 10 s.
    assert count_sequences(ids, time, zeros, zeros, label, seq_len) == 2
    asleep = zeros.copy()
    asleep[1] = 1
    assert count_sequences(ids, time, zeros, asleep, label, seq_len) == 1


def test_pipeline_delivers_every_sequence_shuffled(stream):
    seq_len = sequence_length(7)
    head = Blocks({name: values[:8000] for name, values in stream.items()}, 1000)
    in_order = [s["label"].tobytes() + s["data"].tobytes()
                for s in make_transformation_fn(seq_len)(head).as_numpy_iterator()]
    shuffled = [s["label"].tobytes() + s["data"].tobytes()
                for s in make_transformation_fn(seq_len, shuffle_buffer=16)(head).as_numpy_iterator()]
    data, label = cut(head.rows, seq_len, 1000)
    assert in_order == [l.tobytes() + d.tobytes() for d, l in zip(data, label)]
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order


def test_a_seeded_shuffle_repeats_whatever_tensorflows_seed(stream):
    """The seed sets the order alone: a hopped run and its replay agree whether or not the process
    seeded TensorFlow, and no sub-epoch has to seed TensorFlow (which drops its compiled functions)."""
    import tensorflow as tf
    seq_len = sequence_length(7)
    head = Blocks({name: values[:8000] for name, values in stream.items()}, 1000)
    transform = make_transformation_fn(seq_len, shuffle_buffer=16)

    def order(seed):
        return [s["label"].tobytes() + s["data"].tobytes() for s in transform(head, seed).as_numpy_iterator()]

    first = order(7)
    tf.random.set_seed(123)
    assert order(7) == first and order(8) != first and sorted(order(8)) == sorted(first)


def test_shuffled_blocks_carry_sequences_across_blocks_and_lose_none():
    blocks = [(np.arange(k)[:, None] + start, np.arange(k)[:, None] + start) for start, k in ((0, 5), (5, 3), (8, 4))]
    out = list(shuffled_blocks(blocks, carried=4, rng=np.random.default_rng(0)))
    assert [len(d) for d, _ in out] == [1, 3, 4, 4]  # 5 - 4 held; 3 + 4 - 4; 4 + 4 - 4; the 4 held at the end
    flat = np.concatenate([d for d, _ in out])[:, 0]
    assert sorted(flat) == list(range(12)) and list(flat) != list(range(12))
    assert all(np.array_equal(d, l) for d, l in out)  # data and labels stay paired
