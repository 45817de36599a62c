"""DeepPostures' PyTorch CHAP checkpoints, read without PyTorch, become this project's Keras model.

With ``../shared``: the converted model's p(not sitting) is sigmoid of PyTorch's own logits for
DeepPostures-format checkpoints. Always: the reader's tensor layout, a NumPy re-implementation
of DeepPostures' forward pass on a small random checkpoint, padding, and refusals (a pickle that
would run code, files that are not checkpoints, tensors of the wrong shape). No Spark, no torch.
"""
import builtins
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chap_mop.errors import InputError
from chap_mop.model import deeppostures
from chap_mop.model.pth_checkpoint import read_state_dict
from chap_mop.runtime import runtime_env
from conftest import PT_FIXTURES, shared_fixture

# (checkpoint under PT_FIXTURES, windows per sequence, name of its .input.npy / .logits.npy)
CHECKPOINTS = {
    "CHAP_ALL_ADULTS": ("pre-trained-models-pt/CHAP_ALL_ADULTS.pth", 42, "CHAP_ALL_ADULTS"),
    "CHAP_CHILDREN": ("pre-trained-models-pt/CHAP_CHILDREN.pth", 18, "CHAP_CHILDREN"),
    "chap2": ("chap2/checkpoint-submit.pth", 42, "CHAP_ALL_ADULTS"),
}


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def tensorflow():
    runtime_env.import_tensorflow()  # Keras 2 as tf.keras, as the project's stages have it
    import tensorflow as tf
    return tf


# --- a .pth writer without torch: the pickle opcodes torch.save emits for a state_dict ------------

