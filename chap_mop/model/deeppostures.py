"""DeepPostures' PyTorch CHAP checkpoints as this project's Keras CHAP model.

DeepPostures (MSSE-2021/model.py, ``CNNBiLSTMModel``) saves its released models and fine-tuned
checkpoints as PyTorch state_dicts (:mod:`chap_mop.model.pth_checkpoint` reads them). The network
is the one :func:`chap_mop.model.chap_model.build_chap_model` builds; only the layouts differ:

===========================  =================================  ====================================
layer                        PyTorch tensor                     Keras weight
===========================  =================================  ====================================
conv1..conv5 kernel          ``(out, in, kh, kw)``              ``(kh, kw, in, out)``
cnn_model.fc (bottleneck)    ``(256a, 3072a)``, input           ``(3072a, 256a)``; the Permute
                             flattened channels first           before Flatten makes Keras' flatten
                             ``(256a, 4, 3)``                   channels first too: a transpose
LSTM, each direction         ``weight_ih (4u, in)``,            ``kernel (in, 4u)``, ``recurrent
                             ``weight_hh (4u, u)``, gates       (u, 4u)``, gates i, f, c, o (the
                             i, f, g, o; ``bias_ih + bias_hh``  same order); one ``bias``: the sum
fc_bilstm (head)             ``(1, 256)``: one logit ``z``      Dense 2 softmax with kernel columns
                             per window, p(label 1) = σ(z)      ``[0, w]`` and bias ``[0, b]``
===========================  =================================  ====================================

The head: softmax([0, z]) = [1 - σ(z), σ(z)], so the Keras model's class 1 is DeepPostures' label
1, not sitting, as in this project (sitting 0, not sitting 1). A head with two outputs is taken as
two softmax logits in the same class order and copied as it is.

Padding: DeepPostures' ``Conv2dSame`` pads a dimension of size ``i`` by
``max((ceil(i / s) - 1) * s + k - i, 0)``, ``total // 2`` before and the rest after, then
convolves unpadded; TensorFlow's ``"same"`` pads the same total split the same way (the odd
element after). The two are one operation (``tests/test_pretrained.py`` checks it numerically on
the five CHAP layer shapes), so the converted model needs no padding layer.
"""
from pathlib import Path

import numpy as np

from chap_mop.errors import InputError
from chap_mop.model.pth_checkpoint import read_state_dict

# DeepPostures' CNN: (out channels / amp, input channels / amp or None for 1, kernel)
_CONVS = [(32, None, (5, 3)), (64, 32, (5, 1)), (128, 64, (5, 1)), (256, 128, (5, 1)), (256, 256, (5, 1))]
_LSTM_UNITS = 128
_CNN_ROWS, _CNN_COLS = 4, 3  # the last conv output per window: 100 samples halved five times, 3 axes
_WRAPPER_PREFIX = "module."  # nn.DataParallel's prefix, when a checkpoint was saved through one


def expected_shapes(amp_factor: int, head_outputs: int = 1) -> dict[str, tuple[int, ...]]:
    """Every tensor of DeepPostures' ``CNNBiLSTMModel(amp_factor, ...)``, by state_dict key.

    :param head_outputs: 1 for DeepPostures' one-logit head, 2 for a two-class head.
    """
    a, units = amp_factor, _LSTM_UNITS
    shapes: dict[str, tuple[int, ...]] = {}
    for number, (out, inp, kernel) in enumerate(_CONVS, start=1):
        shapes[f"cnn_model.conv{number}.weight"] = (out * a, inp * a if inp else 1, *kernel)
        shapes[f"cnn_model.conv{number}.bias"] = (out * a,)
    shapes["cnn_model.fc.weight"] = (256 * a, _CONVS[-1][0] * a * _CNN_ROWS * _CNN_COLS)
    shapes["cnn_model.fc.bias"] = (256 * a,)
    for suffix in ("", "_reverse"):
        shapes[f"bil_lstm.weight_ih_l0{suffix}"] = (4 * units, 256 * a)
        shapes[f"bil_lstm.weight_hh_l0{suffix}"] = (4 * units, units)
        shapes[f"bil_lstm.bias_ih_l0{suffix}"] = (4 * units,)
        shapes[f"bil_lstm.bias_hh_l0{suffix}"] = (4 * units,)
    shapes["fc_bilstm.weight"] = (head_outputs, 2 * units)
    shapes["fc_bilstm.bias"] = (head_outputs,)
    return shapes


