"""Realistic synthetic hip-accelerometer recordings in DeepPostures' day-file layout.

Model of the signal.  Each subject lives through a behaviour timeline of 10-s windows: alternating
sitting bouts (label 0, 5-90 min typical) and non-sitting bouts (label 1, 2-40 min, themselves
alternating standing and walking), nights in bed and the odd afternoon nap (sleeping 1, lying,
label 0).  Independent overlays mark non-wear (device lying still on a table: one constant
gravity vector plus sensor noise; some subjects also take it off for the night) and missing
ActivPAL labels (-1, 1-60 min).  A worn window is gravity in the body frame, set by a posture
(pitch: ~0-10 deg standing, ~10-40 deg sitting, ~90 deg lying; plus a sideways lean and a slow
posture drift), plus body movement (smoothed noise whose intensity is low when sitting, with
fidgeting bursts, low-moderate when standing, and a periodic 1.3-2.1 Hz step pattern with its
harmonic when walking).  It is then turned by the subject's own device mounting rotation and
distorted by per-axis gain and offset errors and sensor noise.  Per-subject movement levels,
posture mixtures and mounting make the classes overlap, so sitting is learnable but not trivial.

The recording starts on 2021-03-01 plus a per-subject offset, at a random time between 8:00 and
15:00 (UTC).  Each of ``days`` recording periods lasts ``hours_per_day`` hours and starts at that
same time of day; windows are 10 s apart within a period (24-hour periods join into one
continuous recording) and are split at midnight into one file per calendar date.
"""
import argparse
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from chap_mop.data.h5_format import DAY_FILE_SUFFIX, read_day_file, write_day_file
from chap_mop.data.schema import AXES, SAMPLES_PER_WINDOW, WINDOW_SECONDS, WINDOWS_PER_MINUTE

SAMPLE_SECONDS = WINDOW_SECONDS / SAMPLES_PER_WINDOW  # 0.1 s: 10 Hz
DAY_SECONDS = 86400
EPOCH = date(1970, 1, 1)
FIRST_DATE = date(2021, 3, 1)

# Segment kinds; a segment is a stretch of one posture/activity with fixed parameters.
SIT, STAND, WALK, SLEEP, NAP = range(5)
LABEL_OF_KIND = np.array([0, 1, 1, 0, 0])  # the ActivPAL records lying as sitting/lying
IN_BED = np.array([False, False, False, True, True])

# Durations in minutes as (median, log-normal sigma, lowest, highest).
SIT_BOUT = (18.0, 0.7, 3.0, 180.0)
NOT_SIT_BOUT = (10.0, 0.7, 2.0, 60.0)
SIT_POSTURE = (15.0, 0.6, 2.0, 90.0)
STAND_SPELL = (2.0, 0.8, 0.34, 15.0)
WALK_SPELL = (3.0, 0.8, 0.34, 20.0)
SLEEP_POSTURE = (40.0, 0.6, 5.0, 180.0)
NON_WEAR = (40.0, 0.7, 15.0, 180.0)
NO_LABEL = (10.0, 0.9, 1.0, 60.0)
LATE_LABEL_START = (5.0, 1.0, 0.0, 20.0)  # the ActivPAL starts a little after the hip device
OFF_BEFORE_BED = (15.0, 0.5, 0.0, 30.0)  # subjects who take the device off for the night
ON_AFTER_WAKE = (20.0, 0.5, 0.0, 60.0)
NON_WEAR_PER_HOUR = 1 / 12
NO_LABEL_PER_HOUR = 1 / 6

SMOOTHING_SAMPLES = 4  # body-movement noise is a 0.4-s moving average of white noise
DRIFT_WINDOWS = 30  # posture drift is a 5-min moving average of white noise
DRIFT_DEGREES = 3.0
MOVEMENT_AXIS_WEIGHT = np.array([0.8, 1.0, 0.9])  # body frame: lateral, vertical, front-back

