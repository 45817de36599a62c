"""Fixes for cerebro-dl 1.1.1 on today's stack: Keras 2 optimizers, the polling period and
where cerebro's RPC services listen.

Each patch is a function documented with the defect it fixes and tested in
``tests/test_cerebro_compat.py``; :func:`chap_mop.cerebro_compat.apply_patches` applies them.
"""
import inspect
import os

import numpy as np
import tensorflow as tf

from chap_mop.selection.epoch_schedule import DEFAULT_POLLING_PERIOD_S


def patch_optimizer_get_weights() -> None:
    """cerebro calls ``optimizer.get_weights()`` when it compiles a model; Keras 2.11+ optimizers
    lost that method (they kept ``set_weights`` and ``variables``).

    An optimizer that was never built has no state worth restoring (only its step counter),
    and ``set_weights`` refuses it, so it reports no weights.
    """
    optimizer_class = tf.keras.optimizers.Optimizer
    if hasattr(optimizer_class, "get_weights"):
        return

    def get_weights(self) -> list[np.ndarray]:
        if not getattr(self, "_built", False):
            return []
        return [variable.numpy() for variable in self.variables]

    optimizer_class.get_weights = get_weights

def patch_polling_period() -> None:
    """Make the driver's polling period a ``SparkBackend(polling_period=...)`` setting.

    cerebro checks its workers every 2 s, which dominates short sub-epochs; the fast default
    here costs one cheap RPC per worker per period.
    """
    from cerebro.backend.spark.backend import SparkBackend
    original_init = SparkBackend.__init__
    if "polling_period" in inspect.signature(original_init).parameters:
        return

    def __init__(self, *args, polling_period: float = DEFAULT_POLLING_PERIOD_S, **kwargs):
        original_init(self, *args, **kwargs)
        self.settings.polling_period = polling_period

    SparkBackend.__init__ = __init__

def patch_service_bind_address() -> None:
    """Bind cerebro's RPC services to ``SPARK_LOCAL_IP`` when it is set, as Spark binds its own.

    cerebro's driver service and each worker's task service listen on every interface of their
    host, whatever address Spark was pinned to (in the local test cluster: 127.0.0.1 only). The
    task services run on executors, which apply this patch through
    :func:`chap_mop.cerebro_compat.faults._run_worker_task`.
    """
    from cerebro.backend.spark import service_driver, service_task
    original = service_task.find_port
    if getattr(original, "_chap_mop_patched", False):
        return

    def find_port(server_factory):
        host = os.environ.get("SPARK_LOCAL_IP", "")  # "": every interface, cerebro's choice
        return original(lambda address: server_factory((host, address[1])))

    find_port._chap_mop_patched = True
    service_driver.find_port = service_task.find_port = find_port
