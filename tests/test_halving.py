"""Successive halving and Hyperband: the plan's arithmetic and settings, and the selection stage end to
end on real local Spark (4 configurations, eta 2, 2 epochs, 2 workers), in this process; a run of
model_selection.py killed by SIGKILL and resumed included."""
import csv
import json
import math
import re
from pathlib import Path

import pytest

from chap_mop.selection.halving import (Bracket, Rung, default_min_epochs, hyperband, make_plan, successive_halving,
                              survivors)
from chap_mop.errors import InputError
from chap_mop.selection.stage import SelectionSettings, check_settings
from conftest import TrackedScript, select_in_process

# amp_factor 1 only: halving's ranking and cuts do not depend on model size, and amp 2 trains 8 times
# slower (most of this module's time when it was in the grid).
GRID = '{"lr": [0.01, 0.0001], "l2_reg": [0.001, 0.0001], "win_size": [1], "amp_factor": [1]}'
SCRIPT_TIMEOUT_S = 600


def selection_args(store: Path, results: Path, *extra: str) -> list[str]:
    return ["--master", "local[2]", "--data", str(store), "--results", str(results), "--workers", "2",
            "--epochs", "2", "--batch-size", "16", "--search-space", GRID, *extra]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# The plan -------------------------------------------------------------------------------------

def test_successive_halving_keeps_ceil_n_over_eta_at_each_rung():
    assert successive_halving(8, 2, 8, 1).rungs == (Rung(1, 8), Rung(2, 4), Rung(4, 2), Rung(8, 1))
    assert successive_halving(10, 3, 9, 1).rungs == (Rung(1, 10), Rung(3, 4), Rung(9, 2))
    # Once one configuration is left it trains straight to the last epoch.
    assert successive_halving(9, 3, 10, 1).rungs == (Rung(1, 9), Rung(3, 3), Rung(10, 1))
    assert successive_halving(8, 2, 8, 1).configuration_epochs() == 8 + 4 + 2 * 2 + 1 * 4


def test_default_min_epochs_fits_about_log_eta_n_rungs():
    assert default_min_epochs(4, 2, 2) == 1  # 2 cuts wanted, 2 epochs: start at 1
    assert default_min_epochs(9, 3, 27) == 3  # 2 cuts: 3 -> 9 -> 27
    assert default_min_epochs(8, 2, 16) == 2  # 3 cuts: 2 -> 4 -> 8 -> 16


def test_hyperband_brackets_follow_li_et_al():
    """R = 9, eta = 3 (Li et al. 2018, Table 1 in units of one epoch): s_max = 2, B = 27."""
    expected = []
    for s in (2, 1, 0):
        n = math.ceil(3 * 3 ** s / (s + 1))
        expected.append(Bracket(tuple(Rung(9 * 3 ** (i - s), math.floor(n * 3 ** -i)) for i in range(s + 1))))
    assert hyperband(3, 9, 1) == tuple(expected)
    assert [[(r.configurations, r.epoch) for r in b.rungs] for b in expected] == \
        [[(9, 1), (3, 3), (1, 9)], [(5, 3), (1, 9)], [(3, 9)]]
    plan = make_plan("hyperband", {"lr": [1, 2, 3]}, None, 3, 9, None)
    assert len(plan.configurations) == 17 and plan.bracket_of.count(1) == 5
    assert plan.configuration_epochs() == (9 + 3 * 2 + 6) + (5 * 3 + 6) + 3 * 9


def test_survivors_rank_by_direction_with_nan_last_and_ties_to_the_earlier():
    assert survivors([0.5, 0.9, 0.7, 0.9], 2, larger_is_better=True) == [1, 3]
    assert survivors([0.5, 0.9, 0.7], 2, larger_is_better=False) == [0, 2]
    assert survivors([float("nan"), 0.2, 0.2], 2, larger_is_better=True) == [1, 2]


def test_ties_at_a_rung_go_to_the_lower_validation_loss_then_training_loss():
    """Four configurations at exactly 0.5 (one class everywhere): the order no longer decides."""
    values = [0.5, 0.5, 0.5, 0.5]
    losses = [(0.70, 0.6), (0.69, 0.9), (0.69, 0.5), (float("nan"), 0.1)]  # (val_loss, train_loss)
    assert survivors(values, 2, True, losses) == [1, 2]
    assert survivors(values, 1, True, losses) == [2]
    assert survivors([0.6, 0.5], 1, True, [(9.0, 9.0), (0.1, 0.1)]) == [0]  # the metric first


