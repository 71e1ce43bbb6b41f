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

What a file may make us allocate is bounded by the file itself, because a tiny hostile
file can otherwise ask for terabytes (a 554-byte file declaring a 46341x46341 tensor
with strides 0 expanded to 8.6 GB):

* a storage holds at most what the file holds: a legacy storage's element count must
  fit in the bytes left in the file, and the zip entries read may unpack to at most
  twice the archive's size (torch stores them uncompressed, so a legitimate file is 1x);
* a tensor must lie inside its storage (its furthest element, computed with Python's
  unbounded ints, is an element of the storage);
* a tensor may have more elements than its storage only up to `_MAX_EXPANSION_BYTES`
  (stride 0 or overlapping strides repeat elements; a state dict has no reason to);
* all tensors together may not exceed the storages' bytes plus `_MAX_EXPANSION_BYTES`
  (many tensors viewing one storage would otherwise copy it many times).

So loading a file takes at most about four times its size in memory, plus 16 MiB.
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

from doe_sr.core.errors import UserError

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

#: The most a file's tensors may materialise beyond the bytes of its storages (see above).
_MAX_EXPANSION_BYTES = 16 << 20
#: data.pkl is a small index of names and shapes (about 100 KB for ESRGAN).
_MAX_PICKLE_BYTES = 64 << 20
#: state dicts nest a few levels ({"params_ema": {name: tensor}}); deeper is not a weights file.
_MAX_DEPTH = 16


class _NoState:
    """Our stand-ins take no pickle BUILD state: it would bypass the checks of their constructors."""

    def __setstate__(self, state: Any) -> None:
        raise UserError("malformed .pth: it sets the internal state of a tensor or storage; "
                        "re-save it with torch.save(state_dict)")


@dataclass(frozen=True)
class _StorageType(_NoState):
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage(_NoState):
    """A storage named in the pickle; its bytes are attached once they are read."""

    key: str
    stype: _StorageType
    offset: int = 0  # legacy storage views: element offset into the root storage
    array: np.ndarray | None = None


@dataclass
class _TensorRef(_NoState):
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
    if path.is_dir():
        raise UserError(f"weights file {path} is a folder, not a file; give the path of a .pth file")
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; give the path of a .pth file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (an interrupted download?); re-download it")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except UserError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError,
            TypeError, IndexError, AttributeError, OSError, OverflowError, MemoryError, UnicodeError) as exc:
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise UserError(f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: {detail}); "
                        "re-download it or re-save it with torch.save(state_dict)") from None


class _ZipBudget:
    """Reads zip entries while their declared sizes stay within twice the archive's size."""

    def __init__(self, archive: zipfile.ZipFile, path: Path) -> None:
        self.archive, self.path = archive, path
        self.left = 2 * path.stat().st_size

    def read(self, name: str, limit: int | None = None) -> bytes:
        info = self.archive.getinfo(name)
        if info.file_size > self.left or (limit is not None and info.file_size > limit):
            raise UserError(f"{self.path}: the entry {name} unpacks to {info.file_size} bytes, more than the "
                            "file can hold (a zip bomb?); refusing to read it")
        self.left -= info.file_size
        return self.archive.read(info)


