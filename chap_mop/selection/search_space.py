"""The search space a person writes, checked, and how many configurations a search trains.

Pure functions of the settings: no Spark, no TensorFlow, so a bad search space or halving
setting stops before anything starts.
"""
import math

from chap_mop.errors import InputError
from chap_mop.model.roles import TRAINABLE
from chap_mop.selection.halving import DEFAULT_ETA, HalvingPlan, make_plan

HYPERPARAMETERS = {"lr": float, "l2_reg": float, "win_size": int, "amp_factor": int}
# Optional, and chosen among names: which layers a fine-tuning configuration trains (--init-from).
CHOICES = {"trainable": tuple(TRAINABLE)}
SEARCHES = ("grid", "random", "tpe", "sha", "hyperband")
DEFAULT_SAMPLES = 8  # configurations drawn by random and tpe when not given


def check_search_space(space: dict) -> dict:
    """Each known hyper-parameter maps to a non-empty list of values of the right type.

    :return: the space with each value cast to its hyper-parameter's type.
    :raises InputError: an unknown or missing name, an empty list, a value of the wrong type.
    """
    if not isinstance(space, dict):
        raise InputError(f"search space {space!r}: expected a JSON object of hyper-parameter lists")
    known = sorted([*HYPERPARAMETERS, *CHOICES])
    unknown = sorted(set(space) - set(known))
    if unknown:
        raise InputError(f"unknown hyper-parameter(s) {unknown}; expected names among {known}")
    missing = sorted(set(HYPERPARAMETERS) - set(space))
    if missing:
        raise InputError(f"search space lacks {missing}; give each of {sorted(HYPERPARAMETERS)} a list of values")
    for name, values in space.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"hyper-parameter '{name}' has {values!r}; expected a non-empty list of values")
        if name in CHOICES:
            if not all(isinstance(v, str) and v in CHOICES[name] for v in values):
                raise InputError(f"'{name}' has {values!r}; expected a list of names among {list(CHOICES[name])}")
            continue
        cast = HYPERPARAMETERS[name]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and cast(v) == v
                   for v in values):
            raise InputError(f"hyper-parameter '{name}' has {values!r}; expected non-negative {cast.__name__} values")
    return {name: list(values) if name in CHOICES else [HYPERPARAMETERS[name](v) for v in values]
            for name, values in space.items()}


def plan_search(search: str, space: dict, samples: int | None, eta: int, epochs: int, min_epochs: int | None
                ) -> tuple[int, HalvingPlan | None]:
    """How many configurations the search trains, and the brackets of a halving search (else None).

    :param samples: configurations for random and tpe (None: :data:`DEFAULT_SAMPLES`); for sha,
        random draws instead of the grid; refused for hyperband and grid.
    :raises InputError: settings that do not apply to ``search``, or a halving plan that cannot be made.
    """
    if search not in SEARCHES:
        raise InputError(f"search '{search}': expected one of {list(SEARCHES)}")
    if search in ("sha", "hyperband"):
        if search == "hyperband" and samples is not None:
            raise InputError("--samples does not apply to --search hyperband: its brackets fix how many "
                             "configurations it draws")
        plan = make_plan(search, space, samples, eta, epochs, min_epochs)
        return len(plan.configurations), plan
    if eta != DEFAULT_ETA or min_epochs is not None:
        raise InputError(f"--eta and --min-epochs apply to --search sha and hyperband, not {search}")
    if search == "grid":
        return math.prod(len(values) for values in space.values()), None
    return samples or DEFAULT_SAMPLES, None
