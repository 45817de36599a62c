"""Successive halving and Hyperband: which configurations train how many epochs.

Model hopper parallelism trains every live configuration epoch by epoch in lock step, which is
the shape of synchronous successive halving (Jamieson & Talwalkar, 2016): at each rung, rank the
configurations by their validation value at that epoch (equal values by validation loss, then
training loss), keep the best ``ceil(n / eta)``, stop the rest. Hyperband (Li et al., 2018) runs
several such brackets, each trading more configurations against fewer epochs before the first cut.

Here every bracket starts at epoch 0, so the brackets of a Hyperband search train together, in
one lock step: every epoch trains all live configurations of all brackets, which keeps more
workers busy than running the brackets one after another.

Everything here is arithmetic on plain values; :class:`chap_mop.cerebro_compat.halving_search.
ResumableHalvingSearch` applies it to cerebro's estimators.
"""
import itertools
import math
from dataclasses import dataclass

import numpy as np

from chap_mop.errors import InputError
from chap_mop.model.ranking import HALVING_TIE_BREAKERS, ranked

DEFAULT_ETA = 3
DRAW_SEED = 2020  # cerebro's own seed: the same flags draw the same configurations


@dataclass(frozen=True)
class Rung:
    """``configurations`` train up to ``epoch`` (1-based); then the rung's cut, unless it is the last."""
    epoch: int
    configurations: int


@dataclass(frozen=True)
class Bracket:
    """One successive-halving run: its rungs, most configurations and fewest epochs first."""
    rungs: tuple[Rung, ...]

    @property
    def configurations(self) -> int:
        return self.rungs[0].configurations

    def configuration_epochs(self) -> int:
        """Epochs trained by all of the bracket's configurations together."""
        trained, previous = 0, 0
        for rung in self.rungs:
            trained += rung.configurations * (rung.epoch - previous)
            previous = rung.epoch
        return trained

    def keep_after(self, epoch: int) -> int | None:
        """How many configurations go on after ``epoch``; None when no cut falls at that epoch."""
        for rung, following in zip(self.rungs, self.rungs[1:]):
            if rung.epoch == epoch:
                return following.configurations
        return None

    def rung_number(self, epoch: int) -> int:
        """1-based number of the rung at ``epoch``."""
        return 1 + [rung.epoch for rung in self.rungs].index(epoch)

    def to_json(self) -> list[dict]:
        return [{"epoch": rung.epoch, "configurations": rung.configurations} for rung in self.rungs]


@dataclass(frozen=True)
class HalvingPlan:
    """The brackets of a search and its configurations, each tagged with its bracket's index."""
    search: str
    eta: int
    min_epochs: int
    max_epochs: int
    brackets: tuple[Bracket, ...]
    configurations: tuple[dict, ...]
    bracket_of: tuple[int, ...]

    def configuration_epochs(self) -> int:
        return sum(bracket.configuration_epochs() for bracket in self.brackets)

    def to_json(self) -> dict:
        """What summary.json records of the plan."""
        return {"eta": self.eta, "min_epochs": self.min_epochs, "max_epochs": self.max_epochs,
                "brackets": [{"bracket": index + 1, "rungs": bracket.to_json()}
                             for index, bracket in enumerate(self.brackets)],
                "configuration_epochs_planned": self.configuration_epochs(),
                "ties": "equal values at a rung: lower " + ", then lower ".join(HALVING_TIE_BREAKERS)
                        + ", then the earlier configuration",
                "configuration_epochs_without_stopping": len(self.configurations) * self.max_epochs}

    def describe(self) -> list[str]:
        """One line per bracket, e.g. ``bracket 1: 9 configurations x 1 epoch -> 3 x 3 -> 1 x 9``."""
        return [f"bracket {index + 1}: " + " -> ".join(
            f"{rung.configurations} x {rung.epoch}" for rung in bracket.rungs) + " (configurations x epochs)"
                for index, bracket in enumerate(self.brackets)]


def default_min_epochs(configurations: int, eta: int, max_epochs: int) -> int:
    """The first rung's epochs such that about log_eta(n) cuts fit below ``max_epochs``."""
    cuts = math.floor(math.log(configurations, eta) + 1e-9)
    return max(1, math.floor(max_epochs / eta ** cuts))


def successive_halving(configurations: int, eta: int, max_epochs: int, min_epochs: int) -> Bracket:
    """Rungs at ``min_epochs * eta^k`` epochs (the last at ``max_epochs``); ceil(n / eta) survive a cut.

    Once a single configuration is left it trains straight to ``max_epochs``.
    """
    rungs = [Rung(min_epochs, configurations)]
    while rungs[-1].epoch < max_epochs:
        keep = math.ceil(rungs[-1].configurations / eta)
        epoch = max_epochs if keep == 1 else min(max_epochs, rungs[-1].epoch * eta)
        rungs.append(Rung(epoch, keep))
    return Bracket(tuple(rungs))


