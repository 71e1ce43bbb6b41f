"""Read PyTorch ``torch.save`` files into numpy arrays without importing torch.

Why not ``torch.load``: torch is a 1 GB dependency we only need for one file, and a
``.pth`` is a pickle, which can run arbitrary code when loaded. We unpickle with a
restricted ``find_class`` that admits only the globals a state dict of tensors needs
(the same allow-list idea as ``torch.load(weights_only=True)``), so a file naming any
other global (``os.system``, ``builtins.eval`` ...) is refused before anything runs.

Both on-disk layouts of ``torch.serialization`` are read:
- the zip format (torch >= 1.6): ``<root>/data.pkl`` plus one raw little-endian blob per
  storage at ``<root>/data/<key>``;
- the legacy format: pickles of a magic number, protocol version and system info, the
  object pickle, the list of storage keys, then for each storage an int64 element count
  followed by its raw bytes.
Tensors are views ``(storage, offset, sizes, strides)`` of storages; we rebuild them with
numpy strides after checking that the view stays inside its storage.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from doe_sr.errors import UserError

# torch's legacy typed storage names -> numpy dtypes. bfloat16 has no numpy dtype: its
# bits are the top half of a float32, so it is read as uint16 and widened on the way out.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(np.uint16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes are attached once they are read."""

    key: str
    stype: _StorageType
    offset: int = 0  # legacy storage views: element offset into the root storage
    array: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    bfloat16: bool = field(default=False)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise UserError("malformed .pth: a tensor is not backed by a storage; re-save it with torch.save(state_dict)")
    try:
        size_t = tuple(int(s) for s in size)
        stride_t = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError):
        raise UserError("malformed .pth: a tensor has non-integer sizes or strides") from None
    return _TensorRef(storage, offset, size_t, stride_t, storage.stype.name == "BFloat16Storage")


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data  # a Parameter is its tensor; requires_grad and hooks do not matter here


def _ordered_dict(*args: Any) -> OrderedDict:
    return OrderedDict(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals, to our own harmless stand-ins."""

    def __init__(self, file: BinaryIO, path: Path, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            # Protocol-2 pickles spell Python 3 modules the Python 2 way (__builtin__);
            # name the global as Python 3 knows it.
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            raise UserError(
                f"{self._path} refers to the Python global {module}.{name}, which a weights file "
                "does not need; refusing to load it (it may run code). Use a plain state_dict .pth"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and _decode(pid[0]) == "storage"):
            raise UserError(f"{self._path}: unsupported persistent id {pid!r:.80}; only tensor storages are read")
        stype, key = pid[1], _decode(pid[2])
        if not isinstance(stype, _StorageType):
            raise UserError(f"{self._path}: storage {key} has no known storage type")
        view = pid[5] if len(pid) > 5 else None
        root = self._storages.setdefault(key, _Storage(key, stype))
        if view is None:
            return root
        view_key, view_offset, _ = view  # legacy views of a root storage
        return self._storages.setdefault(_decode(view_key), _Storage(key, stype, int(view_offset)))


def _decode(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def read_pth(path: Path | str) -> dict[str, Any]:
    """Load a ``torch.save`` file as nested dicts of numpy arrays, safely, without torch.

    Returns the saved object with every tensor replaced by a numpy array of its dtype
    (bfloat16 widened to float32), e.g. ``{"params_ema": {"conv_first.weight": ...}}``.
    Raises UserError for a missing/unreadable file or any global outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; give the path of a .pth file")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except UserError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, ValueError,
            TypeError, IndexError, AttributeError, OSError) as exc:
        raise UserError(f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: {exc}); "
                        "re-download it or re-save it with torch.save(state_dict)") from None


def _read_zip(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise UserError(f"{path} is a zip file but not a torch.save archive (no single data.pkl)")
        root = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{root}byteorder" in archive.namelist():
            byteorder = archive.read(f"{root}byteorder").decode("ascii").strip()
        storages: dict[str, _Storage] = {}
        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), path, storages).load()
        for storage in storages.values():
            if storage.array is None:
                raw = archive.read(f"{root}data/{storage.key}")
                storage.array = _frombuffer(raw, storage.stype.dtype, byteorder)
    return _materialize(obj, path)


def _read_legacy(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        try:
            magic = _RestrictedUnpickler(f, path, {}).load()
        except UserError:
            raise
        except Exception:
            raise UserError(f"{path} is neither a torch.save zip archive nor a legacy .pth") from None
        if magic != _LEGACY_MAGIC:
            raise UserError(f"{path} is neither a torch.save zip archive nor a legacy .pth (bad magic number)")
        if _RestrictedUnpickler(f, path, {}).load() != _LEGACY_PROTOCOL:
            raise UserError(f"{path}: unsupported legacy torch.save protocol")
        sys_info = _RestrictedUnpickler(f, path, {}).load()
        byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
        storages: dict[str, _Storage] = {}
        obj = _RestrictedUnpickler(f, path, storages).load()
        keys = [_decode(k) for k in _RestrictedUnpickler(f, path, {}).load()]
        roots = {s.key: s for s in storages.values() if s.offset == 0}
        arrays: dict[str, np.ndarray] = {}
        for key in keys:
            dtype = roots[key].stype.dtype
            count = int.from_bytes(f.read(8), byteorder, signed=True)
            raw = f.read(count * dtype.itemsize)
            if count < 0 or len(raw) != count * dtype.itemsize:
                raise UserError(f"{path} is truncated (storage {key}); re-download it")
            arrays[key] = _frombuffer(raw, dtype, byteorder)
        for storage in storages.values():
            storage.array = arrays[storage.key][storage.offset:]
    return _materialize(obj, path)


def _frombuffer(raw: bytes, dtype: np.dtype, byteorder: str) -> np.ndarray:
    order = "<" if byteorder == "little" else ">"
    return np.frombuffer(raw, dtype=dtype.newbyteorder(order)).astype(dtype, copy=False)


def _materialize(obj: Any, path: Path) -> Any:
    if isinstance(obj, _TensorRef):
        return _to_array(obj, path)
    if isinstance(obj, dict):
        return {key: _materialize(value, path) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(value, path) for value in obj)
    return obj


def _to_array(ref: _TensorRef, path: Path) -> np.ndarray:
    flat = ref.storage.array
    assert flat is not None
    if len(ref.size) != len(ref.stride) or any(s < 0 for s in ref.size + ref.stride) or ref.offset < 0:
        raise UserError(f"{path}: a tensor has inconsistent sizes/strides {ref.size}/{ref.stride}")
    if 0 in ref.size:
        out = np.zeros(ref.size, dtype=flat.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= flat.size:
            raise UserError(f"{path}: a tensor of shape {ref.size} reaches past its storage "
                            f"({last + 1} > {flat.size} elements); the file is corrupt")
        item = flat.itemsize
        out = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=tuple(s * item for s in ref.stride),
            writeable=False,
        ).copy()
    if ref.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out
