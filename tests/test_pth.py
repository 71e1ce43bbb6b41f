"""doe_sr.sr.weights.pth reads torch.save files exactly, and refuses pickles that run code."""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from doe_sr.core.errors import UserError  # noqa: E402
from doe_sr.sr.weights.pth import read_pth  # noqa: E402


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


# -- hostile files (tests/hostile/weights): every one refused in-process, within a memory bound
_HOSTILE = Path(__file__).parent / "hostile" / "weights"

#: cases of tests/hostile/weights/make.py read here only (the corpus runs the others through the CLI)
UNIT_ONLY = {
    "legacy_count_past_file": "storage 0 declares 1000 elements, more than the file holds",
    "negative_offset": r"inconsistent sizes/strides \(2,\)/\(1,\)",
    "deeply_nested": "nested more than 16 deep",
    "builtins_eval_legacy": r"builtins\.eval",
    "subprocess_popen": r"subprocess\.Popen",
    "empty_file": r"w\.pth is empty",
}


def _hostile_cases() -> list:
    import yaml

    cases = [(c["make"], c["message"]) for c in yaml.safe_load((_HOSTILE / "cases.yaml").read_text())
             if c.get("make") and c["make"] != "not_an_rrdbnet"]
    return cases + list(UNIT_ONLY.items())


def _maker(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hostile_weights_make", _HOSTILE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize("make, message", _hostile_cases(), ids=[c[0] for c in _hostile_cases()])
def test_hostile_file_is_refused_in_bounded_memory(tmp_path: Path, make: str, message: str) -> None:
    """Each file is refused with its message in a child whose address space is capped at 2 GB.

    The cap makes an allocation the file should not cause fail loudly (MemoryError, not our
    one-line refusal) instead of passing on a large machine: the landed reader expanded
    the 614-byte stride-0 file into 8.6 GB and died on 2**61 with an OverflowError.
    """
    import subprocess
    import sys

    _maker(make)(tmp_path)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "from doe_sr.core.errors import UserError\nfrom doe_sr.sr.weights.pth import read_pth\n"
            "try:\n    read_pth(sys.argv[1])\nexcept UserError as e:\n    print(e); sys.exit(2)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.pth")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert re.search(message, out.stdout, re.IGNORECASE), out.stdout


def test_stride0_expansion_of_a_small_tensor_is_still_read(tmp_path: Path) -> None:
    """Expanded views that stay small (broadcast biases) are legitimate and load as copies."""
    path = tmp_path / "w.pth"
    torch.save({"b": torch.arange(3.0).expand(4, 3), "rows": torch.arange(6.0).view(2, 3)[:, :2]}, path)
    got = read_pth(path)
    np.testing.assert_array_equal(got["b"], np.tile(np.arange(3.0, dtype=np.float32), (4, 1)))
    np.testing.assert_array_equal(got["rows"], np.array([[0, 1], [3, 4]], dtype=np.float32))
