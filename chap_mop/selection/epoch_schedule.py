"""Which configuration a free worker takes next within one epoch of model hopping.

In an epoch every configuration trains once on each worker's shard, one worker at a time, and is
then validated on each worker's shard. cerebro scheduled the training visits in whatever order
workers came free and validated only after every configuration had trained on every shard, so
workers idled at the end of the training phase and the order of a configuration's shards, hence
its weights, changed from run to run.

Here each configuration visits the shards in a fixed order, so a run's arithmetic does not depend
on timing. The configurations are ranked by cost (heaviest first; equal costs keep their order) and
the configuration of rank ``r`` in epoch ``e`` starts on worker ``(r + e) mod n`` and goes round:
configurations of similar cost start on different workers, so each worker has a similar load at
every turn. (Starting configuration ``i`` on worker ``(i + e) mod n`` put both amp-2 models of the
benchmark's grid, indices 1 and 3, on the same worker first: the other worker idled 13 s of every
63-s epoch.) A free worker takes, in this order:

1. a training visit that is due on it (the configuration's next shard is this worker's), the
   configuration with the most shards still to train first, then the heaviest;
2. a validation visit of a configuration that has finished training, so that validation fills the
   gaps that the fixed order leaves, instead of waiting for the whole epoch's training.

Validation visits only read a configuration's weights: several may run at once on different
workers.
"""
from dataclasses import dataclass, field

DEFAULT_POLLING_PERIOD_S = 0.1  # how often the driver checks its workers for a finished visit; cerebro's is 2 s


@dataclass
class EpochSchedule:
    """One epoch's visits. ``epochs[i]``: configuration ``i``'s completed epochs (it trains epoch +1).

    ``costs[i]``: configuration ``i``'s relative cost of a visit, any unit (e.g. its parameter
    count); it must not depend on timing, or the shard order would. None: all equal.
    """
    epochs: list[int]
    workers: int
    validate: bool = True
    costs: list[float] | None = None
    trained: list[int] = field(init=False)
    validated: list[set[int]] = field(init=False)
    training: list[bool] = field(init=False)

    def __post_init__(self):
        self.costs = list(self.costs) if self.costs is not None else [1.0] * len(self.epochs)
        if len(self.costs) != len(self.epochs):
            raise ValueError(f"{len(self.costs)} costs for {len(self.epochs)} configurations")
        by_cost = sorted(range(len(self.epochs)), key=lambda i: (-self.costs[i], i))
        self._rank = {index: rank for rank, index in enumerate(by_cost)}
        self.trained = [0] * len(self.epochs)
        self.validated = [set() for _ in self.epochs]
        self.training = [False] * len(self.epochs)
        self._validating: set[tuple[int, int]] = set()

    def shard_order(self, index: int) -> list[int]:
        """The workers, in the order configuration ``index`` trains on their shards this epoch."""
        start = (self._rank[index] + self.epochs[index]) % self.workers
        return [(start + k) % self.workers for k in range(self.workers)]

    def next_for(self, worker: int) -> tuple[int, bool] | None:
        """(configuration, is_train) for a free ``worker``, or None when nothing can run on it now."""
        due = [i for i in range(len(self.epochs)) if not self.training[i] and self.trained[i] < self.workers
               and self.shard_order(i)[self.trained[i]] == worker]
        if due:
            return min(due, key=lambda i: (self.trained[i], -self.costs[i], i)), True
        if self.validate:
            for i in range(len(self.epochs)):
                if (self.trained[i] == self.workers and worker not in self.validated[i]
                        and (i, worker) not in self._validating):
                    return i, False
        return None

    def start(self, index: int, worker: int, is_train: bool) -> None:
        if is_train:
            self.training[index] = True
        else:
            self._validating.add((index, worker))

    def finish(self, index: int, worker: int, is_train: bool) -> None:
        if is_train:
            self.training[index] = False
            self.trained[index] += 1
        else:
            self._validating.discard((index, worker))
            self.validated[index].add(worker)

    def done(self) -> bool:
        return all(count == self.workers for count in self.trained) and \
            (not self.validate or all(len(seen) == self.workers for seen in self.validated))
