"""Verified, resumable downloads into the doe-sr cache (ESRGAN weights, DIV2K archives).

Why not ``urllib.request.urlretrieve``: multi-gigabyte archives (DIV2K train HR is
3.5 GB) must survive a dropped connection without starting over, and a truncated or
tampered file must never be mistaken for the real one. So a download

* streams into ``<dest>.part`` and, when a ``.part`` is already there, asks for the
  rest with an HTTP ``Range`` request (starting over when the server ignores it);
* checks the size and the SHA-256 (the full digest, or the leading hex digits that
  BasicSR puts in its release names) before the file gets its final name, then renames
  it atomically (``os.replace``), so ``dest`` either is complete and verified or does
  not exist: a wrong file is deleted, never cached;
* reads at most the expected size (``size``, else ``max_size``): a server announcing more
  is refused before the body, and a stream running past it is cut off right there, so
  a hostile or misconfigured server cannot fill the disk;
* keeps the ``.part`` after a network failure (the next call resumes) and deletes it
  after a checksum failure (its bytes are wrong, resuming would keep them).

Only the standard library is used, so downloading needs no extra dependency.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path

from doe_sr.core.errors import DoeSrError, UserError

__all__ = ["DownloadError", "default_cache_dir", "fetch", "sha256sum"]

_CHUNK = 1 << 20
_TIMEOUT_S = 60
_USER_AGENT = "doe-sr (python urllib)"


class DownloadError(DoeSrError):
    """A download failed (network, HTTP status, size or checksum). Exit code 1."""

    exit_code = 1


def default_cache_dir() -> Path:
    """Where downloads are kept: ``$DOE_SR_CACHE``, else ``~/.cache/doe-sr``."""
    env = os.environ.get("DOE_SR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "doe-sr"


def sha256sum(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so large archives fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest_spec(sha256: str | None) -> str | None:
    """The expected digest in lower case: 64 hex digits, or a prefix of at least 8."""
    if sha256 is None:
        return None
    digest = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", digest):
        raise ValueError(f"sha256 must be 8 to 64 hex digits, got {sha256!r}")
    return digest


def _verified(path: Path, sha256: str | None, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256sum(path).startswith(sha256)


class _TooLarge(DownloadError):
    """The server sent or announced more bytes than the file may have."""


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", header or "")
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def _progress(enabled: bool, name: str, total: int | None, done: int) -> Iterator:
    """A rich progress bar on stderr, or a no-op callable when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(name, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def _open(url: str, offset: int):  # noqa: ANN202 - an http.client.HTTPResponse
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=_TIMEOUT_S)


def _download(url: str, part: Path, *, size: int | None, limit: int | None, resume: bool, progress: bool) -> None:
    """Bring ``part`` to the full remote content, resuming when possible.

    Raises ``DownloadError`` on HTTP errors and on interruptions (keeping ``part``), and
    ``_TooLarge`` as soon as the content is known to exceed ``limit`` bytes.
    """
    offset = part.stat().st_size if resume and part.exists() else 0
    if size is not None and offset >= size:
        if offset == size:
            return  # a previous call got every byte; only verification is left
        offset = 0  # longer than the file can be: not ours to keep
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The server has nothing past our offset: the .part is already complete
            # (size unknown) or longer than the file; verification decides which.
            return
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}") from exc

    with response:
        start = _content_range_start(response.headers.get("Content-Range"))
        if response.status == 206 and start == offset:
            mode = "ab"
        else:
            # The server ignored the Range (200) or answered another one: start over.
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length", "")
        expected = offset + int(length) if length.isdigit() else size
        if limit is not None and expected is not None and expected > limit:
            raise _TooLarge(f"{url} has {expected} bytes, more than the expected {limit}; not downloading it")
        received = offset
        try:
            with open(part, mode) as fh, _progress(progress, part.stem, expected, offset) as tick:
                # Never ask for more than one byte past the limit: that byte proves the overrun.
                while chunk := response.read(_CHUNK if limit is None else max(1, min(_CHUNK, limit + 1 - received))):
                    fh.write(chunk)
                    received += len(chunk)
                    tick(len(chunk))
                    if limit is not None and received > limit:
                        raise _TooLarge(f"{url} sent more than the expected {limit} bytes; stopped reading")
        except (HTTPException, OSError) as exc:  # resets and timeouts are OSErrors
            raise DownloadError(
                f"download of {url} interrupted after {received} bytes ({exc}); "
                "run the same command again to resume"
            ) from exc
    # http.client does not raise when the connection closes before Content-Length.
    if expected is not None and received < expected:
        raise DownloadError(
            f"download of {url} interrupted after {received} of {expected} bytes; "
            "run the same command again to resume"
        )


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None = None,
    max_size: int | None = None,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    Args:
        url: http(s) (or file) URL.
        dest: final path; its folder is created.
        sha256: expected hex digest, or its first 8 or more hex digits (release names such
            as BasicSR's ``-ff704c30.pth`` carry only those); ``None`` skips the checksum
            (then give ``size``).
        size: expected size in bytes, if known.
        max_size: when ``size`` is unknown, the most bytes the file may have; reading
            stops one byte past it.
        resume: continue an existing ``<dest>.part`` with a Range request.
        progress: show a rich progress bar on stderr.

    An existing ``dest`` that verifies is returned without any network access; one that
    does not is deleted and downloaded again.

    Raises:
        DownloadError: network or HTTP failure (the ``.part`` is kept for resuming), or
            a size or checksum mismatch (the ``.part`` is deleted). ``dest`` is never
            left holding unverified bytes.
    """
    dest = Path(dest)
    sha256 = _check_digest_spec(sha256)
    limit = size if size is not None else max_size
    if dest.is_file():
        if _verified(dest, sha256, size):
            return dest
        dest.unlink()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the download folder {dest.parent} ({exc.strerror or exc}); "
                        "choose a writable folder (or set DOE_SR_CACHE)") from None
    part = dest.with_suffix(dest.suffix + ".part")

    try:
        _download(url, part, size=size, limit=limit, resume=resume, progress=progress)
    except _TooLarge as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{exc}; the partial file was removed (wrong URL or a changed file?)") from None

    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(
            f"{url} has {actual_size} bytes, expected {size}; the partial file was removed"
        )
    if sha256 is not None:
        actual = sha256sum(part)
        if not actual.startswith(sha256):
            part.unlink()
            expected = sha256 if len(sha256) == 64 else f"{sha256}..."
            raise DownloadError(
                f"{url} has SHA-256 {actual}, expected {expected}; "
                "the file was removed (a changed or corrupted upload?)"
            )
    os.replace(part, dest)
    return dest
