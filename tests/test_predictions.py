"""make_predictions.py and chap_mop.predict.predictions with real H5 files, real TensorFlow models and real Spark.

Expected rows are computed here from the H5 arrays by a plain loop, not by the module's NumPy. The
models are untrained CHAP models with fixed seeds: what is tested is which windows get a row, from
which sequences, and how members vote, not how good the predictions are. Timestamps are checked in
a time zone other than the machine's (``TZ``), as DeepPostures formats them in local time.
"""
import contextlib
import csv
import hashlib
import json
import shutil
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import h5py
import numpy as np
import pyarrow.fs as pafs
import pytest

from chap_mop.runtime import runtime_env

runtime_env.import_tensorflow()  # Keras 2 (tf-keras) as tf.keras, before chap_model imports TensorFlow

import tensorflow as tf  # noqa: E402

from chap_mop.predict import inference, predictions  # noqa: E402
from chap_mop.data import prep  # noqa: E402
from chap_mop.model.chap_model import build_chap_model  # noqa: E402
from chap_mop.dev.demo_data import write_demo_dataset  # noqa: E402
from chap_mop.data.h5_format import write_day_file  # noqa: E402
from chap_mop.errors import InputError  # noqa: E402
from chap_mop.cli import chap_predict  # noqa: E402
from chap_mop.predict import stage  # noqa: E402
from chap_mop.predict.stage import PredictSettings, predict  # noqa: E402
from conftest import PT_FIXTURES, run_script  # noqa: E402

SCRIPT_TIMEOUT_S = 300  # a script that runs longer than this on the tiny test data hangs

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")
ZONE = "America/Los_Angeles"  # not the machine's: timestamps must follow TZ
BEST_RUN = "model_0_1"
MIDNIGHT = 1_600_041_600  # 2020-09-14 00:00:00 UTC, s
WORDS = {0: "sitting", 1: "not-sitting", -1: "no-label"}
# The exact subject, in order: (windows, kind); "gap" starts its run 60 s after the previous window.
EXACT_DAY_1 = [(15, "awake"), (3, "non_wear"), (4, "awake"), (2, "sleeping"), (5, "awake"), (7, "gap"),
               (2, "non_wear+sleeping"), (7, "awake")]  # the last run ends at midnight ...
EXACT_DAY_2 = [(9, "awake"), (1, "sleeping"), (12, "awake")]  # ... and goes on in the next day file
EXACT_LENGTHS = [15, 4, 5, 7, 16, 12]  # its segments
EXACT_ROWS_T6 = {"drop": 12 + 0 + 0 + 6 + 12 + 12, "zero": sum(EXACT_LENGTHS), "wrap": 15 + 0 + 0 + 7 + 16 + 12}


@contextlib.contextmanager
def local_zone():
    """This process (and the processes it starts) in the time zone :data:`ZONE`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", ZONE)
        time.tzset()
        yield
    time.tzset()


def save_model(path: Path, seq_len: int, seed: int) -> str:
    tf.keras.utils.set_random_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_chap_model(seq_len, 1, 0.0).save(path, include_optimizer=False, save_format="h5")
    return str(path)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder as model_selection.py leaves it: a best model (T 6) and a 2-member ensemble (T 12, 6)."""
    root = tmp_path_factory.mktemp("results")
    best = save_model(root / "best_model.h5", 6, seed=1)
    (root / "summary.json").write_text(json.dumps({"best_run_id": BEST_RUN, "best_model": best}))
    members = [("model_1_1", 12, 2), ("model_0_1", 6, 1)]  # best first
    for run_id, seq_len, seed in members:
        save_model(root / "ensemble" / f"{run_id}.h5", seq_len, seed)
    (root / "ensemble.json").write_text(json.dumps({"vote": "majority", "members": [
        {"rank": rank, "run_id": run_id, "hyperparameters": {}, "metric": "val_balanced_accuracy", "value": 0.5,
         "windows_per_sequence": seq_len, "model": f"ensemble/{run_id}.h5"}
        for rank, (run_id, seq_len, _) in enumerate(members, start=1)]}, indent=2))
    return root


