"""Grid, random and TPE searches that save every completed epoch and continue a saved run.

cerebro's searches create their estimators, train them for ``num_epochs`` and return; a driver
that dies loses everything, and nothing can start from a saved epoch. These subclasses keep
cerebro's model hopping epoch by epoch, each epoch trained and validated by
:meth:`chap_mop.cerebro_compat.hopping.HoppingBackend.train_epoch`, but:

* take a :class:`chap_mop.selection.run_state.RunState` (``run_state=``): every configuration is recorded
  there before it trains, and after every completed epoch its end-of-epoch checkpoint, epochs
  and metrics are saved (after the epoch listeners and TensorBoard logs);
* restore the configurations a saved run already has: the same run ids and hyper-parameters
  (random and TPE draws included), the end-of-epoch checkpoint (weights and optimizer state) as
  cerebro's working checkpoint, the epoch count and the metrics so far, so completed epochs are
  never trained again;
* stop a configuration whose training or validation loss is not finite after an epoch (NaN or
  infinity: its weights are lost): it is marked failed at that epoch in the run state, told in one
  line, never trained again, never chosen as best, and the other configurations go on;
* build only the best run's model at the end (cerebro loaded every checkpoint to pick one).
"""
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cerebro.backend import constants
from cerebro.tune import GridSearch, RandomSearch, TPESearch
from cerebro.tune.base import ModelSelectionResult, _HPChoice, update_model_results
from hyperopt import STATUS_FAIL, STATUS_OK, STATUS_RUNNING, Trials, tpe
from hyperopt.base import Domain

from chap_mop.cerebro_compat.selection import TENSORBOARD_SUBDIR
from chap_mop.errors import TrainingError
from chap_mop.selection import hop_checkpoint
from chap_mop.model.ranking import best_index, is_larger_better
from chap_mop.selection.run_state import RunState


