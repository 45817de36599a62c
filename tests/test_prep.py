"""prep_petastorm_data.py on real local Spark: real Petastorm output read back with petastorm.

One conversion per module (``store``) carries most assertions; bad inputs are checked through
the driver-side functions, and once end to end through the script.
"""
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from petastorm import make_reader

from chap_mop.data import prepare as script
from chap_mop.data import prep
from chap_mop.dev.demo_data import write_demo_dataset
from chap_mop.errors import InputError
from chap_mop.data.h5_format import read_day_file, write_day_file
from chap_mop.data.schema import MANIFEST_NAME, TEST_DIR, TRAIN_DIR, VAL_DIR
from chap_mop.cli import chap_prep
from chap_mop.data.prepare import PrepSettings
from conftest import FIXTURE_SUBJECT, prepare_in_process, run_script

SEED = 7
PARTITIONS = 3
T0 = 1_600_000_000  # s since the epoch


def write_subject(root: Path, name: str, day_rows: list[int], seed: int = 0, narrow: bool = False) -> Path:
    """A subject folder with one day file per entry of ``day_rows`` (windows 10 s apart throughout).

    :param narrow: float32 data and int32 flags and labels, as other DeepPostures versions write.
    """
    rng = np.random.default_rng(seed)
    flags, floats = (np.int32, np.float32) if narrow else (np.int64, np.float64)
    folder = root / name
    folder.mkdir(parents=True)
    start = T0
    for day, n in enumerate(day_rows):
        write_raw(folder / f"2021-01-{day + 1:02d}.h5", time=start + 10.0 * np.arange(n),
                  data=rng.normal(size=(n, 100, 3)).astype(floats), non_wear=rng.integers(0, 2, n).astype(flags),
                  sleeping=rng.integers(0, 2, n).astype(flags), label=rng.integers(-1, 2, n).astype(flags))
        start += 10 * n
    return folder


def write_raw(path: Path, **datasets: np.ndarray) -> None:
    """A day file holding exactly the given datasets, malformed on purpose."""
    with h5py.File(path, "w") as f:
        for name, values in datasets.items():
            f.create_dataset(name, data=values)


def good_columns(n: int) -> dict[str, np.ndarray]:
    """Valid columns of ``n`` windows, as DeepPostures writes them."""
    return {"time": T0 + 10.0 * np.arange(n), "data": np.zeros((n, 100, 3)), "non_wear": np.zeros(n, np.int64),
            "sleeping": np.zeros(n, np.int64), "label": np.zeros(n, np.int64)}


def expected_subject(folder: Path) -> dict[str, np.ndarray]:
    """The H5 rows of one subject, days in name order, rows in file order."""
    days = [read_day_file(str(p)) for p in sorted(folder.glob("*.h5")) if not p.name.startswith(".")]
    return {name: np.concatenate([d[name] for d in days]) for name in days[0]}


def run_prepare(spark, input_dir: Path | str, output_dir: Path, **settings) -> tuple[dict, str]:
    """``prepare`` in this process; returns the manifest and what it printed."""
    settings = {"train_fraction": 0.7, "seed": SEED, "partitions": PARTITIONS, "row_group_size_mb": 64} | settings
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        manifest = script.prepare(spark, str(input_dir), str(output_dir), **settings)
    return manifest, printed.getvalue()


@pytest.fixture(scope="module")
def store(spark, tmp_path_factory):
    """Generated subjects (demo data and hand-made ones of very different sizes, one with an empty
    day) plus the real DeepPostures example when ../shared is present, converted once."""
    root = tmp_path_factory.mktemp("prep")
    input_dir = root / "h5"
    write_demo_dataset(input_dir, subjects=3, days=2, hours_per_day=1, seed=0)
    write_subject(input_dir, "big", [2000, 0, 1500], seed=1)
    write_subject(input_dir, "tiny", [7], seed=2)
    write_subject(input_dir, "narrow", [300, 200], seed=3, narrow=True)
    if FIXTURE_SUBJECT.is_dir():
        shutil.copytree(FIXTURE_SUBJECT, input_dir / FIXTURE_SUBJECT.name)
    write_subject(input_dir, ".hidden_subject", [5])  # hidden entries are not data
    write_subject(input_dir / "big", ".stray", [3])
    (input_dir / "big" / "notes.txt").write_text("not a day file")
    manifest, printed = run_prepare(spark, input_dir, root / "out")
    subjects = sorted(p.name for p in input_dir.iterdir() if not p.name.startswith("."))
    return {"input": input_dir, "output": root / "out", "manifest": manifest, "printed": printed,
            "subjects": subjects, "expected": {s: expected_subject(input_dir / s) for s in subjects}}