def _unwrapped(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``state`` without nn.DataParallel's ``module.`` prefix, when every key has it."""
    if state and all(key.startswith(_WRAPPER_PREFIX) for key in state):
        return {key[len(_WRAPPER_PREFIX):]: value for key, value in state.items()}
    return state


def _shape_of(state: dict[str, np.ndarray], key: str, expected: str) -> tuple[int, ...]:
    if key not in state:
        raise InputError(f"the state_dict has no {key}; expected a tensor of shape {expected} "
                         "(DeepPostures' CNNBiLSTMModel)")
    return tuple(np.shape(state[key]))


def checkpoint_shape(state: dict[str, np.ndarray]) -> int:
    """The amp factor of a DeepPostures CHAP state_dict (conv1's output channels / 32), once every
    tensor is checked against DeepPostures' ``CNNBiLSTMModel`` at that amp factor.

    :param state: tensors by key, as :func:`chap_mop.model.pth_checkpoint.read_state_dict` gives them.
    :raises InputError: a key missing or unexpected, a tensor of another shape or not of floats,
        or a head other than one logit or two classes; the message names the key and the shape
        expected.
    """
    state = _unwrapped(state)
    conv1 = _shape_of(state, "cnn_model.conv1.weight", "(32 * amp, 1, 5, 3)")
    if len(conv1) != 4 or conv1[0] < 32 or conv1[0] % 32:
        raise InputError(f"cnn_model.conv1.weight has shape {conv1}, expected (32 * amp, 1, 5, 3) with "
                         "amp a positive integer (DeepPostures' CNNBiLSTMModel)")
    amp_factor = conv1[0] // 32
    head = _shape_of(state, "fc_bilstm.weight", f"(1, {2 * _LSTM_UNITS})")
    head_outputs = head[0] if len(head) == 2 and head[0] in (1, 2) else 1
    expected = expected_shapes(amp_factor, head_outputs)
    for key, shape in expected.items():
        found = _shape_of(state, key, str(shape))
        if found != shape:
            also = f" or ({3 - shape[0]}, {shape[1]})" if key == "fc_bilstm.weight" else ""
            raise InputError(f"{key} has shape {found}, expected {shape}{also} for a DeepPostures "
                             f"CHAP model of amp factor {amp_factor}")
        if not np.issubdtype(state[key].dtype, np.floating):
            raise InputError(f"{key} holds {state[key].dtype}, expected floating-point weights")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise InputError(f"the state_dict has {unexpected[0]!r} ({len(unexpected)} unexpected keys), "
                         "which DeepPostures' CNNBiLSTMModel does not have")
    return amp_factor


def _keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras weights per CHAP layer role (``conv1..conv5``, ``bottleneck``, ``forward``,
    ``backward``, ``head``), as float32 arrays in Keras' layouts."""
    t = {key: np.asarray(value, np.float32) for key, value in state.items()}
    weights = {f"conv{n}": [t[f"cnn_model.conv{n}.weight"].transpose(2, 3, 1, 0), t[f"cnn_model.conv{n}.bias"]]
               for n in range(1, len(_CONVS) + 1)}
    # Both flatten (channels, rows, axes): PyTorch's reshape of (N, C, 4, 3), Keras' Permute then
    # Flatten, so the rows of fc.weight's transpose are in Keras' input order already.
    weights["bottleneck"] = [t["cnn_model.fc.weight"].T, t["cnn_model.fc.bias"]]
    for direction, suffix in (("forward", ""), ("backward", "_reverse")):
        # Keras' gates i, f, c, o are PyTorch's i, f, g, o: no reordering; one bias is both added.
        weights[direction] = [t[f"bil_lstm.weight_ih_l0{suffix}"].T, t[f"bil_lstm.weight_hh_l0{suffix}"].T,
                              t[f"bil_lstm.bias_ih_l0{suffix}"] + t[f"bil_lstm.bias_hh_l0{suffix}"]]
    w, b = t["fc_bilstm.weight"], t["fc_bilstm.bias"]
    if w.shape[0] == 1:
        # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]: unit 0 a constant 0 logit, unit 1 DeepPostures' logit
        kernel = np.zeros((w.shape[1], 2), np.float32)
        kernel[:, 1] = w[0]
        weights["head"] = [kernel, np.array([0.0, b[0]], np.float32)]
    else:
        weights["head"] = [w.T, b]
    return weights


def load_into(model, state: dict[str, np.ndarray]) -> None:
    """Assign a DeepPostures CHAP state_dict to a model from
    :func:`chap_mop.model.chap_model.build_chap_model` of the same amp factor (any ``T``: no weight
    depends on the sequence length).

    :raises InputError: the state_dict is not a CHAP CNN-BiLSTM (:func:`checkpoint_shape`), or its
        amp factor is not the model's.
    """
    from chap_mop.model.chap_model import amp_factor_of, chap_layers
    from chap_mop.model.roles import CNN_ROLES

    state = _unwrapped(state)
    amp_factor = checkpoint_shape(state)
    layers = chap_layers(model)
    model_amp = amp_factor_of(model)
    if model_amp != amp_factor:
        raise InputError(f"the checkpoint has amp factor {amp_factor}, the model {model_amp}")
    weights = _keras_weights(state)
    for role in (*CNN_ROLES, "head"):
        layers[role].layer.set_weights(weights[role])
    bidirectional = layers["bilstm"]
    bidirectional.forward_layer.set_weights(weights["forward"])
    bidirectional.backward_layer.set_weights(weights["backward"])


def build_from_checkpoint(path: Path | str, seq_len: int, l2_reg: float = 0.0):
    """This project's Keras CHAP model for sequences of ``seq_len`` windows, with the weights of the
    DeepPostures checkpoint at ``path`` (a state_dict ``.pth``, or a CHAP2.0 checkpoint).

    The output is (batch, ``seq_len``, 2) probabilities of sitting (0) and not sitting (1) for input
    (batch, ``seq_len``, 100, 3, 1) in g. ``seq_len`` is not in the checkpoint: DeepPostures uses
    6 per minute of its BiLSTM window (42 for CHAP_ALL_ADULTS, 18 for CHAP_CHILDREN).

    :param l2_reg: L2 penalty on the kernels, for fine-tuning (see ``build_chap_model``).
    :raises InputError: the file is not a readable checkpoint or not a DeepPostures CHAP model;
        the message names the file.
    """
    from chap_mop.runtime import runtime_env
    state = read_state_dict(path)
    try:
        amp_factor = checkpoint_shape(state)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    # TensorFlow with Keras 2 as tf.keras, before chap_model imports it
    runtime_env.import_tensorflow()
    from chap_mop.model.chap_model import build_chap_model
    model = build_chap_model(seq_len, amp_factor, l2_reg)
    load_into(model, state)
    return model
