"""Measurements taken in a fresh process limited to one core's worth of TensorFlow, the share of one
cerebro worker when 2 workers run on 2 cores: one intra-op and one inter-op thread.

TensorFlow fixes its thread pools when it first runs an op, so ``bench/run_bench.py`` starts this
script once per measurement instead of importing it. Each sub-command writes one JSON file:

    python -m bench.single_worker input-pipeline --store S --win-size 7 --batch-size 128 --out F
    python -m bench.single_worker train-step --win-size 7 --amp-factor 2 --l2-reg 1e-4 --lr 1e-4 \
        --batch-size 128 --steps 3 --out F
    python -m bench.single_worker one-by-one --store S --configs JSON --epochs 2 --batch-size 16 \
        --seed 0 --out F
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

from chap_mop import cerebro_compat
cerebro_compat.enable()  # TensorFlow with Keras 2, the pyarrow bridge, cerebro's patches

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from chap_mop.cerebro_compat.data_path import sub_epoch_dataset  # noqa: E402
from chap_mop.model.chap_model import build_chap_model  # noqa: E402
from chap_mop.model.metrics import COUNT_METRICS, accuracy_from_counts  # noqa: E402
from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW, TRAIN_DIR, VAL_DIR  # noqa: E402
from chap_mop.data.shard_reader import ShardReader  # noqa: E402
from chap_mop.data.windows import cut_sequences, make_transformation_fn, sequence_length  # noqa: E402
from chap_mop.selection.estimator import SHUFFLE_SEQUENCES  # noqa: E402

COLLECT_BATCH = 256  # sequences per tf.data batch when collecting a whole split into memory


def compiled_model(win_size: int, amp_factor: int, l2_reg: float, lr: float) -> tf.keras.Model:
    """The CHAP model compiled as model_selection.py's estimator compiles it (same loss and metrics)."""
    model = build_chap_model(sequence_length(win_size), amp_factor, l2_reg)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=COUNT_METRICS)
    return model