def write_runs(path: Path, start: int, runs: list[tuple[int, str]], rng: np.random.Generator) -> int:
    """One day file of consecutive runs of windows 10 s apart; returns the time after its last window."""
    time_, non_wear, sleeping = [], [], []
    for n, kind in runs:
        if kind == "gap":
            start += 50
        time_ += [start + 10 * i for i in range(n)]
        non_wear += [int("non_wear" in kind)] * n
        sleeping += [int("sleeping" in kind)] * n
        start += 10 * n
    n = len(time_)
    write_day_file(str(path), np.array(time_, float), rng.normal(0, 0.5, (n, 100, 3)), np.array(non_wear),
                   np.array(sleeping), rng.integers(-1, 2, n))
    return start


@pytest.fixture(scope="module")
def h5_root(tmp_path_factory) -> Path:
    """3 demo subjects of 2 hours, and hand-built ones: ``exact`` (two day files), ``empty``, ``off``."""
    root = tmp_path_factory.mktemp("h5") / "h5"
    write_demo_dataset(root, subjects=3, days=1, hours_per_day=2, seed=5)
    rng = np.random.default_rng(0)
    (root / "exact").mkdir()
    day_1_windows = sum(n for n, _ in EXACT_DAY_1) * 10 + 50
    write_runs(root / "exact" / "2020-09-14.h5", MIDNIGHT, EXACT_DAY_2, rng)  # written first, read second
    assert write_runs(root / "exact" / "2020-09-13.h5", MIDNIGHT - day_1_windows, EXACT_DAY_1, rng) == MIDNIGHT
    (root / "empty").mkdir()
    write_runs(root / "empty" / "2020-09-13.h5", MIDNIGHT, [], rng)
    (root / "off").mkdir()
    write_runs(root / "off" / "2020-09-13.h5", MIDNIGHT, [(20, "non_wear"), (5, "sleeping"), (3, "non_wear+sleeping")],
               rng)
    return root


def h5_subject(folder: Path) -> dict[str, np.ndarray]:
    """A subject's datasets, day files in name order, read with h5py."""
    days = []
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path, "r") as f:
            days.append({name: f[name][()] for name in ("time", "data", "non_wear", "sleeping", "label")})
    return {name: np.concatenate([day[name] for day in days]) for name in days[0]}


