"""DIV2K: download the official archives and recognise the unpacked layout.

DIV2K (Agustsson & Timofte, NTIRE 2017) is the usual training set of SR papers: 800
training and 100 validation 2K images, with LR versions made by MATLAB bicubic
``imresize``. The archives unpack to the layout every SR codebase expects::

    DIV2K_train_HR/0001.png ... 0800.png
    DIV2K_valid_HR/0801.png ... 0900.png
    DIV2K_train_LR_bicubic/X4/0001x4.png ...
    DIV2K_valid_LR_bicubic/X4/0801x4.png ...

Sizes and SHA-256 digests come from TensorFlow Datasets' ``url_checksums/div2k.txt``
(computed from the official URLs); the training archives' digests are confirmed by the
Git-LFS pointers of the Hugging Face mirror ``goodfellowliu/DIV2K``.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from doe_sr.core.errors import UserError
from doe_sr.core.folders import make_output_folder
from doe_sr.sr.download import DownloadError, fetch

__all__ = ["DIV2K_BASE_URL", "DIV2K_FILES", "Div2kLayout", "Remote", "discover", "download_div2k"]

DIV2K_BASE_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"


class Remote(NamedTuple):
    """A file to download: where from, its size in bytes and its SHA-256 (if known)."""

    url: str
    size: int
    sha256: str | None


DIV2K_FILES: dict[str, Remote] = {
    "DIV2K_train_HR.zip": Remote(
        DIV2K_BASE_URL + "DIV2K_train_HR.zip",
        3530603713,
        "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
    ),
    "DIV2K_valid_HR.zip": Remote(
        DIV2K_BASE_URL + "DIV2K_valid_HR.zip",
        448993893,
        "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
    ),
    "DIV2K_train_LR_bicubic_X4.zip": Remote(
        DIV2K_BASE_URL + "DIV2K_train_LR_bicubic_X4.zip",
        246914039,
        "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a",
    ),
    "DIV2K_valid_LR_bicubic_X4.zip": Remote(
        DIV2K_BASE_URL + "DIV2K_valid_LR_bicubic_X4.zip",
        31505881,
        "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553",
    ),
}

# What each archive unpacks to, relative to the DIV2K root.
_CONTENT: dict[str, str] = {
    "DIV2K_train_HR.zip": "DIV2K_train_HR",
    "DIV2K_valid_HR.zip": "DIV2K_valid_HR",
    "DIV2K_train_LR_bicubic_X4.zip": "DIV2K_train_LR_bicubic/X4",
    "DIV2K_valid_LR_bicubic_X4.zip": "DIV2K_valid_LR_bicubic/X4",
}

_PARTS: dict[str, str] = {
    "train_hr": "DIV2K_train_HR.zip",
    "valid_hr": "DIV2K_valid_HR.zip",
    "train_lr_x4": "DIV2K_train_LR_bicubic_X4.zip",
    "valid_lr_x4": "DIV2K_valid_LR_bicubic_X4.zip",
}


@dataclass(frozen=True)
class Div2kLayout:
    """The images found under a DIV2K root.

    ``lr`` maps an HR path to its bicubic LR path at ``scale`` for the HR images that
    have one (the LR archives are optional: LR can also be made on the fly).
    """

    root: Path
    scale: int
    train_hr: tuple[Path, ...]
    valid_hr: tuple[Path, ...]
    lr: Mapping[Path, Path] = field(default_factory=dict)

    def lr_for(self, hr: Path) -> Path | None:
        """The LR image of ``hr``, or ``None`` when the LR archive is not unpacked."""
        return self.lr.get(hr)


def _pngs(folder: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        return ()
    return tuple(sorted(p for p in folder.glob("*.png") if p.is_file()))


def discover(folder: Path, *, scale: int = 4) -> Div2kLayout | None:
    """Recognise a DIV2K root (``DIV2K_train_HR``/``DIV2K_valid_HR`` inside ``folder``).

    Returns ``None`` when ``folder`` has neither HR folder with PNG images in it, so a
    caller can fall back to treating it as a plain image folder.
    """
    folder = Path(folder)
    train = _pngs(folder / "DIV2K_train_HR")
    valid = _pngs(folder / "DIV2K_valid_HR")
    if not train and not valid:
        return None
    lr: dict[Path, Path] = {}
    for split, images in (("train", train), ("valid", valid)):
        lr_dir = folder / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
        for hr in images:
            candidate = lr_dir / f"{hr.stem}x{scale}.png"
            if candidate.is_file():
                lr[hr] = candidate
    return Div2kLayout(root=folder, scale=scale, train_hr=train, valid_hr=valid, lr=lr)


#: DIV2K's archives hold PNGs, which do not compress: a zip declaring more than this many
#: times its own size is not one of them (a zip bomb would fill the disk).
_MAX_UNPACK_RATIO = 4


def _check_unpacked_size(archive: Path, infos: list[zipfile.ZipInfo], target: Path) -> None:
    """Refuse an archive whose declared contents are far larger than it, or than the free space.

    The declared sizes bound what is written: ``zipfile`` stops each entry at its
    declared size (and fails its CRC check if the data run on).
    """
    declared = sum(info.file_size for info in infos)
    bound = _MAX_UNPACK_RATIO * archive.stat().st_size + (1 << 20)
    if declared > bound:
        raise DownloadError(f"{archive.name} declares {declared} bytes of contents, more than "
                            f"{_MAX_UNPACK_RATIO}x its size (a zip bomb?); refusing to unpack it")
    free = shutil.disk_usage(target).free
    if declared > free:
        raise UserError(f"unpacking {archive.name} needs {declared / 1e9:.1f} GB in {target}, only "
                        f"{free / 1e9:.1f} GB are free; free some space or choose another folder")


def _safe_extract(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into ``target``, refusing entries that would land outside it.

    ``zipfile.extractall`` sanitises names, but silently; a DIV2K archive with absolute
    paths, ``..`` components, symlinks or twice the same name (the second would overwrite
    the first) is not the published one, so we stop instead. So do archives declaring far
    more bytes than they hold (`_check_unpacked_size`).
    """
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_unpacked_size(archive, infos, target)
            seen: set[str] = set()
            for info in infos:
                key = info.filename.replace("\\", "/").rstrip("/")
                if key in seen:
                    raise DownloadError(f"{archive.name} holds {info.filename!r} twice; refusing to unpack it")
                seen.add(key)
                name = PurePosixPath(info.filename.replace("\\", "/"))
                mode = info.external_attr >> 16
                unsafe = (
                    name.is_absolute()
                    or ".." in name.parts
                    or (name.parts and ":" in name.parts[0])
                    or stat.S_ISLNK(mode)
                )
                if unsafe or not (root / name).resolve().is_relative_to(root):
                    raise DownloadError(
                        f"{archive.name} contains the unsafe entry {info.filename!r}; "
                        "refusing to unpack it"
                    )
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive.name} is not a valid zip archive ({exc})") from exc


