"""PyTorch ``.pth`` checkpoints (state_dicts) read with NumPy alone, without PyTorch.

Format: what ``torch.save`` writes (PyTorch >= 1.6), a zip archive whose entries share one top
folder ``<prefix>/``:

* ``data.pkl``: a pickle of the saved object. Each tensor in it is a call of
  ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  backward_hooks[, metadata])`` (``_rebuild_parameter(tensor, ...)`` around it for an
  ``nn.Parameter``). Each storage is a *persistent id*, ``("storage", <storage type>, key,
  location, numel)``, where the storage type (``torch.FloatStorage``, ...) only names the dtype;
* ``data/<key>``: the raw bytes of storage ``key``, ``numel`` elements of that dtype;
* ``byteorder``: ``little`` or ``big`` (archives written before that entry existed are little);
* ``version``, ``.format_version``, ``.storage_alignment``, ``.data/serialization_id``: not
  needed to read the tensors.

Why unpickling is restricted: a pickle names the callables that rebuild its objects, and the
unpickler calls them. ``pickle.load`` (or ``torch.load(weights_only=False)``) on a crafted
``.pth`` therefore runs whatever the file names (``os.system``, ``builtins.eval``, ...). The
unpickler here resolves only the few names a state_dict needs, each to a local stand-in built on
NumPy, and refuses every other name before anything is called.
"""
import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chap_mop.errors import InputError

