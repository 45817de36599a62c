"""Successive halving and Hyperband on cerebro's model hopping, saved every epoch and resumable.

A subclass of the project's resumable grid search (:mod:`.resumable`), not a patch: cerebro's
``HoppingBackend.train_epoch`` already trains any list of configurations by model hopping, so a search
that hands it only the live ones, epoch by epoch, is successive halving. The brackets and
configurations come from :func:`chap_mop.selection.halving.make_plan`.
"""
import math

from cerebro.tune import GridSearch

from chap_mop.model import metrics
from chap_mop.cerebro_compat.resumable import ResumableSearch
from chap_mop.model.ranking import HALVING_TIE_BREAKERS, is_larger_better
from chap_mop.selection.halving import HalvingPlan, survivors


class ResumableHalvingSearch(ResumableSearch, GridSearch):
    """Every live configuration trains epoch by epoch in lock step; after an epoch that is a rung
    of its bracket, the bracket's live configurations are ranked by ``val_<metric>`` at that epoch
    (equal values by validation loss, then training loss, then order) and only the rung's survivors
    go on. Stopped configurations keep their results. Failed configurations
    (:class:`ResumableSearch`) leave their bracket: a rung ranks and keeps only those that have not
    failed.

    A cut is saved with its epoch (``stopped_at_rung`` of each stopped configuration in the run
    state), so a resumed run continues the same brackets with the same survivors.

    :param plan: brackets and configurations; every other argument is :class:`ResumableSearch`'s.
    """

    def __init__(self, *args, plan: HalvingPlan, **kwargs):
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.stopped_at: dict[str, int] = {}  # run id -> 1-based rung of its bracket at which it stopped
        self.bracket_of: dict[str, int] = {}  # run id -> 0-based bracket

    def _param_maps(self) -> list[dict]:
        saved = [entry["hyperparameters"] for entry in self.run_state.configurations]
        return saved or list(self.plan.configurations)

    def _fit_on_prepared_data(self, metadata):
        estimators, results = self._start_estimators(self._param_maps(), 0,
                                                     [{"bracket": index} for index in self.plan.bracket_of])
        for estimator, entry in zip(estimators, self.run_state.configurations):
            self.bracket_of[estimator.getRunId()] = entry["extra"]["bracket"]
            if entry.get("stopped_at_rung"):
                self.stopped_at[estimator.getRunId()] = entry["stopped_at_rung"]
        while live := [estimator for estimator in estimators
                       if estimator.getRunId() not in self.stopped_at and estimator.getRunId() not in self.failed
                       and estimator.getEpochs() < self.num_epochs]:
            workers = self.backend._num_workers()
            if len(live) < workers:
                self.out(f"epoch {live[0].getEpochs() + 1}/{self.num_epochs}: {len(live)} live "
                         f"configuration{'s' * (len(live) > 1)} on {workers} workers, {workers - len(live)} idle "
                         "(model hopping trains a configuration on one worker at a time)")
            self._train_epoch(live, results)
        return self._best_result(estimators, results, metadata)

    def _after_epoch(self, estimators: list, results: dict) -> None:
        """Apply the cut of every bracket that has a rung at this epoch."""
        epoch = estimators[0].getEpochs()
        metric = "val_" + self.evaluation_metric
        for index, bracket in enumerate(self.plan.brackets):
            keep = bracket.keep_after(epoch)
            members = [estimator.getRunId() for estimator in estimators if self.bracket_of[estimator.getRunId()] == index]
            if keep is None or not members:
                continue
            for run_id in members:
                metrics.add_derived_metrics(results[run_id])  # the accuracies are derived from counts
            values = [results[run_id][metric][epoch - 1] for run_id in members]
            ties = [tuple(results[run_id].get(name, [math.nan] * epoch)[epoch - 1] for name in HALVING_TIE_BREAKERS)
                    for run_id in members]
            kept = survivors(values, keep, is_larger_better(self.evaluation_metric), ties)
            rung = bracket.rung_number(epoch)
            stopped = [run_id for position, run_id in enumerate(members) if position not in kept]
            for run_id in stopped:
                self.stopped_at[run_id] = rung
                self.run_state.mark_stopped(run_id, rung)
            where = f"rung {rung}" + (f" of bracket {index + 1}" if len(self.plan.brackets) > 1 else "")
            self.out(f"{where} (epoch {epoch}): {len(kept)} of {len(members)} configurations go on by {metric}: "
                     f"{self._models([members[i] for i in kept], results, metric, epoch)}; stopped: "
                     f"{self._models(stopped, results, metric, epoch) or 'none'}")

    def _models(self, run_ids: list[str], results: dict, metric: str, epoch: int) -> str:
        """``model 1 (0.8123), model 3 (0.7990)``, numbered as the progress lines number them."""
        return ", ".join(f"model {self._number(run_id)} ({results[run_id][metric][epoch - 1]:.4f})"
                         for run_id in run_ids)
