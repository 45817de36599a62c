"""Where a fine-tuning selection's configurations start: the weights of a saved CHAP model.

``--init-from PATH`` names either

* a DeepPostures checkpoint, ``.pth``: a released state_dict such as ``CHAP_ALL_ADULTS.pth``, or a
  CHAP2.0 fine-tuning checkpoint (read and converted by :mod:`chap_mop.model.deeppostures`); or
* a Keras HDF5 CHAP model this project saved, ``.h5``: ``best_model.h5``, an ensemble member, a
  run's ``checkpoint.h5``.

The driver reads the file once, before Spark starts. Every configuration's model is built with
these weights before its initial checkpoint is written, and each worker loads that checkpoint on
its first visit, so the file needs to be on the driver only. No weight depends on the BiLSTM
window, so any ``win_size`` can start from any file; the search space's ``amp_factor`` must be the
file's. A DeepPostures head of one logit becomes the project's two-unit softmax exactly (see
:mod:`chap_mop.model.deeppostures`), so nothing is re-initialised.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chap_mop.errors import InputError
from chap_mop.files import sha256_of

DEEPPOSTURES, KERAS = "DeepPostures state_dict (.pth)", "Keras HDF5 (.h5)"
_SUFFIXES = {".pth": DEEPPOSTURES, ".pt": DEEPPOSTURES, ".h5": KERAS, ".hdf5": KERAS}
_ANY_WINDOWS = 6  # sequence length of the model the weights are read through: no weight depends on it


@dataclass(frozen=True)
class StartWeights:
    """A CHAP model's weights, read once.

    :param path: absolute path of the file they came from.
    :param weights: each layer role's arrays (:data:`chap_mop.model.roles.ROLES`), as the layer's
        ``get_weights()`` gives them. By role, not in the model's order: a model with frozen layers
        lists its trainable weights first.
    """
    path: str
    format: str
    amp_factor: int
    sha256: str
    weights: dict[str, list[np.ndarray]]

    def describe(self) -> dict:
        """What ``summary.json`` and the run state record of them."""
        return {"from": self.path, "format": self.format, "amp_factor": self.amp_factor, "sha256": self.sha256}


def file_format(path: str | Path) -> str:
    """:data:`DEEPPOSTURES` or :data:`KERAS` by the file's suffix.

    :raises InputError: no such file, or a suffix of neither.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--init-from {path}: no such file; expected a DeepPostures .pth or a Keras .h5 CHAP model")
    if path.suffix.lower() not in _SUFFIXES:
        raise InputError(f"--init-from {path}: expected a DeepPostures .pth (e.g. CHAP_ALL_ADULTS.pth) or a Keras "
                         ".h5 CHAP model of this project (e.g. an earlier best_model.h5)")
    return _SUFFIXES[path.suffix.lower()]


def read_start_weights(path: str | Path) -> StartWeights:
    """Read and check the CHAP model at ``path`` (TensorFlow is imported).

    :raises InputError: the file is missing, not a checkpoint, or not a CHAP CNN-BiLSTM; the
        message names the file.
    """
    from chap_mop.runtime import runtime_env

    path = Path(path).resolve()
    kind = file_format(path)
    runtime_env.import_tensorflow()  # Keras 2 as tf.keras, before chap_model imports it
    if kind == DEEPPOSTURES:
        from chap_mop.model.deeppostures import build_from_checkpoint
        model = build_from_checkpoint(path, _ANY_WINDOWS)
    else:
        model = _load_keras(path)
    from chap_mop.model.chap_model import amp_factor_of, chap_layers
    return StartWeights(str(path), kind, amp_factor_of(model), sha256_of(path),
                        {role: [np.asarray(w) for w in layer.get_weights()]
                         for role, layer in chap_layers(model).items()})


def _load_keras(path: Path):
    import tensorflow as tf

    from chap_mop.model.chap_model import chap_layers
    from chap_mop.model.metrics import CUSTOM_OBJECTS

    try:
        model = tf.keras.models.load_model(str(path), custom_objects=CUSTOM_OBJECTS, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise InputError(f"--init-from {path}: not a readable Keras HDF5 model ({str(error).splitlines()[0]})") \
            from None
    try:
        chap_layers(model)
    except ValueError:
        raise InputError(f"--init-from {path}: the model {model.name!r} is not a CHAP CNN-BiLSTM of this project") \
            from None
    return model


def check_amp_factors(start: StartWeights, amp_factors: list[int]) -> None:
    """The search space's ``amp_factor`` values are the start weights' one.

    :raises InputError: another value, naming the file and the amp factor to use.
    """
    if set(amp_factors) != {start.amp_factor}:
        raise InputError(f"--init-from {start.path} has amp factor {start.amp_factor}; the search space's amp_factor "
                         f"{amp_factors} must be [{start.amp_factor}]")


def apply(model, start: StartWeights) -> None:
    """Give a model from :func:`chap_mop.model.chap_model.build_chap_model` (any sequence length,
    the same amp factor) the start weights, layer by layer."""
    from chap_mop.model.chap_model import chap_layers
    for role, layer in chap_layers(model).items():
        layer.set_weights(start.weights[role])
