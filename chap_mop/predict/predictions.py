"""Per-subject predictions of a CHAP model or ensemble, written as DeepPostures' prediction CSVs.

A subject's day files are read in date order and concatenated. A *segment* is a maximal run of
windows that are neither sleeping nor non-wear (unlabelled windows are kept: predicting needs no
label); it goes on across day files. This project also breaks a segment wherever two neighbours
are not exactly 10 s apart (DeepPostures does not): a time gap is never inside one sequence.

Each model predicts sequences of its own ``T`` windows inside each segment of ``L`` windows
(``--padding``): ``drop`` chunks of ``T`` from the segment start, the last ``L % T`` windows get
no row; ``zero`` pads the segment with all-zero windows to a multiple of ``T`` and discards the
padded rows; ``wrap`` predicts the last partial chunk from the last ``T`` windows, keeping the
earlier chunk's predictions where they overlap. A segment shorter than ``T`` gets no row under
``drop`` and ``wrap``. An ensemble's members vote (:func:`chap_mop.predict.inference.vote`).

DeepPostures' ``CHAP`` vote (``Settings.members``) differs in which windows get a row: each
member's own CSV goes to its own folder, and the vote's CSV holds, per segment, the members' rows
cut to the shortest member's count, with each member's word in a column of its own
(``predictions_A`` ...). Under every padding a member's rows are a prefix of the segment, so
these are the windows every member predicted; three members always have a majority. Two choices
differ from DeepPostures: the cut is per segment also without the segment column (DeepPostures'
``--no-segment`` branch cuts the whole subject's rows, pairing different windows of the members),
and a subject without such a window gets a header-only CSV (DeepPostures writes none).

Functions marked *executor side* run in Spark tasks; each Python worker loads a model once.
"""
import csv
import json
import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from chap_mop.predict import inference
from chap_mop.errors import InputError
from chap_mop.data.h5_format import read_day_file
from chap_mop.data.prep import open_day_file
from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW, WINDOW_SECONDS

PADDING_MODES = ("drop", "zero", "wrap")
WORDS = {0: "sitting", 1: "not-sitting", -1: "no-label"}  # DeepPostures' --activpal-label-map, inverted
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MARKER = ".chap_mop_predictions"  # written first into a predictions folder: its CSVs are ours
ENTRIES_SHOWN = 3


@dataclass(frozen=True)
class Member:
    """A member of DeepPostures' CHAP vote: its column in the vote's CSV and the folder of its own CSVs."""
    column: str  # e.g. predictions_A
    out_dir: str  # e.g. <predictions dir>/CHAP_A, visible to every worker


@dataclass(frozen=True)
class Settings:
    """What every subject's task needs: the models (files, best first), where and how to write."""
    models: tuple[str, ...]
    out_dir: str  # <predictions dir>/<model name>, visible to every worker
    padding: str = "drop"
    output_label: bool = False
    segment: bool = True
    probabilities: bool = False
    batch_size: int = 256  # sequences per predict call
    words: tuple[str, str, str] = (WORDS[0], WORDS[1], WORDS[-1])  # for labels 0, 1 and -1
    members: tuple[Member, ...] = ()  # DeepPostures' CHAP vote: one per model, in the order of ``models``


def label_words(label_map: str | None) -> tuple[str, str, str]:
    """The words for labels 0, 1 and -1 from DeepPostures' ``--activpal-label-map`` (JSON, word -> label).

    :param label_map: e.g. ``'{"sitting": 0, "not-sitting": 1, "no-label": -1}'``; None: that default.
    :raises InputError: not a JSON object of words to each of 0, 1 and -1 exactly once.
    """
    if label_map is None:
        return WORDS[0], WORDS[1], WORDS[-1]
    expected = (f"expected a JSON object giving each of the labels 0, 1 and -1 exactly one word, e.g. "
                f"'{json.dumps({word: label for label, word in WORDS.items()})}'")
    try:
        mapping = json.loads(label_map)
    except ValueError as error:
        raise InputError(f"--activpal-label-map {label_map}: not JSON ({error}); {expected}") from None
    if not isinstance(mapping, dict):
        raise InputError(f"--activpal-label-map {label_map}: {expected}")
    labels = list(mapping.values())
    # type() rather than isinstance(): JSON's true and false would pass as 1 and 0
    if (any(type(label) is not int for label in labels) or sorted(labels) != sorted(WORDS)
            or not all(word.strip() for word in mapping)):
        raise InputError(f"--activpal-label-map {label_map}: {expected}")
    words = {label: word for word, label in mapping.items()}
    return words[0], words[1], words[-1]


def read_subject(fs: pafs.FileSystem, day_files: list[str]) -> dict[str, np.ndarray]:
    """One subject's day files (sorted by name, YYYY-MM-DD = date order), concatenated.

    :return: ``time`` (N,) int64 s, ``data`` (N, 100, 3) float32 g, ``non_wear``, ``sleeping``
        (N,) int32 0/1, ``label`` (N,) int32 -1/0/1.
    """
    days = []
    for path in sorted(day_files, key=lambda p: Path(p).name):
        with open_day_file(fs, path) as file:
            days.append(read_day_file(file, name=path))
    return {name: np.concatenate([day[name] for day in days]) for name in days[0]}


