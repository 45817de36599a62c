"""cerebro-dl's own API in the project's environment after ``chap_mop.enable_cerebro()``: the scenario of
cerebro-system's Spark tests (a libsvm DataFrame, ``prepare_data``, grid, random and TPE search with a
small Keras model, the best model's ``transform``), in a program that starts its own SparkSession
with none of the project's settings, so its Python workers have only what the environment gives them.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest


pytestmark = [pytest.mark.spark, pytest.mark.slow]

FEATURES = 20

# Written by the test for this project; the calls are cerebro-dl's public API, as its README shows them.
SCENARIO = '''
import json, sys
import chap_mop
chap_mop.enable_cerebro()  # before cerebro is imported, as before the SparkSession starts

import tensorflow as tf
from cerebro.backend import SparkBackend
from cerebro.keras import SparkEstimator
from cerebro.storage import LocalStore
from cerebro.tune import GridSearch, RandomSearch, TPESearch, hp_choice, hp_uniform
from pyspark.sql import SparkSession

libsvm, store_dir, features = sys.argv[1], sys.argv[2], int(sys.argv[3])


def estimator_gen_fn(params):
    model = tf.keras.models.Sequential([tf.keras.layers.Input(shape=(features,), name="features"),
                                        tf.keras.layers.Dense(8), tf.keras.layers.Dense(1, activation="sigmoid")])
    return SparkEstimator(model=model, optimizer=tf.keras.optimizers.Adam(learning_rate=params["lr"]),
                          loss="binary_crossentropy", metrics=["acc"], batch_size=10)


spark = SparkSession.builder.master("local[2]").appName("cerebro's own API").getOrCreate()
try:
    df = spark.read.format("libsvm").option("numFeatures", features).load(libsvm).repartition(4)
    backend = SparkBackend(spark_context=spark.sparkContext, num_workers=2)
    store = LocalStore(store_dir, train_path=store_dir + "/train_data", val_path=store_dir + "/val_data")
    backend.prepare_data(store, df, validation=0.25)
    common = dict(validation=0.25, evaluation_metric="loss", feature_columns=["features"], label_columns=["label"])
    searches = {
        "grid": GridSearch(backend, store, estimator_gen_fn, {"lr": hp_choice([0.01, 0.001])}, 1, **common),
        "random": RandomSearch(backend, store, estimator_gen_fn, {"lr": hp_choice([0.01, 0.001])}, 2, 1, **common),
        "tpe": TPESearch(backend=backend, store=store, estimator_gen_fn=estimator_gen_fn,
                         search_space={"lr": hp_choice([0.01, 0.001]), "dummy": hp_uniform(0, 1)},
                         num_models=2, num_epochs=1, **common),
    }
    results = {name: search.fit_on_prepared_data() for name, search in searches.items()}
    found = {name: {"models": len(result.get_all_model_history())} for name, result in results.items()}
    # the best model predicts on the executors, from the DataFrame
    rows = results["tpe"].transform(df).select("label", "label__output").collect()
    found["transform"] = [float(row.label__output) for row in rows]
    print("RESULT " + json.dumps(found))
finally:
    spark.stop()
'''


def write_libsvm(path, rows: int, seed: int = 0) -> None:
    """A two-class libsvm file of ``rows`` sparse rows over :data:`FEATURES` features."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        label = int(rng.integers(2))
        columns = np.sort(rng.choice(FEATURES, size=5, replace=False))
        values = rng.normal(label, 1.0, size=5)
        lines.append(f"{label} " + " ".join(f"{c + 1}:{v:.4f}" for c, v in zip(columns, values)))
    path.write_text("\n".join(lines) + "\n")


def test_cerebro_api_on_a_dataframe_after_enable_cerebro(tmp_path):
    write_libsvm(tmp_path / "data.libsvm", rows=120)
    (tmp_path / "scenario.py").write_text(SCENARIO)
    # nothing the user must export: not even Spark's Python or Keras 2
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "TF_USE_LEGACY_KERAS")}
    done = subprocess.run([sys.executable, tmp_path / "scenario.py", tmp_path / "data.libsvm", tmp_path / "store",
                           str(FEATURES)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert {name: result["models"] for name, result in found.items() if name != "transform"} == \
        {"grid": 2, "random": 2, "tpe": 2}
    assert len(found["transform"]) == 120 and all(0.0 <= value <= 1.0 for value in found["transform"])
    # cerebro's own store (Spark's Parquet files of a vector column), read by cerebro's own reader
    assert list((tmp_path / "store" / "train_data").glob("*.parquet"))