def expected_rows(folder: Path, seq_len: int, padding: str) -> list[tuple[int, str, str]]:
    """(segment, timestamp, label word) of every window that gets a row, by a plain loop."""
    h5 = h5_subject(folder)
    segments, previous = [], None
    for i in range(len(h5["time"])):
        if h5["non_wear"][i] or h5["sleeping"][i]:
            previous = None
            continue
        if previous is None or h5["time"][i] - h5["time"][previous] != 10:
            segments.append([])
        segments[-1].append(i)
        previous = i
    rows = []
    for index, segment in enumerate(segments):
        kept = {"zero": len(segment), "wrap": len(segment) if len(segment) >= seq_len else 0,
                "drop": len(segment) // seq_len * seq_len}[padding]
        rows += [(index, stamp(h5["time"][i]), WORDS[int(h5["label"][i])]) for i in segment[:kept]]
    return rows


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def day_files(h5_root: Path) -> dict[str, list[str]]:
    return prep.find_day_files(pafs.LocalFileSystem(), str(h5_root))[0]


def predict_in_process(h5_root: Path, out_dir: Path, models: list[str], **options) -> dict[str, int]:
    """``predict_subject`` for every subject, in this process (no Spark), in :data:`ZONE`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = predictions.Settings(tuple(models), str(out_dir), **options)
    with local_zone():
        return dict(predictions.predict_subject(pafs.LocalFileSystem(), subject, files, settings)
                    for subject, files in day_files(h5_root).items())


def script_args(h5_root: Path, results: Path, out: Path, *extra: str) -> list[str]:
    return ["--pre-processed-dir", str(h5_root), "--model-checkpoint-path", str(results),
            "--predictions-dir", str(out), *extra]


LOCAL_OPTIONS = ("--padding", "zero", "--output-label", "--probabilities")


@pytest.fixture(scope="module")
def local_run(h5_root, results, tmp_path_factory):
    """One make_predictions.py run on Spark local[2], in :data:`ZONE`: its folder and its output."""
    out = tmp_path_factory.mktemp("local") / "predictions"
    with local_zone():
        run = run_script("make_predictions.py", *script_args(h5_root, results, out, *LOCAL_OPTIONS),
                         "--master", "local[2]", "--progress-every", "0.5")
    return out, run.stdout


@pytest.mark.parametrize("padding", ["drop", "zero", "wrap"])
def test_rows_timestamps_and_segments_follow_the_h5_input(padding, h5_root, results, tmp_path):
    written = predict_in_process(h5_root, tmp_path, [str(results / "best_model.h5")], padding=padding,
                                 output_label=True)
    assert read_csv(tmp_path / "exact.csv")[0] == ["segment", "timestamp", "label", "prediction"]
    for subject in day_files(h5_root):
        rows = read_csv(tmp_path / f"{subject}.csv")[1]
        assert [(int(r["segment"]), r["timestamp"], r["label"]) for r in rows] == expected_rows(h5_root / subject, 6,
                                                                                             padding), subject
        assert {r["prediction"] for r in rows} <= {"sitting", "not-sitting"}
        assert written[subject] == len(rows)
    exact = read_csv(tmp_path / "exact.csv")[1]
    assert len(exact) == EXACT_ROWS_T6[padding]
    # The gap splits the third run into segments 2 and 3; segment 4 goes on across the two day files.
    lengths = np.bincount([int(r["segment"]) for r in exact], minlength=6)
    assert lengths.tolist() == {"drop": [12, 0, 0, 6, 12, 12], "zero": EXACT_LENGTHS,
                                "wrap": [15, 0, 0, 7, 16, 12]}[padding]
    assert stamp(MIDNIGHT - 10) in {r["timestamp"] for r in exact} and stamp(MIDNIGHT) in {r["timestamp"] for r in exact}


def test_zero_padding_and_wrap_predict_from_the_sequences_they_promise(h5_root, results, tmp_path):
    for padding in ("zero", "wrap"):
        predict_in_process(h5_root, tmp_path / padding, [str(results / "best_model.h5")], padding=padding,
                           probabilities=True)
    model = inference.load_model(results / "best_model.h5")
    h5 = h5_subject(h5_root / "exact")
    data = h5["data"].astype(np.float32)
    kept = np.flatnonzero((h5["non_wear"] == 0) & (h5["sleeping"] == 0))
    first, second = kept[:15], kept[15:19]  # segments 0 (15 windows) and 1 (4 windows)

    def sitting(windows: np.ndarray) -> np.ndarray:
        return model.predict_on_batch(windows[None, ..., None])[0, :, 0]

    def column(padding: str, rows: np.ndarray) -> np.ndarray:
        by_time = {r["timestamp"]: float(r["probability_sitting"]) for r in read_csv(tmp_path / padding / "exact.csv")[1]}
        return np.array([by_time[stamp(h5["time"][i])] for i in rows])

    # zero: the 4-window segment is read with 2 all-zero windows after it.
    padded = np.concatenate([data[second], np.zeros((2, 100, 3), np.float32)])
    np.testing.assert_allclose(column("zero", second), sitting(padded)[:4], atol=1e-4)
    # wrap: windows 12-14 come from the last 6 windows (9-14); 6-11 keep the second chunk's predictions.
    np.testing.assert_allclose(column("wrap", first[12:]), sitting(data[first[9:]])[3:], atol=1e-4)
    np.testing.assert_allclose(column("wrap", first[6:12]), sitting(data[first[6:12]]), atol=1e-4)
    assert np.abs(sitting(data[first[6:12]])[3:] - sitting(data[first[9:]])[:3]).max() > 1e-4  # would show


def test_columns_as_deeppostures_names_them(h5_root, results, tmp_path):
    model = [str(results / "best_model.h5")]
    predict_in_process(h5_root, tmp_path / "plain", model)
    predict_in_process(h5_root, tmp_path / "bare", model, segment=False, probabilities=True)
    lines = (tmp_path / "plain" / "exact.csv").read_text().splitlines()
    assert lines[0] == "segment,timestamp,prediction"
    assert lines[1] == f"0,{stamp(h5_subject(h5_root / 'exact')['time'][0])},{lines[1].split(',')[2]}"
    header, rows = read_csv(tmp_path / "bare" / "exact.csv")
    assert header == ["timestamp", "prediction", "probability_sitting"]
    for row in rows:
        probability = float(row["probability_sitting"])
        assert len(row["probability_sitting"].split(".")[1]) == 4
        assert row["prediction"] == ("sitting" if probability >= 0.5 else "not-sitting") or abs(probability - 0.5) < 1e-4


def test_empty_and_non_wear_only_subjects_get_a_header_only_file(h5_root, results, tmp_path, local_run):
    written = predict_in_process(h5_root, tmp_path, [str(results / "best_model.h5")], padding="zero")
    out, _ = local_run
    for subject in ("empty", "off"):
        assert written[subject] == 0
        assert (tmp_path / f"{subject}.csv").read_text() == "segment,timestamp,prediction\n"
        assert (out / BEST_RUN / f"{subject}.csv").read_text() == "segment,timestamp,label,prediction,probability_sitting\n"


def test_spark_writes_the_same_csvs_as_the_per_subject_function(h5_root, results, tmp_path, local_run):
    out, stdout = local_run
    written = predict_in_process(h5_root, tmp_path, [str(results / "best_model.h5")], padding="zero",
                                 output_label=True, probabilities=True)
    csvs = sorted(p.name for p in (out / BEST_RUN).iterdir())
    assert csvs == sorted(f"{subject}.csv" for subject in written)  # no partial file left
    for name in csvs:
        assert (out / BEST_RUN / name).read_text() == (tmp_path / name).read_text(), name
    assert sorted(p.name for p in out.iterdir()) == [predictions.MARKER, BEST_RUN]
    assert "predictions: " in stdout and " subjects done" in stdout
    assert f"wrote 6 subjects, {sum(written.values())} windows predicted, to {out / BEST_RUN} in " in stdout


@pytest.mark.spark
def test_an_ensemble_votes_its_members_of_two_window_sizes(h5_root, results, tmp_path):
    out = tmp_path / "predictions"
    with local_zone():
        run = run_script("make_predictions.py", *script_args(h5_root, results, out, "--ensemble", "--padding", "drop",
                                                              "--no-segment", "--probabilities"), "--master", "local[2]")
    assert "with ensemble (model_1_1: 12 windows (2 min), model_0_1: 6 windows (1 min))" in run.stdout
    members = [m["model"] for m in json.loads((results / "ensemble.json").read_text())["members"]]
    own = []
    for rank, member in enumerate(members):
        predict_in_process(h5_root, tmp_path / f"member_{rank}", [str(results / member)], padding="drop",
                           segment=False, probabilities=True)
        own.append(tmp_path / f"member_{rank}")
    voted_windows = 0
    for subject in day_files(h5_root):
        by_member = [{r["timestamp"]: r for r in read_csv(folder / f"{subject}.csv")[1]} for folder in own]
        stamps = sorted(set(by_member[0]) | set(by_member[1]))  # the same order as time for one day's stamps
        classes = np.array([[{"sitting": 0, "not-sitting": 1}[m[s]["prediction"]] if s in m else -1 for s in stamps]
                            for m in by_member])
        rows = read_csv(out / "ensemble" / f"{subject}.csv")[1]
        assert sorted(r["timestamp"] for r in rows) == stamps
        ensemble = {r["timestamp"]: r for r in rows}
        assert [ensemble[s]["prediction"] for s in stamps] == [WORDS[c] for c in inference.vote(classes)]
        for s in stamps:
            mean = np.mean([float(m[s]["probability_sitting"]) for m in by_member if s in m])
            assert abs(float(ensemble[s]["probability_sitting"]) - mean) < 1e-4
        voted_windows += int((classes >= 0).all(axis=0).sum())
    # Windows that only the 6-window member predicts got its class; most windows were voted by both.
    assert voted_windows > 1000
    assert len(read_csv(out / "ensemble" / "exact.csv")[1]) == 42  # the 6-window member's rows, drop


@pytest.mark.slow
def test_bad_inputs_stop_with_one_line_and_write_nothing(h5_root, results, tmp_path):
    out = tmp_path / "predictions"
    no_ensemble = tmp_path / "no_ensemble"
    no_ensemble.mkdir()
    shutil.copy(results / "summary.json", no_ensemble)
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("mine")
    cases = [(tmp_path / "missing", out, False, f"{tmp_path / 'missing'}: no such results folder"),
             (tmp_path, out, False, f"{tmp_path}: not a results folder of model_selection.py"),
             (no_ensemble, out, True, f"{no_ensemble / 'ensemble.json'} not found"),
             (results, foreign, False, f"predictions folder {foreign} is not empty and holds no predictions of this "
                                       "project (1 entry: thesis.txt)")]
    for results_dir, predictions_dir, ensemble, error in cases:  # each stops before Spark would start
        with pytest.raises(InputError) as stop:
            predict(PredictSettings(pre_processed_dir=str(h5_root), results=str(results_dir),
                                    predictions_dir=str(predictions_dir), ensemble=ensemble))
        assert str(stop.value).startswith(error), stop.value
        assert not out.exists()
    assert [p.name for p in foreign.iterdir()] == ["thesis.txt"]
    # The script end to end: one line, exit code 2.
    run = run_script("make_predictions.py", *script_args(h5_root, tmp_path / "missing", out), check=False)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith(f"error: {tmp_path / 'missing'}: no such results folder"), run.stderr


def test_a_standalone_cluster_writes_the_same_csvs_over_its_earlier_output(cluster, scripts, monkeypatch, h5_root,
                                                                          results, local_run, tmp_path):
    local, _ = local_run
    out = tmp_path / "predictions"
    shutil.copytree(local, out)
    (out / "notes.txt").write_text("mine")
    (out / BEST_RUN / "extra.csv").write_text("mine")
    (out / BEST_RUN / "subject_000.csv").write_text("stale")
    # The cluster's daemons started without TZ: the driver's TZ must reach the executors that write.
    monkeypatch.setenv("TZ", ZONE)
    run = scripts("make_predictions.py", [*script_args(h5_root, results, out, *LOCAL_OPTIONS), "--master",
                                          cluster.master_url], tmp_path, tmp_path / "predictions.log")
    assert run.wait(SCRIPT_TIMEOUT_S) == 0, run.tail()
    for csv_file in (local / BEST_RUN).iterdir():
        assert (out / BEST_RUN / csv_file.name).read_text() == csv_file.read_text(), csv_file.name
    assert (out / "notes.txt").read_text() == "mine" and (out / BEST_RUN / "extra.csv").read_text() == "mine"
    assert not run.leftovers(), "the driver's processes outlived make_predictions.py"


# --- DeepPostures' pre-trained models: --model NAME --pretrained-dir DIR ------------------------------------------

PRETRAINED = PT_FIXTURES / "pre-trained-models-pt"


def write_subject(folder: Path, data: np.ndarray, non_wear: np.ndarray | None = None, labels: np.ndarray | None = None,
                  split: int | None = None) -> None:
    """One subject's windows 10 s apart, ending ``split`` windows after :data:`MIDNIGHT` in a second day file.

    :param data: (n, 100, 3) g.  :param non_wear, labels: (n,); all 0 when not given.
    """
    n = len(data)
    split = n // 2 if split is None else split
    start = MIDNIGHT - 10 * split
    columns = [start + 10 * np.arange(n), data, np.zeros(n) if non_wear is None else non_wear, np.zeros(n),
               np.zeros(n) if labels is None else labels]
    folder.mkdir(parents=True)
    for name, rows in (("2020-09-13.h5", slice(0, split)), ("2020-09-14.h5", slice(split, n))):
        write_day_file(str(folder / name), *[column[rows] for column in columns])


def test_chap_all_adults_predicts_what_deeppostures_pytorch_model_predicts(pt_fixtures, spark, tmp_path):
    """The fixture's sequences laid end to end in one segment across two day files, predicted on Spark:
    each window's word is round(sigmoid(PyTorch's logit)), 1 being not-sitting."""
    data = np.load(pt_fixtures / "CHAP_ALL_ADULTS.input.npy")  # (sequences, 42, 100, 3)
    logits = np.load(pt_fixtures / "CHAP_ALL_ADULTS.logits.npy").ravel().astype(np.float64)
    write_subject(tmp_path / "h5" / "adult", data.reshape(-1, 100, 3), split=50)  # not at a sequence boundary
    out = tmp_path / "predictions"
    assert predict(PredictSettings(pre_processed_dir=str(tmp_path / "h5"), predictions_dir=str(out),
                                   model="CHAP_ALL_ADULTS", pretrained_dir=str(PRETRAINED), probabilities=True),
                   spark) == (1, len(logits))
    header, rows = read_csv(out / "CHAP_ALL_ADULTS" / "adult.csv")
    assert header == ["segment", "timestamp", "prediction", "probability_sitting"]
    assert len(rows) == len(logits) and {r["segment"] for r in rows} == {"0"}
    not_sitting = 1 / (1 + np.exp(-logits))
    clear = np.abs(logits) > 1e-3  # a logit this near 0 may round either way after conversion
    assert clear.sum() > 100 and 0.2 < not_sitting[clear].round().mean() < 0.8  # both words are checked
    assert [r["prediction"] for r, c in zip(rows, clear) if c] == [WORDS[int(p)] for p in not_sitting[clear].round()]
    np.testing.assert_allclose([1 - float(r["probability_sitting"]) for r in rows], not_sitting, atol=1e-4)
    digest = hashlib.sha256((PRETRAINED / "CHAP_ALL_ADULTS.pth").read_bytes()).hexdigest()[:16]
    assert sorted(p.name for p in (out / "CHAP_ALL_ADULTS").iterdir()) == [f".model-{digest}.h5", "adult.csv"]


def test_chap_votes_as_deeppostures_with_its_members_columns_and_label_map(pt_fixtures, tmp_path):
    """--model CHAP in this process: CHAP_A, _B and _C write their own CSVs; CHAP's rows are, per segment,
    the members' rows cut to the shortest member's count, each member's word in its column, and the
    mode of the three. Members here are the fixtures (9, 9 and 7 minutes), not DeepPostures' weights."""
    pretrained_dir = tmp_path / "pre-trained-models-pt"
    pretrained_dir.mkdir()
    for member, source in (("CHAP_A", "CHAP_ALL_ADULTS"), ("CHAP_B", "CHAP_CHILDREN"), ("CHAP_C", "CHAP_ALL_ADULTS")):
        (pretrained_dir / f"{member}.pth").symlink_to(PRETRAINED / f"{source}.pth")
    # Segments of 130, 50 and 60 windows: 9-min members predict 108, 0 and 54 of them, the 7-min one 126, 42, 42.
    runs = [(130, 0), (3, 1), (50, 0), (2, 1), (60, 0)]
    non_wear = np.concatenate([[flag] * n for n, flag in runs])
    rng = np.random.default_rng(7)
    write_subject(tmp_path / "h5" / "s", rng.normal(0, 0.5, (len(non_wear), 100, 3)), non_wear,
                  rng.integers(-1, 2, len(non_wear)))
    words = {"sedentary": 0, "active": 1, "unknown": -1}
    settings = PredictSettings(pre_processed_dir=str(tmp_path / "h5"), predictions_dir=str(tmp_path / "out"),
                               model="CHAP", pretrained_dir=str(pretrained_dir), output_label=True,
                               activpal_label_map=json.dumps(words))
    settings.check()
    models = stage.find_models(settings)
    models.load()
    job = stage.claim(tmp_path / "out", models, settings)
    with local_zone():
        written = predictions.predict_subject(pafs.LocalFileSystem(), "s", day_files(tmp_path / "h5")["s"], job)
    members = {m: read_csv(tmp_path / "out" / m / "s.csv") for m in ("CHAP_A", "CHAP_B", "CHAP_C")}
    for member, (header, rows) in members.items():
        assert header == ["segment", "timestamp", "label", "prediction"], member
        assert {r["prediction"] for r in rows} <= {"sedentary", "active"} and {r["label"] for r in rows} <= set(words)
    counts = {m: np.bincount([int(r["segment"]) for r in rows], minlength=3).tolist()
              for m, (_, rows) in members.items()}
    assert counts == {"CHAP_A": [108, 0, 54], "CHAP_B": [108, 0, 54], "CHAP_C": [126, 42, 42]}
    expected = []  # as DeepPostures builds CHAP/<subject>.csv from its members' CSVs
    for segment in range(3):
        by_member = [[r for r in rows if r["segment"] == str(segment)] for _, rows in members.values()]
        for a, b, c in zip(*by_member):  # zip stops at the shortest member's rows
            assert a["timestamp"] == b["timestamp"] == c["timestamp"]
            votes = [a["prediction"], b["prediction"], c["prediction"]]
            expected.append({**c, "prediction": max(set(votes), key=votes.count), "predictions_A": votes[0],
                             "predictions_B": votes[1], "predictions_C": votes[2]})
    header, rows = read_csv(tmp_path / "out" / "CHAP" / "s.csv")
    assert header == ["segment", "timestamp", "label", "prediction", "predictions_A", "predictions_B",
                      "predictions_C"]
    assert rows == expected and written == ("s", 108 + 42)
    assert any(len(set(r[c] for c in ("predictions_A", "predictions_B", "predictions_C"))) > 1 for r in rows)