@pytest.mark.parametrize("settings, message", [
    ({"search": "sha", "eta": 1}, "--eta 1: expected 2 or more"),
    ({"search": "sha", "eta": 2, "min_epochs": 3}, "--min-epochs 3: expected 1 to --epochs (2)"),
    ({"search": "sha", "eta": 5}, "--search sha with 4 configurations and --eta 5: expected at least eta"),
    ({"search": "hyperband", "eta": 3}, "expected at least eta x min-epochs (3) epochs"),
    ({"search": "hyperband", "eta": 2, "samples": 4}, "--samples does not apply to --search hyperband"),
    ({"search": "grid", "eta": 2}, "--eta and --min-epochs apply to --search sha and hyperband"),
])
def test_bad_halving_settings_stop_before_training(settings, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check_settings(SelectionSettings(epochs=2, search_space=json.loads(GRID), **settings))


# End to end -----------------------------------------------------------------------------------

def select(spark, store: Path, results: Path, **settings) -> str:
    """The selection stage in this process with this module's grid; what it printed."""
    return select_in_process(spark, store, results, epochs=2, search_space=json.loads(GRID), **settings)[1]


@pytest.fixture(scope="module")
def sha(spark, store, tmp_path_factory):
    """One sha run (4 configurations, eta 2, 2 epochs) as model_selection.py, killed by SIGKILL during
    epoch 2 after the cut of rung 1 was saved, then resumed in this process: what the killed run
    printed and saved, and what the resumed run printed."""
    work = tmp_path_factory.mktemp("sha")
    results = work / "results"
    killed = TrackedScript("model_selection.py", selection_args(store, results, "--search", "sha", "--eta", "2"), work,
                           work / "killed.log")
    try:
        killed.wait_for(lambda output: "\nepoch 2/2 | " in output, "a completed sub-epoch of epoch 2",
                        SCRIPT_TIMEOUT_S)
    finally:
        killed.stop()
    saved = json.loads((results / "run_state.json").read_text())["configurations"]
    resumed = select(spark, store, results, search="sha", eta=2, resume=True)  # in this process
    return results, killed.output(), saved, resumed


@pytest.mark.slow
def test_only_the_best_half_after_epoch_1_trains_epoch_2(sha):
    results, killed, _, resumed = sha
    models, history = rows(results / "models.csv"), rows(results / "history.csv")
    epoch_1 = {row["run_id"]: (-float(row["val_balanced_accuracy"]), float(row["val_loss"]), float(row["train_loss"]))
               for row in history if row["epoch"] == "1"}
    order = [model["run_id"] for model in models]
    best_two = sorted(sorted(order, key=lambda run_id: (*epoch_1[run_id], order.index(run_id)))[:2])
    trained_2 = sorted(row["run_id"] for row in history if row["epoch"] == "2")
    assert len(models) == 4 and trained_2 == best_two
    for model in models:
        finished = model["run_id"] in best_two
        assert model["epochs"] == ("2" if finished else "1")
        assert model["stopped_at_rung"] == ("" if finished else "1")
        assert sum(row["run_id"] == model["run_id"] for row in history) == int(model["epochs"])
    summary = json.loads((results / "summary.json").read_text())
    assert summary["best_run_id"] in best_two and summary["search"] == "sha"
    assert summary["halving"]["brackets"] == [{"bracket": 1, "rungs": [{"epoch": 1, "configurations": 4},
                                                                        {"epoch": 2, "configurations": 2}]}]
    assert summary["halving"]["configuration_epochs_trained"] == 6
    assert summary["halving"]["configuration_epochs_without_stopping"] == 8
    assert summary["halving"]["ties"] == ("equal values at a rung: lower val_loss, then lower train_loss, then the "
                                          "earlier configuration")
    assert set(summary["ensemble"]) == set(best_two)  # stopped configurations never join the ensemble
    assert "rung 1 (epoch 1): 2 of 4 configurations go on by val_balanced_accuracy" in killed
    assert "| 24/24 sub-epochs | done" in resumed  # 2 workers x 2 kinds x 6 configuration-epochs
    page = (results / "report.html").read_text()
    assert "<th>stopped at rung</th>" in page and "Successive halving" in page


@pytest.mark.slow
def test_hyperband_trains_the_brackets_it_prints(spark, store, tmp_path):
    """eta 2, 2 epochs: s_max = 1; bracket 1: 2 configurations x 1 epoch -> 1 x 2; bracket 2: 2 x 2."""
    results = tmp_path / "results"
    printed = select(spark, store, results, search="hyperband", eta=2)
    assert "bracket 1: 2 x 1 -> 1 x 2 (configurations x epochs)" in printed
    assert "bracket 2: 2 x 2 (configurations x epochs)" in printed
    summary = json.loads((results / "summary.json").read_text())
    assert [[(r["configurations"], r["epoch"]) for r in b["rungs"]] for b in summary["halving"]["brackets"]] == \
        [[(2, 1), (1, 2)], [(2, 2)]]
    models = rows(results / "models.csv")
    assert sorted(int(model["epochs"]) for model in models) == [1, 2, 2, 2]
    assert summary["halving"]["configuration_epochs_trained"] == 7  # bracket 1: 2 + 1, bracket 2: 2 x 2
    assert summary["best_run_id"] in {model["run_id"] for model in models if model["epochs"] == "2"}


@pytest.mark.slow
def test_a_killed_sha_run_resumes_the_same_brackets(sha):
    """Killed during epoch 2, after the cut of rung 1 was saved: the resumed run trains only the
    survivors and ends with the same stopped configurations."""
    results, _, saved, resumed = sha
    stopped = {c["run_id"] for c in saved if c.get("stopped_at_rung") == 1}
    assert len(stopped) == 2 and all(c["epochs_completed"] == 1 for c in saved)
    assert "resuming 4 configurations after epoch 1 of 2" in resumed
    assert "rung 1 (epoch 1)" not in resumed  # the cut is not made again
    models = rows(results / "models.csv")
    assert {model["run_id"] for model in models if model["stopped_at_rung"] == "1"} == stopped
    assert {model["run_id"] for model in models if model["epochs"] == "2"} == \
        {c["run_id"] for c in saved} - stopped