def read_split(output: Path, folder: str) -> dict[str, list]:
    """Every row of one split through petastorm, grouped by subject in reading order."""
    rows: dict[str, list] = {}
    with make_reader(output.as_uri() + "/" + folder, reader_pool_type="dummy", shuffle_row_groups=False,
                     num_epochs=1) as reader:
        for row in reader:
            rows.setdefault(row.id, []).append(row)
    return rows


def parquet_tables(output: Path, folder: str) -> list:
    return [pq.read_table(p) for p in sorted((output / folder).glob("*.parquet"))]


def test_every_row_round_trips_through_petastorm(store):
    for split, folder in [("train", TRAIN_DIR), ("validation", VAL_DIR)]:
        rows = read_split(store["output"], folder)
        with_rows = [s for s in store["manifest"]["splits"][split]["subjects"] if len(store["expected"][s]["time"])]
        assert sorted(rows) == sorted(with_rows)
        for subject, got in rows.items():
            want = store["expected"][subject]
            assert len(got) == len(want["time"])
            assert got[0].data.dtype == np.float32 and got[0].data.shape == (100, 3)
            assert type(got[0].time) is np.int64 and got[0].label.dtype == np.int32
            np.testing.assert_array_equal(np.stack([r.data for r in got]), want["data"].astype(np.float32))
            for name in ["time", "non_wear", "sleeping", "label"]:
                np.testing.assert_array_equal(np.array([getattr(r, name) for r in got]), want[name], err_msg=name)


def test_each_subject_is_contiguous_in_time_order_in_one_file(store):
    for folder in [TRAIN_DIR, VAL_DIR]:
        ids_per_file = [t.column("id").to_pylist() for t in parquet_tables(store["output"], folder)]
        runs = [s for ids in ids_per_file for i, s in enumerate(ids) if i == 0 or ids[i - 1] != s]
        assert len(runs) == len(set(runs)), f"a subject is split across files or interleaved: {runs}"
        for table in parquet_tables(store["output"], folder):
            assert [str(f.type) for f in table.schema] == ["string", "int64", "binary", "int32", "int32", "int32"]
            for subject in set(table.column("id").to_pylist()):
                times = table.filter(pc.equal(table["id"], subject))["time"].to_numpy()
                assert np.all(np.diff(times) > 0)


def test_manifest_records_split_counts_and_layout(store):
    manifest = store["manifest"]
    assert manifest == json.loads((store["output"] / MANIFEST_NAME).read_text())
    train, val = manifest["splits"]["train"], manifest["splits"]["validation"]
    assert sorted(train["subjects"] + val["subjects"]) == store["subjects"]
    assert not set(train["subjects"]) & set(val["subjects"])
    assert len(train["subjects"]) == int(0.7 * len(store["subjects"]))
    assert (manifest["seed"], manifest["train_fraction"], manifest["skipped"]) == (SEED, 0.7, [])
    assert manifest["input"] == store["input"].as_uri()
    for split in (train, val):
        assert split["rows_per_subject"] == {s: len(store["expected"][s]["time"]) for s in split["subjects"]}
        assert split["rows"] == sum(split["rows_per_subject"].values())
        with_rows = sum(1 for n in split["rows_per_subject"].values() if n)
        assert split["files"] == min(PARTITIONS, with_rows) == len(split["subjects_per_file"])
        assert split["row_groups"] >= PARTITIONS
    assert store["expected"]["big"]["time"].size == 3500  # its empty middle day adds nothing
    assert f"wrote {len(store['subjects'])} subjects" in store["printed"]
    assert "windows/s" in store["printed"]
    assert not [p for p in store["output"].iterdir() if p.name.startswith(".incomplete")]
    # A file in a subject folder that is not a day file is said to be ignored, not passed over in silence.
    ignored = [Path(p).relative_to(store["input"]) for p in store["manifest"]["ignored"]]
    expected = sorted(p.relative_to(store["input"]) for p in store["input"].glob("[!.]*/[!.]*") if p.suffix != ".h5")
    assert Path("big/notes.txt") in ignored and sorted(ignored) == expected
    assert f"ignored {len(expected)} entries that are not day files (*.h5)" in store["printed"]