@pytest.mark.parametrize("options, error", [
    ({"model": "CHAP_D", "pretrained_dir": "models"},
     "--model CHAP_D: not one of DeepPostures' models; expected one of CHAP_A, CHAP_B, CHAP_C, CHAP_ALL_ADULTS, "
     "CHAP_CHILDREN, CHAP_AUSDIAB, CHAP"),
    ({"model": "CHAP_A"}, "--model CHAP_A needs --pretrained-dir DIR, the folder holding CHAP_A.pth"),
    ({"pretrained_dir": "models"}, "--pretrained-dir models needs --model NAME, one of CHAP_A,"),
    ({"model": "CHAP", "pretrained_dir": "models", "ensemble": True},
     "--ensemble is a results folder's ensemble and cannot go with --model CHAP"),
    ({"activpal_label_map": "{sitting: 0}"}, "--activpal-label-map {sitting: 0}: not JSON ("),
    ({"activpal_label_map": '{"sitting": 0, "not-sitting": 1}'},
     """--activpal-label-map {"sitting": 0, "not-sitting": 1}: expected a JSON object giving each of the labels 0, """
     """1 and -1 exactly one word, e.g. '{"sitting": 0, "not-sitting": 1, "no-label": -1}'"""),
    ({"activpal_label_map": '{"sitting": false, "not-sitting": true, "no-label": -1}'}, "--activpal-label-map {"),
])
def test_bad_model_flags_stop_before_anything_is_read(options, error, tmp_path):
    with pytest.raises(InputError) as stop:
        predict(PredictSettings(pre_processed_dir=str(tmp_path / "missing"), predictions_dir=str(tmp_path / "out"),
                                results=str(tmp_path / "missing"), **options))
    assert str(stop.value).startswith(error) and "\n" not in str(stop.value), stop.value


