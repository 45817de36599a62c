"""Step 2: choose the best CHAP CNN-BiLSTM configuration with cerebro's model hopper parallelism.

Every configuration of the search space visits every worker's partition of the training data
once per epoch (model hopping), then is validated on every partition of the validation data.
Successive halving (``--search sha``) and Hyperband stop the worst configurations at each rung.
Settings are the constants at the top of ``main()``; command-line flags override them. The same
program is installed as ``chap-select`` (its defaults relative to the current folder).

    python model_selection.py --help
"""
from pathlib import Path

from chap_mop.cli import chap_select
from chap_mop.selection.epoch_schedule import DEFAULT_POLLING_PERIOD_S
from chap_mop.selection.halving import DEFAULT_ETA
from chap_mop.selection.model_cache import DEFAULT_MODEL_CACHE_MB

PROJECT = Path(__file__).resolve().parent


def main() -> None:
    SPARK_MASTER_URL = None  # e.g. "spark://host:7077"; None: spark-submit's or spark-defaults.conf's, else local[*]
    DATA_STORE_PATH = str(PROJECT / "data" / "petastorm")  # where prep_petastorm_data.py writes by default
    NUM_WORKERS = None  # None: Spark's default parallelism (local[*]: one per core)
    NUM_EPOCHS = 10
    BATCH_SIZE = 128  # sequences per step
    EVALUATION_METRIC = "balanced_accuracy"  # of the validation data; maximised
    SEARCH, NUM_SAMPLES = "grid", None  # grid, random, tpe, sha or hyperband; samples for random and tpe (None: 8)
    ETA, MIN_EPOCHS = DEFAULT_ETA, None  # sha and hyperband: cut factor; first rung (None: derived)
    ENSEMBLE_SIZE = 3  # top configurations in the majority-vote ensemble (DeepPostures' CHAP); 1: none
    SEARCH_SPACE = {"lr": [1e-3, 1e-4], "l2_reg": [1e-3, 1e-4], "win_size": [7, 9], "amp_factor": [2, 4]}
    RESULTS_DIR = str(PROJECT / "results")
    POLLING_PERIOD_S = DEFAULT_POLLING_PERIOD_S  # driver's check of its workers; cerebro's is 2 s
    SEED = None  # initial weights and shuffles; None: random, a number: the same run every time
    MODEL_CACHE_MB = DEFAULT_MODEL_CACHE_MB  # per worker: compiled models kept between hops
    MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT = None, "chap-model-selection"  # None: no MLflow tracking
    INIT_FROM = None  # fine-tuning: e.g. "pre-trained-models-pt/CHAP_ALL_ADULTS.pth" or an earlier best_model.h5
    CLASS_WEIGHTS = None  # loss weight of [sitting, not sitting]; None: equal

    chap_select.main(defaults=chap_select.SelectionSettings(
        master=SPARK_MASTER_URL, data=DATA_STORE_PATH, workers=NUM_WORKERS, epochs=NUM_EPOCHS, batch_size=BATCH_SIZE,
        metric=EVALUATION_METRIC, search=SEARCH, samples=NUM_SAMPLES, eta=ETA, min_epochs=MIN_EPOCHS,
        ensemble_size=ENSEMBLE_SIZE, search_space=SEARCH_SPACE, results=RESULTS_DIR, polling_period_s=POLLING_PERIOD_S,
        seed=SEED, model_cache_mb=MODEL_CACHE_MB, mlflow_tracking_uri=MLFLOW_TRACKING_URI,
        mlflow_experiment=MLFLOW_EXPERIMENT, init_from=INIT_FROM, class_weights=CLASS_WEIGHTS), description=__doc__)


if __name__ == "__main__":
    main()