def test_real_deeppostures_example_is_converted(store, real_fixture_subject):
    rows = {**read_split(store["output"], TRAIN_DIR), **read_split(store["output"], VAL_DIR)}
    example = rows[real_fixture_subject.name]
    assert len(example) == 60 and {r.label for r in example} == {-1}


def test_files_are_balanced_by_rows_not_subject_count(store):
    rows = {"a": 1000, "b": 600, "c": 500, "d": 100, "e": 50, "empty": 0}
    files = prep.assign_to_files(rows, 2)
    totals = sorted(sum(rows[s] for s in f) for f in files)
    assert totals == [1100, 1150] and sorted(s for f in files for s in f) == ["a", "b", "c", "d", "e"]
    assert prep.assign_to_files(rows, 10) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    for split, folder in [("train", TRAIN_DIR), ("validation", VAL_DIR)]:
        plan = store["manifest"]["splits"][split]
        per_file = sorted(t.num_rows for t in parquet_tables(store["output"], folder))
        assert per_file == sorted(sum(plan["rows_per_subject"][s] for s in f) for f in plan["subjects_per_file"])


def test_row_groups_are_capped_when_files_are_fewer_than_partitions():
    plan = prep.plan_split("validation", VAL_DIR, ["x", "y"], {"x": 100, "y": 5}, partitions=4)
    assert len(plan.files) == 2 and plan.max_rows_per_row_group == 26  # 105 // 4: 4 + 1 row groups
    assert prep.plan_split("t", TRAIN_DIR, ["x", "y"], {"x": 100, "y": 5}, 2).max_rows_per_row_group is None
    assert prep.plan_split("t", TRAIN_DIR, ["x"], {"x": 3}, 4).max_rows_per_row_group is None  # < 4 rows
    with pytest.raises(InputError, match="split has no rows"):
        prep.plan_split("t", TRAIN_DIR, ["x"], {"x": 0}, 4)


def test_capped_split_of_store_has_enough_small_row_groups(store):
    for split, folder in [("train", TRAIN_DIR), ("validation", VAL_DIR)]:
        cap = store["manifest"]["splits"][split]["max_rows_per_row_group"]
        groups = [t.metadata.row_group(i).num_rows for t in
                  (pq.ParquetFile(p) for p in (store["output"] / folder).glob("*.parquet"))
                  for i in range(t.metadata.num_row_groups)]
        assert len(groups) == store["manifest"]["splits"][split]["row_groups"] >= PARTITIONS
        if cap:
            assert max(groups) <= cap


def test_split_is_by_subject_and_reproducible():
    names = [f"s{i:02d}" for i in range(10)]
    train, val, test = prep.split_subjects(names, 0.7, 1)
    assert len(train) == 7 and sorted(train + val) == names and test == []
    assert prep.split_subjects(list(reversed(names)), 0.7, 1) == (train, val, [])  # listing order is irrelevant
    assert len({tuple(prep.split_subjects(names, 0.7, seed)[0]) for seed in range(5)}) > 1
    assert len(prep.split_subjects(names[:2], 0.7, 1)[0]) == 1
    with pytest.raises(InputError, match="1 usable subject.*0 train, 1 validation"):
        prep.split_subjects(["only"], 0.7, 1)
    with pytest.raises(InputError, match="10 train, 0 validation"):
        prep.split_subjects(names, 1.0, 1)


