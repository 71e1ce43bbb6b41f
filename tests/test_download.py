"""Verified, resumable downloads against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from doe_sr.sr.download import DownloadError, default_cache_dir, fetch, sha256sum
from doe_sr.core.errors import DoeSrError

PAYLOAD = bytes(range(256)) * 10_000 + b"tail"  # 2.56 MB: several 1 MiB chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server(ThreadingHTTPServer):
    """Serves ``files`` by name; behaviour switches are set per test."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.supports_range = True
        self.break_after: int | None = None  # bytes of body sent before dropping
        self.requests: list[tuple[str, str | None]] = []
        self.stream: tuple[int, bool] | None = None  # (bytes, send Content-Length) of an endless-ish body
        self.sent = 0  # bytes of a streamed body the client accepted
        self.stream_done = threading.Event()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _stream(self, total: int, with_length: bool) -> None:
        """Send ``total`` zero bytes in 64 KiB writes, counting what got through."""
        self.send_response(200)
        if with_length:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        self.close_connection = True
        block = bytes(1 << 16)
        try:
            while self.server.sent < total:
                self.wfile.write(block)
                self.server.sent += len(block)
        except OSError:  # the client hung up: what we want to see
            pass
        finally:
            self.server.stream_done.set()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        range_header = self.headers.get("Range")
        self.server.requests.append((self.path, range_header))
        if self.server.stream is not None:
            self._stream(*self.server.stream)
            return
        data = self.server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and self.server.supports_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
            self.send_header("Accept-Ranges", "none")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.break_after is not None:
            cut = self.server.break_after
            self.server.break_after = None  # only the first response breaks
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.files["weights.bin"] = PAYLOAD
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_sha256sum_known_value(tmp_path: Path) -> None:
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    # FIPS 180-2, appendix B.1
    assert sha256sum(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOE_SR_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DOE_SR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "doe-sr"


def test_fetch_verifies_and_then_uses_the_cache(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "weights.bin"
    out = fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights.bin"]
    # A second call finds the verified file and does not touch the network.
    fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA.upper(), progress=False)
    assert len(server.requests) == 1


def test_progress_bar_goes_to_stderr(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fetch(server.url("weights.bin"), tmp_path / "w.bin", sha256=PAYLOAD_SHA, progress=True)
    assert capsys.readouterr().out == ""
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD


def test_wrong_checksum_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="SHA-256") as info:
        fetch(server.url("weights.bin"), cache / "weights.bin", sha256="0" * 64, progress=False)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, DoeSrError) and info.value.exit_code == 1
    assert list(cache.iterdir()) == []


def test_wrong_size_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="expected 12"):
        fetch(server.url("weights.bin"), tmp_path / "w.bin", sha256=None, size=12, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_resume_after_interruption(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    part = tmp_path / "weights.bin.part"
    server.break_after = 1_234_567
    with pytest.raises(DownloadError, match="resume"):
        fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, progress=False)
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[:1_234_567]

    fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()
    assert server.requests[-1] == ("/weights.bin", "bytes=1234567-")


def test_server_without_range_support_restarts(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    server.break_after = 1000
    with pytest.raises(DownloadError):
        fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, progress=False)
    server.supports_range = False
    fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD  # not 1000 bytes twice
    assert server.requests[-1][1] == "bytes=1000-"


def test_corrupt_partial_file_is_discarded(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    part = tmp_path / "weights.bin.part"
    part.write_bytes(b"\xff" * 5000)  # wrong bytes that resuming would keep
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, progress=False)
    assert not part.exists() and not dest.exists()
    fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_partial_file_is_only_verified(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "weights.bin.part").write_bytes(PAYLOAD)
    # size unknown: the server answers 416 to a Range past the end
    fetch(server.url("weights.bin"), tmp_path / "weights.bin", sha256=PAYLOAD_SHA, progress=False)
    assert (tmp_path / "weights.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/weights.bin", f"bytes={len(PAYLOAD)}-")]


def test_stale_destination_is_replaced(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"old release")
    fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_error_and_unreachable_host(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url("missing.bin"), tmp_path / "m.bin", sha256=None, progress=False)
    assert list(tmp_path.iterdir()) == []
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach"):
        fetch(f"http://127.0.0.1:{port}/x", tmp_path / "x.bin", sha256=None, progress=False)


# -- issue 9, item 6: verified before the final name, bytes read capped ------------------


def test_hash_prefix_is_checked_before_the_file_takes_its_name(server: _Server, tmp_path: Path) -> None:
    """A 15-byte bogus file under the ESRGAN name is deleted, not cached; the good one is then fetched."""
    name = "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth"
    server.files[name] = b"<html>404</html>"[:15]
    dest = tmp_path / "cache" / name
    with pytest.raises(DownloadError, match=f"expected {PAYLOAD_SHA[:8]}\\.\\.\\."):
        fetch(server.url(name), dest, sha256=PAYLOAD_SHA[:8], max_size=10 << 20, progress=False)
    assert not dest.exists() and not dest.with_suffix(".pth.part").exists()
    server.files[name] = PAYLOAD
    assert fetch(server.url(name), dest, sha256=PAYLOAD_SHA[:8], max_size=10 << 20, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD


def test_a_bogus_file_already_cached_is_replaced(server: _Server, tmp_path: Path) -> None:
    """What the landed code left in caches (15 wrong bytes under the final name) heals itself."""
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"not the weights")
    fetch(server.url("weights.bin"), dest, sha256=PAYLOAD_SHA[:8], max_size=10 << 20, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_esrgan_auto_download_is_verified_before_it_is_cached(server: _Server, tmp_path: Path) -> None:
    from doe_sr.sr.models.esrgan import ESRGAN_FILENAME, _fetch_official

    server.files["esrgan.pth"] = b"x" * 15
    with pytest.raises(DownloadError, match=r"expected ff704c30\.\.\."):
        _fetch_official(tmp_path, url=server.url("esrgan.pth"))
    assert list(tmp_path.iterdir()) == [], "nothing may be cached"
    assert not (tmp_path / ESRGAN_FILENAME).exists()


@pytest.mark.parametrize("with_length", [False, True], ids=["streamed", "announced"])
def test_an_oversized_body_is_cut_off_early(server: _Server, tmp_path: Path, with_length: bool) -> None:
    """1 GiB offered for a file of at most 1 MiB: the client stops after about 1 MiB and hangs up."""
    server.stream = (1 << 30, with_length)
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError, match="more than the expected 1048576"):
        fetch(server.url("big.bin"), dest, sha256=None, max_size=1 << 20, progress=False)
    assert server.stream_done.wait(60), "the server kept sending: the client did not hang up"
    # What the server wrote before the hang-up is the 1 MiB read plus the socket buffers.
    assert server.sent < 64 << 20, f"{server.sent} bytes went out for a 1 MiB file"
    assert not dest.exists() and not dest.with_suffix(".bin.part").exists()


def test_known_size_caps_the_bytes_read(server: _Server, tmp_path: Path) -> None:
    server.stream = (1 << 30, False)
    with pytest.raises(DownloadError, match="more than the expected 1000"):
        fetch(server.url("big.bin"), tmp_path / "w.bin", sha256=None, size=1000, progress=False)
    assert server.stream_done.wait(60) and server.sent < 64 << 20
