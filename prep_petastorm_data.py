"""Step 1: convert DeepPostures' pre-processed H5 day files to the Petastorm store cerebro trains on.

Input, one folder per subject, one file per day of wear (see ``chap_mop/data/h5_format.py``)::

    <pre-processed-dir>/<subject_id>/<YYYY-MM-DD>.h5

Output, split by subject (see ``chap_mop/data/schema.py``)::

    <store>/train_data/     Petastorm dataset of WindowSchema rows, one per 10-s window
    <store>/val_data/       the same for the validation subjects
    <store>/test_data/      the same for the test subjects, with --test-fraction > 0
    <store>/manifest.json   written last: its presence marks a complete store

Both locations may be plain paths, ``file://`` URLs on a file system that every Spark worker
mounts, or ``hdfs://`` URLs (read through pyarrow's Hadoop file system). Day files are read on
the Spark executors, each once and whole, and written as Parquet columns by the same tasks;
the driver only plans, checks and writes the metadata. Settings are the constants at the top of
``main()``; flags override them. The same program is installed as ``chap-prep``.

Example: ``python prep_petastorm_data.py --master local[2] --pre-processed-dir data/demo_h5 --store data/petastorm``
"""
from pathlib import Path

from chap_mop.cli import chap_prep

PROJECT = Path(__file__).resolve().parent


def main() -> None:
    SPARK_MASTER_URL = None  # e.g. "spark://host:7077"; None: spark-submit's or spark-defaults.conf's, else local[*]
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

    chap_prep.main(defaults=chap_prep.PrepSettings(
        master=SPARK_MASTER_URL, input=H5_PRE_PROCESSED_DATA_DIR, output=OUTPUT_PATH, train_fraction=TRAIN_FRACTION,
        test_fraction=TEST_FRACTION, seed=SEED, row_group_size_mb=ROW_GROUP_SIZE_MB, partitions=NUM_PARTITIONS),
        description=__doc__)


if __name__ == "__main__":
    main()