def test_test_split_is_disjoint_reproducible_and_keeps_the_train_split():
    names = [f"s{i:02d}" for i in range(10)]
    train, val, test = prep.split_subjects(names, 0.6, 3, test_fraction=0.2)
    assert (len(train), len(val), len(test)) == (6, 2, 2) and sorted(train + val + test) == names
    assert prep.split_subjects(list(reversed(names)), 0.6, 3, 0.2) == (train, val, test)
    assert train == prep.split_subjects(names, 0.6, 3)[0]  # the test split comes out of validation only
    assert len(prep.split_subjects(names, 0.6, 3, test_fraction=0.05)[2]) == 1  # rounded down, at least one
    with pytest.raises(InputError, match="2 usable subject.*1 train, 0 validation and 1 test"):
        prep.split_subjects(names[:2], 0.5, 3, test_fraction=0.3)


def test_prep_writes_the_test_split_and_refuses_fractions_without_validation(spark, tmp_path):
    write_demo_dataset(tmp_path / "h5", subjects=5, days=1, hours_per_day=1, seed=4)
    prepare_in_process(spark, tmp_path / "h5", tmp_path / "store", train_fraction=0.4, test_fraction=0.2, partitions=1)
    manifest = json.loads((tmp_path / "store" / MANIFEST_NAME).read_text())
    subjects = {name: split["subjects"] for name, split in manifest["splits"].items()}
    assert [len(subjects[name]) for name in ("train", "validation", "test")] == [2, 2, 1]
    assert len({s for split in subjects.values() for s in split}) == 5 and manifest["test_fraction"] == 0.2
    assert manifest["splits"]["test"]["folder"] == TEST_DIR and (tmp_path / "store" / TEST_DIR).is_dir()
    test_rows = pq.read_table(tmp_path / "store" / TEST_DIR, columns=["id"]).column("id").to_pylist()
    assert set(test_rows) == set(subjects["test"]) and len(test_rows) == manifest["splits"]["test"]["rows"]
    with pytest.raises(InputError, match="expected 0 <= test fraction < 1 - train fraction"):
        prepare_in_process(None, tmp_path / "h5", tmp_path / "other", train_fraction=0.7, test_fraction=0.3)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("settings, message", [
    ({"train_fraction": 1.0}, "train fraction 1.0: expected 0 < train fraction < 1"),
    ({"partitions": 0}, "partitions 0: expected 1 or more"),
    ({"row_group_size_mb": 4096}, "row group size 4096 MB: expected 1 to 2047"),
])
def test_bad_prep_settings_are_refused_before_spark_starts(settings, message):
    with pytest.raises(InputError, match=re.escape(message)):
        PrepSettings(**settings).check()


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(b"plain text, not HDF5"), "not a readable HDF5 file"),
    (lambda p: write_raw(p, **{k: v for k, v in good_columns(4).items() if k != "label"}), "missing dataset"),
    (lambda p: write_raw(p, **good_columns(4) | {"data": np.zeros((4, 100, 2))}), r"shape \(4, 100, 2\)"),
    (lambda p: write_raw(p, **good_columns(4) | {"label": np.zeros(3, np.int64)}), "unequal lengths"),
    (lambda p: write_raw(p, **good_columns(4) | {"label": np.array([0, 1, 2, -1])}), "outside"),
    (lambda p: write_raw(p, **good_columns(200) | {"data": np.where(np.arange(200)[:, None, None] >= 100, np.nan, 0.0)
                                                   * np.ones((200, 100, 3))}),
     r"dataset 'data' holds NaN or infinite values in 100 window\(s\), first at row 100"),
    (lambda p: write_raw(p, **good_columns(4) | {"data": np.full((4, 100, 3), np.inf)}), "NaN or infinite"),
    (lambda p: write_raw(p, **good_columns(4) | {"time": T0 + np.array([0.0, 10, 10, 20])}),
     r"'time' is not strictly increasing: 1 step\(s\) back or repeated, first at row 2"),
    (lambda p: write_raw(p, **good_columns(4) | {"time": T0 + np.array([30.0, 20, 10, 0])}),
     r"'time' is not strictly increasing: 3 step\(s\)"),
])
def test_bad_day_file_is_named_with_its_fault(tmp_path, make, problem):
    path = tmp_path / "2021-01-01.h5"
    make(path)
    subject, where, rows, found = prep.inspect_day_file(pafs.LocalFileSystem(), "s", str(path))
    assert (subject, where, rows, found.path) == ("s", str(path), 0, str(path))
    assert re.search(problem, str(found)) and str(found).startswith(f"{path}: ")