def segment_index(time: np.ndarray, non_wear: np.ndarray, sleeping: np.ndarray) -> np.ndarray:
    """(N,) int64 0-based segment of each window, -1 for sleeping or non-wear windows.

    :param time: (N,) int64 window start, s.  :param non_wear, sleeping: (N,) 0/1.
    """
    kept = (np.asarray(non_wear) == 0) & (np.asarray(sleeping) == 0)
    continues = np.zeros(len(kept), dtype=bool)
    continues[1:] = kept[:-1] & (np.diff(time) == WINDOW_SECONDS)
    starts = kept & ~continues
    return np.where(kept, np.cumsum(starts) - 1, -1).astype(np.int64)


def sequence_layout(lengths: np.ndarray, seq_len: int, padding: str) -> tuple[np.ndarray, np.ndarray]:
    """The stream of windows a model reads for segments of ``lengths`` windows, and its sequences.

    :param lengths: (S,) windows per segment, segments back to back in the kept windows.
    :return: ``source`` (M,) int64, the kept window at each stream row or -1 for a zero (padding)
        window, and ``starts`` (k,) ascending first stream row of each sequence of ``seq_len``.
    """
    lengths = np.asarray(lengths, np.int64)
    first = np.cumsum(lengths) - lengths
    chunks = -(-lengths // seq_len) if padding == "zero" else lengths // seq_len
    padded = chunks * seq_len if padding == "zero" else lengths
    offset = np.cumsum(padded) - padded
    segment = np.repeat(np.arange(len(lengths)), padded)
    position = np.arange(padded.sum()) - offset[segment]
    source = np.where(position < lengths[segment], first[segment] + position, -1)
    chunk = np.arange(chunks.sum()) - np.repeat(np.cumsum(chunks) - chunks, chunks)  # within its segment
    starts = np.repeat(offset, chunks) + seq_len * chunk
    if padding == "wrap":
        tail = (lengths % seq_len > 0) & (lengths >= seq_len)
        starts = np.sort(np.concatenate([starts, (offset + lengths - seq_len)[tail]]))
    return source, starts


def predict_member(model, data: np.ndarray, lengths: np.ndarray, padding: str, batch_size: int) -> np.ndarray:
    """One model's probability of sitting for each kept window: (n,) float32, NaN where not predicted.

    :param data: (n, 100, 3) float32 g, the kept windows, segments back to back.
    """
    source, starts = sequence_layout(lengths, inference.windows_per_sequence(model), padding)
    stream = np.zeros((len(source), SAMPLES_PER_WINDOW, AXES), np.float32)
    real = source >= 0
    stream[real] = data[source[real]]
    predicted = inference.predict_sequences(model, stream, starts, batch_size)
    probability = np.full(len(data), np.nan, np.float32)
    probability[source[real]] = predicted[real]
    return probability


def mean_probability(probabilities: np.ndarray) -> np.ndarray:
    """(n,) float32 mean of (models, n) probabilities over the models that predicted each window, NaN where none did."""
    with np.errstate(invalid="ignore"):  # 0 / 0 = NaN where no model predicted the window
        mean = np.nansum(probabilities, axis=0) / np.isfinite(probabilities).sum(axis=0)
    return mean.astype(np.float32)


def predict_windows(models: list, data: np.ndarray, lengths: np.ndarray, padding: str, batch_size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Class (n,) int8 (-1: no prediction) and probability of sitting (n,) float32 of each kept window.

    Each model (best first) predicts with its own sequences; the classes are voted, and the
    probability is the mean over the models that predicted the window (NaN where none did).
    """
    probabilities = np.stack([predict_member(m, data, lengths, padding, batch_size) for m in models])
    voted = inference.vote(np.stack([inference.classes(p) for p in probabilities]))
    return voted, mean_probability(probabilities)


def header(settings: Settings) -> list[str]:
    """The CSV's columns, as DeepPostures names and orders them (its CHAP vote adds a column per
    member after ``prediction``), plus ``probability_sitting``."""
    return ((["segment"] if settings.segment else []) + ["timestamp"] + (["label"] if settings.output_label else [])
            + ["prediction"] + [member.column for member in settings.members]
            + (["probability_sitting"] if settings.probabilities else []))


def csv_rows(settings: Settings, segment: np.ndarray, time: np.ndarray, label: np.ndarray,
             predicted: np.ndarray, probability: np.ndarray, member_predicted: np.ndarray | None = None
             ) -> list[tuple[str, ...]]:
    """One row per window, in the given order; ``timestamp`` is the window start in local time.

    :param segment, time (s), label, predicted: (n,) ints.  :param probability: (n,) of sitting.
    :param member_predicted: (members, n) classes of the CHAP vote's members, for ``settings.members``.
    """
    words = dict(zip((0, 1, -1), settings.words))
    columns = ([[str(s) for s in segment.tolist()]] if settings.segment else []) + \
        [[datetime.fromtimestamp(t).strftime(TIME_FORMAT) for t in time.tolist()]] + \
        ([[words[y] for y in label.tolist()]] if settings.output_label else []) + \
        [[words[p] for p in predicted.tolist()]] + \
        [[words[p] for p in member.tolist()] for member in (member_predicted if settings.members else [])] + \
        ([[f"{p:.4f}" for p in probability.tolist()]] if settings.probabilities else [])
    return list(zip(*columns))


def write_csv(path: Path, columns: list[str], rows: list[tuple[str, ...]]) -> None:
    """Write ``path`` whole or not at all: to a hidden partial file beside it, then renamed."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(partial, path)


def write_subject(settings: Settings, subject: str, windows: dict[str, np.ndarray], segment: np.ndarray,
                  kept: np.ndarray, predicted: np.ndarray, probability: np.ndarray,
                  member_predicted: np.ndarray | None = None) -> int:
    """Write ``<settings.out_dir>/<subject>.csv``: a row for each kept window with a prediction.

    :param windows: the subject's arrays (:func:`read_subject`).  :param segment: (N,) of each window.
    :param kept: (n,) indices of the kept windows; ``predicted`` (n,) class or -1, ``probability`` (n,)
        of sitting and ``member_predicted`` (members, n) are theirs.
    :return: the rows written.
    """
    has = predicted >= 0
    rows = kept[has]
    write_csv(Path(settings.out_dir) / f"{subject}.csv", header(settings),
              csv_rows(settings, segment[rows], windows["time"][rows], windows["label"][rows], predicted[has],
                       probability[has], None if member_predicted is None else member_predicted[:, has]))
    return len(rows)


def predict_subject(fs: pafs.FileSystem, subject: str, day_files: list[str], settings: Settings) -> tuple[str, int]:
    """*Executor side.* Predict one subject and write ``<out_dir>/<subject>.csv`` (header only without
    any predicted window); for DeepPostures' CHAP vote, each member's own CSV first.

    :return: the subject and the windows written to ``<out_dir>/<subject>.csv``.
    """
    windows = read_subject(fs, day_files)
    segment = segment_index(windows["time"], windows["non_wear"], windows["sleeping"])
    kept = np.flatnonzero(segment >= 0)
    lengths = np.bincount(segment[kept])  # segments are numbered in order: windows per segment
    models = [inference.cached_model(path) for path in settings.models]
    if settings.members:
        return subject, write_chap_vote(models, settings, subject, windows, segment, kept, lengths)
    predicted, probability = predict_windows(models, windows["data"][kept], lengths, settings.padding,
                                             settings.batch_size)
    return subject, write_subject(settings, subject, windows, segment, kept, predicted, probability)


def write_chap_vote(models: list, settings: Settings, subject: str, windows: dict[str, np.ndarray],
                    segment: np.ndarray, kept: np.ndarray, lengths: np.ndarray) -> int:
    """*Executor side.* DeepPostures' CHAP vote: each member's own CSV, then the vote's with a column
    per member. Arguments as :func:`write_subject`'s, ``lengths`` (S,) windows per segment.

    :return: the rows of the vote's CSV.
    """
    probabilities = np.stack([predict_member(model, windows["data"][kept], lengths, settings.padding,
                                             settings.batch_size) for model in models])
    member_predicted = np.stack([inference.classes(p) for p in probabilities])
    for member, own, probability in zip(settings.members, member_predicted, probabilities):
        write_subject(replace(settings, out_dir=member.out_dir, members=()), subject, windows, segment, kept, own,
                      probability)
    everyone = (member_predicted >= 0).all(axis=0)  # DeepPostures cuts to the shortest member's rows
    predicted = np.where(everyone, inference.vote(member_predicted), inference.NO_PREDICTION).astype(np.int8)
    return write_subject(settings, subject, windows, segment, kept, predicted, mean_probability(probabilities),
                         member_predicted)


def check_predictions_dir(root: Path) -> None:
    """Refuse a ``root`` that is a file, or a non-empty folder without the marker (left untouched).

    :raises InputError: naming the folder and a few of its entries.
    """
    if root.is_file():
        raise InputError(f"predictions folder {root} is a file; expected a folder")
    names = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if names and MARKER not in names:
        shown = ", ".join(names[:ENTRIES_SHOWN]) + (", ..." if len(names) > ENTRIES_SHOWN else "")
        raise InputError(f"predictions folder {root} is not empty and holds no predictions of this project "
                         f"({len(names)} {'entry' if len(names) == 1 else 'entries'}: {shown}); choose a new or "
                         "empty folder")


def claim_predictions_dir(root: Path, model_name: str) -> Path:
    """Check ``root``, mark it as a predictions folder of this project and make its model folder.

    :return: ``<root>/<model_name>``, where the subjects' CSVs go.
    """
    check_predictions_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("Predictions written by make_predictions.py, which may replace its CSVs.\n")
    (root / model_name).mkdir(exist_ok=True)
    return root / model_name