def hyperband(eta: int, max_epochs: int, min_epochs: int) -> tuple[Bracket, ...]:
    """Li et al. (2018), Algorithm 1, with ``R = max_epochs / min_epochs`` in units of ``min_epochs``.

    Bracket ``s`` (from ``s_max = floor(log_eta R)`` down to 0) starts ``n = ceil((s_max + 1) eta^s / (s + 1))``
    configurations at ``R eta^-s`` units; its rung ``i`` trains ``floor(n eta^-i)`` configurations to
    ``R eta^(i - s)`` units, rounded to whole epochs.
    """
    units = max_epochs / min_epochs
    s_max = math.floor(math.log(units, eta) + 1e-9)
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) * eta ** s / (s + 1))
        rungs = [Rung(max(min_epochs, round(max_epochs * eta ** (i - s))), math.floor(n * eta ** -i + 1e-9))
                 for i in range(s + 1)]
        brackets.append(Bracket(tuple(rungs)))
    return tuple(brackets)


def grid(space: dict[str, list]) -> list[dict]:
    """Every configuration of ``space``, in the order of its names and values."""
    names = list(space)
    return [dict(zip(names, values)) for values in itertools.product(*(space[name] for name in names))]


def draw(space: dict[str, list], count: int, rand: np.random.RandomState) -> list[dict]:
    """``count`` configurations, each value drawn independently and uniformly from its list."""
    return [{name: values[rand.randint(len(values))] for name, values in space.items()} for _ in range(count)]


def check_settings(search: str, eta: int, max_epochs: int, min_epochs: int | None) -> None:
    """Stop before training on settings that make no halving search."""
    if eta < 2:
        raise InputError(f"--eta {eta}: expected 2 or more (the factor by which each rung cuts the configurations)")
    if max_epochs < 1:
        raise InputError(f"--epochs {max_epochs}: expected 1 or more")
    if min_epochs is not None and not 1 <= min_epochs <= max_epochs:
        raise InputError(f"--min-epochs {min_epochs}: expected 1 to --epochs ({max_epochs}), the epochs of the "
                         "first rung")
    if search == "hyperband" and max_epochs < eta * (min_epochs or 1):
        raise InputError(f"--search hyperband with --epochs {max_epochs}: expected at least eta x min-epochs "
                         f"({eta * (min_epochs or 1)}) epochs, or Hyperband has a single bracket without cuts")


def make_plan(search: str, space: dict[str, list], samples: int | None, eta: int, max_epochs: int,
              min_epochs: int | None) -> HalvingPlan:
    """The brackets and configurations of ``--search sha`` or ``--search hyperband``.

    :param samples: ``sha`` only: random draws from ``space`` instead of its grid (None: the grid).
    :param min_epochs: epochs of the first rung; None derives it (sha) or takes 1 (hyperband).
    """
    check_settings(search, eta, max_epochs, min_epochs)
    rand = np.random.RandomState(DRAW_SEED)
    if search == "sha":
        configurations = grid(space) if samples is None else draw(space, samples, rand)
        if len(configurations) < eta:
            raise InputError(f"--search sha with {len(configurations)} configurations and --eta {eta}: expected at "
                             f"least eta configurations (a larger search space or --samples {eta} or more)")
        min_epochs = min_epochs or default_min_epochs(len(configurations), eta, max_epochs)
        brackets = (successive_halving(len(configurations), eta, max_epochs, min_epochs),)
        bracket_of = (0,) * len(configurations)
    elif search == "hyperband":
        min_epochs = min_epochs or 1
        brackets = hyperband(eta, max_epochs, min_epochs)
        configurations = draw(space, sum(bracket.configurations for bracket in brackets), rand)
        bracket_of = tuple(index for index, bracket in enumerate(brackets) for _ in range(bracket.configurations))
    else:
        raise ValueError(f"not a halving search: {search}")
    return HalvingPlan(search, eta, min_epochs, max_epochs, brackets, tuple(configurations), bracket_of)


def survivors(values: list[float], keep: int, larger_is_better: bool,
              tie_breakers: list[tuple[float, ...]] | None = None) -> list[int]:
    """Indices of the ``keep`` best ``values`` in their original order: NaN last; equal values by
    ``tie_breakers`` (per value, losses where lower wins, in turn), then the earlier."""
    return sorted(ranked(values, larger_is_better, tie_breakers)[:keep])