def test_empty_day_file_is_valid(tmp_path):
    path = tmp_path / "2021-01-01.h5"
    write_day_file(str(path), *good_columns(0).values())
    assert prep.inspect_day_file(pafs.LocalFileSystem(), "s", str(path)) == ("s", str(path), 0, None)


def test_bad_input_folders(tmp_path):
    fs = pafs.LocalFileSystem()
    with pytest.raises(InputError, match=f"input folder {tmp_path}/missing does not exist"):
        prep.find_day_files(fs, str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").mkdir()
    with pytest.raises(InputError, match=f"input folder {tmp_path}/empty holds no subject folders"):
        prep.find_day_files(fs, str(tmp_path / "empty"))
    (tmp_path / "in" / "no_days").mkdir(parents=True)
    (tmp_path / "in" / "no_days" / "raw.csv").write_text("x")
    write_subject(tmp_path / "in", "good", [3])
    day_files, problems = prep.find_day_files(fs, str(tmp_path / "in"))
    assert list(day_files) == ["good"]
    assert [str(p) for p in problems] == [f"{tmp_path}/in/no_days: subject folder holds no day files (*.h5)"]


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory) -> Path:
    """Two good subjects, one with a bad day beside a good one, one with only a bad day, one empty."""
    root = tmp_path_factory.mktemp("bad") / "h5"
    write_subject(root, "good_1", [30, 20])
    write_subject(root, "good_2", [25], seed=1)
    write_subject(root, "mixed", [10, 10], seed=2)
    write_raw(root / "mixed" / "2021-01-03.h5", **good_columns(4) | {"label": np.array([0, 1, 5, 1])})
    (root / "all_bad").mkdir()
    (root / "all_bad" / "2021-01-01.h5").write_bytes(b"junk")
    (root / "no_days").mkdir()
    return root


def test_bad_files_stop_the_job_with_a_one_line_message(spark, bad_input):
    fs, root, _ = prep.resolve(str(bad_input))
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(InputError) as error:
        script.check_inputs(spark, fs, root, skip_bad_files=False)
    message = str(error.value)
    assert message.startswith(f"{bad_input}/no_days: subject folder holds no day files") and "\n" not in message
    assert "(and 2 more); --skip-bad-files skips bad files" in message


def test_skip_bad_files_skips_and_lists_them(spark, bad_input, tmp_path):
    manifest, printed = run_prepare(spark, bad_input.as_uri(), tmp_path / "out", train_fraction=0.5,
                                    skip_bad_files=True)
    assert manifest["input"] == bad_input.as_uri()
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert sorted(skipped) == [f"{bad_input}/all_bad/2021-01-01.h5", f"{bad_input}/mixed/2021-01-03.h5",
                               f"{bad_input}/no_days"]
    assert "not a readable HDF5 file" in skipped[f"{bad_input}/all_bad/2021-01-01.h5"]
    assert "'label' holds 1 value(s) outside" in skipped[f"{bad_input}/mixed/2021-01-03.h5"]
    for path, reason in skipped.items():
        assert f"skipped {path}: {reason}" in printed
    rows = {**manifest["splits"]["train"]["rows_per_subject"], **manifest["splits"]["validation"]["rows_per_subject"]}
    assert rows == {"good_1": 50, "good_2": 25, "mixed": 20}


