"""The data stage: DeepPostures' pre-processed H5 day files in, a Petastorm store out.

Input, one folder per subject, one file per day of wear (see :mod:`chap_mop.data.h5_format`)::

    <input>/<subject_id>/<YYYY-MM-DD>.h5

Output, split by subject (see :mod:`chap_mop.data.schema`)::

    <output>/train_data/     Petastorm dataset of WindowSchema rows, one per 10-s window
    <output>/val_data/       the same for the validation subjects
    <output>/test_data/      the same for the test subjects, with a test fraction > 0
    <output>/manifest.json   written last: its presence marks a complete store

Both locations may be plain paths, ``file://`` URLs on a file system that every Spark worker
mounts, or ``hdfs://`` URLs (read through pyarrow's Hadoop file system). Day files are read on
the Spark executors, each once and whole, and written as Parquet columns by the same tasks;
the driver only plans, checks and writes the metadata. :func:`prepare_store` is the stage;
``chap-prep`` and ``prep_petastorm_data.py`` are its command line.
"""
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow.fs as pafs
from pyspark.sql import SparkSession

from chap_mop.data import legacy_arrow, prep
from chap_mop.data.petastorm_metadata import write_petastorm_metadata
from chap_mop.data.schema import TEST_DIR, TRAIN_DIR, VAL_DIR
from chap_mop.errors import InputError
from chap_mop.files import check_writable, folder_lock, local_path
from chap_mop.runtime.spark_progress import PROGRESS_EVERY_S, job_progress
from chap_mop.runtime.spark_session import spark_for


@dataclass
class PrepSettings:
    """What :func:`prepare_store` converts, where to, and how.

    :param input: folder of subject folders of day files: path, ``file://`` or ``hdfs://`` URL,
        readable by every Spark worker.
    :param output: store folder: new, empty, or a store written here before (replaced); writable
        by every Spark worker.
    :param master: Spark master URL; None: spark-submit's or ``spark-defaults.conf``'s, else ``local[*]``.
    :param train_fraction: fraction of subjects (rounded down) that train; the rest validate or test.
    :param test_fraction: fraction of subjects (rounded down, at least one when > 0) held out to
        test the chosen model; 0: no test split.
    :param seed: seed of the subject split.
    :param partitions: Parquet files per split and minimum row groups per split, at least the
        number of cerebro workers; None: Spark's default parallelism.
    :param row_group_size_mb: upper bound of one Parquet row group, MB (a worker holds one in memory).
    :param skip_bad_files: skip and list bad day files and empty subject folders instead of stopping.
    :param progress_every_s: seconds between progress lines of each pass.
    :param verbose: also show Spark's own lines.
    """
    input: str = "data/demo_h5"
    output: str = "data/petastorm"
    master: str | None = None
    train_fraction: float = 0.7
    test_fraction: float = 0.0
    seed: int = 2021
    partitions: int | None = None
    row_group_size_mb: int = 64
    skip_bad_files: bool = False
    progress_every_s: float = PROGRESS_EVERY_S
    verbose: bool = False

    def check(self) -> None:
        """:raises InputError: a fraction, partition count or row group size out of range."""
        if not 0 < self.train_fraction < 1:
            raise InputError(f"train fraction {self.train_fraction}: expected 0 < train fraction < 1")
        if not (0 <= self.test_fraction and self.train_fraction + self.test_fraction < 1 - 1e-9):  # 0.7 + 0.3 is 1
            raise InputError(f"test fraction {self.test_fraction} with train fraction {self.train_fraction}: "
                             "expected 0 <= test fraction < 1 - train fraction, so that some subjects validate")
        if self.partitions is not None and self.partitions < 1:
            raise InputError(f"partitions {self.partitions}: expected 1 or more")
        if not 1 <= self.row_group_size_mb <= 2047:
            raise InputError(f"row group size {self.row_group_size_mb} MB: expected 1 to 2047")
        if not self.progress_every_s > 0:
            raise InputError(f"--progress-every {self.progress_every_s}: expected more than 0 seconds")


