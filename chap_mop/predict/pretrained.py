"""DeepPostures' pre-trained CHAP models for the prediction stage (``--model NAME --pretrained-dir DIR``).

DeepPostures releases its models as ``MSSE-2021/pre-trained-models-pt/<NAME>.pth`` (PyTorch
state_dicts, converted by :mod:`chap_mop.model.deeppostures`). A file does not say its BiLSTM
window: DeepPostures' ``make_predictions.py`` knows it by the model's name
(:data:`BILSTM_MINUTES`). ``CHAP`` is DeepPostures' majority vote of ``CHAP_A``, ``CHAP_B`` and
``CHAP_C`` (:data:`CHAP_MEMBERS`; how it votes: :mod:`chap_mop.predict.predictions`).

How the executors get a model: the driver converts each ``.pth`` once, before Spark starts, and
once the predictions folder is claimed saves the Keras model into the model's own output folder,
``<predictions dir>/<NAME>/.model-<first 16 hex of the .pth's SHA-256>.h5`` (a partial file
renamed into place); the executors load that file as they load a model of the selection stage.
Why there and not on the executors:

* the predictions folder already has to be visible to every worker; the pre-trained folder then
  needs to be on the driver only;
* a bad or foreign ``.pth`` stops the program with one line before Spark starts, not in a task;
* each Python worker would otherwise repeat the conversion (reading the file and building the
  network) that the driver does once, and the executors keep one way of loading a model.

The digest in the name keeps a different ``.pth`` under the same name from ever being served by
an earlier conversion, on disk or in an executor's per-process model cache (keyed by path).
"""
import os
from pathlib import Path

from chap_mop.data.schema import WINDOWS_PER_MINUTE
from chap_mop.errors import InputError
from chap_mop.files import sha256_of

# DeepPostures' make_predictions.py: each released model's BiLSTM window, minutes
BILSTM_MINUTES = {"CHAP_A": 9, "CHAP_B": 9, "CHAP_C": 7, "CHAP_ALL_ADULTS": 7, "CHAP_CHILDREN": 3, "CHAP_AUSDIAB": 9}
CHAP = "CHAP"
CHAP_MEMBERS = {"CHAP_A": "predictions_A", "CHAP_B": "predictions_B", "CHAP_C": "predictions_C"}  # -> column
NAMES = (*BILSTM_MINUTES, CHAP)
SUFFIX = ".pth"
DIGEST_HEX = 16


def check_names(model: str | None, pretrained_dir: str | None, ensemble: bool = False) -> None:
    """The flags alone, no file read.

    :raises InputError: an unknown ``model``, one of ``model`` and ``pretrained_dir`` without the
        other, or ``model`` together with ``ensemble`` (a results folder's ensemble).
    """
    if model is None:
        if pretrained_dir is not None:
            raise InputError(f"--pretrained-dir {pretrained_dir} needs --model NAME, one of {', '.join(NAMES)}")
        return
    if model not in NAMES:
        raise InputError(f"--model {model}: not one of DeepPostures' models; expected one of {', '.join(NAMES)}")
    if pretrained_dir is None:
        raise InputError(f"--model {model} needs --pretrained-dir DIR, the folder holding {model_files(model)[0]} "
                         "(DeepPostures' MSSE-2021/pre-trained-models-pt)")
    if ensemble:
        raise InputError(f"--ensemble is a results folder's ensemble and cannot go with --model {model}; "
                         f"DeepPostures' vote is --model {CHAP}")


def members(model: str) -> list[str]:
    """The released models that ``model`` predicts with: the three voters of ``CHAP``, else itself."""
    return list(CHAP_MEMBERS) if model == CHAP else [model]


def model_files(model: str) -> list[str]:
    """The file name of each of ``model``'s members, e.g. ``CHAP_A.pth``."""
    return [f"{member}{SUFFIX}" for member in members(model)]


def checkpoint_files(model: str, pretrained_dir: str) -> dict[str, Path]:
    """Each member's ``<pretrained_dir>/<member>.pth``, by member name.

    :raises InputError: a missing folder or file, naming it and what is expected there.
    """
    folder = Path(pretrained_dir).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"--pretrained-dir {pretrained_dir}: no such folder; expected DeepPostures' "
                         f"pre-trained-models-pt folder holding {', '.join(model_files(model))}")
    files = {member: folder / name for member, name in zip(members(model), model_files(model))}
    for member, path in files.items():
        if not path.is_file():
            raise InputError(f"{path}: no such file; expected DeepPostures' pre-trained model {member} there "
                             f"(MSSE-2021/pre-trained-models-pt/{path.name})")
    return files


def windows_per_sequence(member: str) -> int:
    """``T`` of a released model: its BiLSTM window in 10-s windows."""
    return BILSTM_MINUTES[member] * WINDOWS_PER_MINUTE


def convert(member: str, path: Path):
    """The Keras CHAP model of the released model ``member`` saved at ``path``: input (batch, ``T``,
    100, 3, 1) in g, output (batch, ``T``, 2) p(sitting), p(not sitting); ``T`` from its name.

    :raises InputError: not a DeepPostures CHAP checkpoint; the message names the file.
    """
    from chap_mop.model.deeppostures import build_from_checkpoint
    return build_from_checkpoint(path, windows_per_sequence(member))


def digest(path: Path) -> str:
    """The first :data:`DIGEST_HEX` hex digits of the SHA-256 of the file at ``path``."""
    return sha256_of(path)[:DIGEST_HEX]


def converted_path(out_dir: Path, source: Path) -> Path:
    """Where the Keras model converted from ``source`` goes in the model folder ``out_dir``."""
    return out_dir / f".model-{digest(source)}.h5"


def save(model, path: Path) -> Path:
    """Save ``model`` (Keras HDF5, no optimizer) at ``path`` whole or not at all: a partial file, renamed.

    A file already at ``path`` is one this project wrote from the same ``.pth`` (the name holds its
    digest) and is replaced, so that it always comes from this version's conversion.
    """
    partial = path.with_name(f"{path.name}.partial")
    model.save(str(partial), include_optimizer=False, save_format="h5")
    os.replace(partial, path)
    return path
