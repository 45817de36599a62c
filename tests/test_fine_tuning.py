"""Fine-tuning selection: every configuration starts from a saved model (``--init-from`` a
DeepPostures ``.pth`` or a Keras ``.h5``), the search space's ``trainable`` freezes layers that then
really do not change, and ``--class-weights`` weighs each window's loss by its class.

The model-level rules run without Spark; one real selection from a DeepPostures-format fixture
checkpoint (random weights, ``../shared``) shows them end to end on local Spark. The standalone
cluster's run is in test_cluster.
"""
import csv
import json
import re

import numpy as np
import pytest

from chap_mop import cerebro_compat
from chap_mop.errors import InputError
from chap_mop.files import sha256_of
from chap_mop.model import start_weights
from chap_mop.model.roles import CNN_ROLES
from chap_mop.selection.stage import SelectionSettings, check_settings
from conftest import PT_FIXTURES, select_in_process, shared_fixture
from test_pretrained import random_state, sigmoid, write_state_dict

cerebro_compat.enable()  # TensorFlow with Keras 2, before the model modules import it
from chap_mop.model.chap_model import build_chap_model, chap_layers, set_trainable  # noqa: E402
from chap_mop.model.losses import WeightedSparseCategoricalCrossentropy  # noqa: E402
from chap_mop.model.metrics import CUSTOM_OBJECTS  # noqa: E402

import tensorflow as tf  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")
SPACE = {"lr": [1e-3], "l2_reg": [0.0], "win_size": [1], "amp_factor": [1]}


def role_weights(model) -> dict[str, list[np.ndarray]]:
    return {role: [w.copy() for w in layer.get_weights()] for role, layer in chap_layers(model).items()}


def changed_roles(before: dict, after: dict) -> set[str]:
    return {role for role in before if any(not np.array_equal(a, b) for a, b in zip(before[role], after[role]))}


@pytest.mark.parametrize("trainable, trained", [("all", {*CNN_ROLES, "bilstm", "head"}),
                                                ("lstm_head", {"bilstm", "head"}), ("head", {"head"})])
def test_frozen_layers_do_not_change_in_training(trainable, trained):
    tf.keras.utils.set_random_seed(0)
    model = build_chap_model(6, 1, 1e-3)
    set_trainable(model, trainable)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    before = role_weights(model)
    x = np.random.default_rng(0).normal(0, 0.5, (4, 6, 100, 3, 1)).astype(np.float32)
    model.fit(x, np.tile([0, 1, 1, 0, 1, 0], (4, 1)), epochs=2, verbose=0)
    assert changed_roles(before, role_weights(model)) == trained