class ResumableSearch:
    """What the three searches share; mixed in before cerebro's search class.

    :param run_state: the run's saved state, new or loaded; every other argument is cerebro's.
    :param out: where failed configurations are told (one line each).
    """

    def __init__(self, *args, run_state: RunState, out: Callable[[str], None] = print, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_state, self.out = run_state, out
        self.failed: dict[str, int] = {}  # run id -> epoch whose loss was not finite

    def _start_estimators(self, param_maps: list[dict], first_index: int, extras: list[dict] | None = None
                          ) -> tuple[list, dict]:
        """Estimators of the configurations ``first_index, first_index + 1, ...``, saved or new.

        :return: the estimators and their results so far (run id -> {metric: per-epoch values}).
        """
        estimators, results, new = [], {}, []
        for offset, params in enumerate(param_maps):
            estimator = self._estimator_gen_fn_wrapper(params)
            saved = self.run_state.configuration(first_index + offset)
            if saved is None:
                self.run_state.add_configuration(estimator.getRunId(), params, extras[offset] if extras else None)
                new.append((estimator, params))
                results[estimator.getRunId()] = {}
            else:
                del self.run_hyperparameters[estimator.getRunId()]
                estimator.setRunId(saved["run_id"])
                estimator.setEpochs(saved["epochs_completed"])
                self.run_hyperparameters[saved["run_id"]] = saved["hyperparameters"]
                results[saved["run_id"]] = {name: list(values) for name, values in saved["history"].items()}
                if saved.get("failed_at_epoch"):
                    self.failed[saved["run_id"]] = saved["failed_at_epoch"]
                run_dir = self._local(self.store.get_run_path(saved["run_id"]))
                self.run_state.restore(saved, self._checkpoint(saved["run_id"]), run_dir / TENSORBOARD_SUBDIR)
                hop_checkpoint.discard(run_dir)  # workers start from the restored epoch, not a later hop
            estimators.append(estimator)
        if new:
            self._log_hp_to_tensorboard([estimator for estimator, _ in new], [params for _, params in new])
        return estimators, results

    def _train_epochs(self, estimators: list, results: dict) -> None:
        """Train and validate ``estimators`` epoch by epoch up to ``num_epochs``, saving each epoch;
        failed configurations drop out."""
        while live := [estimator for estimator in estimators if estimator.getRunId() not in self.failed and
                       estimator.getEpochs() < self.num_epochs]:
            self._train_epoch(live, results)

    def _mark_non_finite(self, estimators: list, results: dict) -> None:
        """Mark failed every configuration whose epoch ended with a loss that is not finite."""
        for estimator in estimators:
            run_id, epoch = estimator.getRunId(), estimator.getEpochs()
            losses = {name: results[run_id][name][-1] for name in ("train_loss", "val_loss") if results[run_id].get(name)}
            bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
            if bad:
                self.failed[run_id] = epoch
                self.run_state.mark_failed(run_id, epoch)
                self.out(f"model {self._number(run_id)} ({run_id}, {self.run_hyperparameters[run_id]}) failed in "
                         f"epoch {epoch}: {', '.join(f'{name} {value}' for name, value in bad.items())}; it trains no "
                         "further and cannot be chosen (a smaller lr usually helps)")

    def _number(self, run_id: str) -> int:
        """1-based number of a configuration, as the progress lines number them."""
        return list(self.run_hyperparameters).index(run_id) + 1

    def _train_epoch(self, estimators: list, results: dict) -> None:
        """Train and validate ``estimators`` for one epoch, call the epoch listeners, then save the epoch."""
        for phase_results in self.backend.train_epoch(estimators, self.store, self.feature_cols, self.label_cols):
            update_model_results(results, phase_results)
        self._log_epoch_metrics_to_tensorboard(estimators, results)
        self._mark_non_finite(estimators, results)
        self._after_epoch([estimator for estimator in estimators if estimator.getRunId() not in self.failed], results)
        ids = [estimator.getRunId() for estimator in estimators]
        self.run_state.save_epoch({run_id: self._checkpoint(run_id) for run_id in ids},
                                  {run_id: results[run_id] for run_id in ids},
                                  {estimator.getRunId(): estimator.getEpochs() for estimator in estimators})

    def _after_epoch(self, estimators: list, results: dict) -> None:
        """Decisions that belong to the epoch's saved state (successive halving's cuts); none here."""

    def _local(self, store_path: str) -> Path:
        return Path(self.store.get_localized_path(store_path))

    def _checkpoint(self, run_id: str) -> Path:
        """cerebro's working checkpoint of a run, which every training sub-epoch overwrites."""
        return self._local(self.store.get_checkpoint_path(run_id))

    def _best_result(self, estimators: list, results: dict, metadata) -> ModelSelectionResult:
        """cerebro's result: of the runs that trained the most epochs and did not fail, the one with
        the best final validation value of the evaluation metric.

        :raises TrainingError: every configuration failed.
        """
        estimators = [estimator for estimator in estimators if estimator.getRunId() not in self.failed]
        if not estimators:
            raise TrainingError(f"every configuration failed with a loss that is not finite ({len(self.failed)} "
                                "failed, see above); try smaller learning rates in --search-space")
        most = max(estimator.getEpochs() for estimator in estimators)
        estimators = [estimator for estimator in estimators if estimator.getEpochs() == most]
        values = [results[estimator.getRunId()]["val_" + self.evaluation_metric][-1] for estimator in estimators]
        best = estimators[best_index(values, is_larger_better(self.evaluation_metric))]
        model = best.create_model(results[best.getRunId()], best.getRunId(), metadata)
        return ModelSelectionResult(model, results, [model], [column + "__output" for column in self.label_cols])

    def _param_maps(self) -> list[dict]:
        """The configurations: those of the saved run when it has them (random draws included)."""
        saved = [entry["hyperparameters"] for entry in self.run_state.configurations]
        return saved or self.estimator_param_maps

    def _fit_on_prepared_data(self, metadata):
        estimators, results = self._start_estimators(self._param_maps(), 0)
        self._train_epochs(estimators, results)
        return self._best_result(estimators, results, metadata)


class ResumableGridSearch(ResumableSearch, GridSearch):
    """cerebro's GridSearch, saved after every epoch and resumable."""


class ResumableRandomSearch(ResumableSearch, RandomSearch):
    """cerebro's RandomSearch, saved after every epoch and resumable with the same draws."""


class ResumableTPESearch(ResumableSearch, TPESearch):
    """cerebro's TPESearch (batches of ``parallelism`` configurations, each trained for every
    epoch before TPE draws the next batch), saved after every epoch and resumable.

    On resume, hyperopt draws again from the same seed, and every trial the saved run has is
    replaced by the saved one (its values and, for finished batches, its result), so TPE sees the
    history the interrupted run had.
    """

    def _fit_on_prepared_data(self, metadata):
        trials, domain = Trials(), Domain(None, self.hyperopt_search_space)
        rand = np.random.RandomState(constants.RANDOM_SEED)
        all_estimators, all_results = [], {}
        for first in range(0, self.num_params, self.parallelism):
            docs = [self._suggest(index, domain, trials, rand)
                    for index in range(first, min(self.num_params, first + self.parallelism))]
            vals = [{name: values[0] for name, values in doc["misc"]["vals"].items()} for doc in docs]
            estimators, results = self._start_estimators([self._params_of(v) for v in vals], first,
                                                         [{"hyperopt_vals": v} for v in vals])
            self._train_epochs(estimators, results)
            for doc, estimator in zip(docs, estimators):
                if estimator.getRunId() in self.failed:  # hyperopt leaves failed trials out of its model
                    doc["status"], doc["result"] = STATUS_FAIL, {"status": STATUS_FAIL}
                    continue
                doc["status"] = STATUS_OK
                doc["result"] = {"loss": results[estimator.getRunId()]["val_" + self.evaluation_metric][-1],
                                 "status": STATUS_OK}
            trials.refresh()
            all_estimators += estimators
            all_results.update(results)
        return self._best_result(all_estimators, all_results, metadata)

    def _suggest(self, index: int, domain, trials, rand) -> dict:
        doc = tpe.suggest([index], domain, trials, rand.randint(0, 2 ** 31 - 1))[0]
        saved = self.run_state.configuration(index)
        if saved is not None:
            doc["misc"]["vals"] = {name: [value] for name, value in saved["extra"]["hyperopt_vals"].items()}
        else:
            doc["misc"]["vals"] = {name: [np.asarray(values[0]).item()] for name, values in doc["misc"]["vals"].items()}
        doc["status"] = STATUS_RUNNING
        trials.insert_trial_docs([doc])
        trials.refresh()
        return doc

    def _params_of(self, vals: dict) -> dict:
        """cerebro's hyper-parameters from hyperopt's values (a choice's value is its index)."""
        return {name: self.search_space[name].options[value] if isinstance(self.search_space[name], _HPChoice)
                else value for name, value in vals.items()}


SEARCHES = {"grid": ResumableGridSearch, "random": ResumableRandomSearch, "tpe": ResumableTPESearch}