EXPECTED = ("expected a PyTorch checkpoint written by torch.save (a zip archive holding "
            "<name>/data.pkl and <name>/data/<storage>)")


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<Type>Storage`` in a pickle: it only says which dtype the bytes hold."""
    name: str
    dtype: str  # NumPy type code of one stored element, byte order not included


# bfloat16 has no NumPy dtype: its 16 bits are read as uint16 and widened to float32.
_STORAGE_TYPES = {name: _StorageType(name, code) for name, code in {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16"}.items()}


class _Namespace:
    """Stand-in for ``argparse.Namespace`` (CHAP2.0 checkpoints save the run's arguments):
    unpickling sets its attributes and calls nothing."""


class _Refused(Exception):
    """The pickle asks for something a state_dict does not need; the message says what."""


def _rebuild_tensor(storage: np.ndarray, storage_offset: int, size: tuple, stride: tuple,
                    requires_grad: bool = False, backward_hooks: object = None,
                    metadata: object = None) -> np.ndarray:
    """A tensor as a NumPy array of shape ``size``: elements ``storage_offset + sum(i_k * stride_k)``
    of the 1-D ``storage`` (offset and strides count elements, not bytes). Copied, so the array
    owns its memory, is writable and in native byte order."""
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(n, int) and n >= 0 for n in (storage_offset, *size, *stride))):
        raise _Refused(f"a tensor with size {size!r}, stride {stride!r}, offset {storage_offset!r}; "
                       "expected tuples of non-negative integers of equal length")
    if 0 in size:
        return np.empty(size, storage.dtype.newbyteorder("="))
    # A saved tensor is at most its storage; more (a stride of 0) could make a tiny file fill the memory.
    if np.prod(size, dtype=object) > storage.size:
        raise _Refused(f"a tensor of size {size} from a storage of {storage.size} elements")
    last = storage_offset + sum((n - 1) * step for n, step in zip(size, stride))
    if last >= storage.size:
        raise _Refused(f"a tensor of size {size} reaches element {last} of a storage of {storage.size}")
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=[step * storage.itemsize for step in stride],
        writeable=False)
    return view.astype(storage.dtype.newbyteorder("="), copy=True)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool = False,
                       backward_hooks: object = None) -> np.ndarray:
    """An ``nn.Parameter`` is its tensor."""
    return data


# (module, name) -> what the unpickler gives for it: nothing here runs code named by the file.
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): _Namespace,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of an open archive, resolving only the names in ``_ALLOWED``."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
        self._storages: dict[str, tuple[_StorageType, np.ndarray]] = {}  # key -> storage; views share one

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"its pickle calls {module}.{name}, which a state_dict never needs; "
                           "refused so that the file cannot run code") from None

    def persistent_load(self, pid) -> np.ndarray:
        """Storage ``pid = ("storage", type, key, location, numel)`` as a 1-D read-only array."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise _Refused(f"a persistent id {pid!r:.80}; expected ('storage', <type>, key, location, numel)")
        _, storage_type, key, _, numel = pid
        if key not in self._storages:
            self._storages[key] = storage_type, self._read_storage(storage_type, key, numel)
        known_type, storage = self._storages[key]
        if known_type != storage_type or storage.size != numel:
            raise _Refused(f"storage {key} is used both as {storage.size} x {known_type.name} and as "
                           f"{numel} x {storage_type.name}")
        return storage

    def _read_storage(self, storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
        """Entry ``data/<key>``: ``numel`` elements of ``storage_type`` in the archive's byte order."""
        dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
        entry = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(entry)
        except KeyError:
            raise _Refused(f"entry {entry} is missing") from None
        if info.file_size < numel * dtype.itemsize:
            raise _Refused(f"entry {entry} holds {info.file_size} bytes, expected "
                           f"{numel} x {dtype.itemsize} for a {storage_type.name}")
        storage = np.frombuffer(self._archive.open(entry).read(numel * dtype.itemsize), dtype, count=numel)
        if storage_type.name == "BFloat16Storage":
            # bfloat16 is the top half of a float32: widen once, strides still count elements
            storage = (storage.astype(np.uint32) << 16).view(np.float32)
        return storage


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    """``<prefix>/`` of the archive's single ``<prefix>/data.pkl``."""
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise _Refused(f"it holds {len(pickles)} <name>/data.pkl entries, expected one")
    return pickles[0][: -len("data.pkl")]


def _read_byteorder(archive: zipfile.ZipFile, prefix: str) -> str:
    """``<`` or ``>`` from ``<prefix>/byteorder``; little endian when the entry is absent."""
    try:
        text = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
    except KeyError:
        return "<"
    if text not in ("little", "big"):
        raise _Refused(f"its byteorder entry says {text[:20]!r}, expected 'little' or 'big'")
    return "<" if text == "little" else ">"


def _unpickle(path: Path) -> object:
    """The object saved in the archive at ``path``, tensors as NumPy arrays."""
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive)
        unpickler = _StateDictUnpickler(archive, prefix, _read_byteorder(archive, prefix))
        return unpickler.load()


def _state_dict(saved: object, path: Path) -> dict[str, np.ndarray]:
    """The tensors of a state_dict, or of the state_dict under ``"model"`` of a CHAP2.0 checkpoint."""
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        saved = saved["model"]  # CHAP2.0: {"model": ..., "optimizer": ..., "epoch": ..., "args": ...}
    if not isinstance(saved, dict) or not saved:
        raise InputError(f"{path}: holds a {type(saved).__name__}, expected a state_dict (a dict of "
                         "tensors) or a checkpoint dict with the state_dict under 'model'")
    for key, value in saved.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise InputError(f"{path}: its state_dict entry {key!r:.60} is a {type(value).__name__}, "
                             "expected a tensor")
    return dict(saved)


def read_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """The tensors of the PyTorch state_dict saved at ``path``, by name, as NumPy arrays.

    Each array has the tensor's shape (PyTorch's layout, e.g. ``(out, in, kh, kw)`` for a conv
    kernel) and its dtype in native byte order; bfloat16 tensors come as float32. For a CHAP2.0
    checkpoint (a dict with the state_dict under ``"model"``) only that state_dict is returned:
    the optimizer's state, epoch and arguments are dropped.

    :raises InputError: a missing file, a file that is not a ``torch.save`` zip archive, or a
        pickle that names anything a state_dict does not need; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; {EXPECTED}")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a zip archive (a file from torch.save before PyTorch 1.6, "
                         f"or not a checkpoint); {EXPECTED}")
    try:
        saved = _unpickle(path)
    except _Refused as refused:
        raise InputError(f"{path}: {refused}; {EXPECTED}") from None
    except Exception as error:  # a damaged or crafted pickle can fail in any of pickle's ways
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise InputError(f"{path}: cannot be read as a state_dict ({reason}); {EXPECTED}") from error
    return _state_dict(saved, path)