def evict(paths: list[str]) -> None:
    """Drop the files' pages from the page cache, so that the next read comes from disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed_passes(read_once, passes: int) -> list[float]:
    seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        read_once()
        seconds.append(time.perf_counter() - started)
    return seconds


def input_pipeline(store: str, win_size: int, batch_size: int, shard: int, shards: int, passes: int) -> dict:
    """Windows per second through one worker's reader and the sequence transformation, as cerebro's
    workers use them: the same reader read to the end once per sub-epoch, through a new sub-epoch
    dataset (shuffled, batched, prefetched) each time.

    The first pass is cold: the shard's files are evicted from the page cache before it, and
    tf.data builds its pipeline for the first time. Reading + decoding alone and cutting alone are
    timed apart (warm), to say what limits the whole.

    :return: per-pass seconds, rows and windows, cold and warm rates, and the parts' rates.
    """
    reader = ShardReader(f"{Path(store).resolve()}/{TRAIN_DIR}", shard, shards)
    rows, seq_len = reader.rows(), sequence_length(win_size)
    transform = make_transformation_fn(seq_len, shuffle_buffer=SHUFFLE_SEQUENCES)
    sequences = []
    evict(sorted({group.path for group in reader.groups}))
    seconds = timed_passes(lambda: sequences.append(  # the dataset a worker's fit iterates, prefetch included
        sum(int(labels.shape[0]) for labels in sub_epoch_dataset(reader, transform, batch_size, lambda s: s["label"]))),
        passes)
    read_s = statistics.median(timed_passes(lambda: sum(len(block["time"]) for block in reader.read()), 3))
    cut_s = statistics.median(timed_passes(lambda: sum(len(d) for d, _ in cut_sequences(reader.read(), seq_len)), 3))
    windows = sequences[0] * seq_len
    warm_s = statistics.median(seconds[1:]) if passes > 1 else seconds[0]
    parts = {"read_windows_per_s": rows / read_s, "read_and_cut_windows_per_s": windows / cut_s}
    limit = (f"reading + decoding alone {parts['read_windows_per_s']:,.0f} windows/s, with cutting "
             f"{parts['read_and_cut_windows_per_s']:,.0f}; the rest is tf.data's per-sequence work")
    shard_mb = sum(os.path.getsize(path) for path in {group.path for group in reader.groups}) / 2 ** 20 / shards
    return {"shard": shard, "shards": shards, "win_size": win_size, "batch_size": batch_size, "pass_s": seconds,
            "rows": rows, "sequences": sequences[0], "windows": windows, "shard_mb": shard_mb,
            "cold_rows_per_s": rows / seconds[0], "cold_windows_per_s": windows / seconds[0],
            "warm_rows_per_s": rows / warm_s, "warm_windows_per_s": windows / warm_s, **parts, "limit": limit}


def train_step(win_size: int, amp_factor: int, l2_reg: float, lr: float, batch_size: int, steps: int) -> dict:
    """Seconds per ``train_on_batch`` step of the CHAP model, and windows per second of training.

    The first step traces the training function; it is timed apart, since every cerebro
    sub-epoch loads a fresh model and pays it again.
    """
    seq_len = sequence_length(win_size)
    model = compiled_model(win_size, amp_factor, l2_reg, lr)
    rng = np.random.default_rng(0)  # values do not change the cost of a step
    x = rng.normal(0, 0.3, (batch_size, seq_len, SAMPLES_PER_WINDOW, AXES, 1)).astype(np.float32)
    y = rng.integers(0, 2, (batch_size, seq_len)).astype(np.int32)
    started = time.perf_counter()
    model.train_on_batch(x, y)
    first_step_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    step_s = (time.perf_counter() - started) / steps
    return {"win_size": win_size, "amp_factor": amp_factor, "l2_reg": l2_reg, "lr": lr, "batch_size": batch_size,
            "steps": steps, "first_step_s": first_step_s, "step_s": step_s,
            "windows_per_s": batch_size * seq_len / step_s}


def collect_sequences(store: str, split_dir: str, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sequence of one split, whole (not sharded), built by the same transformation as in training.

    :return: data (N, T, 100, 3, 1) float32 g, labels (N, T) int32.
    """
    data, labels = [], []
    for batch in make_transformation_fn(seq_len)(ShardReader(f"{Path(store).resolve()}/{split_dir}", 0, 1)
                                                 ).batch(COLLECT_BATCH):
        data.append(batch["data"].numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(data), np.concatenate(labels)


def balanced_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean recall of the classes present, from the argmax of every window's probabilities."""
    predicted = probabilities.argmax(axis=-1)
    counts = {}
    for name, true_class in (("sitting", 0), ("not_sitting", 1)):
        of_class = labels == true_class
        counts[f"{name}_windows"] = np.array([of_class.sum()], dtype=float)
        counts[f"{name}_hits"] = np.array([(of_class & (predicted == true_class)).sum()], dtype=float)
    return float(accuracy_from_counts(counts)[1][0])


def one_by_one(store: str, configs: list[dict], epochs: int, batch_size: int, seed: int) -> dict:
    """Train each configuration alone on all train sequences held in memory, validating every epoch.

    ``fit`` shuffles all sequences every epoch (seeded), as a configuration trained alone would be;
    model_selection.py shuffles 256 sequences at a time within each worker's partition. Per configuration and epoch: seconds of ``fit`` and of validation (``predict`` on all
    validation sequences), and the exact validation balanced accuracy. The first epoch's times
    include tracing the Keras functions, which later epochs reuse.
    """
    splits = {}
    for win_size in sorted({config["win_size"] for config in configs}):
        seq_len = sequence_length(win_size)
        splits[win_size] = {"train": collect_sequences(store, TRAIN_DIR, seq_len),
                            "val": collect_sequences(store, VAL_DIR, seq_len)}
    runs = []
    for config in configs:
        (x, y), (x_val, y_val) = splits[config["win_size"]]["train"], splits[config["win_size"]]["val"]
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(seed)
        model = compiled_model(config["win_size"], config["amp_factor"], config["l2_reg"], config["lr"])
        fit_s, val_s, val_balanced_accuracy = [], [], []
        for epoch in range(epochs):
            started = time.perf_counter()
            model.fit(x, y, batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch, shuffle=True, verbose=0)
            fit_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            probabilities = model.predict(x_val, batch_size=batch_size, verbose=0)
            val_s.append(time.perf_counter() - started)
            val_balanced_accuracy.append(balanced_accuracy(y_val, probabilities))
        runs.append({**config, "fit_s": fit_s, "val_s": val_s, "val_balanced_accuracy": val_balanced_accuracy})
        print(f"one-by-one {config}: fit {sum(fit_s):.1f} s, validation {sum(val_s):.1f} s, "
              f"val balanced accuracy {val_balanced_accuracy}", flush=True)
    sequences = {str(w): {"train": len(s["train"][0]), "val": len(s["val"][0])} for w, s in splits.items()}
    return {"epochs": epochs, "batch_size": batch_size, "seed": seed, "sequences": sequences, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pipeline = commands.add_parser("input-pipeline", help="one worker's reader + transformation_fn, no training")
    pipeline.add_argument("--store", required=True)
    pipeline.add_argument("--win-size", type=int, required=True, help="minutes per sequence")
    pipeline.add_argument("--batch-size", type=int, required=True, help="sequences per batch")
    pipeline.add_argument("--shard", type=int, default=0)
    pipeline.add_argument("--shards", type=int, default=2, help="cerebro workers")
    pipeline.add_argument("--passes", type=int, default=5, help="full reads of the shard (first one cold)")
    step = commands.add_parser("train-step", help="train_on_batch steps of one CHAP configuration")
    step.add_argument("--win-size", type=int, required=True)
    step.add_argument("--amp-factor", type=int, required=True)
    step.add_argument("--l2-reg", type=float, required=True)
    step.add_argument("--lr", type=float, required=True)
    step.add_argument("--batch-size", type=int, required=True)
    step.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    serial = commands.add_parser("one-by-one", help="each configuration trained alone on all data in memory")
    serial.add_argument("--store", required=True)
    serial.add_argument("--configs", type=json.loads, required=True, help="JSON list of hyper-parameter dicts")
    serial.add_argument("--epochs", type=int, required=True)
    serial.add_argument("--batch-size", type=int, required=True)
    serial.add_argument("--seed", type=int, required=True)
    for command in (pipeline, step, serial):
        command.add_argument("--out", required=True, type=Path, help="JSON file for the result")
    args = parser.parse_args()

    if args.command == "input-pipeline":
        result = input_pipeline(args.store, args.win_size, args.batch_size, args.shard, args.shards, args.passes)
    elif args.command == "train-step":
        result = train_step(args.win_size, args.amp_factor, args.l2_reg, args.lr, args.batch_size, args.steps)
    else:
        result = one_by_one(args.store, args.configs, args.epochs, args.batch_size, args.seed)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