def prepare_store(settings: PrepSettings, spark: SparkSession | None = None) -> dict:
    """Check ``settings``, then convert their input to a Petastorm store at their output.

    :param spark: a session to run on (left running); None: start one and stop it on every way out.
    :return: the manifest that was written.
    :raises InputError: bad settings or input, before anything in the output changes.
    """
    settings.check()
    check_writable(settings.output, "output folder")
    legacy_arrow.install()
    prep.check_output(*prep.resolve(settings.output)[:2])  # before the lock is written into it
    local = local_path(settings.output)
    # One prep per output folder on a local or shared file system (HDFS has no such lock).
    with folder_lock(Path(local), "output folder") if local else contextlib.nullcontext():
        with spark_for(spark, settings.master, "DeepPostures - Petastorm data preparation") as session:
            partitions = settings.partitions or session.sparkContext.defaultParallelism
            return prepare(session, settings.input, settings.output, settings.train_fraction, settings.seed,
                           partitions, settings.row_group_size_mb, settings.skip_bad_files,
                           settings.progress_every_s, settings.test_fraction)


def check_inputs(spark: SparkSession, fs: pafs.FileSystem, root: str, skip_bad_files: bool,
                 progress_every_s: float = PROGRESS_EVERY_S) -> tuple[dict[str, list[str]], dict[str, int], list[prep.Problem]]:
    """Pass 1, on the executors: check every day file's structure and count its rows.

    :return: usable subjects -> day files, rows per subject, and the skipped files and folders.
    :raises InputError: a bad file or folder (without ``skip_bad_files``), or no usable subject.
    """
    day_files, problems = prep.find_day_files(fs, root)
    listed = [(subject, path) for subject, paths in day_files.items() for path in paths]
    print(f"checking {len(listed)} day files of {len(day_files) + len(problems)} subject folders in {root}")
    sc = spark.sparkContext
    # A few tasks per core, so that one slow file system read does not hold up the others.
    tasks = max(1, min(len(listed), 4 * sc.defaultParallelism))
    with job_progress(sc, "pass 1", lambda done, _: f"about {len(listed) * done // tasks}/{len(listed)} "
                                                    "day files checked", progress_every_s):
        checked = sc.parallelize(listed, tasks).map(lambda item: prep.inspect_day_file(fs, *item)).collect()
    problems += [problem for _, _, _, problem in checked if problem]
    if problems and not skip_bad_files:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{problems[0]}{more}; --skip-bad-files skips bad files")
    bad = {problem.path for problem in problems}
    good = {s: [p for p in paths if p not in bad] for s, paths in day_files.items()}
    good = {s: paths for s, paths in good.items() if paths}
    if not good:
        raise InputError(f"no usable day file under {root}")
    rows = Counter()
    for subject, _, n, _ in checked:
        rows[subject] += n  # 0 for a bad file
    return good, {s: rows[s] for s in good}, problems


def write_splits(spark: SparkSession, in_fs: pafs.FileSystem, out_fs: pafs.FileSystem, plans: list[prep.SplitPlan],
                 day_files: dict[str, list[str]], staging: str, row_group_size_mb: int,
                 progress_every_s: float = PROGRESS_EVERY_S) -> None:
    """Pass 2, on the executors: each Spark task writes one planned Parquet file of one split.

    A task reads its subjects' day files (subject by subject, days by name) and writes their
    columns itself, so each subject's windows land contiguous and in time order in a single file
    and no window passes through Spark. The driver then writes each split's Petastorm metadata.
    """
    tasks = [prep.FileTask(f"{staging}/{plan.folder}", index, [(s, p) for s in subjects for p in day_files[s]],
                           sum(plan.rows[s] for s in subjects),
                           prep.rows_per_row_group(row_group_size_mb, plan.max_rows_per_row_group))
             for plan in plans for index, subjects in enumerate(plan.files)]
    for plan in plans:
        out_fs.create_dir(f"{staging}/{plan.folder}")
    tasks.sort(key=lambda task: -task.rows)  # largest first, so that the last tasks to start are short
    windows = sum(task.rows for task in tasks)

    def describe(done: int, seconds: float) -> str:
        # Row groups reach the disk as they are written: the files' bytes count windows within a file.
        rows = min(windows, prep.windows_written(out_fs, [f"{staging}/{plan.folder}" for plan in plans]))
        return (f"{done}/{len(tasks)} Parquet files written, about {rows}/{windows} windows, "
                f"{rows / seconds:,.0f} windows/s")

    with job_progress(spark.sparkContext, "pass 2", describe, progress_every_s):
        written = (spark.sparkContext.parallelize(tasks, len(tasks))
                   .map(partial(prep.write_parquet_file, in_fs, out_fs)).collect())
    for plan in plans:
        dataset = f"{staging}/{plan.folder}"
        write_petastorm_metadata(out_fs, dataset, {name: groups for folder, name, groups, _ in written
                                                        if folder == dataset})


