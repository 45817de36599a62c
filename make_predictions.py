"""Step 3: predict sitting or not sitting for every 10-s window of every subject, on Spark.

The model is the best run of a results folder of ``model_selection.py`` (or, with ``--ensemble``,
the majority vote of its ensemble), or one of DeepPostures' pre-trained models (``--model NAME
--pretrained-dir DIR``); the input is DeepPostures' pre-processed day files, laid out and checked
as ``prep_petastorm_data.py`` does::

    <pre-processed-dir>/<subject_id>/<YYYY-MM-DD>.h5

Output, one CSV per subject in DeepPostures' format (see ``chap_mop/predict/predictions.py``)::

    <predictions-dir>/<model name>/<subject_id>.csv     segment,timestamp,prediction

Each Spark task predicts one subject and writes its CSV itself, so the predictions folder must
be visible to every worker. Settings are the constants at the top of ``main()``; flags override
them. The same program is installed as ``chap-predict``.

Example: ``python make_predictions.py --pre-processed-dir data/demo_h5 --predictions-dir data/predictions
--results data/results``
"""
from pathlib import Path

from chap_mop.cli import chap_predict

PROJECT = Path(__file__).resolve().parent


def main() -> None:
    SPARK_MASTER_URL = None  # e.g. "spark://host:7077"; None: spark-submit's or spark-defaults.conf's, else local[*]
    PRE_PROCESSED_DIR = str(PROJECT / "data" / "demo_h5")  # readable by every Spark worker
    PREDICTIONS_DIR = str(PROJECT / "predictions")  # writable by every Spark worker
    MODEL_CHECKPOINT_PATH = str(PROJECT / "results")  # where model_selection.py writes by default
    MODEL = None  # or one of DeepPostures' pre-trained models, e.g. "CHAP_ALL_ADULTS", instead of the results
    PRETRAINED_DIR = None  # with MODEL: the folder holding MODEL.pth (DeepPostures' pre-trained-models-pt)
    PADDING = "drop"  # drop, zero or wrap: the windows after a segment's last full sequence
    BATCH_SIZE = 256  # sequences per predict call

    chap_predict.main(defaults=chap_predict.PredictSettings(
        master=SPARK_MASTER_URL, pre_processed_dir=PRE_PROCESSED_DIR, predictions_dir=PREDICTIONS_DIR,
        results=MODEL_CHECKPOINT_PATH, model=MODEL, pretrained_dir=PRETRAINED_DIR, padding=PADDING,
        batch_size=BATCH_SIZE), description=__doc__)


if __name__ == "__main__":
    main()
