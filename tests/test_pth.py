"""doe_sr.weights.pth reads torch.save files exactly, and refuses pickles that run code."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from doe_sr.errors import UserError  # noqa: E402
from doe_sr.weights.pth import read_pth  # noqa: E402


def _tensors() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, generator=g)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "transposed": torch.randn(5, 6, generator=g).t()[1:],  # non-contiguous, offset
        "half": torch.randn(7, generator=g).half()[2:],
        "bf16": torch.randn(3, 2, generator=g).bfloat16(),
        "double": torch.randn(2, 2, generator=g).double(),
        "count": torch.tensor(5),  # 0-d int64, like BatchNorm's num_batches_tracked
        "mask": torch.tensor([True, False, True]),
        "param": torch.nn.Parameter(torch.randn(2, generator=g)),
        "slice": base[2:5],  # two views sharing one storage
        "strided": base[::3],
        "empty": torch.zeros(0, 4),
    }


def _expected(value) -> np.ndarray:
    value = value.detach()
    return value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_matches_torch(tmp_path: Path, zip_format: bool) -> None:
    tensors = _tensors()
    path = tmp_path / "w.pth"
    torch.save({"params": tensors, "iter": 7}, path, _use_new_zipfile_serialization=zip_format)
    loaded = read_pth(path)
    assert loaded["iter"] == 7 and set(loaded["params"]) == set(tensors)
    for key, value in tensors.items():
        got, want = loaded["params"][key], _expected(value)
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)


def test_module_state_dict_with_metadata(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save(net.state_dict(), tmp_path / "net.pth")
    loaded = read_pth(tmp_path / "net.pth")
    assert set(loaded) == set(net.state_dict())
    np.testing.assert_array_equal(loaded["0.weight"], net[0].weight.detach().numpy())


class _Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _evil_zip(tmp_path: Path, payload) -> Path:
    """A genuine torch.save archive whose data.pkl is replaced by ``payload``'s pickle."""
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps({"w": payload}, protocol=2)
            dst.writestr(item, data)
    return evil


def test_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_zip(tmp_path, _Exploit(os.system, f"touch {marker}"))
    with pytest.raises(UserError, match=r"(posix|nt|os)\.system"):
        read_pth(evil)
    assert not marker.exists()


def test_refuses_builtins_eval_in_legacy_format(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(_Exploit(eval, f"open({str(marker)!r}, 'w')"), buf, protocol=2)
    (tmp_path / "evil.pth").write_bytes(buf.getvalue())
    with pytest.raises(UserError, match=r"builtins\.eval"):
        read_pth(tmp_path / "evil.pth")
    assert not marker.exists()


def test_tensor_past_its_storage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"w": torch.arange(4.0)}, path)
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if "/data/" in item.filename:
                data = data[:8]  # storage of 2 floats behind a tensor of 4
            dst.writestr(item, data)
    with pytest.raises(UserError, match="past its storage"):
        read_pth(bad)


def test_missing_and_non_pth_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_pth(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(UserError, match="text.pth"):
        read_pth(tmp_path / "text.pth")
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as z:
        z.writestr("readme.txt", "x")
    with pytest.raises(UserError, match="data.pkl"):
        read_pth(tmp_path / "plain.zip")
