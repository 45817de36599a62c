"""Convert DeepPostures' pre-processed H5 day files to the Petastorm datasets cerebro trains on.

Input, one folder per subject, one file per day of wear (see ``chap_mop/data/h5_format.py``)::

    <input>/<subject_id>/<YYYY-MM-DD>.h5

Output, split by subject (see ``chap_mop/data/schema.py``)::

    <output>/train_data/     Petastorm dataset of WindowSchema rows, one per 10-s window
    <output>/val_data/       the same for the validation subjects
    <output>/test_data/      the same for the test subjects, with --test-fraction > 0
    <output>/manifest.json   written last: its presence marks a complete store

Both locations may be plain paths, ``file://`` URLs on a file system that every Spark worker
mounts, or ``hdfs://`` URLs (read through pyarrow's Hadoop file system). Day files are read on
the Spark executors, each once and whole, and written as Parquet columns by the same tasks;
the driver only plans, checks and writes the metadata.

Example: ``python prep_petastorm_data.py --master local[2] --input data/demo_h5 --output data/petastorm``
"""
import argparse
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pyarrow.fs as pafs
from pyspark.sql import SparkSession

from chap_mop.data import prep
from chap_mop.runtime import runtime_env
from chap_mop.errors import InputError
from chap_mop.data.petastorm_metadata import write_petastorm_metadata
from chap_mop.data.schema import TEST_DIR, TRAIN_DIR, VAL_DIR
from chap_mop.runtime.spark_progress import PROGRESS_EVERY_S, job_progress
from chap_mop.runtime.spark_session import start_spark

PROJECT = Path(__file__).resolve().parent


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
        # Tasks start largest first: the windows of the first ``done`` tasks estimate those written.
        rows = sum(task.rows for task in tasks[:done])
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
    (manifest, ``train_data``, ``val_data``, staging folders) are replaced, anything else stays.

    The old manifest goes first and the new one comes last; both datasets are written to a
    hidden temporary folder inside the output and moved into place only when both succeeded.

    :return: the manifest that was written.
    """
    started = time.monotonic()
    in_fs, in_root, in_url = prep.resolve(input_url)
    out_fs, out_root, out_url = prep.resolve(output_url)
    prep.claim_output(out_fs, out_root)
    staging = prep.unmark_store(out_fs, out_root)

    day_files, rows, skipped = check_inputs(spark, in_fs, in_root, skip_bad_files, progress_every_s)
    print(f"pass 1: {sum(rows.values())} windows in {sum(map(len, day_files.values()))} usable day files, "
          f"{time.monotonic() - started:.1f} s")
    for problem in skipped:
        print(f"skipped {problem}")
    train, val, test = prep.split_subjects(list(day_files), train_fraction, seed, test_fraction)
    plans = [prep.plan_split("train", TRAIN_DIR, train, rows, partitions),
             prep.plan_split("validation", VAL_DIR, val, rows, partitions)]
    if test:  # never read by model selection but to report on the chosen model
        plans.append(prep.plan_split("test", TEST_DIR, test, rows, partitions))

    try:
        writing = time.monotonic()
        write_splits(spark, in_fs, out_fs, plans, day_files, f"{out_root}/{staging}", row_group_size_mb,
                     progress_every_s)
        print(f"pass 2: wrote {sum(len(plan.files) for plan in plans)} Parquet files in "
              f"{time.monotonic() - writing:.1f} s")
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
                "skipped": [{"path": p.path, "reason": p.reason} for p in skipped]}
    prep.write_manifest(out_fs, out_root, manifest)
    seconds = time.monotonic() - started
    total = sum(split["rows"] for split in splits.values())
    print(f"wrote {len(train) + len(val) + len(test)} subjects, {total} windows to {out_url} in {seconds:.1f} s "
          f"({total / seconds:.0f} windows/s)")
    return manifest


def main() -> None:
    SPARK_MASTER_URL = "local[*]"  # e.g. spark://host:7077
    H5_PRE_PROCESSED_DATA_DIR = str(PROJECT / "data" / "demo_h5")  # readable by every Spark worker
    OUTPUT_PATH = str(PROJECT / "data" / "petastorm")  # writable by every Spark worker
    TRAIN_FRACTION = 0.7  # fraction of subjects for training; the rest validate (or test)
    TEST_FRACTION = 0.0  # fraction of subjects held out for testing the chosen model; 0: no test split
    SEED = 2021  # fixes which subjects go to train
    # Upper bound of one Parquet row group: a cerebro worker holds one row group in memory at a time.
    ROW_GROUP_SIZE_MB = 64
    # Parquet files and minimum row groups per split; at least the number of cerebro workers.
    # None: Spark's default parallelism, which is also model_selection.py's default worker count.
    NUM_PARTITIONS = None

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--master", default=SPARK_MASTER_URL, help="Spark master URL (default %(default)s)")
    parser.add_argument("--input", default=H5_PRE_PROCESSED_DATA_DIR,
                        help="folder of subject folders of <YYYY-MM-DD>.h5 day files: path, file:// or "
                             "hdfs:// URL (default %(default)s)")
    parser.add_argument("--output", default=OUTPUT_PATH,
                        help="store folder for train_data, val_data and manifest.json: path, file:// or "
                             "hdfs:// URL; new, empty, or a store written here before, which is replaced "
                             "(default %(default)s)")
    parser.add_argument("--train-fraction", type=float, default=TRAIN_FRACTION,
                        help="fraction of subjects (rounded down) for training, the rest validate "
                             "(default %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                        help="fraction of subjects (rounded down, at least one when > 0) held out in test_data "
                             "to test the chosen model; never used for selection (default %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the subject split (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=NUM_PARTITIONS,
                        help="Parquet files per split (at most one per subject) and minimum row groups "
                             "per split; use at least the number of cerebro workers (default: Spark's "
                             "default parallelism)")
    parser.add_argument("--row-group-size-mb", type=int, default=ROW_GROUP_SIZE_MB,
                        help="maximum Parquet row group size in MB, 1-2047 (default %(default)s)")
    parser.add_argument("--skip-bad-files", action="store_true",
                        help="skip unreadable or malformed day files and empty subject folders, and list "
                             "them, instead of stopping at the first")
    parser.add_argument("--verbose", action="store_true", help="also show Spark's own start-up lines")
    parser.add_argument("--progress-every", type=float, default=PROGRESS_EVERY_S,
                        help="seconds between progress lines of each pass (default %(default)s)")
    args = parser.parse_args()
    runtime_env.configure(args.verbose)
    if not 0 < args.train_fraction < 1 or (args.partitions or 1) < 1 or not 1 <= args.row_group_size_mb <= 2047:
        parser.error("expected 0 < --train-fraction < 1, --partitions >= 1, 1 <= --row-group-size-mb <= 2047")
    if not (0 <= args.test_fraction and args.train_fraction + args.test_fraction < 1 - 1e-9):  # 0.7 + 0.3 is 1
        parser.error(f"--test-fraction {args.test_fraction} with --train-fraction {args.train_fraction}: expected "
                     "0 <= test fraction < 1 - train fraction, so that some subjects validate")

    spark = start_spark(args.master, "DeepPostures - Petastorm data preparation")
    try:
        partitions = args.partitions or spark.sparkContext.defaultParallelism
        prepare(spark, args.input, args.output, args.train_fraction, args.seed, partitions,
                args.row_group_size_mb, args.skip_bad_files, args.progress_every, args.test_fraction)
    except InputError as error:
        parser.exit(2, f"error: {error}\n")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