def _read_zip(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise UserError(f"{path} is a zip file but not a torch.save archive (no single data.pkl)")
        root = pkl[0][: -len("data.pkl")]
        entries = _ZipBudget(archive, path)
        byteorder = "little"
        if f"{root}byteorder" in archive.namelist():
            byteorder = entries.read(f"{root}byteorder", 16).decode("ascii").strip()
        storages: dict[str, _Storage] = {}
        obj = _RestrictedUnpickler(io.BytesIO(entries.read(pkl[0], _MAX_PICKLE_BYTES)), path, storages).load()
        for storage in storages.values():
            raw = entries.read(f"{root}data/{storage.key}")
            storage.array = _frombuffer(raw, storage.stype.dtype, byteorder)
    return _materialize(obj, path, _storage_bytes(storages))


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
        file_size = path.stat().st_size
        arrays: dict[str, np.ndarray] = {}
        for key in keys:
            dtype = roots[key].stype.dtype
            count = int.from_bytes(f.read(8), byteorder, signed=True)
            # Checked before reading: a declared 2**61 elements must not reach f.read.
            if count < 0 or count * dtype.itemsize > file_size - f.tell():
                raise UserError(f"{path}: storage {key} declares {count} elements, more than the file holds "
                                "(truncated or corrupt); re-download it")
            raw = f.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise UserError(f"{path} is truncated (storage {key}); re-download it")
            arrays[key] = _frombuffer(raw, dtype, byteorder)
        for storage in storages.values():
            if not 0 <= storage.offset <= arrays[storage.key].size:
                raise UserError(f"{path}: a storage view starts at element {storage.offset}, outside its storage "
                                f"of {arrays[storage.key].size}; the file is corrupt")
            storage.array = arrays[storage.key][storage.offset:]
    return _materialize(obj, path, sum(a.nbytes for a in arrays.values()))


def _frombuffer(raw: bytes, dtype: np.dtype, byteorder: str) -> np.ndarray:
    order = "<" if byteorder == "little" else ">"
    return np.frombuffer(raw, dtype=dtype.newbyteorder(order)).astype(dtype, copy=False)


def _storage_bytes(storages: dict[str, _Storage]) -> int:
    return sum(s.array.nbytes for s in storages.values() if s.array is not None)


class _Materializer:
    """Replaces tensor references by arrays, within the memory budget of the module docstring.

    Shared objects are converted once (a pickle can reference one list a billion times
    through its memo), cycles and deep nesting are refused.
    """

    def __init__(self, path: Path, storage_bytes: int) -> None:
        self.path = path
        self.limit = self.budget = storage_bytes + _MAX_EXPANSION_BYTES
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        if not isinstance(obj, (_TensorRef, dict, list, tuple)):
            return obj
        if id(obj) in self.done:
            return self.done[id(obj)]
        if depth > _MAX_DEPTH or id(obj) in self.active:
            raise UserError(f"{self.path}: objects nested more than {_MAX_DEPTH} deep or containing themselves; "
                            "a weights file is a flat state dict")
        self.active.add(id(obj))
        if isinstance(obj, _TensorRef):
            out: Any = _to_array(obj, self.path, self)
        elif isinstance(obj, dict):
            out = type(obj)() if isinstance(obj, OrderedDict) else {}
            for key, value in obj.items():
                out[key] = self(value, depth + 1)
        else:
            out = type(obj)(self(value, depth + 1) for value in obj)
        self.active.discard(id(obj))
        self.done[id(obj)] = out
        return out

    def charge(self, ref: _TensorRef, count: int, itemsize: int, storage_size: int) -> None:
        """Refuse a tensor whose copy would exceed the budget, before it is allocated."""
        nbytes = count * itemsize
        if count > storage_size and nbytes > _MAX_EXPANSION_BYTES:
            raise UserError(f"{self.path}: a tensor of shape {ref.size} with strides {ref.stride} repeats its "
                            f"{storage_size} stored elements into {count} ({nbytes} bytes); refusing to expand it "
                            "(a weights file stores every element)")
        if nbytes > self.budget:
            raise UserError(f"{self.path}: its tensors would take more than {self.limit} bytes, more than the "
                            "file stores; refusing to load it (corrupt or hostile)")
        self.budget -= nbytes


def _materialize(obj: Any, path: Path, storage_bytes: int) -> Any:
    return _Materializer(path, storage_bytes)(obj)


def _to_array(ref: _TensorRef, path: Path, budget: _Materializer) -> np.ndarray:
    flat = ref.storage.array if isinstance(ref.storage, _Storage) else None
    ints = all(type(v) is int for v in (*ref.size, *ref.stride, ref.offset))
    if not isinstance(flat, np.ndarray) or not ints:
        raise UserError(f"malformed .pth {path}: a tensor is not a view of a stored array")
    if len(ref.size) != len(ref.stride) or any(s < 0 for s in ref.size + ref.stride) or ref.offset < 0:
        raise UserError(f"{path}: a tensor has inconsistent sizes/strides {ref.size}/{ref.stride}")
    if len(ref.size) > 32:
        raise UserError(f"{path}: a tensor has {len(ref.size)} dimensions; numpy allows 32")
    count = 1
    for n in ref.size:
        count *= n
    if count == 0:
        out = np.zeros(ref.size, dtype=flat.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= flat.size:
            raise UserError(f"{path}: a tensor of shape {ref.size} reaches past its storage "
                            f"({last + 1} > {flat.size} elements); the file is corrupt")
        budget.charge(ref, count, flat.itemsize, flat.size)
        item = flat.itemsize
        out = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=tuple(s * item for s in ref.stride),
            writeable=False,
        ).copy()
    if ref.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out
