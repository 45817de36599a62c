"""A configuration's hop checkpoint: its weights and optimizer state as they left the last worker.

Model hopping moves a configuration from worker to worker after every training sub-epoch. cerebro
moved it as a full Keras HDF5 model (architecture, compile settings, weights, optimizer) that each
worker saved, copied and loaded again; a hop here moves only the arrays, in one uncompressed
``.npz`` on the shared store beside cerebro's checkpoint, ``runs/<run id>/hop.npz``:

* ``weight_<i>``: ``model.get_weights()`` in order, float32;
* ``optimizer_<i>``: the optimizer's variables (its step counter first, then Adam's moments);
* ``token``: a fresh id per write, so a worker that holds the model can tell whether the file is
  the state it already has;
* ``visits``: training sub-epochs this configuration has had since it started or was restored.

A write goes to a temporary file in the same folder, is flushed to disk and renamed over the old
one, so a reader sees the previous state or the new one, never half of either; a crash mid-write
leaves a temporary file that nothing reads.
"""
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HOP_FILE = "hop.npz"
TEMP_PREFIX = ".hop-"


@dataclass(frozen=True)
class HopState:
    """What a hop checkpoint holds: model weights, optimizer variables, its token and visit count."""
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    token: str
    visits: int


def path_in(run_dir: str | Path) -> Path:
    return Path(run_dir) / HOP_FILE


def new_token() -> str:
    return uuid.uuid4().hex


def write(path: Path, weights: list[np.ndarray], optimizer: list[np.ndarray], visits: int) -> str:
    """Write a hop checkpoint atomically (temporary file, fsync, rename); return its token."""
    token = new_token()
    temp = path.with_name(f"{TEMP_PREFIX}{token}.npz")
    arrays = {f"weight_{i}": array for i, array in enumerate(weights)}
    arrays.update({f"optimizer_{i}": array for i, array in enumerate(optimizer)})
    with open(temp, "wb") as handle:
        np.savez(handle, token=np.array(token), visits=np.array(visits), **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return token


def token_of(path: Path) -> str | None:
    """The token of the hop checkpoint at ``path`` (reading nothing else), or None when there is none."""
    try:
        with np.load(path) as archive:
            return str(archive["token"])
    except FileNotFoundError:
        return None


def read(path: Path) -> HopState:
    """The whole hop checkpoint at ``path``.

    :raises zipfile.BadZipFile, ValueError: the file is not a complete checkpoint (which the rename
        in :func:`write` rules out for files it wrote).
    """
    with np.load(path) as archive:
        names = archive.files
        weights = [archive[f"weight_{i}"] for i in range(sum(name.startswith("weight_") for name in names))]
        optimizer = [archive[f"optimizer_{i}"] for i in range(sum(name.startswith("optimizer_") for name in names))]
        return HopState(weights, optimizer, str(archive["token"]), int(archive["visits"]))


def discard(run_dir: str | Path) -> None:
    """Remove a run's hop checkpoint, so that workers start again from its Keras checkpoint."""
    path_in(run_dir).unlink(missing_ok=True)
