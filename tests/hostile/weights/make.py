"""Hostile ``.pth`` files, assembled opcode by opcode (no torch needed, nothing is ever run).

A torch.save zip holds ``archive/data.pkl`` (a pickle whose tensors are calls of
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` on persistent
ids ``("storage", torch.FloatStorage, key, "cpu", numel)``) and ``archive/data/<key>``
(the raw little-endian bytes). The legacy format is a sequence of pickles (magic,
protocol, system info, the object, the storage keys), then per storage an int64 element
count and its bytes. Each function below writes ``w.pth`` into the work folder.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

PROTO = b"\x80\x02"
STOP = b"."
MARK, TUPLE, REDUCE, SETITEM, EMPTY_DICT, EMPTY_TUPLE = b"(", b"t", b"R", b"s", b"}", b")"
BINPERSID, NEWFALSE, BUILD = b"Q", b"\x89", b"b"


def lit(value) -> bytes:
    """A plain value (int, str, tuple of ints) as pickle opcodes, without PROTO and STOP."""
    return pickle.dumps(value, protocol=2)[2:-1]


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def storage(key: str = "0", numel: int = 4) -> bytes:
    return MARK + lit("storage") + glob("torch", "FloatStorage") + lit(key) + lit("cpu") + lit(numel) + TUPLE + BINPERSID


def tensor(size, stride, offset: int = 0, key: str = "0", numel: int = 4) -> bytes:
    return (glob("torch._utils", "_rebuild_tensor_v2") + MARK + storage(key, numel) + lit(offset)
            + lit(tuple(size)) + lit(tuple(stride)) + NEWFALSE + glob("collections", "OrderedDict") + EMPTY_TUPLE
            + REDUCE + TUPLE + REDUCE)


def state(*items: tuple[str, bytes]) -> bytes:
    body = EMPTY_DICT
    for key, value in items:
        body += lit(key) + value + SETITEM
    return PROTO + body + STOP


def write_zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None,
              compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in (storages if storages is not None else {"0": b"\0" * 16}).items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")


def legacy(path: Path, obj: bytes, keys: list[str], blobs: list[bytes], magic: int = 0x1950A86A20F9469CFC6C) -> None:
    head = b"".join(pickle.dumps(v, protocol=2) for v in (magic, 1001, {"little_endian": True}))
    path.write_bytes(head + obj + pickle.dumps(keys, protocol=2) + b"".join(blobs))


# ---------------------------------------------------------------------------- allocation


def stride0_expansion(work: Path) -> None:
    """554 bytes that the landed reader expanded into an 8.6 GB array."""
    write_zip(work / "w.pth", state(("w", tensor((46341, 46341), (0, 0), numel=1))), {"0": b"\0" * 4})


def shape_1e6_squared(work: Path) -> None:
    write_zip(work / "w.pth", state(("w", tensor((10**6, 10**6), (10**6, 1), numel=1))), {"0": b"\0" * 4})


def legacy_2_pow_61(work: Path) -> None:
    obj = state(("w", tensor((4,), (1,))))
    legacy(work / "w.pth", obj, ["0"], [struct.pack("<q", 2**61) + b"\0" * 16])


def legacy_count_past_file(work: Path) -> None:
    obj = state(("w", tensor((4,), (1,))))
    legacy(work / "w.pth", obj, ["0"], [struct.pack("<q", 1000) + b"\0" * 16])


def negative_size(work: Path) -> None:
    write_zip(work / "w.pth", state(("w", tensor((-1, 4), (4, 1)))))


def negative_offset(work: Path) -> None:
    write_zip(work / "w.pth", state(("w", tensor((2,), (1,), offset=-3))))


def offset_past_storage(work: Path) -> None:
    write_zip(work / "w.pth", state(("w", tensor((4,), (1,), offset=100))))


def many_views_of_one_storage(work: Path) -> None:
    """4000 tensors each viewing all of one 8 MB storage: 32 GB if each were copied."""
    n = 2 << 20
    items = [(f"w{i}", tensor((n,), (1,), numel=n)) for i in range(4000)]
    write_zip(work / "w.pth", state(*items), {"0": b"\0" * (4 * n)})


def zip_bomb_storage(work: Path) -> None:
    """A deflated storage entry of 256 MB of zeros in a 250 KB file (written in chunks)."""
    write_zip(work / "w.pth", state(("w", tensor((4,), (1,)))), {})
    with zipfile.ZipFile(work / "w.pth", "a", zipfile.ZIP_DEFLATED) as z, z.open("archive/data/0", "w") as f:
        for _ in range(256):
            f.write(bytes(1 << 20))


def self_containing_list(work: Path) -> None:
    """A list that contains itself (pickle memo): the landed reader recursed until RecursionError."""
    pkl = PROTO + EMPTY_DICT + lit("w") + b"]" + b"q\x00" + b"h\x00" + b"a" + SETITEM + STOP
    write_zip(work / "w.pth", pkl)


def deeply_nested(work: Path) -> None:
    pkl = PROTO + EMPTY_DICT + lit("w") + b"]" * 100000 + b"a" * 99999 + SETITEM + STOP
    write_zip(work / "w.pth", pkl)


def build_state_on_tensor(work: Path) -> None:
    """BUILD after a valid tensor: would overwrite its checked size with 10^12 elements."""
    write_zip(work / "w.pth", state(("w", tensor((4,), (1,)) + EMPTY_DICT + lit("size") + lit((10**6, 10**6))
                                     + SETITEM + BUILD)))


# ------------------------------------------------------------------------ code / format


def os_system(work: Path) -> None:
    write_zip(work / "w.pth", PROTO + glob("os", "system") + lit(("touch pwned",)) + REDUCE + STOP)


def builtins_eval_legacy(work: Path) -> None:
    legacy(work / "w.pth", PROTO + glob("builtins", "eval") + lit(("print(1)",)) + REDUCE + STOP, [], [])


def subprocess_popen(work: Path) -> None:
    write_zip(work / "w.pth", PROTO + glob("subprocess", "Popen") + lit((("touch", "pwned"),)) + REDUCE + STOP)


def nested_pickle(work: Path) -> None:
    """A pickle that unpickles another pickle (which would run os.system)."""
    inner = PROTO + glob("os", "system") + lit(("touch pwned",)) + REDUCE + STOP
    write_zip(work / "w.pth", PROTO + glob("pickle", "loads") + MARK + b"C" + bytes([len(inner)]) + inner + TUPLE
              + REDUCE + STOP)


def wrong_magic(work: Path) -> None:
    legacy(work / "w.pth", state(("w", tensor((4,), (1,)))), ["0"], [struct.pack("<q", 4) + b"\0" * 16], magic=12345)


def truncated_zip(work: Path) -> None:
    write_zip(work / "full.pth", state(("w", tensor((4,), (1,)))), {"0": b"\1" * 4000})
    raw = (work / "full.pth").read_bytes()
    (work / "w.pth").write_bytes(raw[: len(raw) // 2])


def empty_file(work: Path) -> None:
    (work / "w.pth").write_bytes(b"")


def folder_named_pth(work: Path) -> None:
    (work / "w.pth").mkdir()


def not_an_rrdbnet(work: Path) -> None:
    """A sound state dict of the wrong network: refused by name, not loaded into garbage."""
    write_zip(work / "w.pth", state(("conv.weight", tensor((4,), (1,)))))
