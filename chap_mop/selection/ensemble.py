"""The top-k ensemble of a model selection run, as files the prediction step loads.

DeepPostures publishes its CHAP model as a majority vote of the three best configurations of its
grid; a results folder holds the same, for ``--ensemble-size`` members::

    ensemble.json              members best first: run id, rank, hyper-parameters, windows per
                               sequence, validation metric and value, model file; and the vote rule
    ensemble/<run id>.h5       each member's final model (weights, no optimizer state)
"""
import json
from pathlib import Path

from chap_mop.errors import InputError
from chap_mop.selection.run_state import MEMBERS_DIR, atomic_write_text

ENSEMBLE_FILE = "ensemble.json"
VOTE_RULE = "majority of the members that predict a window; ties: the better-ranked member"


def save_members(results_dir: Path, members: list[dict], checkpoints: dict[str, Path]) -> list[dict]:
    """Save each member's model from its final checkpoint and write ``ensemble.json`` last.

    :param members: best first: ``run_id``, ``hyperparameters``, ``metric``, ``value``.
    :param checkpoints: run id -> its final checkpoint (a Keras model file with optimizer state).
    :return: the members as written, with ``rank``, ``model`` (relative path) and ``windows_per_sequence``.
    """
    from chap_mop.predict.inference import load_model, windows_per_sequence

    (results_dir / MEMBERS_DIR).mkdir(exist_ok=True)
    written = []
    for rank, member in enumerate(members, start=1):
        model = load_model(checkpoints[member["run_id"]])
        relative = f"{MEMBERS_DIR}/{member['run_id']}.h5"
        partial = results_dir / MEMBERS_DIR / f".{member['run_id']}.h5.partial"
        model.save(partial, include_optimizer=False, save_format="h5")
        partial.replace(results_dir / relative)
        written.append({"rank": rank, **member, "windows_per_sequence": windows_per_sequence(model),
                        "model": relative})
    atomic_write_text(results_dir / ENSEMBLE_FILE,
                      json.dumps({"vote": VOTE_RULE, "members": written}, indent=2) + "\n")
    return written


def read_members(results_dir: Path) -> list[dict]:
    """The members of the ensemble in ``results_dir``, best first, ``model`` as an absolute path.

    :raises InputError: no ensemble there.
    """
    path = Path(results_dir) / ENSEMBLE_FILE
    if not path.is_file():
        raise InputError(f"{path} not found: {results_dir} holds no ensemble; run model_selection.py with "
                         "--ensemble-size 2 or more")
    members = json.loads(path.read_text())["members"]
    return [{**member, "model": str(Path(results_dir) / member["model"])} for member in members]


def build_ensemble(results_dir: Path, run_log, configurations: list[dict], size: int) -> list[dict]:
    """Save the top ``size`` configurations of ``run_log`` as the ensemble; none for 1.

    Only configurations that trained every epoch and did not fail can be members (successive
    halving's stopped ones are left out).

    :param run_log: the run's :class:`chap_mop.output.results.RunLog`.
    :param configurations: the run state's configurations (``run_id``, ``checkpoint`` relative to
        ``results_dir``).
    :return: the members as :func:`save_members` wrote them; [] for no ensemble.
    """
    finished = [run_id for run_id in run_log.ranked()
                if run_log.epochs_done(run_id) == run_log.num_epochs and run_id not in run_log.failed]
    ranked = finished[:size]
    if 1 < size and len(ranked) < min(size, len(run_log.history)):
        print(f"ensemble: {len(ranked)} of --ensemble-size {size} configurations trained all {run_log.num_epochs} "
              "epochs" + ("; no ensemble" if len(ranked) < 2 else ""))
    if len(ranked) < 2:
        return []
    metric = "val_" + run_log.evaluation_metric
    checkpoints = {entry["run_id"]: results_dir / entry["checkpoint"] for entry in configurations}
    return save_members(results_dir, [{"run_id": run_id, "hyperparameters": run_log.params(run_id), "metric": metric,
                                       "value": run_log.history[run_id][metric][-1]} for run_id in ranked],
                        checkpoints)
