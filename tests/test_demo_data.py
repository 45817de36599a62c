"""The synthetic demo recordings: DeepPostures' file format, determinism, realism, learnability."""
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest

from chap_mop.dev.demo_data import generate_subject, write_demo_dataset
from chap_mop.data.h5_format import DATASETS, read_day_file

PROJECT = Path(__file__).resolve().parents[1]
DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.h5$")
RAW_DTYPES = {"time": np.float64, "data": np.float64, "non_wear": np.int64, "sleeping": np.int64,
              "label": np.int64}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """3 subjects, 2 periods of 16 h: each period runs past midnight, so nights are included
    and the middle file holds two periods with a gap between them."""
    out = tmp_path_factory.mktemp("demo") / "h5"
    write_demo_dataset(out, subjects=3, days=2, hours_per_day=16, seed=1)
    return out


def _data(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["data"][()]


def _subject_columns(folder: Path) -> list[dict[str, np.ndarray]]:
    return [read_day_file(str(f)) for f in sorted(folder.glob("*.h5"))]


def _concat(columns: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([c[k] for c in columns]) for k in columns[0]}


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value and length of each run of equal neighbours."""
    starts = np.r_[0, np.flatnonzero(np.diff(values)) + 1]
    return values[starts], np.diff(np.r_[starts, len(values)])


def test_files_follow_the_day_file_format(demo_dir):
    folders = sorted(demo_dir.iterdir())
    assert [f.name for f in folders] == ["subject_000", "subject_001", "subject_002"]
    for folder in folders:
        files = sorted(folder.iterdir())
        assert files and all(DAY_FILE.match(f.name) for f in files)
        first = date.fromisoformat(files[0].stem)
        assert [f.stem for f in files] == [(first + timedelta(days=i)).isoformat() for i in range(len(files))]
        for path in files:
            with h5py.File(path, "r") as f:
                assert sorted(f.keys()) == sorted(DATASETS)
                n = f["time"].shape[0]
                assert n > 0
                for name, dtype in RAW_DTYPES.items():
                    assert f[name].dtype == dtype, (path, name)
                    assert f[name].shape == ((n, 100, 3) if name == "data" else (n,))
            columns = read_day_file(str(path))
            day_start = (date.fromisoformat(path.stem) - date(1970, 1, 1)).days * 86400
            assert np.all((columns["time"] >= day_start) & (columns["time"] < day_start + 86400))


def test_same_seed_gives_identical_arrays_other_seed_differs(tmp_path):
    first, again = (generate_subject("subject_004", 2, 1.5, seed=5) for _ in range(2))
    other_seed = generate_subject("subject_004", 2, 1.5, seed=6)
    other_subject = generate_subject("subject_005", 2, 1.5, seed=5)
    assert [name for name, _ in first] == [name for name, _ in again]
    for (_, a), (_, b) in zip(first, again):
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert not np.array_equal(first[0][1]["data"], other_seed[0][1]["data"])
    assert not np.array_equal(first[0][1]["data"], other_subject[0][1]["data"])

    out = tmp_path / "h5"
    write_demo_dataset(out, 2, 1, 1.0, seed=7)
    before = {p: _data(p) for p in out.glob("*/*.h5")}
    write_demo_dataset(out, 2, 1, 1.0, seed=7)  # re-running into the same folder is fine
    assert all(np.array_equal(_data(p), data) for p, data in before.items())
    with pytest.raises(FileExistsError, match="would not write"):
        write_demo_dataset(out, 1, 1, 1.0, seed=7)  # subject_001 would be stale


def test_recordings_look_like_real_ones(demo_dir):
    subjects = [_subject_columns(folder) for folder in sorted(demo_dir.iterdir())]
    everything = _concat([c for columns in subjects for c in columns])
    label, non_wear, sleeping = everything["label"], everything["non_wear"], everything["sleeping"]
    valid = (label >= 0) & (non_wear == 0) & (sleeping == 0)
    assert non_wear.any() and sleeping.any() and (label == -1).any()
    assert set(np.unique(label[valid])) == {0, 1}
    assert 0.3 < valid.mean() < 0.95  # 16-h periods include nights in bed

    for columns in subjects:
        first_time = columns[0]["time"][0]
        assert first_time % 86400 != 0 and 8 * 3600 <= first_time % 86400 <= 15 * 3600
        time = np.concatenate([c["time"] for c in columns])
        steps = np.diff(time)
        assert np.all(steps % 10 == 0) and np.all(steps >= 10)
        assert np.mean(steps == 10) > 0.99 and (steps > 10).sum() == 1  # one gap between periods
        values, lengths = _runs(np.concatenate([c["label"] for c in columns]))
        assert lengths[values == 0].max() > 30 and lengths[values == 1].max() > 30

    data = everything["data"].astype(np.float64)
    magnitude = np.linalg.norm(data, axis=2)
    worn = non_wear == 0
    assert 0.97 < magnitude[worn].mean() < 1.03
    # Off the body the device lies still; in bed the hip is horizontal, awake it is near upright.
    assert np.median(data[non_wear == 1].std(axis=1).max(axis=1)) < 0.002
    lying = np.abs(data[worn & (sleeping == 1)].mean(axis=1)[:, 1])
    upright = np.abs(data[worn & (sleeping == 0)].mean(axis=1)[:, 1])
    assert np.median(lying) < 0.5 < 0.8 < np.median(upright)
    # Walking shows a step frequency near 2 Hz in the magnitude.
    moving = valid & (label == 1) & (magnitude.std(axis=1) > 0.1)
    spectrum = np.abs(np.fft.rfft(magnitude[moving] - magnitude[moving].mean(axis=1, keepdims=True), axis=1))
    peak_hz = np.fft.rfftfreq(100, d=0.1)[spectrum.argmax(axis=1)]
    assert moving.sum() > 100 and 1.5 <= np.median(peak_hz) <= 2.2


def test_day_long_periods_join_into_one_continuous_recording():
    days = generate_subject("subject_000", 2, 24, seed=2)
    assert len(days) == 3  # starts mid-day, so 48 hours touch three calendar dates
    time = np.concatenate([c["time"] for _, c in days])
    assert np.all(np.diff(time) == 10) and len(time) == 2 * 8640
    assert days[1][1]["time"][0] % 86400 == 0 and len(days[1][1]["time"]) == 8640


def _features(columns: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each axis and log std of the magnitude of labelled, worn, awake windows."""
    c = _concat(columns)
    keep = (c["label"] >= 0) & (c["non_wear"] == 0) & (c["sleeping"] == 0)
    data = c["data"][keep]
    return (np.column_stack([data.mean(axis=1), np.log(np.linalg.norm(data, axis=2).std(axis=1))]),
            c["label"][keep])


def _balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[truth == k] == k) for k in (0, 1)]))