def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _tensor(storage_type: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` with the storage
    as a persistent id, as torch.save writes it."""
    storage = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel)) + b"Q"
    hooks = _global("collections", "OrderedDict") + b")R"
    return (_global("torch._utils", "_rebuild_tensor_v2")
            + _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89", hooks)
            + b"R")


def _dict(items: dict[str, bytes]) -> bytes:
    return b"}(" + b"".join(_str(key) + value for key, value in items.items()) + b"u"  # EMPTY_DICT MARK ... SETITEMS


def write_pth(path: Path, tensors: dict[str, bytes], storages: dict[str, bytes], byteorder: str = "little",
              chap2: bool = False) -> Path:
    """A torch.save-style archive: ``tensors`` are pickled tensor calls (:func:`_tensor`), ``storages``
    the raw bytes per storage key; ``chap2`` wraps the state_dict as CHAP2.0's checkpoints do."""
    state = _dict(tensors)
    if chap2:
        namespace = _global("argparse", "Namespace") + b")\x81" + _dict({"blr": _int(1)}) + b"b"  # NEWOBJ, BUILD
        state = _dict({"model": state, "optimizer": _dict({}), "epoch": _int(9), "args": namespace})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + state + b".")
        archive.writestr("archive/byteorder", byteorder)
        archive.writestr("archive/version", "3\n")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


def write_state_dict(path: Path, state: dict[str, np.ndarray], chap2: bool = False) -> Path:
    """``state`` (float32 arrays) as a contiguous state_dict .pth, one storage per tensor."""
    tensors, storages = {}, {}
    for number, (name, array) in enumerate(state.items()):
        array = np.ascontiguousarray(array, "<f4")
        strides = tuple(step // 4 for step in array.strides)
        tensors[name] = _tensor("FloatStorage", str(number), array.size, 0, array.shape, strides)
        storages[str(number)] = array.tobytes()
    return write_pth(path, tensors, storages, chap2=chap2)


# --- DeepPostures' forward pass in NumPy, from MSSE-2021/model.py -------------------------------

# state_dict shapes of CNNBiLSTMModel at amp 1, written out here rather than taken from the module
AMP1_SHAPES = {
    "cnn_model.conv1.weight": (32, 1, 5, 3), "cnn_model.conv1.bias": (32,),
    "cnn_model.conv2.weight": (64, 32, 5, 1), "cnn_model.conv2.bias": (64,),
    "cnn_model.conv3.weight": (128, 64, 5, 1), "cnn_model.conv3.bias": (128,),
    "cnn_model.conv4.weight": (256, 128, 5, 1), "cnn_model.conv4.bias": (256,),
    "cnn_model.conv5.weight": (256, 256, 5, 1), "cnn_model.conv5.bias": (256,),
    "cnn_model.fc.weight": (256, 3072), "cnn_model.fc.bias": (256,),
    **{f"bil_lstm.{name}{suffix}": shape for suffix in ("", "_reverse") for name, shape in
       (("weight_ih_l0", (512, 256)), ("weight_hh_l0", (512, 128)), ("bias_ih_l0", (512,)), ("bias_hh_l0", (512,)))},
    "fc_bilstm.weight": (1, 256), "fc_bilstm.bias": (1,),
}


def random_state(seed: int = 0) -> dict[str, np.ndarray]:
    """Random amp-1 weights scaled so that activations carry through and logits spread."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in AMP1_SHAPES.items():
        if name.startswith("bil_lstm"):
            value = rng.uniform(-0.25, 0.25, shape)
        elif name.endswith("bias"):
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, (2.0 / np.prod(shape[1:])) ** 0.5, shape) * (8 if name.startswith("fc_") else 1)
        state[name] = value.astype(np.float32)
    return state


def conv2d_same(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride=(2, 1)) -> np.ndarray:
    """DeepPostures' Conv2dSame: (N, C, H, W) padded by max((ceil(i/s) - 1) * s + k - i, 0),
    half (rounded down) before, then an unpadded convolution."""
    (kh, kw), pads = weight.shape[2:], []
    for size, k, s in zip(x.shape[2:], (kh, kw), stride):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    rows, cols = (x.shape[2] - kh) // stride[0] + 1, (x.shape[3] - kw) // stride[1] + 1
    out = np.zeros((x.shape[0], weight.shape[0], rows, cols))
    for a in range(kh):
        for b in range(kw):
            patch = x[:, :, a:a + stride[0] * rows:stride[0], b:b + stride[1] * cols:stride[1]]
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, a, b])
    return out + bias[None, :, None, None]


def lstm(x: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """torch.nn.LSTM over (N, T, F), gates i, f, g, o: (N, T, units)."""
    units = w_hh.shape[1]
    h, c, out = np.zeros((x.shape[0], units)), np.zeros((x.shape[0], units)), []
    for step in range(x.shape[1]):
        i, f, g, o = np.split(x[:, step] @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def deeppostures_logits(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """CNNBiLSTMModel's logits (N, T) for windows (N, T, 100, 3), as make_predictions.py feeds them."""
    s = {key: value.astype(np.float64) for key, value in state.items()}
    n, t = x.shape[:2]
    h = x.reshape(-1, 100, 3, 1).transpose(0, 3, 1, 2).astype(np.float64)
    for number in range(1, 6):
        h = np.maximum(conv2d_same(h, s[f"cnn_model.conv{number}.weight"], s[f"cnn_model.conv{number}.bias"]), 0)
    h = h.reshape(h.shape[0], -1) @ s["cnn_model.fc.weight"].T + s["cnn_model.fc.bias"]
    h = h.reshape(n, t, -1)
    forward = lstm(h, *(s[f"bil_lstm.{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    backward = lstm(h[:, ::-1], *(s[f"bil_lstm.{k}_l0_reverse"] for k in ("weight_ih", "weight_hh", "bias_ih",
                                                                           "bias_hh")))[:, ::-1]
    both = np.concatenate([forward, backward], axis=2)
    return (both @ s["fc_bilstm.weight"].T + s["fc_bilstm.bias"])[..., 0]


# --- the fixtures PyTorch made ------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted():
    """Fixture name -> (converted model, inputs (N, T, 100, 3, 1), PyTorch's logits (N, T)); built once."""
    shared_fixture(PT_FIXTURES)
    models = {}
    for name, (relative, seq_len, data) in CHECKPOINTS.items():
        model = deeppostures.build_from_checkpoint(PT_FIXTURES / relative, seq_len)
        inputs = np.load(PT_FIXTURES / f"{data}.input.npy")
        models[name] = model, inputs[..., None], np.load(PT_FIXTURES / f"{data}.logits.npy")
    return models


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_converted_model_gives_pytorch_probabilities(converted, name):
    model, inputs, logits = converted[name]
    probabilities = model.predict(inputs, verbose=0)
    assert probabilities.shape == (*logits.shape, 2)
    # class 1 = not sitting = DeepPostures' label 1 = sigmoid(logit)
    np.testing.assert_allclose(probabilities[..., 1], sigmoid(logits), rtol=0, atol=1e-5)
    # DeepPostures' label, round(sigmoid): the maker put the median logit at 0, so skip the ties
    clear = np.abs(logits) > 1e-3
    assert ((probabilities[..., 1] > 0.5) == (logits > 0))[clear].all()


def test_chap2_checkpoint_is_its_state_dict():
    shared_fixture(PT_FIXTURES)
    plain = read_state_dict(PT_FIXTURES / CHECKPOINTS["CHAP_ALL_ADULTS"][0])
    chap2 = read_state_dict(PT_FIXTURES / CHECKPOINTS["chap2"][0])
    assert list(chap2) == list(plain) and all(np.array_equal(chap2[k], plain[k]) for k in plain)
    assert deeppostures.checkpoint_shape(plain) == 2


# --- conversion, checked against the NumPy forward pass -----------------------------------------

@pytest.fixture(scope="module")
def small_model():
    """An amp-1, T=6 CHAP model (weights are assigned by each test)."""
    tensorflow()
    from chap_mop.model.chap_model import build_chap_model
    return build_chap_model(6, 1, 0.0)


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(5).normal(0, 0.5, (2, 6, 100, 3)).astype(np.float32)


def test_conversion_matches_deeppostures_forward_pass(tmp_path, small_model, windows):
    state = random_state()
    path = write_state_dict(tmp_path / "small.pth", state, chap2=True)
    deeppostures.load_into(small_model, read_state_dict(path))
    logits = deeppostures_logits(state, windows)
    assert logits.std() > 1.0  # spread enough that a wrong transpose or gate order would show
    probabilities = small_model.predict(windows[..., None], verbose=0)
    np.testing.assert_allclose(probabilities[..., 1], sigmoid(logits), rtol=0, atol=1e-5)


def test_two_class_head_and_dataparallel_prefix(small_model, windows):
    state = random_state(1)
    w, b = state["fc_bilstm.weight"], state["fc_bilstm.bias"]
    deeppostures.load_into(small_model, state)
    expected = small_model.predict(windows[..., None], verbose=0)
    two_class = {f"module.{key}": value for key, value in state.items()}
    two_class["module.fc_bilstm.weight"] = np.concatenate([np.zeros_like(w), w])
    two_class["module.fc_bilstm.bias"] = np.concatenate([np.zeros_like(b), b])
    deeppostures.load_into(small_model, two_class)
    np.testing.assert_allclose(small_model.predict(windows[..., None], verbose=0), expected, atol=1e-6)


def test_padding_same_is_deeppostures_conv2dsame():
    """TensorFlow's "same" at stride (2, 1) against Conv2dSame's explicit padding, on each CHAP conv
    layer's input height (100, 50, 25, 13, 7), including the odd totals padded one more after."""
    tf = tensorflow()
    rng = np.random.default_rng(2)
    for height, kernel in ((100, (5, 3)), (50, (5, 1)), (25, (5, 1)), (13, (5, 1)), (7, (5, 1))):
        x = rng.normal(size=(2, 3, height, 3))
        weight, bias = rng.normal(size=(4, 3, *kernel)), rng.normal(size=4)
        layer = tf.keras.layers.Conv2D(4, kernel, strides=(2, 1), padding="same")
        layer.build((None, height, 3, 3))
        layer.set_weights([weight.transpose(2, 3, 1, 0), bias])
        keras_out = layer(x.transpose(0, 2, 3, 1).astype(np.float32)).numpy().transpose(0, 3, 1, 2)
        np.testing.assert_allclose(keras_out, conv2d_same(x, weight, bias), atol=1e-4, err_msg=f"height {height}")


# --- the reader --------------------------------------------------------------------------------

def test_reader_respects_offset_stride_dtype_and_byte_order(tmp_path):
    f32 = np.arange(10, dtype=np.float32)
    tensors = {
        "offset": _tensor("FloatStorage", "0", 10, 2, (2, 3), (3, 1)),
        "transposed": _tensor("FloatStorage", "0", 10, 0, (3, 2), (1, 3)),
        "scalar": _tensor("FloatStorage", "0", 10, 9, (), ()),
        "empty": _tensor("FloatStorage", "0", 10, 0, (0, 4), (4, 1)),
        "float64": _tensor("DoubleStorage", "1", 3, 0, (3,), (1,)),
        "int64": _tensor("LongStorage", "2", 4, 0, (2, 2), (2, 1)),
        "bfloat16": _tensor("BFloat16Storage", "3", 2, 0, (2,), (1,)),
        "half": _tensor("HalfStorage", "4", 2, 1, (1,), (1,)),
    }
    bf16 = (np.array([1.0, -2.5], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    for order, code in (("little", "<"), ("big", ">")):
        storages = {"0": f32.astype(f"{code}f4").tobytes(), "1": np.array([0.5, 1e300, -3], f"{code}f8").tobytes(),
                    "2": np.array([1, -2, 2**40, 7], f"{code}i8").tobytes(), "3": bf16.astype(f"{code}u2").tobytes(),
                    "4": np.array([1.5, -0.25], f"{code}f2").tobytes()}
        state = read_state_dict(write_pth(tmp_path / f"{order}.pth", tensors, storages, byteorder=order))
        np.testing.assert_array_equal(state["offset"], f32[2:8].reshape(2, 3))
        np.testing.assert_array_equal(state["transposed"], f32[:6].reshape(2, 3).T)
        assert state["scalar"].shape == () and state["scalar"] == 9 and state["empty"].shape == (0, 4)
        np.testing.assert_array_equal(state["float64"], [0.5, 1e300, -3])
        np.testing.assert_array_equal(state["int64"], [[1, -2], [2**40, 7]])
        np.testing.assert_array_equal(state["bfloat16"], np.array([1.0, -2.5], np.float32))
        np.testing.assert_array_equal(state["half"], np.array([-0.25], np.float16))
        assert all(value.dtype.isnative and value.flags.writeable for value in state.values())
    assert "torch" not in sys.modules


def test_tensor_beyond_its_storage_is_refused(tmp_path):
    path = write_pth(tmp_path / "short.pth", {"w": _tensor("FloatStorage", "0", 4, 1, (2, 2), (2, 1))},
                     {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(InputError, match="reaches element 4 of a storage of 4"):
        read_state_dict(path)
    path = write_pth(tmp_path / "broadcast.pth", {"w": _tensor("FloatStorage", "0", 1, 0, (10**6, 10**6), (0, 0))},
                     {"0": np.zeros(1, "<f4").tobytes()})
    with pytest.raises(InputError, match="from a storage of 1 elements"):
        read_state_dict(path)


# --- refusals ----------------------------------------------------------------------------------

class _Payload:
    """Unpickled by plain pickle, this calls ``function(argument)``."""

    def __init__(self, function, argument: str):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def _crafted(path: Path, payload: object, protocol: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"cnn_model.conv1.weight": payload}, protocol=protocol))
        archive.writestr("evil/byteorder", "little")
    return path


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_that_would_run_code_is_refused(tmp_path, protocol):
    ran = tmp_path / "ran"
    evil_eval = _Payload(builtins.eval, f"open({str(ran)!r}, 'w').close()")
    # the payload works: plain pickle runs it
    pickle.loads(pickle.dumps(evil_eval, protocol=protocol))
    assert ran.exists()
    ran.unlink()
    for payload, shown in ((evil_eval, "eval"), (_Payload(os.system, f"touch {ran}"), "system")):
        path = _crafted(tmp_path / f"{shown}.pth", payload, protocol)
        with pytest.raises(InputError) as refused:
            read_state_dict(path)
        message = str(refused.value)
        assert message.startswith(f"{path}: ") and shown in message and "\n" not in message
        assert not ran.exists()


def test_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))  # also what torch.save wrote before PyTorch 1.6
    with pytest.raises(InputError, match="not a zip archive") as refused:
        read_state_dict(path)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)


def test_zip_without_data_pkl_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other/notes.txt", "not a checkpoint")
    with pytest.raises(InputError, match="data.pkl") as refused:
        read_state_dict(path)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")


@pytest.mark.parametrize("change, shown", [
    (lambda s: s.update({"bil_lstm.weight_hh_l0": np.zeros((512, 64), np.float32)}),
     r"bil_lstm.weight_hh_l0 has shape \(512, 64\), expected \(512, 128\)"),
    (lambda s: s.pop("bil_lstm.bias_hh_l0_reverse"), r"no bil_lstm.bias_hh_l0_reverse; expected .*\(512,\)"),
    (lambda s: s.update({"cnn_model.conv1.weight": np.zeros((48, 1, 5, 3), np.float32)}),
     r"cnn_model.conv1.weight has shape \(48, 1, 5, 3\), expected \(32 \* amp, 1, 5, 3\)"),
    (lambda s: s.update({"cnn_model.fc.weight": np.zeros((256, 1024), np.float32)}),
     r"cnn_model.fc.weight has shape \(256, 1024\), expected \(256, 3072\)"),
    (lambda s: s.update({"fc_bilstm.weight": np.zeros((3, 256), np.float32)}),
     r"fc_bilstm.weight has shape \(3, 256\), expected \(1, 256\) or \(2, 256\)"),
    (lambda s: s.update({"bil_lstm.weight_ih_l1": np.zeros((512, 256), np.float32)}), "bil_lstm.weight_ih_l1"),
])
def test_state_dict_of_another_shape_is_refused(tmp_path, change, shown):
    state = {name: np.zeros(shape, np.float32) for name, shape in AMP1_SHAPES.items()}
    change(state)
    path = write_state_dict(tmp_path / "changed.pth", state)
    with pytest.raises(InputError, match=shown) as refused:
        deeppostures.build_from_checkpoint(path, 6)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)


def test_amp_factor_of_model_and_checkpoint_must_agree(small_model):
    state = {name: np.zeros(shape, np.float32) for name, shape in deeppostures.expected_shapes(2).items()}
    assert deeppostures.checkpoint_shape(state) == 2
    with pytest.raises(InputError, match="amp factor 2, the model 1"):
        deeppostures.load_into(small_model, state)