# Per-kind segment parameters, indexed by SIT, STAND, WALK, SLEEP, NAP.
PITCH = (np.array([12.0, 4.0, 3.0, 88.0, 65.0]), np.array([6.0, 5.0, 4.0, 6.0, 10.0]))  # mean, sd, degrees
RECLINED_PITCH = (30.0, 8.0)  # sitting postures that lean back: mean, sd, degrees
LEAN_SD = np.array([25.0, 40.0, 30.0, 15.0, 15.0])  # degrees
# Movement standard deviation: log-normal median (g) and sigma.
INTENSITY = (np.array([0.008, 0.025, 0.06, 0.003, 0.003]), np.array([0.5, 0.6, 0.3, 0.4, 0.4]))
BURST_SHARE = np.array([0.35, 0.3, 0.0, 0.05, 0.05])  # highest share of windows with a burst
BURST_GAIN = (np.array([3.0, 2.0, 1.0, 5.0, 5.0]), np.array([8.0, 4.0, 1.0, 15.0, 15.0]))  # low, high


@dataclass(frozen=True)
class _Subject:
    """Traits fixed for one subject: mounting, calibration, movement level, habits."""

    start: float  # first window, s since the epoch
    rotation: np.ndarray  # (3, 3) body frame -> device frame
    gain: np.ndarray  # (3,) per-axis gain
    offset: np.ndarray  # (3,) per-axis offset, g
    sensor_noise: np.ndarray  # (3,) white noise per axis, g
    movement: float  # multiplies every movement intensity
    gait: float  # multiplies the walking amplitude
    reclined_share: float  # share of sitting postures that lean back
    bed_hour: float  # usual bedtime, hours after midnight
    wake_hour: float  # usual wake time, hours after midnight
    nap_chance: float  # chance of an afternoon nap each day
    off_in_bed: bool  # takes the device off for the night


@dataclass(frozen=True)
class _Timeline:
    """Per-window behaviour over the whole recording span, and per-segment parameters."""

    segment: np.ndarray  # (n,) segment index of each window
    non_wear: np.ndarray  # (n,) bool
    table: np.ndarray  # (n, 3) device-frame gravity while off (rows of worn windows unused)
    label: np.ndarray  # (n,) -1/0/1
    drift: np.ndarray  # (n,) posture drift, degrees
    kind: np.ndarray  # (m,) SIT/STAND/WALK/SLEEP/NAP
    start: np.ndarray  # (m,) first window of the segment
    pitch: np.ndarray  # (m,) degrees
    lean: np.ndarray  # (m,) direction of the pitch around the vertical axis, degrees
    intensity: np.ndarray  # (m,) movement standard deviation, g
    burst_share: np.ndarray  # (m,) share of windows with a fidgeting or turning burst
    burst_gain: np.ndarray  # (m,) movement multiplier in a burst
    step_hz: np.ndarray  # (m,) step frequency when walking, Hz
    step_g: np.ndarray  # (m,) vertical step amplitude when walking, g
    phase: np.ndarray  # (m, 4) gait phases, radians


