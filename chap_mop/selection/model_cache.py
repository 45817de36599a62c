"""A worker's built and compiled models, one per configuration it has trained, least recently used
dropped first once their memory passes a limit.

Keeping a configuration's model between its visits saves what cerebro paid on every sub-epoch:
building the model from its HDF5 file, and tracing Keras' train and test functions again (about
as long as a small sub-epoch's training on CPU). A hop then only assigns the arrays of the hop
checkpoint (:mod:`chap_mop.selection.hop_checkpoint`) to variables that exist already.
"""
import gc
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL_CACHE_MB = 4096  # per worker; the default grid at amp 4 and 2 holds 2.6 GB of variables

MB = 2 ** 20


@dataclass
class CachedModel:
    """A compiled model and the state it holds.

    :param token: the hop checkpoint token (or Keras checkpoint identity) its variables equal.
    :param visits: training sub-epochs the configuration had when that state was written.
    :param nbytes: bytes of its variables, model and optimizer (Adam: 3 floats per parameter).
    """
    model: Any
    token: str
    visits: int
    nbytes: int


def variables_nbytes(model) -> int:
    """Bytes held by a compiled model's weights and its optimizer's variables."""
    variables = list(model.weights) + list(getattr(model.optimizer, "variables", []) or [])
    return sum(int(variable.shape.num_elements() or 0) * variable.dtype.size for variable in variables)


class ModelCache:
    """Models by run id, at most ``limit_mb`` MB of variables (0: keep none)."""

    def __init__(self, limit_mb: float):
        self.limit_bytes = int(limit_mb * MB)
        self._entries: OrderedDict[str, CachedModel] = OrderedDict()
        self.evicted = 0

    def get(self, run_id: str) -> CachedModel | None:
        entry = self._entries.get(run_id)
        if entry is not None:
            self._entries.move_to_end(run_id)
        return entry

    def put(self, run_id: str, entry: CachedModel) -> None:
        """Keep ``entry`` as the most recently used, then drop the least recently used beyond the limit."""
        self._entries[run_id] = entry
        self._entries.move_to_end(run_id)
        evicted = self.evicted
        while self._entries and self.nbytes() > self.limit_bytes:
            self._entries.popitem(last=False)
            self.evicted += 1
        if self.evicted > evicted:
            gc.collect()  # free the dropped models' variables now, not at the next collection

    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def run_ids(self) -> list[str]:
        """Cached run ids, least recently used first."""
        return list(self._entries)


_WORKER_CACHE = ModelCache(0)


def worker_cache(limit_mb: float) -> ModelCache:
    """*Executor side*: this Python process's cache (a cerebro worker is one process), at ``limit_mb``."""
    _WORKER_CACHE.limit_bytes = int(limit_mb * MB)
    return _WORKER_CACHE
