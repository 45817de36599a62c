"""What a search means: which metric direction wins, independent random draws, TPE on
accuracies, run ids mapped to hyper-parameters, TensorBoard logs kept, epoch listeners.

Each patch is a function documented with the defect it fixes and tested in
``tests/test_cerebro_compat.py``; :func:`chap_mop.cerebro_compat.apply_patches` applies them.
"""
import numpy as np
import tensorflow as tf

from chap_mop.model.ranking import is_larger_better
from chap_mop.selection.run_state import EPOCH_LOG_SUFFIX

TENSORBOARD_SUBDIR = "logs"


def patch_metric_direction() -> None:
    """Maximise accuracy-like evaluation metrics, and accept any recorded metric name.

    cerebro's own ``is_larger_better`` knows only ``r2``, so selecting by accuracy picked the worst
    model; the project's rule is :func:`chap_mop.model.ranking.is_larger_better`.

    cerebro validates names against ``loss``/``acc``/``accuracy`` only; which metrics a run
    really records is checked by the caller before training starts (``model_selection.py``).
    """
    from cerebro.tune import base, grid, tpe
    for module in (base, grid, tpe):
        module.is_larger_better = is_larger_better
    base.is_valid_evaluation_metric = lambda name: isinstance(name, str) and bool(name)


def patch_tensorboard_logs() -> None:
    """Keep the TensorBoard logs (hparams and per-epoch scalars) of every run in the store.

    cerebro writes them to a temporary folder and syncs it to the store only after the folder
    was deleted, so nothing was kept. Here they are synced while the folder still exists, into
    ``<runs>/<run_id>/logs/``. Also calls the search's ``epoch_listeners`` after each epoch (cerebro
    has no hook between epochs): they see every run's metrics so far and may add derived ones.
    Each epoch's scalars go to their own event file, named ``*.epoch<k>``, so that a resumed run
    can drop the files of epochs it trains again (:meth:`chap_mop.selection.run_state.RunState.restore`).
    """
    from cerebro.tune import base

    def _write(store, run_id: str, write_fn, suffix: str) -> None:
        remote_store = store.to_remote(run_id, None)
        with remote_store.get_local_output_dir() as local_dir:
            with tf.summary.create_file_writer(f"{local_dir}/{TENSORBOARD_SUBDIR}", filename_suffix=suffix).as_default():
                write_fn()
            remote_store.sync(local_dir)

    def _store_of(store, run_id: str):
        return store[run_id] if isinstance(store, dict) else store

    def log_hp_to_tensorboard(estimators, hparams, store, verbose):
        from tensorboard.plugins.hparams import api as hp
        for estimator, params in zip(estimators, hparams):
            run_id = estimator.getRunId()
            _write(_store_of(store, run_id), run_id, lambda: hp.hparams(params, trial_id=run_id), ".hparams")
            if verbose >= 1:
                print(f"CEREBRO => Model: {run_id}, " + ", ".join(f"{k}: {v}" for k, v in params.items()))

    def log_epoch_metrics_to_tensorboard(estimators, estimator_results, store, verbose):
        for estimator in estimators:
            run_id, epoch = estimator.getRunId(), estimator.getEpochs()
            metrics = estimator_results[run_id]

            def write_scalars():
                for name, values in metrics.items():
                    tf.summary.scalar(name, values[epoch - 1], step=epoch)

            _write(_store_of(store, run_id), run_id, write_scalars, f"{EPOCH_LOG_SUFFIX}{epoch}")

    def _log_epoch_metrics(self, estimators, estimator_results):
        for listener in getattr(self, "epoch_listeners", []):
            listener(estimators, estimator_results)
        _add_negated_metric(self.evaluation_metric, estimator_results)
        log_epoch_metrics_to_tensorboard(estimators, estimator_results, self.store, self.verbose)

    base.log_hp_to_tensorboard = log_hp_to_tensorboard
    base.log_epoch_metrics_to_tensorboard = log_epoch_metrics_to_tensorboard
    base.ModelSelection._log_epoch_metrics_to_tensorboard = _log_epoch_metrics


def patch_random_search_dimensions() -> None:
    """Let RandomSearch draw its dimensions independently.

    Every cerebro distribution seeds its own ``RandomState(2020)``, so dimensions with as many
    options move in lockstep (always the 1st lr with the 1st l2_reg, ...). Here all dimensions of
    one search share a single seeded stream: still reproducible, no longer correlated.
    """
    from cerebro.backend import constants
    from cerebro.tune.grid import RandomSearch
    original = RandomSearch._generate_all_param_maps
    if getattr(original, "_chap_mop_patched", False):
        return

    def _generate_all_param_maps(self):
        shared = np.random.RandomState(constants.RANDOM_SEED)
        for dimension in self.search_space.values():
            dimension.rand = shared
        return original(self)

    _generate_all_param_maps._chap_mop_patched = True
    RandomSearch._generate_all_param_maps = _generate_all_param_maps


NEGATED_PREFIX = "negated_"


def patch_tpe_direction() -> None:
    """Let TPESearch optimise metrics where larger is better.

    hyperopt minimises, so cerebro's TPESearch refuses accuracy-like metrics. Here it minimises
    ``negated_<metric>``, which the epoch hook of :func:`patch_tensorboard_logs` adds to every
    run's results after the epoch listeners have run.
    """
    from cerebro.tune.tpe import TPESearch
    original_init = TPESearch.__init__
    if getattr(original_init, "_chap_mop_patched", False):
        return

    def __init__(self, *args, evaluation_metric: str = "loss", **kwargs):
        larger = is_larger_better(evaluation_metric)
        original_init(self, *args, evaluation_metric="loss" if larger else evaluation_metric, **kwargs)
        if larger:
            self.evaluation_metric = NEGATED_PREFIX + evaluation_metric

    __init__._chap_mop_patched = True
    TPESearch.__init__ = __init__


def _add_negated_metric(evaluation_metric: str, estimator_results: dict) -> None:
    if not evaluation_metric.startswith(NEGATED_PREFIX):
        return
    source = "val_" + evaluation_metric[len(NEGATED_PREFIX):]
    for results in estimator_results.values():
        if source in results:
            results["val_" + evaluation_metric] = [-value for value in results[source]]


def patch_run_hyperparameters() -> None:
    """Map each run id to the hyper-parameters that produced it.

    cerebro's result lists ``model_N_<time>`` runs without saying which configuration each was.
    After this patch every search has ``run_hyperparameters`` ({run id: params}), filled as it
    builds its estimators, and ``fit``'s result carries the same mapping.
    """
    from cerebro.tune.base import ModelSelection
    original_wrapper = ModelSelection._estimator_gen_fn_wrapper
    if getattr(original_wrapper, "_chap_mop_patched", False):
        return

    def _estimator_gen_fn_wrapper(self, params):
        estimator = original_wrapper(self, params)
        if not hasattr(self, "run_hyperparameters"):
            self.run_hyperparameters = {}
        self.run_hyperparameters[estimator.getRunId()] = dict(params)
        return estimator

    _estimator_gen_fn_wrapper._chap_mop_patched = True
    ModelSelection._estimator_gen_fn_wrapper = _estimator_gen_fn_wrapper

    for method_name in ("fit", "fit_on_prepared_data"):
        setattr(ModelSelection, method_name, _attach_run_hyperparameters(getattr(ModelSelection, method_name)))


def _attach_run_hyperparameters(method):
    def wrapper(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        result.run_hyperparameters = dict(getattr(self, "run_hyperparameters", {}))
        return result

    wrapper.__doc__ = method.__doc__
    return wrapper