def test_sitting_is_learnable_but_not_trivial():
    subjects = [_features([c for _, c in generate_subject(f"subject_{i:03d}", 1, 8, seed=3)])
                for i in range(8)]
    train_x, train_y = (np.concatenate(a) for a in zip(*subjects[:5]))
    test_x, test_y = (np.concatenate(a) for a in zip(*subjects[5:]))
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    centres = [((train_x[train_y == k] - mean) / std).mean(axis=0) for k in (0, 1)]
    distances = [np.linalg.norm((test_x - mean) / std - centre, axis=1) for centre in centres]
    nearest_centre = _balanced_accuracy(test_y, (distances[1] < distances[0]).astype(int))
    assert 0.6 < nearest_centre < 0.97

    all_x, all_y = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    best_threshold = max(
        _balanced_accuracy(all_y, (sign * (all_x[:, j] - t) > 0).astype(int))
        for j in range(all_x.shape[1]) for t in np.quantile(all_x[:, j], np.linspace(0.01, 0.99, 99))
        for sign in (1, -1))
    assert best_threshold < 0.95


def test_real_fixture_reads_like_generated_files(real_fixture_subject, demo_dir):
    real = read_day_file(str(next(real_fixture_subject.glob("*.h5"))))
    generated = read_day_file(str(next(demo_dir.glob("*/*.h5"))))
    assert real.keys() == generated.keys()
    assert {k: v.dtype for k, v in real.items()} == {k: v.dtype for k, v in generated.items()}
    assert real["data"].shape[1:] == generated["data"].shape[1:]


def test_command_line_writes_files_and_prints_a_summary(tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "chap_mop.dev.demo_data", "--out", str(out), "--subjects", "2",
               "--days", "1", "--hours", "0.5", "--seed", "0"]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, check=True)
    assert "wrote 2 subjects, 2 day files, 360 windows" in result.stdout
    assert str(out) in result.stdout
    assert len(list(out.glob("subject_00[01]/*.h5"))) == 2

    bad = subprocess.run(command[:-4] + ["--hours", "30"], cwd=PROJECT, capture_output=True, text=True)
    assert bad.returncode != 0 and "hours_per_day must be in (0, 24]" in bad.stderr
