"""Progress of a model selection run: one line per finished sub-epoch, with an ETA.

    epoch 2/10 | model 5/16 (lr 0.001, l2 0.0001, 7 min, amp 2) on worker 1 | train loss 0.41 acc 0.86 bal 0.84 | 37/640 sub-epochs | ETA 3 h 12 min

A run has ``2 x workers`` sub-epochs (training and validation) per configuration-epoch: its
configurations x epochs, or fewer when successive halving stops some early. The ETA is the remaining sub-epochs times the mean measured duration of their kind (training or
validation), divided by how many workers were busy on average so far: the pace of this session,
idle workers and the driver's work between epochs included.
"""
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from chap_mop.model.metrics import COUNT_METRICS, accuracy_from_counts
from chap_mop.text import describe, format_duration


@dataclass
class SubEpoch:
    """A finished sub-epoch: one configuration's pass over one worker's partition.

    :param epoch: 1-based epoch it belongs to.  :param seconds: from scheduling to the driver
        seeing it finish.  :param steps: batches.  :param metrics: cerebro's per-batch averages
        of this partition, e.g. ``{"train_loss": 0.41, "train_sitting_hits": 31.2, ...}``.
    """
    run_id: str
    worker: int
    is_train: bool
    epoch: int
    seconds: float
    steps: int
    metrics: dict[str, float]


def sub_epoch_summary(sub_epoch: SubEpoch) -> str:
    """``train loss 0.41 acc 0.86 bal 0.84``: loss and accuracies from the sub-epoch's counts."""
    prefix = "train_" if sub_epoch.is_train else "val_"
    counts = {fn.__name__: np.array([sub_epoch.metrics[prefix + fn.__name__]]) for fn in COUNT_METRICS}
    accuracy, balanced = accuracy_from_counts(counts)
    return (f"{prefix[:-1]} loss {sub_epoch.metrics[prefix + 'loss']:.2f} acc {accuracy[0]:.2f} "
            f"bal {balanced[0]:.2f}")


class Progress:
    """Prints a progress line for each finished sub-epoch; register :meth:`on_sub_epoch` as a
    listener of :class:`chap_mop.cerebro_compat.reporting.ReportingBackend`.

    :param hyperparameters: run id -> hyper-parameters, filled as the search creates its runs.
    :param configuration_epochs: epochs all configurations train together (None: configurations x epochs).
    :param configuration_epochs_done: of those, completed before this session (resume).
    """

    def __init__(self, hyperparameters: dict[str, dict], num_configurations: int, num_workers: int,
                 num_epochs: int, configuration_epochs: int | None = None, configuration_epochs_done: int = 0,
                 clock: Callable[[], float] = time.monotonic, out: Callable[[str], None] = print):
        self.hyperparameters = hyperparameters
        self.num_configurations, self.num_workers, self.num_epochs = num_configurations, num_workers, num_epochs
        self.per_kind_total = num_workers * (configuration_epochs or num_configurations * num_epochs)
        done = num_workers * configuration_epochs_done
        self.done = {True: done, False: done}  # by is_train
        self.measured = {True: [], False: []}  # seconds of this session's sub-epochs, by is_train
        self.clock, self.out = clock, out
        self.first_start: float | None = None

    def on_sub_epoch(self, sub_epoch: SubEpoch) -> None:
        now = self.clock()
        start = now - sub_epoch.seconds
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.done[sub_epoch.is_train] += 1
        self.measured[sub_epoch.is_train].append(sub_epoch.seconds)
        self.out(self.line(sub_epoch, now))

    def eta_seconds(self, now: float) -> float:
        """Seconds until the last sub-epoch, at this session's pace."""
        means = {kind: np.mean(times) if times else None for kind, times in self.measured.items()}
        fallback = next(mean for mean in means.values() if mean is not None)
        remaining = sum((self.per_kind_total - self.done[kind]) * (means[kind] or fallback) for kind in means)
        busy = sum(sum(times) for times in self.measured.values())
        elapsed = max(now - self.first_start, 1e-9)
        return remaining / max(busy / elapsed, 1e-9)

    def line(self, sub_epoch: SubEpoch, now: float) -> str:
        runs = list(self.hyperparameters)
        model = runs.index(sub_epoch.run_id) + 1 if sub_epoch.run_id in runs else "?"
        params = self.hyperparameters.get(sub_epoch.run_id, {})
        done, total = sum(self.done.values()), 2 * self.per_kind_total
        eta = "done" if done >= total else "ETA " + format_duration(self.eta_seconds(now))
        return (f"epoch {sub_epoch.epoch}/{self.num_epochs} | model {model}/{self.num_configurations} "
                f"({describe(params)}) on worker {sub_epoch.worker} | {sub_epoch_summary(sub_epoch)} | "
                f"{done}/{total} sub-epochs | {eta}")