def generate_subject(subject_id: str, days: int, hours_per_day: float, seed: int
                     ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Generate one subject's recording, split into calendar-day files.

    :param subject_id: Folder name of the subject; with ``seed`` it determines everything.
    :param days: Number of daily recording periods, >= 1.
    :param hours_per_day: Length of each period in hours, 0 < hours <= 24; 24 gives one
        continuous recording.  A period that crosses midnight spreads over two files, so there
        can be more files than ``days``.
    :param seed: Non-negative integer.
    :return: ``[(day_name 'YYYY-MM-DD', columns), ...]`` in time order; ``columns`` holds
        ``time`` (N,) float64 s since the epoch, ``data`` (N, 100, 3) float64 g, and
        ``non_wear``, ``sleeping``, ``label`` (N,) int64.
    """
    rng = _subject_rng(subject_id, seed)
    subject = _draw_subject(rng)
    covered, span = _covered_windows(days, hours_per_day)
    timeline = _draw_timeline(rng, subject, span)
    out = []
    for name, windows in _split_by_date(subject.start, covered):
        segment = timeline.segment[windows]
        out.append((name, {
            "time": subject.start + windows.astype(np.float64) * WINDOW_SECONDS,
            "data": _signal(rng, subject, timeline, windows),
            "non_wear": timeline.non_wear[windows].astype(np.int64),
            "sleeping": IN_BED[timeline.kind[segment]].astype(np.int64),
            "label": timeline.label[windows].astype(np.int64),
        }))
    return out


def write_demo_dataset(out_dir: str | Path, subjects: int, days: int, hours_per_day: float,
                       seed: int) -> list[Path]:
    """Write ``<out_dir>/<subject_id>/<YYYY-MM-DD>.h5`` for subjects ``subject_000``, ``subject_001``...

    Deterministic for a given seed: re-running gives the same arrays.  See
    :func:`generate_subject` for ``days`` and ``hours_per_day``.

    :return: The subject folders, in order.
    :raises FileExistsError: ``out_dir`` already holds day files this run would not write (e.g.
        from a run with other arguments), which would otherwise be mixed into the dataset.
    """
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects}")
    out_dir = Path(out_dir)
    ids = [f"subject_{i:03d}" for i in range(subjects)]
    expected = {out_dir / sid / f"{name}{DAY_FILE_SUFFIX}"
                for sid in ids for name in _day_names(sid, days, hours_per_day, seed)}
    stale = sorted(p for p in out_dir.glob(f"*/*{DAY_FILE_SUFFIX}")
                   if p not in expected and not p.parent.name.startswith(".") and not p.name.startswith("."))
    if stale:
        raise FileExistsError(f"{out_dir} already holds {len(stale)} file(s) this run would not "
                              f"write, first {stale[0]}; remove them or choose another folder")
    folders = []
    for sid in ids:
        folder = out_dir / sid
        folder.mkdir(parents=True, exist_ok=True)
        for name, columns in generate_subject(sid, days, hours_per_day, seed):
            write_day_file(str(folder / f"{name}{DAY_FILE_SUFFIX}"), **columns)
        folders.append(folder)
    return folders


def _subject_rng(subject_id: str, seed: int) -> np.random.Generator:
    """A generator seeded by (seed, subject_id); the id's bytes stand for the subject index."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, int.from_bytes(subject_id.encode(), "big")]))


def _draw_subject(rng: np.random.Generator) -> _Subject:
    """The subject's start of recording, device mounting and calibration, and habits."""
    first_day = FIRST_DATE + timedelta(days=int(rng.integers(0, 28)))
    start_minute = int(rng.integers(8 * 60, 15 * 60 + 1))
    axis = rng.standard_normal(3)
    return _Subject(
        start=float((first_day - EPOCH).days * DAY_SECONDS + start_minute * 60),
        rotation=_rotation(axis / np.linalg.norm(axis), np.radians(rng.uniform(5, 25))),
        gain=1 + 0.01 * rng.standard_normal(3),
        offset=0.01 * rng.standard_normal(3),
        sensor_noise=rng.uniform(5e-5, 3e-4, 3),
        movement=float(np.exp(0.3 * rng.standard_normal())),
        gait=float(np.exp(0.2 * rng.standard_normal())),
        reclined_share=float(rng.uniform(0.3, 0.8)),
        bed_hour=float(22.75 + 0.6 * rng.standard_normal()),
        wake_hour=float(6.75 + 0.6 * rng.standard_normal()),
        nap_chance=float(rng.uniform(0, 0.6)),
        off_in_bed=bool(rng.random() < 0.4),
    )


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about the unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _covered_windows(days: int, hours_per_day: float) -> tuple[np.ndarray, int]:
    """Window indices (counted from the first window) of the recording periods, in time order,
    and the number of windows from the first to the last."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not 0 < hours_per_day <= 24:
        raise ValueError(f"hours_per_day must be in (0, 24], got {hours_per_day}")
    per_period = max(1, round(hours_per_day * 60 * WINDOWS_PER_MINUTE))
    per_day = DAY_SECONDS // WINDOW_SECONDS
    covered = (np.arange(days)[:, None] * per_day + np.arange(per_period)).ravel()
    return covered, (days - 1) * per_day + per_period


def _day_names(subject_id: str, days: int, hours_per_day: float, seed: int) -> list[str]:
    """The day-file names :func:`generate_subject` returns, without generating the signal."""
    subject = _draw_subject(_subject_rng(subject_id, seed))
    covered, _ = _covered_windows(days, hours_per_day)
    return [name for name, _ in _split_by_date(subject.start, covered)]


def _split_by_date(start: float, covered: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Cut the covered window indices at midnight (UTC): ``[('YYYY-MM-DD', indices), ...]``."""
    day_number = ((start + covered * WINDOW_SECONDS) // DAY_SECONDS).astype(np.int64)
    cuts = np.flatnonzero(np.diff(day_number)) + 1
    return [((EPOCH + timedelta(days=int(day))).isoformat(), chunk)
            for day, chunk in zip(day_number[np.r_[0, cuts]], np.split(covered, cuts))]


def _windows(rng: np.random.Generator, duration: tuple[float, float, float, float]) -> int:
    """A log-normal duration in minutes, clipped, as a whole number of windows (>= 1)."""
    median, sigma, low, high = duration
    minutes = np.clip(median * np.exp(sigma * rng.standard_normal()), low, high)
    return max(1, round(minutes * WINDOWS_PER_MINUTE))


def _draw_timeline(rng: np.random.Generator, subject: _Subject, n: int) -> _Timeline:
    """Behaviour, non-wear and labels for ``n`` consecutive windows from ``subject.start``."""
    bed = _bed_intervals(rng, subject, n)
    segments = _awake_segments(rng, n)
    for first, stop, kind in bed:
        pos = first
        while pos < stop:
            end = min(stop, pos + _windows(rng, SLEEP_POSTURE))
            segments.append((pos, end, kind))
            pos = end
    segment = np.empty(n, np.int64)
    for index, (first, stop, _) in enumerate(segments):
        segment[first:stop] = index  # bed segments come last and overwrite the awake ones
    start = np.array([first for first, _, _ in segments])
    kind = np.array([k for _, _, k in segments])
    non_wear, table = _non_wear(rng, subject, n, bed)
    white = rng.standard_normal(n + DRIFT_WINDOWS - 1)
    drift = np.convolve(white, np.full(DRIFT_WINDOWS, DRIFT_DEGREES / np.sqrt(DRIFT_WINDOWS)), "valid")
    return _Timeline(segment=segment, non_wear=non_wear, table=table,
                     label=_labels(rng, n, LABEL_OF_KIND[kind[segment]]), drift=drift,
                     kind=kind, start=start, **_segment_parameters(rng, subject, kind))


def _awake_segments(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """(first, stop, kind) covering windows [0, n): sitting bouts in posture segments,
    alternating with non-sitting bouts made of standing and walking spells."""
    segments = []
    pos = 0
    sitting = bool(rng.random() < 0.5)
    while pos < n:
        stop = min(n, pos + _windows(rng, SIT_BOUT if sitting else NOT_SIT_BOUT))
        walking = bool(rng.random() < 0.5)
        while pos < stop:
            if sitting:
                kind, duration = SIT, SIT_POSTURE
            else:
                kind, duration = (WALK, WALK_SPELL) if walking else (STAND, STAND_SPELL)
                walking = not walking
            end = min(stop, pos + _windows(rng, duration))
            segments.append((pos, end, kind))
            pos = end
        sitting = not sitting
    return segments


def _bed_intervals(rng: np.random.Generator, subject: _Subject, n: int) -> list[tuple[int, int, int]]:
    """(first, stop, SLEEP or NAP) window ranges in bed: every night, and some afternoon naps."""
    first_day = int(subject.start // DAY_SECONDS)
    last_day = int((subject.start + n * WINDOW_SECONDS) // DAY_SECONDS)
    intervals = []
    for day in range(first_day - 1, last_day + 1):
        midnight = day * DAY_SECONDS
        if rng.random() < subject.nap_chance:
            nap = midnight + rng.uniform(13, 16) * 3600
            intervals.append((nap, nap + rng.uniform(20, 90) * 60, NAP))
        bed = midnight + (subject.bed_hour + 0.4 * rng.standard_normal()) * 3600
        wake = midnight + DAY_SECONDS + (subject.wake_hour + 0.4 * rng.standard_normal()) * 3600
        intervals.append((bed, wake, SLEEP))
    out = []
    for begin, end, kind in intervals:
        first, stop = (int(np.clip(round((t - subject.start) / WINDOW_SECONDS), 0, n)) for t in (begin, end))
        if stop > first:
            out.append((first, stop, kind))
    return out


def _non_wear(rng: np.random.Generator, subject: _Subject, n: int, bed: list[tuple[int, int, int]]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Non-wear flags (n,) and the still device's gravity vector (n, 3) while it is off."""
    bouts = [(first, first + _windows(rng, NON_WEAR))
             for first in rng.integers(0, n, rng.poisson(n / 360 * NON_WEAR_PER_HOUR))]
    if subject.off_in_bed:
        bouts += [(first - _windows(rng, OFF_BEFORE_BED), stop + _windows(rng, ON_AFTER_WAKE))
                  for first, stop, kind in bed if kind == SLEEP]
    faces = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0]], np.float64)
    non_wear = np.zeros(n, bool)
    table = np.zeros((n, AXES))
    for first, stop in bouts:
        vector = faces[rng.choice(len(faces), p=[0.55, 0.15, 0.1, 0.1, 0.1])] + 0.03 * rng.standard_normal(3)
        first, stop = max(first, 0), min(stop, n)
        non_wear[first:stop] = True
        table[first:stop] = vector / np.linalg.norm(vector)
    return non_wear, table


def _labels(rng: np.random.Generator, n: int, label: np.ndarray) -> np.ndarray:
    """``label`` with missing stretches (-1): a late ActivPAL start and random gaps."""
    label = label.copy()
    label[:_windows(rng, LATE_LABEL_START)] = -1
    for first in rng.integers(0, n, rng.poisson(n / 360 * NO_LABEL_PER_HOUR)):
        label[first:first + _windows(rng, NO_LABEL)] = -1
    return label


def _segment_parameters(rng: np.random.Generator, subject: _Subject, kind: np.ndarray
                        ) -> dict[str, np.ndarray]:
    """Posture, movement and gait parameters of each segment, drawn by kind."""
    m = len(kind)
    z = rng.standard_normal((4, m))
    reclined = (kind == SIT) & (rng.random(m) < subject.reclined_share)
    pitch = np.where(reclined, RECLINED_PITCH[0], PITCH[0][kind]) + \
        np.where(reclined, RECLINED_PITCH[1], PITCH[1][kind]) * z[0]
    lying_side = np.where(kind == SLEEP, rng.choice([0, 90, -90, 180], m, p=[0.45, 0.25, 0.25, 0.05]), 0)
    burst_low, burst_high = BURST_GAIN
    slow = rng.random(m) < 0.2
    return {
        "pitch": pitch,
        "lean": lying_side + LEAN_SD[kind] * z[1],
        "intensity": INTENSITY[0][kind] * np.exp(INTENSITY[1][kind] * z[2]),
        "burst_share": BURST_SHARE[kind] * rng.random(m),
        "burst_gain": burst_low[kind] + (burst_high[kind] - burst_low[kind]) * rng.random(m),
        "step_hz": np.where(slow, rng.uniform(1.3, 1.7, m), rng.uniform(1.7, 2.1, m)),
        "step_g": 0.3 * np.exp(0.3 * z[3]) * np.where(slow, 0.5, 1.0),
        "phase": rng.uniform(0, 2 * np.pi, (m, 4)),
    }


def _signal(rng: np.random.Generator, subject: _Subject, timeline: _Timeline, windows: np.ndarray
            ) -> np.ndarray:
    """(N, 100, 3) acceleration in g for the window indices of one day file, in time order."""
    n = len(windows)
    segment = timeline.segment[windows]
    pitch = np.radians(timeline.pitch[segment] + timeline.drift[windows])
    lean = np.radians(timeline.lean[segment])
    gravity = np.stack([np.sin(pitch) * np.sin(lean), np.cos(pitch), np.sin(pitch) * np.cos(lean)], axis=1)
    burst = rng.random(n) < timeline.burst_share[segment]
    intensity = (timeline.intensity[segment] * subject.movement * np.exp(0.25 * rng.standard_normal(n))
                 * np.where(burst, timeline.burst_gain[segment], 1.0))
    white = np.cumsum(rng.standard_normal((n * SAMPLES_PER_WINDOW + SMOOTHING_SAMPLES, AXES)), axis=0)
    smooth = (white[SMOOTHING_SAMPLES:] - white[:-SMOOTHING_SAMPLES]) / np.sqrt(SMOOTHING_SAMPLES)
    body = smooth.reshape(n, SAMPLES_PER_WINDOW, AXES) * (intensity[:, None, None] * MOVEMENT_AXIS_WEIGHT)
    body += gravity[:, None, :]
    walking = np.flatnonzero(timeline.kind[segment] == WALK)
    body[walking] += _steps(rng, subject, timeline, windows[walking])
    device = body @ subject.rotation.T
    off = timeline.non_wear[windows]
    device[off] = timeline.table[windows[off]][:, None, :]
    return device * subject.gain + subject.offset + subject.sensor_noise * rng.standard_normal(device.shape)


def _steps(rng: np.random.Generator, subject: _Subject, timeline: _Timeline, windows: np.ndarray
           ) -> np.ndarray:
    """(W, 100, 3) body-frame gait acceleration: steps on the vertical and front-back axes, the
    stride (half the step frequency) sideways, phase-continuous within a walking segment."""
    segment = timeline.segment[windows]
    seconds = ((windows - timeline.start[segment]) * WINDOW_SECONDS)[:, None] + \
        np.arange(SAMPLES_PER_WINDOW) * SAMPLE_SECONDS
    step = 2 * np.pi * timeline.step_hz[segment][:, None] * seconds
    jitter = np.exp(0.15 * rng.standard_normal(len(windows)))
    amplitude = (timeline.step_g[segment] * subject.gait * jitter)[:, None]
    phase = timeline.phase[segment].T[:, :, None]
    vertical = amplitude * (np.sin(step + phase[0]) + 0.35 * np.sin(2 * step + phase[1]))
    front = 0.6 * amplitude * np.sin(step + phase[2])
    lateral = 0.35 * amplitude * np.sin(step / 2 + phase[3])
    return np.stack([lateral, vertical, front], axis=2)


def main(argv: list[str] | None = None) -> None:
    """Command line: write a demo dataset and print what was written."""
    parser = argparse.ArgumentParser(prog="python -m chap_mop.dev.demo_data",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder; gets DIR/<subject_id>/<YYYY-MM-DD>.h5 day files")
    parser.add_argument("--subjects", type=int, default=6, metavar="N",
                        help="number of subjects, >= 1 (default: %(default)s)")
    parser.add_argument("--days", type=int, default=2, metavar="N",
                        help="recording periods per subject, one per calendar day, >= 1; a period "
                             "that crosses midnight is split into two day files (default: %(default)s)")
    parser.add_argument("--hours", type=float, default=6.0, metavar="H",
                        help="length of each day's recording period in hours, 0 < H <= 24; 24 "
                             "records around the clock (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed, >= 0; the same arguments give the same data "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        folders = write_demo_dataset(args.out, args.subjects, args.days, args.hours, args.seed)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    files = sorted(f for folder in folders for f in folder.glob(f"*{DAY_FILE_SUFFIX}"))
    columns = [read_day_file(str(f), with_data=False) for f in files]
    windows = sum(len(c["label"]) for c in columns)
    trainable = sum(int(np.sum((c["label"] >= 0) & (c["non_wear"] == 0) & (c["sleeping"] == 0)))
                    for c in columns)
    print(f"demo_data: wrote {len(folders)} subjects, {len(files)} day files, {windows} windows "
          f"({trainable} labelled, worn and awake) to {args.out}")


if __name__ == "__main__":
    main()