def _select(parts: Iterable[str], lr: bool) -> list[str]:
    names: list[str] = []
    for part in parts:
        if part not in _PARTS:
            raise UserError(
                f"unknown DIV2K part {part!r}; choose from {', '.join(sorted(_PARTS))}"
            )
        names.append(_PARTS[part])
        if lr and part.endswith("_hr"):
            names.append(_PARTS[part.replace("_hr", "_lr_x4")])
    return list(dict.fromkeys(names))  # keep order, drop repeats


def download_div2k(
    dest: Path,
    *,
    parts: Iterable[str] = ("train_hr", "valid_hr"),
    lr: bool = False,
    base_url: str | None = None,
    files: Mapping[str, Remote] | None = None,
    progress: bool = True,
) -> Path:
    """Download and unpack DIV2K archives into ``dest``; return ``dest``.

    Args:
        dest: the DIV2K root to create or complete.
        parts: any of ``train_hr``, ``valid_hr``, ``train_lr_x4``, ``valid_lr_x4``.
        lr: also fetch the bicubic x4 LR archive of each HR part.
        base_url: a mirror holding the same file names (default: the official site).
        files: expected size and SHA-256 per archive name (default ``DIV2K_FILES``);
            a mirror with different archives needs its own table.
        progress: progress bars on stderr.

    Parts already unpacked are skipped. Each archive is verified, unpacked into a
    staging folder and moved into place only when complete, then deleted, so an
    interrupted run resumes the download and never leaves half a folder behind.

    Raises:
        UserError: unknown part, or not enough free disk space.
        DownloadError: network, checksum or archive failure.
    """
    dest = Path(dest)
    table = DIV2K_FILES if files is None else files
    todo = [name for name in _select(parts, lr) if not (dest / _CONTENT[name]).is_dir()]
    if not todo:
        return dest
    missing = [name for name in todo if name not in table]
    if missing:
        raise UserError(f"no size and checksum known for {', '.join(missing)}; add them to files")
    make_output_folder(dest, "--dest", holds="the folder to put DIV2K in", fix="choose a writable folder")

    # The archive and its unpacked copy coexist until the archive is deleted.
    needed = sum(2 * table[name].size for name in todo)
    free = shutil.disk_usage(dest).free
    if free < needed:
        raise UserError(
            f"DIV2K needs about {needed / 1e9:.1f} GB free in {dest}, only "
            f"{free / 1e9:.1f} GB are; free some space or choose another folder"
        )

    for name in todo:
        remote = table[name]
        url = base_url.rstrip("/") + "/" + name if base_url else remote.url
        archive = fetch(url, dest / name, sha256=remote.sha256, size=remote.size, progress=progress)
        content = PurePosixPath(_CONTENT[name])
        with tempfile.TemporaryDirectory(prefix=".unpack-", dir=dest) as staging:
            _safe_extract(archive, Path(staging))
            unpacked = Path(staging) / content
            if not unpacked.is_dir():
                raise DownloadError(f"{name} does not contain the folder {content}")
            final = dest / content
            final.parent.mkdir(parents=True, exist_ok=True)
            unpacked.rename(final)
        archive.unlink()
    return dest