def prepare(spark: SparkSession, input_url: str, output_url: str, train_fraction: float, seed: int, partitions: int,
            row_group_size_mb: int, skip_bad_files: bool = False, progress_every_s: float = PROGRESS_EVERY_S,
            test_fraction: float = 0.0) -> dict:
    """Convert ``input_url`` to a Petastorm store at ``output_url``, replacing an earlier store there.

    The output must be new, empty, or a store this project wrote; only the store's own entries
    (manifest, ``train_data``, ``val_data``, ``test_data``, staging folders) are replaced, anything
    else stays.

    Every check (the output, the inputs, pass 1, the split) comes before anything in the output
    changes. The datasets are written to a hidden staging folder inside the output; only when all
    are written does the old manifest go, the new datasets move into place and the new manifest come
    last. A failed run leaves an earlier store as it was.

    :return: the manifest that was written.
    """
    started = time.monotonic()
    in_fs, in_root, in_url = prep.resolve(input_url)
    out_fs, out_root, out_url = prep.resolve(output_url)
    prep.check_output(out_fs, out_root)

    day_files, rows, skipped = check_inputs(spark, in_fs, in_root, skip_bad_files, progress_every_s)
    print(f"pass 1: {sum(rows.values())} windows in {sum(map(len, day_files.values()))} usable day files, "
          f"{time.monotonic() - started:.1f} s")
    for problem in skipped:
        print(f"skipped {problem}")
    ignored = prep.ignored_files(in_fs, in_root)
    if ignored:
        shown = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        print(f"ignored {len(ignored)} entries that are not day files (*.h5): {shown} (listed in the manifest)")
    train, val, test = prep.split_subjects(list(day_files), train_fraction, seed, test_fraction)
    plans = [prep.plan_split("train", TRAIN_DIR, train, rows, partitions),
             prep.plan_split("validation", VAL_DIR, val, rows, partitions)]
    if test:  # never read by model selection but to report on the chosen model
        plans.append(prep.plan_split("test", TEST_DIR, test, rows, partitions))

    prep.claim_output(out_fs, out_root)
    staging = prep.new_staging(out_fs, out_root)
    try:
        writing = time.monotonic()
        write_splits(spark, in_fs, out_fs, plans, day_files, f"{out_root}/{staging}", row_group_size_mb,
                     progress_every_s)
        print(f"pass 2: wrote {sum(len(plan.files) for plan in plans)} Parquet files in "
              f"{time.monotonic() - writing:.1f} s")
        prep.unmark_store(out_fs, out_root)  # the old store is complete until the new one is
        for plan in plans:
            prep.delete_if_exists(out_fs, f"{out_root}/{plan.folder}")
            out_fs.move(f"{out_root}/{staging}/{plan.folder}", f"{out_root}/{plan.folder}")
        if not test:  # an earlier store's test split belongs to subjects that may now train
            prep.delete_if_exists(out_fs, f"{out_root}/{TEST_DIR}")
    finally:
        prep.delete_if_exists(out_fs, f"{out_root}/{staging}")

    splits = {plan.name: prep.split_summary(out_fs, f"{out_root}/{plan.folder}", plan) for plan in plans}
    for name, split in splits.items():
        print(f"{name}: {len(split['subjects'])} subjects, {split['rows']} windows, {split['files']} Parquet "
              f"files, {split['row_groups']} row groups")
    manifest = {"input": in_url, "seed": seed, "train_fraction": train_fraction, "test_fraction": test_fraction,
                "partitions": partitions,
                "row_group_size_mb": row_group_size_mb, "splits": splits,
                "skipped": [{"path": p.path, "reason": p.reason} for p in skipped], "ignored": ignored}
    prep.write_manifest(out_fs, out_root, manifest)
    seconds = time.monotonic() - started
    total = sum(split["rows"] for split in splits.values())
    print(f"wrote {len(train) + len(val) + len(test)} subjects, {total} windows to {out_url} in {seconds:.1f} s "
          f"({total / seconds:.0f} windows/s)")
    return manifest