def test_class_weights_weigh_each_windows_cross_entropy_and_survive_a_saved_model(tmp_path):
    y_true = np.array([[0, 1, 1], [1, 0, 1]])
    y_pred = np.array([[[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], [[0.2, 0.8], [0.5, 0.5], [0.99, 0.01]]], np.float32)
    loss = WeightedSparseCategoricalCrossentropy([1.0, 3.0])
    each = -np.log(np.take_along_axis(y_pred, y_true[..., None], -1)[..., 0]) * np.where(y_true == 1, 3.0, 1.0)
    np.testing.assert_allclose(float(loss(y_true, y_pred)), each.mean(), rtol=1e-5)

    model = build_chap_model(6, 1, 0.0)
    model.compile(optimizer="adam", loss=loss)
    model.save(tmp_path / "m.h5")
    with tf.keras.utils.custom_object_scope(CUSTOM_OBJECTS):  # as a worker loads a checkpoint
        loaded = tf.keras.models.load_model(tmp_path / "m.h5")
    assert loaded.loss.class_weights == [1.0, 3.0]


@pytest.mark.parametrize("trainable", ["all", "lstm_head"])
def test_start_weights_from_a_keras_model_serve_any_window(tmp_path, trainable):
    """Also from a fine-tuned model saved with its CNN frozen, whose get_weights() lists the
    trainable weights first."""
    tf.keras.utils.set_random_seed(2)
    source = build_chap_model(6, 1, 0.0)
    set_trainable(source, trainable)
    source.save(tmp_path / "best_model.h5", include_optimizer=False)
    start = start_weights.read_start_weights(tmp_path / "best_model.h5")
    assert (start.format, start.amp_factor) == (start_weights.KERAS, 1)
    longer = build_chap_model(12, 1, 0.0)  # another BiLSTM window: no weight depends on it
    start_weights.apply(longer, start)
    assert not changed_roles(role_weights(source), role_weights(longer))


def test_start_weights_from_a_deeppostures_checkpoint_are_its_conversion(tmp_path):
    from chap_mop.model import deeppostures
    path = write_state_dict(tmp_path / "CUSTOM_MODEL.pth", random_state())
    start = start_weights.read_start_weights(path)
    assert (start.format, start.amp_factor, start.path) == (start_weights.DEEPPOSTURES, 1, str(path))
    model = build_chap_model(6, 1, 0.0)
    start_weights.apply(model, start)
    converted = deeppostures.build_from_checkpoint(path, 6)
    for a, b in zip(model.get_weights(), converted.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert start.describe()["sha256"] == sha256_of(path)


def test_files_that_cannot_start_a_selection_are_one_line(tmp_path):
    other = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    other.save(tmp_path / "other.h5")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    for name, shown in [("missing.pth", "no such file"), ("notes.txt", "expected a DeepPostures .pth"),
                        ("broken.h5", "not a readable Keras HDF5 model"),
                        ("other.h5", "is not a CHAP CNN-BiLSTM of this project")]:
        with pytest.raises(InputError, match=re.escape(shown)) as refused:
            start_weights.read_start_weights(tmp_path / name)
        assert "\n" not in str(refused.value) and name in str(refused.value)
    start = start_weights.read_start_weights(write_state_dict(tmp_path / "amp1.pth", random_state()))
    with pytest.raises(InputError, match=re.escape("has amp factor 1; the search space's amp_factor [1, 2] must be "
                                                   "[1]")):
        start_weights.check_amp_factors(start, [1, 2])


@pytest.mark.parametrize("settings, message", [
    ({"search_space": {**SPACE, "trainable": ["lstm_head"]}}, "trainable ['lstm_head'] freezes layers of fresh random "
                                                              "weights; it needs --init-from"),
    ({"search_space": {**SPACE, "trainable": ["cnn"]}}, "'trainable' has ['cnn']; expected a list of names among "
                                                        "['all', 'lstm_head', 'head']"),
    ({"init_from": "/nowhere/CHAP_ALL_ADULTS.pth"}, "--init-from /nowhere/CHAP_ALL_ADULTS.pth: no such file"),
    ({"class_weights": [1.0]}, "--class-weights [1.0]: expected [sitting, not sitting]"),
    ({"class_weights": [0, 0]}, "--class-weights [0, 0]: expected"),
    ({"class_weights": [1.0, -2.0]}, "--class-weights [1.0, -2.0]: expected"),
])
def test_bad_fine_tuning_settings_are_refused_before_anything_starts(settings, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check_settings(SelectionSettings(**settings))


def test_flags_reach_the_settings():
    from chap_mop.cli import chap_select
    parsed = chap_select.build_parser(SelectionSettings()).parse_args(
        ["--init-from", "CHAP_ALL_ADULTS.pth", "--class-weights", "[1, 2.5]"])
    assert parsed.init_from == "CHAP_ALL_ADULTS.pth" and parsed.class_weights == [1, 2.5]


# --- a real selection from a DeepPostures-format checkpoint ----------------------------------------

CHILDREN = "pre-trained-models-pt/CHAP_CHILDREN.pth"  # amp 2, trained on 3-minute (18-window) sequences
FINE_TUNING = {"lr": [1e-12, 1e-3], "l2_reg": [0.0], "win_size": [3], "amp_factor": [2], "trainable": ["lstm_head"]}


@pytest.fixture(scope="module")
def fine_tuned(spark, store, tmp_path_factory):
    """One epoch of 2 configurations from CHAP_CHILDREN.pth with the CNN frozen, class weights [1, 2]."""
    results = tmp_path_factory.mktemp("fine_tuning") / "r"
    summary, printed = select_in_process(spark, store, results, epochs=1, search_space=FINE_TUNING,
                                         init_from=str(shared_fixture(PT_FIXTURES) / CHILDREN),
                                         class_weights=[1.0, 2.0], ensemble_size=1)
    models = {float(row["lr"]): row for row in csv.DictReader(open(results / "models.csv"))}
    return results, summary, printed, models


def checkpoint_of(results, row):
    with tf.keras.utils.custom_object_scope(CUSTOM_OBJECTS):
        return tf.keras.models.load_model(results / "runs" / row["run_id"] / "checkpoint.h5")


def test_a_configuration_at_a_tiny_learning_rate_predicts_as_the_checkpoint(fine_tuned, pt_fixtures):
    results, summary, printed, models = fine_tuned
    model = checkpoint_of(results, models[1e-12])
    inputs = np.load(pt_fixtures / "CHAP_CHILDREN.input.npy")[..., None]
    logits = np.load(pt_fixtures / "CHAP_CHILDREN.logits.npy")
    np.testing.assert_allclose(model.predict(inputs, verbose=0)[..., 1], sigmoid(logits), rtol=0, atol=1e-3)
    assert model.loss.class_weights == [1.0, 2.0]  # the workers trained with the weighted loss


def test_with_the_cnn_frozen_only_the_bilstm_and_head_learn(fine_tuned, pt_fixtures):
    results, summary, printed, models = fine_tuned
    start = build_chap_model(18, 2, 0.0)
    start_weights.apply(start, start_weights.read_start_weights(pt_fixtures / CHILDREN))
    trained = checkpoint_of(results, models[1e-3])
    assert changed_roles(role_weights(start), role_weights(trained)) == {"bilstm", "head"}


def test_summary_report_and_tables_say_where_the_weights_started(fine_tuned, pt_fixtures):
    results, summary, printed, models = fine_tuned
    path = str((pt_fixtures / CHILDREN).resolve())
    assert summary["start_weights"] == {"from": path, "format": start_weights.DEEPPOSTURES, "amp_factor": 2,
                                        "sha256": sha256_of(path)}
    assert summary["class_weights"] == [1.0, 2.0]
    assert json.loads((results / "summary.json").read_text())["start_weights"]["from"] == path
    assert {row["trainable"] for row in models.values()} == {"lstm_head"}
    assert f"Start weights: {path} (DeepPostures state_dict (.pth), amp factor 2); trainable layers: lstm_head" \
        in printed
    report = (results / "report.html").read_text()
    assert "Start weights" in report and "Class weights" in report and "not sitting 2" in report


def test_a_resume_must_start_from_the_same_weights(spark, fine_tuned, store, pt_fixtures):
    results, *_ = fine_tuned
    with pytest.raises(InputError, match="init_from_sha256 was"):
        select_in_process(spark, store, results, epochs=2, search_space=FINE_TUNING, resume=True,
                          init_from=str(pt_fixtures / "pre-trained-models-pt/CHAP_ALL_ADULTS.pth"),
                          class_weights=[1.0, 2.0], ensemble_size=1)