def test_missing_or_foreign_checkpoints_stop_with_one_line_before_spark(tmp_path, capsys):
    folder = tmp_path / "pre-trained-models-pt"
    folder.mkdir()
    for member in ("CHAP_A", "CHAP_B"):
        (folder / f"{member}.pth").write_bytes(b"")
    (folder / "CHAP_ALL_ADULTS.pth").write_text("not a checkpoint")
    out = tmp_path / "out"
    cases = [("CHAP", folder, f"{folder / 'CHAP_C.pth'}: no such file; expected DeepPostures' pre-trained model "
                              "CHAP_C there (MSSE-2021/pre-trained-models-pt/CHAP_C.pth)"),
             ("CHAP_A", tmp_path / "none", f"--pretrained-dir {tmp_path / 'none'}: no such folder; expected "
                                           "DeepPostures' pre-trained-models-pt folder holding CHAP_A.pth"),
             ("CHAP_ALL_ADULTS", folder, f"{folder / 'CHAP_ALL_ADULTS.pth'}: not a zip archive")]
    for model, pretrained_dir, error in cases:  # no Spark session is given: reaching Spark would start one
        with pytest.raises(InputError) as stop:
            predict(PredictSettings(pre_processed_dir=str(tmp_path / "missing"), predictions_dir=str(out),
                                    model=model, pretrained_dir=str(pretrained_dir)))
        assert str(stop.value).startswith(error), stop.value
        assert not out.exists()
    # The command line: one line, exit code 2.
    with pytest.raises(SystemExit) as stop:
        chap_predict.main(["--model", "CHAP_CHILDREN", "--predictions-dir", str(out)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: --model CHAP_CHILDREN needs --pretrained-dir DIR, the folder holding "
                                       "CHAP_CHILDREN.pth (DeepPostures' MSSE-2021/pre-trained-models-pt)\n")
