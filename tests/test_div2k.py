"""DIV2K download + unpack + layout discovery, with tiny synthetic archives on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from doe_sr.sr.div2k import DIV2K_FILES, Remote, discover, download_div2k
from doe_sr.sr.download import DownloadError
from doe_sr.core.errors import UserError
from doe_sr.sr.resize import imresize

TRAIN = ["0001", "0002", "0003"]
VALID = ["0801", "0802"]


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_zip(path: Path, entries: dict[str, bytes]) -> Remote:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    data = path.read_bytes()
    return Remote(url="unused", size=len(data), sha256=hashlib.sha256(data).hexdigest())


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, dict[str, Remote], list[str]]]:
    """A folder of DIV2K-shaped archives served over HTTP; yields (url, table, request log)."""
    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    table: dict[str, Remote] = {}
    for split, stems in (("train", TRAIN), ("valid", VALID)):
        hr = {s: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for s in stems}
        table[f"DIV2K_{split}_HR.zip"] = _write_zip(
            served / f"DIV2K_{split}_HR.zip",
            {f"DIV2K_{split}_HR/{s}.png": _png(img) for s, img in hr.items()},
        )
        table[f"DIV2K_{split}_LR_bicubic_X4.zip"] = _write_zip(
            served / f"DIV2K_{split}_LR_bicubic_X4.zip",
            {
                f"DIV2K_{split}_LR_bicubic/X4/{s}x4.png": _png(imresize(img, 1 / 4))
                for s, img in hr.items()
            },
        )
    log: list[str] = []

    class Handler(_Quiet):
        def do_GET(self) -> None:  # noqa: N802
            log.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", table, log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_unpack_and_discover(mirror, tmp_path: Path) -> None:
    url, table, log = mirror
    root = tmp_path / "DIV2K"
    out = download_div2k(root, lr=True, base_url=url, files=table, progress=False)
    assert out == root
    # archives are gone once unpacked, staging folders too
    assert sorted(p.name for p in root.iterdir()) == [
        "DIV2K_train_HR",
        "DIV2K_train_LR_bicubic",
        "DIV2K_valid_HR",
        "DIV2K_valid_LR_bicubic",
    ]
    layout = discover(root)
    assert layout is not None
    assert [p.stem for p in layout.train_hr] == TRAIN
    assert [p.stem for p in layout.valid_hr] == VALID
    for hr in layout.train_hr + layout.valid_hr:
        lr = layout.lr_for(hr)
        assert lr is not None and lr.name == f"{hr.stem}x4.png"
        hr_img = np.asarray(Image.open(hr))
        np.testing.assert_array_equal(np.asarray(Image.open(lr)), imresize(hr_img, 1 / 4))

    # Everything is in place: a second call downloads nothing.
    requests = len(log)
    download_div2k(root, lr=True, base_url=url, files=table, progress=False)
    assert len(log) == requests == 4


def test_hr_only_then_lr_later(mirror, tmp_path: Path) -> None:
    url, table, log = mirror
    root = tmp_path / "d"
    download_div2k(root, parts=("valid_hr",), base_url=url, files=table, progress=False)
    layout = discover(root)
    assert layout is not None
    assert layout.train_hr == () and len(layout.valid_hr) == 2 and dict(layout.lr) == {}
    download_div2k(root, parts=("valid_lr_x4",), base_url=url, files=table, progress=False)
    layout = discover(root)
    assert layout is not None and len(layout.lr) == 2
    assert log == ["/DIV2K_valid_HR.zip", "/DIV2K_valid_LR_bicubic_X4.zip"]


def test_checksum_mismatch_unpacks_nothing(mirror, tmp_path: Path) -> None:
    url, table, _ = mirror
    bad = dict(table)
    bad["DIV2K_valid_HR.zip"] = table["DIV2K_valid_HR.zip"]._replace(sha256="ab" * 32)
    root = tmp_path / "d"
    with pytest.raises(DownloadError, match="SHA-256"):
        download_div2k(root, parts=("valid_hr",), base_url=url, files=bad, progress=False)
    assert list(root.iterdir()) == []
    assert discover(root) is None


def test_path_traversal_is_refused(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    remote = _write_zip(
        served / "DIV2K_valid_HR.zip",
        {"DIV2K_valid_HR/0801.png": b"x", "DIV2K_valid_HR/../../escaped.txt": b"gotcha"},
    )
    root = tmp_path / "a" / "root"
    with pytest.raises(DownloadError, match="unsafe entry"):
        download_div2k(
            root,
            parts=("valid_hr",),
            base_url=served.as_uri(),
            files={"DIV2K_valid_HR.zip": remote},
            progress=False,
        )
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (root / "DIV2K_valid_HR").exists()


def test_unknown_part_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="train_hr"):
        download_div2k(tmp_path, parts=("test_hr",), progress=False)


def test_discover_rejects_other_folders_and_matches_lr_by_name(tmp_path: Path) -> None:
    assert discover(tmp_path) is None
    (tmp_path / "DIV2K_train_HR").mkdir()
    assert discover(tmp_path) is None  # no images yet
    for stem in ("0001", "0002"):
        (tmp_path / "DIV2K_train_HR" / f"{stem}.png").write_bytes(b"")
    lr_dir = tmp_path / "DIV2K_train_LR_bicubic" / "X4"
    lr_dir.mkdir(parents=True)
    (lr_dir / "0002x4.png").write_bytes(b"")
    (lr_dir / "0003x4.png").write_bytes(b"")  # no HR partner: ignored
    layout = discover(tmp_path)
    assert layout is not None
    first, second = layout.train_hr
    assert layout.lr_for(first) is None
    assert layout.lr_for(second) == lr_dir / "0002x4.png"
    assert discover(tmp_path, scale=2) is not None and discover(tmp_path, scale=2).lr == {}


def test_official_table_names_the_official_archives() -> None:
    assert set(DIV2K_FILES) == {
        "DIV2K_train_HR.zip",
        "DIV2K_valid_HR.zip",
        "DIV2K_train_LR_bicubic_X4.zip",
        "DIV2K_valid_LR_bicubic_X4.zip",
    }
    for name, remote in DIV2K_FILES.items():
        assert remote.url == f"https://data.vision.ee.ethz.ch/cvl/DIV2K/{name}"
        assert remote.sha256 is not None and len(bytes.fromhex(remote.sha256)) == 32


# -- hostile archives (issue 9): refused before anything lands, through the real download path


def _symlink_entry(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16)  # S_IFLNK
    zf.writestr(info, target)


def _hostile_archive(kind: str, path: Path) -> None:
    ok = ("DIV2K_valid_HR/0801.png", b"x")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(*ok)
        if kind == "absolute":
            zf.writestr(zipfile.ZipInfo("/tmp/escaped.txt"), b"gotcha")
        elif kind == "backslash-traversal":
            zf.writestr(zipfile.ZipInfo("DIV2K_valid_HR\\..\\..\\escaped.txt"), b"gotcha")
        elif kind == "drive-letter":
            zf.writestr(zipfile.ZipInfo("C:/escaped.txt"), b"gotcha")
        elif kind == "symlink":
            _symlink_entry(zf, "DIV2K_valid_HR/link.png", "/etc/passwd")
        elif kind == "duplicate":
            with pytest.warns(UserWarning, match="Duplicate name"):
                zf.writestr("DIV2K_valid_HR/0801.png", b"second")
        elif kind == "bomb":
            with zf.open("DIV2K_valid_HR/0802.png", "w") as f:  # 64 MB of zeros in ~64 KB
                for _ in range(64):
                    f.write(bytes(1 << 20))


@pytest.mark.parametrize("kind, message", [
    ("absolute", "unsafe entry '/tmp/escaped.txt'"),
    ("backslash-traversal", "unsafe entry"),
    ("drive-letter", "unsafe entry 'C:/escaped.txt'"),
    ("symlink", "unsafe entry 'DIV2K_valid_HR/link.png'"),
    ("duplicate", "holds 'DIV2K_valid_HR/0801.png' twice"),
    ("bomb", r"declares 67108865 bytes of contents, more than 4x its size \(a zip bomb\?\)"),
])
def test_hostile_archive_unpacks_nothing(tmp_path: Path, kind: str, message: str) -> None:
    served = tmp_path / "served"
    served.mkdir()
    _hostile_archive(kind, served / "DIV2K_valid_HR.zip")
    data = (served / "DIV2K_valid_HR.zip").read_bytes()
    remote = Remote(url="unused", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    root = tmp_path / "a" / "root"
    with pytest.raises(DownloadError, match=message):
        download_div2k(root, parts=("valid_hr",), base_url=served.as_uri(),
                       files={"DIV2K_valid_HR.zip": remote}, progress=False)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (root / "DIV2K_valid_HR").exists()
    assert not [p for p in root.rglob("*") if p.is_file() and p.suffix == ".png"], "nothing may be unpacked"


def test_dest_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        download_div2k(tmp_path / "f", parts=("valid_hr",), progress=False)