def test_rerun_replaces_the_store_cleanly(spark, store, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(store["output"], output)
    (output / ".incomplete-killed-run" / TRAIN_DIR).mkdir(parents=True)  # left by a killed run
    manifest, _ = run_prepare(spark, store["input"], output, seed=SEED + 1, partitions=2)
    assert manifest["seed"] == SEED + 1
    for split, folder in [("train", TRAIN_DIR), ("validation", VAL_DIR)]:
        assert len(list((output / folder).glob("*.parquet"))) == manifest["splits"][split]["files"] <= 2
        assert sorted(read_split(output, folder)) == sorted(
            s for s in manifest["splits"][split]["subjects"] if manifest["splits"][split]["rows_per_subject"][s])
    assert sorted(p.name for p in output.iterdir()) == [prep.STORE_MARKER, MANIFEST_NAME, TRAIN_DIR, VAL_DIR]


def test_a_foreign_folder_is_refused_and_left_as_it_was(spark, store, tmp_path):
    output = tmp_path / "thesis"
    output.mkdir()
    (output / "thesis.txt").write_text("three years of work")
    (output / "figures").mkdir()
    with pytest.raises(InputError, match=rf"output folder {output} is not empty and holds no data store of this "
                                         r"project \(2 entries: figures, thesis.txt\); choose a new or empty folder"):
        run_prepare(spark, store["input"], output)
    assert sorted(p.name for p in output.iterdir()) == ["figures", "thesis.txt"]
    assert (output / "thesis.txt").read_text() == "three years of work"
    (output / "figures").rmdir()
    (output / "thesis.txt").unlink()
    (output.parent / "a_file").write_text("x")
    with pytest.raises(InputError, match="is a file; expected a folder"):
        run_prepare(spark, store["input"], output.parent / "a_file")


def test_rerun_over_an_old_store_keeps_what_is_not_the_stores(spark, store, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(store["output"], output)
    (output / prep.STORE_MARKER).unlink()  # a store written before the marker existed: its manifest says so
    (output / "notes.txt").write_text("mine")
    run_prepare(spark, store["input"], output, partitions=2)
    assert (output / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in output.iterdir()) == [prep.STORE_MARKER, MANIFEST_NAME, "notes.txt", TRAIN_DIR,
                                                        VAL_DIR]


def test_failed_write_leaves_the_old_store_as_it_was(spark, store, tmp_path, monkeypatch):
    output = tmp_path / "out"
    shutil.copytree(store["output"], output)
    old_train = sorted(p.name for p in (output / TRAIN_DIR).iterdir())
    real_write_splits = script.write_splits

    def write_then_fail(*args):
        real_write_splits(*args)  # both splits complete in the staging folder, then the disk fills
        raise OSError("disk full")

    monkeypatch.setattr(script, "write_splits", write_then_fail)
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(OSError, match="disk full"):
        script.prepare(spark, str(store["input"]), str(output), 0.7, SEED + 1, 2, 64)
    assert sorted(p.name for p in output.iterdir()) == [prep.STORE_MARKER, MANIFEST_NAME, TRAIN_DIR, VAL_DIR]
    assert sorted(p.name for p in (output / TRAIN_DIR).iterdir()) == old_train
    assert json.loads((output / MANIFEST_NAME).read_text()) == store["manifest"]


def test_a_failed_prep_never_touches_a_good_store(spark, store, tmp_path):
    """A typo in the input folder stops before anything in the output changes: the store stays usable."""
    output = tmp_path / "out"
    shutil.copytree(store["output"], output)
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="does not exist"):
        run_prepare(spark, tmp_path / "typo", output)
    assert {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()} == before


def test_a_second_prep_on_one_output_is_refused_before_spark(store, tmp_path):
    """Two preps writing one output would delete each other's staging folder: the second stops in one line."""
    from chap_mop.data.prepare import PrepSettings, prepare_store
    from chap_mop.files import folder_lock
    output = tmp_path / "out"
    shutil.copytree(store["output"], output)
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    with folder_lock(output, "output folder"):  # what a running prep holds
        with pytest.raises(InputError, match=f"output folder {output} is in use by another process"):
            prepare_store(PrepSettings(input=str(store["input"]), output=str(output)))  # no session: refused first
    assert {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()} == before


def test_a_store_that_lost_or_gained_a_file_is_refused_before_spark(store, tmp_path):
    from chap_mop.data.data_store import DataStoreError, read_store
    output = tmp_path / "out"
    shutil.copytree(store["output"], output)
    read_store(str(output))  # as written: whole
    lost = sorted((output / TRAIN_DIR).glob("*.parquet"))[0]
    lost.rename(tmp_path / lost.name)
    with pytest.raises(DataStoreError, match=f"{lost} is missing: the store is incomplete"):
        read_store(str(output))
    (tmp_path / lost.name).rename(lost)
    shutil.copy(lost, output / TRAIN_DIR / "part-copy.parquet")
    with pytest.raises(DataStoreError, match="part-copy.parquet is not in the store's manifest"):
        read_store(str(output))


def run_prep_script(*args: str) -> subprocess.CompletedProcess:
    return run_script("prep_petastorm_data.py", *args, check=False, timeout_s=300)


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        chap_prep.main(["--help"])
    help_text = capsys.readouterr().out
    assert stop.value.code == 0
    for flag in ["--master", "--pre-processed-dir", "--input", "--store", "--output", "--train-fraction", "--seed",
                 "--partitions", "--row-group-size-mb", "--skip-bad-files", "hdfs://", "manifest.json",
                 "(default: 0.7)", "(default: 64)"]:
        assert flag in help_text, flag


def test_script_stops_on_a_bad_file_with_one_error_line(store, tmp_path):
    input_dir, output = tmp_path / "h5", tmp_path / "out"
    write_subject(input_dir, "a", [5])
    write_subject(input_dir, "b", [5])
    (input_dir / "b" / "2021-01-02.h5").write_bytes(b"junk")
    shutil.copytree(store["output"], output)
    before = (output / MANIFEST_NAME).read_text()
    result = run_prep_script("--master", "local[2]", "--input", str(input_dir), "--output", output.as_uri())
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {input_dir}/b/2021-01-02.h5: not a readable HDF5 file")
    assert "Traceback" not in result.stderr
    assert (output / MANIFEST_NAME).read_text() == before  # the earlier store is left as it was


def test_pass_2_progress_counts_the_windows_of_files_still_being_written(tmp_path):
    """A file being written has its row groups on disk but no footer: its bytes count as windows at the
    finished files' bytes per window; a finished file counts its footer's rows."""
    from chap_mop.data.schema import WINDOW_ARROW_SCHEMA, window_table
    rng = np.random.default_rng(0)
    rows = 600
    day = {"time": np.arange(rows, dtype=np.int64) * 10, "data": rng.normal(size=(rows, 100, 3)).astype(np.float32),
           **{name: np.zeros(rows, np.int32) for name in ("non_wear", "sleeping", "label")}}
    train = tmp_path / "train_data"
    train.mkdir()
    with pq.ParquetWriter(train / "part-0.parquet", WINDOW_ARROW_SCHEMA) as writer:
        writer.write_table(window_table("s1", day), row_group_size=100)
    fs = pafs.LocalFileSystem()
    assert prep.windows_written(fs, [str(train), str(tmp_path / "val_data")]) == rows
    finished = (train / "part-0.parquet").read_bytes()
    (train / "part-1.parquet").write_bytes(finished[:len(finished) // 2])  # half its row groups, no footer yet
    assert prep.windows_written(fs, [str(train)]) == pytest.approx(rows * 1.5, abs=1)
    (train / "part-0.parquet").unlink()  # before any file has finished: the uncompressed bytes per window
    assert prep.windows_written(fs, [str(train)]) == len(finished) // 2 // prep.ROW_BYTES
