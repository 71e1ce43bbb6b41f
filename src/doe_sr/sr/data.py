"""Images -> HR/LR pairs -> train/val/test splits -> ``tf.data`` patch pipelines.

Conventions (those of the SR literature, so that numbers are comparable with papers):

* HR images are cropped to a multiple of the scale (``modcrop``);
* LR = MATLAB-compatible bicubic ``imresize(HR, 1/scale)`` with antialiasing, rounded
  to 8 bits (:mod:`doe_sr.sr.resize`), unless official LR images exist: DIV2K's
  ``DIV2K_*_LR_bicubic/X4`` folders (found automatically) or ``data.lr_source``;
* SR-NET's input is the LR image upscaled back to HR size with the same bicubic
  (as in the seed, and in SRCNN/VDSR); this same image is the bicubic baseline.

Where the images come from (``data.source``):

* ``sample``: scikit-image's bundled images (no download);
* a DIV2K root (``DIV2K_train_HR``/``DIV2K_valid_HR`` inside, see :mod:`doe_sr.sr.div2k`).
  ``protocol: split`` (the seed's) pools all 900 HR images and splits them 8:1:1;
  ``protocol: div2k`` (the official one) trains on the 800 training images and splits
  the 100 validation images by name: 0801-0850 validate, 0851-0900 test, so the test
  images are the same for every seed and every codebase that follows this convention;
* any other folder of HR images (split by ``data.split``).

The split is by image, deterministic for a given seed, and independent of the training
seed, so every run of a study (and every replicate) sees the same train/val/test images.

Each image is decoded and resized once. A pair is kept as one ``H x W x 6`` uint8
array (bicubic input in channels 0-2, HR in 3-5) so that one crop of it is an aligned
input/target patch. With ``cache: memory`` the arrays live in RAM; with ``cache: disk``
they are ``.npy`` files under ``$DOE_SR_CACHE/pairs`` (keyed by the source file, its
size and modification time, the scale and the crop), memory-mapped, and reused by
every later run and worker: DIV2K's 900 images need about 16 GB of disk, not RAM.
Patches are cut in the ``tf.data`` graph (random aligned crops, flips and 90-degree
rotations), so no Python code runs per patch. Pre-upsampling models (SR-NET) get
(bicubic patch, HR patch); post-upsampling models (EDSR, RRDBNet) get (LR patch, HR
patch), the LR patch being the LR pixels under the HR patch (``patch_dataset(input="lr")``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doe_sr.sr.download import default_cache_dir
from doe_sr.core.errors import UserError
from doe_sr.sr.resize import imresize
from doe_sr.study.schema import DataConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

# scikit-image ships these inside its wheel (no download). Greyscale ones become RGB.
SAMPLE_IMAGES = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
    "retina.jpg", "motorcycle_left.png", "motorcycle_right.png", "color.png",
    "camera.png", "coins.png", "moon.png", "page.png", "text.png", "brick.png", "grass.png",
    "gravel.png", "cell.png", "clock_motion.png",
)

#: Bump when the content of cached pair files changes meaning (invalidates old caches).
CACHE_VERSION = 1
#: ``cache: memory`` refuses sets whose pairs would take more than this share of free RAM.
MEMORY_SHARE = 0.5


class Pair:
    """One image: HR ground truth and the bicubic-upscaled LR (the network input).

    The pixels are kept as one HxWx6 uint8 ``stack`` (bicubic, then HR), in memory or in
    a disk-cache ``.npy`` file (``path``, pixel data from byte ``offset``). A cached pair
    memory-maps its files on each access instead of holding them open: a study of 900
    images must not hold 1800 file descriptors.
    """

    def __init__(self, name: str, hr: np.ndarray | None = None, lr: np.ndarray | None = None,
                 bicubic: np.ndarray | None = None, *, stack: np.ndarray | None = None,
                 path: Path | None = None, lr_path: Path | None = None, offset: int = 0):
        if stack is None and hr is not None and bicubic is not None:
            stack = np.concatenate([bicubic, hr], axis=-1)
        if stack is None and path is None:
            raise ValueError("a Pair needs hr and bicubic, a stack, or a cache path")
        self.name = name
        self.path, self.lr_path, self.offset = path, lr_path, offset
        self._stack, self._lr = stack, lr

    @property
    def stack(self) -> np.ndarray:
        """HxWx6 uint8 (bicubic, HR): one crop of it is an aligned input/target patch."""
        return self._stack if self._stack is not None else np.load(self.path, mmap_mode="r")

    @property
    def hr(self) -> np.ndarray:  # HxWx3 uint8, H and W multiples of the scale
        return self.stack[..., 3:]

    @property
    def bicubic(self) -> np.ndarray:  # HxWx3 uint8 = imresize(lr, scale)
        return self.stack[..., :3]

    @property
    def lr(self) -> np.ndarray:  # (H/s)x(W/s)x3 uint8
        if self._lr is not None:
            return self._lr
        assert self.lr_path is not None
        return np.load(self.lr_path, mmap_mode="r")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of HR, without reading the pixels of a cached pair."""
        return tuple(self.stack.shape[:2])  # a memory map reads only the header

    def __repr__(self) -> str:
        where = f", cached at {self.path}" if self.path else ""
        return f"Pair({self.name!r}, {self.shape[1]}x{self.shape[0]}{where})"


@dataclass
class Splits:
    """The study's image pairs, split by image."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    scale: int
    source: str
    fingerprint: str = field(default="")
    protocol: str = "split"
    lr_origin: str = "bicubic"  # bicubic | official | mixed
    cache: str = "memory"
    identity: "DataIdentity | None" = None  # what the images are (see data_identity)

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source, "scale": self.scale, "fingerprint": self.fingerprint,
            "protocol": self.protocol, "lr_origin": self.lr_origin, "cache": self.cache,
            "train": [p.name for p in self.train], "val": [p.name for p in self.val],
            "test": [p.name for p in self.test],
        }


def to_rgb(img: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 (alpha dropped) -> HxWx3 uint8."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        elif np.issubdtype(img.dtype, np.floating):
            img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        else:  # 16-bit PNGs
            img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255.0).round().astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def read_image(path: Path) -> np.ndarray:
    """Read any PNG/JPEG as HxWx3 uint8 (header checked against the pixel cap: `doe_sr.sr.images`)."""
    from doe_sr.sr.images import read_image as _read

    return _read(path)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels (see `doe_sr.sr.images`)."""
    from doe_sr.sr.images import image_size as _size

    return _size(path)


def _not_a_folder(key: str, folder: Path, what: str) -> UserError:
    """The one-line refusal of a ``data.*`` path that is not a folder: missing, or a file."""
    if folder.exists():
        return UserError(f"{key}: {folder} is a file, not a folder; point it at the folder that holds {what}")
    return UserError(f"{key}: folder {folder} does not exist; point it at a folder of {what}")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (sorted, so the split is reproducible)."""
    if not folder.is_dir():
        raise _not_a_folder("data.source", folder, "HR images (or use source: sample)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"data.source: no PNG/JPEG images in {folder}; put the HR images directly in it "
                        "or point it at a DIV2K folder (with DIV2K_train_HR/ inside)")
    return files


def sample_images() -> list[tuple[str, np.ndarray]]:
    """The bundled sample set: scikit-image's images, read from its package folder."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for fname in SAMPLE_IMAGES:
        path = folder / fname
        if path.exists():
            out.append((Path(fname).stem, read_image(path)))
    if len(out) < 3:
        raise UserError("scikit-image's bundled images were not found; reinstall scikit-image")
    return out


def crop_box(shape: tuple[int, ...], max_side: int | None, multiple: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a centred crop to at most ``max_side`` per side, with
    offsets and sizes multiples of ``multiple`` (so the same box, divided by the scale,
    crops a given LR image consistently)."""
    h, w = shape[:2]
    th = min(h, max_side or h) // multiple * multiple
    tw = min(w, max_side or w) // multiple * multiple
    top = (h - th) // 2 // multiple * multiple
    left = (w - tw) // 2 // multiple * multiple
    return top, left, th, tw


def make_pair(name: str, hr: np.ndarray, scale: int, *, max_side: int | None = None,
              lr: np.ndarray | None = None) -> Pair:
    """HR -> (HR cropped to the scale, LR, bicubic-upscaled LR).

    With a given ``lr`` (an official LR set), its size must be HR's divided by the scale,
    rounded down or up (MATLAB's ``imresize`` rounds up when HR is not a multiple).
    LR pixel ``i`` covers HR pixels ``s*i .. s*i+s-1`` either way, so cropping both to
    the same box keeps them aligned.
    """
    smallest = 4 * scale  # the network needs a few LR pixels per side
    if min(hr.shape[:2]) < smallest:  # say the file's own size: the cropped one may be 0x0
        raise UserError(f"image {name} is {hr.shape[1]}x{hr.shape[0]}, too small for x{scale} (it needs at "
                        f"least {smallest}x{smallest} pixels); remove it from the data folder")
    top, left, th, tw = crop_box(hr.shape, max_side, scale)
    if lr is not None:
        floor = (hr.shape[0] // scale, hr.shape[1] // scale)
        ceil = (-(-hr.shape[0] // scale), -(-hr.shape[1] // scale))
        if lr.shape[:2] not in (floor, ceil):
            raise UserError(f"LR image for {name} is {lr.shape[1]}x{lr.shape[0]}, expected "
                            f"{floor[1]}x{floor[0]} for x{scale} of its {hr.shape[1]}x{hr.shape[0]} HR; "
                            "check data.lr_source (or the DIV2K LR folder) and data.scale")
        lr = lr[top // scale:(top + th) // scale, left // scale:(left + tw) // scale]
    hr = np.ascontiguousarray(hr[top:top + th, left:left + tw])
    if min(hr.shape[:2]) < smallest:  # only max_side can shrink it this far
        raise UserError(f"data.max_side {max_side} crops image {name} to {hr.shape[1]}x{hr.shape[0]}, too small "
                        f"for x{scale}; raise data.max_side")
    if lr is None:
        lr = imresize(hr, 1.0 / scale)
    lr = np.ascontiguousarray(lr)
    stack = np.empty(hr.shape[:2] + (6,), dtype=np.uint8)
    stack[..., :3] = imresize(lr, float(scale))
    stack[..., 3:] = hr
    return Pair(name, lr=lr, stack=stack)


def split_indices(n: int, ratios: tuple[int, int, int], seed: int) -> tuple[list[int], list[int], list[int]]:
    """Deterministic split of n items by the ratios, each part at least one item."""
    if n < 3:
        raise UserError(f"data.source: {n} image(s) cannot be split into train/val/test; provide at least 3")
    order = np.random.default_rng(seed).permutation(n).tolist()
    total = sum(ratios)
    n_val = max(1, round(n * ratios[1] / total))
    n_test = max(1, round(n * ratios[2] / total))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise UserError(f"data.split {list(ratios)} leaves no training image out of {n}; add images")
    return sorted(order[:n_train]), sorted(order[n_train:n_train + n_val]), sorted(order[n_train + n_val:])


# -- sources -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    """One HR image to prepare: from a file (with its LR file, if any) or in memory."""

    name: str
    path: Path | None = None
    lr_path: Path | None = None
    image: np.ndarray | None = None

    def identity(self) -> str:
        """What the cached pair depends on; a changed file gets a new cache entry."""
        if self.path is None:
            assert self.image is not None
            return "array:" + hashlib.sha256(self.image.tobytes()).hexdigest()
        parts = []
        for p in (self.path, self.lr_path):
            if p is not None:
                st = p.stat()
                parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)


def _lr_in_folder(folder: Path, name: str, scale: int) -> Path:
    cand = [folder / f"{name}x{scale}{s}" for s in (".png", ".jpg")] + [folder / f"{name}.png"]
    found = next((c for c in cand if c.exists()), None)
    if found is None:
        raise UserError(f"data.lr_source: no LR image for {name} in {folder} (looked for {cand[0].name} "
                        f"and {cand[-1].name}); add it or remove data.lr_source to make LR by bicubic")
    return found


def _sources(cfg: DataConfig) -> tuple[list[_Item], tuple[list[int], list[int], list[int]], str]:
    """Every HR image of the study, its train/val/test indices, and the protocol used."""
    if cfg.source == "sample":
        if cfg.protocol == "div2k":
            raise UserError("data.protocol: div2k needs data.source to be a DIV2K folder; use protocol: split")
        items = [_Item(name, image=img) for name, img in sorted(sample_images(), key=lambda t: t[0])]
        return items, split_indices(len(items), cfg.split, cfg.seed), "split"
    folder = cfg.source_path()
    assert folder is not None
    if not folder.is_dir():
        unset = re.findall(r"\$\{?(\w+)", str(folder))
        if unset:  # os.path.expandvars leaves unknown variables as they were
            raise UserError(f"data.source: environment variable {unset[0]} is not set; export it as the path of "
                            f"your DIV2K or HR image folder (e.g. export {unset[0]}=~/data/DIV2K)")
        raise _not_a_folder("data.source", folder, "HR images, a DIV2K folder (`doe-sr data download div2k` "
                            "makes one) or use source: sample")
    explicit_lr = Path(cfg.lr_source).expanduser() if cfg.lr_source else None
    if explicit_lr is not None and not explicit_lr.is_dir():
        raise _not_a_folder("data.lr_source", explicit_lr, "LR images (or remove the key to make LR by bicubic)")

    from doe_sr.sr.div2k import discover

    layout = discover(folder, scale=cfg.scale)
    if layout is None:
        if cfg.protocol == "div2k":
            raise UserError(f"data.protocol: div2k needs DIV2K_train_HR/ and DIV2K_valid_HR/ inside {folder}; "
                            "use protocol: split for a plain folder of images")
        paths = list_images(folder)
        items = [_Item(p.stem, path=p, lr_path=_lr_in_folder(explicit_lr, p.stem, cfg.scale) if explicit_lr else None)
                 for p in paths]
        return items, split_indices(len(items), cfg.split, cfg.seed), "split"

    def item(hr: Path) -> _Item:
        lr = _lr_in_folder(explicit_lr, hr.stem, cfg.scale) if explicit_lr else layout.lr_for(hr)
        return _Item(hr.stem, path=hr, lr_path=lr)

    train, valid = [item(p) for p in layout.train_hr], [item(p) for p in layout.valid_hr]
    if cfg.protocol == "split":
        items = train + valid
        return items, split_indices(len(items), cfg.split, cfg.seed), "split"
    if not train or len(valid) < 2:
        raise UserError(f"data.protocol: div2k needs DIV2K_train_HR/ and at least 2 images in DIV2K_valid_HR/ "
                        f"inside {folder} (found {len(train)} and {len(valid)}); download both parts")
    half = len(valid) // 2
    n = len(train)
    idx = (list(range(n)), list(range(n, n + half)), list(range(n + half, n + len(valid))))
    return train + valid, idx, "div2k"

# -- identity: what the images are ---------------------------------------------------------
#: How LR images are made when none are given: MATLAB's antialiased bicubic (resize.py).
LR_METHOD = "matlab-bicubic-antialias"
#: Files changed less than this many seconds ago are hashed but their digest is not
#: cached: a rewrite within the filesystem's timestamp granularity could keep size and
#: mtime (git's "racy clean" problem).
_RACY_SECONDS = 2.0
_HASH_CHUNK = 4 << 20


@dataclass(frozen=True)
class DataIdentity:
    """What a study's data *are*, independent of where they live.

    ``digest`` covers every image's name and content hash (HR, and LR when given), the
    split (which names are train/val/test) and the LR protocol (scale, ``max_side``
    crop, given or bicubic LR). Two folders with the same files at different paths
    have the same digest; one changed byte, a renamed image or another split does not.
    """

    digest: str
    name: str  # "sample" or the source folder's name
    source: str  # data.source as written (a path, or "sample")
    images: tuple[tuple[str, str, str], ...]  # (name, HR sha256, LR sha256 or "")
    split: dict[str, list[str]]
    protocol: dict[str, object]
    nbytes: int = 0

    def profile(self) -> dict[str, object]:
        """Counts and the LR protocol: what MLflow shows as the dataset's profile."""
        return {"images": len(self.images), **{part: len(names) for part, names in self.split.items()},
                "bytes": self.nbytes, **self.protocol}

    def schema(self) -> dict[str, object]:
        """The split by image name: what MLflow shows as the dataset's schema."""
        return {"split": self.split}


def _digest_cache_dir() -> Path:
    return default_cache_dir() / "digests"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB chunks, cached by (path, size, mtime).

    Why bytes, not pixels: hashing streams at about 1.6 GB/s per core (measured with
    hashlib's SHA-NI code), far faster than decoding the PNGs, and identifies the file
    exactly. Measured on a 2-core machine (files in the page cache, two hashing
    threads): 400 MB in 0.22 s (1.9 GB/s), so DIV2K's 900 HR images and their X4 LR
    (about 4 GB) take about 2 s, or the disk's read time on a cold cache.
    Later passes only ``stat`` each file (100 files: 0.03 s): the digest is kept in
    ``$DOE_SR_CACHE/digests`` under the file's path, size and modification time (an
    unwritable cache only costs the hashing).
    """
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32]
    entry = _digest_cache_dir() / key
    try:
        cached = entry.read_text().strip()
        if len(cached) == 64:
            return cached
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if time.time() - st.st_mtime > _RACY_SECONDS:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f".{key}.{os.getpid()}.tmp")
            tmp.write_text(digest)
            os.replace(tmp, entry)
        except OSError:  # a read-only cache: the digest is still right, only slower next time
            pass
    return digest


def _item_hashes(item: _Item) -> tuple[str, str, int]:
    """(HR sha256, LR sha256 or "", bytes hashed) of one image."""
    if item.path is None:
        assert item.image is not None
        img = np.ascontiguousarray(item.image)
        head = f"{img.shape}:{img.dtype}".encode()
        return hashlib.sha256(head + img.tobytes()).hexdigest(), "", img.nbytes
    size = item.path.stat().st_size
    lr = ""
    if item.lr_path is not None:
        lr = file_sha256(item.lr_path)
        size += item.lr_path.stat().st_size
    return file_sha256(item.path), lr, size


def data_identity(items: list[_Item], parts: tuple[list[int], list[int], list[int]], protocol: str,
                  cfg: DataConfig, *, workers: int | None = None) -> DataIdentity:
    """The :class:`DataIdentity` of a study's images, hashed in ``workers`` threads."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        hashes = list(pool.map(_item_hashes, items))
    images = tuple((it.name, hr, lr) for it, (hr, lr, _) in zip(items, hashes))
    split = {part: [items[i].name for i in idx] for part, idx in zip(("train", "val", "test"), parts)}
    with_lr = sum(1 for it in items if it.lr_path is not None)
    lr = "bicubic" if with_lr == 0 else "given" if with_lr == len(items) else "mixed"
    proto = {"protocol": protocol, "scale": cfg.scale, "max_side": cfg.max_side, "modcrop": True,
             "lr": lr, "lr_method": LR_METHOD if with_lr < len(items) else "given"}
    key = json.dumps({"images": images, "split": split, "protocol": proto}, sort_keys=True)
    source = cfg.source
    name = "sample" if source == "sample" else (Path(source).name or str(source))
    return DataIdentity(digest=hashlib.sha256(key.encode()).hexdigest()[:32], name=name, source=source,
                        images=images, split=split, protocol=proto, nbytes=sum(n for *_, n in hashes))


def check_patch_size(splits: Splits, patch_size: int, max_side: int | None = None, *, scale: int | None = None,
                     input: str = "bicubic") -> None:
    """Refuse, before anything trains, a patch larger than a training image, or one that
    a post-upsampling model (``input="lr"``) cannot be given.

    Every training image (after the ``max_side`` crop and the crop to a multiple of the
    scale) must hold one patch; otherwise every run of the study would fail, or would
    silently never see that image. A model that takes the LR image is trained on LR
    patches of ``patch_size / scale`` pixels, so the patch must be a multiple of the
    scale (``scale`` defaults to the splits' scale).
    """
    if input == "lr":
        check_lr_patch(patch_size, scale if scale is not None else splits.scale)
    if not splits.train:
        return
    smallest = min(splits.train, key=lambda p: min(p.shape))
    h, w = smallest.shape
    if min(h, w) >= patch_size:
        return
    if max_side is not None and max_side < patch_size:
        raise UserError(f"data.patch_size {patch_size} is larger than data.max_side {max_side}, which crops every "
                        f"image to at most {max_side}x{max_side}; use patch_size <= {max_side} or raise max_side")
    raise UserError(f"data.patch_size {patch_size} is larger than training image {smallest.name} ({w}x{h} after "
                    f"cropping to a multiple of the scale); use patch_size <= {min(h, w)} or remove that image")


def check_lr_patch(patch_size: int, scale: int) -> None:
    """Refuse an HR patch that is not a whole number of LR pixels (post-upsampling models)."""
    if patch_size % scale:
        lower, upper = patch_size // scale * scale, -(-patch_size // scale) * scale
        fix = f"use patch_size {upper}" if lower < scale else f"use patch_size {lower} or {upper}"
        raise UserError(f"data.patch_size {patch_size} is not a multiple of the scale {scale}, which a model that "
                        f"takes the LR image needs (its input patch is patch_size/{scale} LR pixels); {fix}")


# -- preparation and caching -------------------------------------------------------------
def _prepare(item: _Item, cfg: DataConfig) -> Pair:
    hr = item.image if item.image is not None else read_image(item.path)  # type: ignore[arg-type]
    lr = read_image(item.lr_path) if item.lr_path is not None else None
    return make_pair(item.name, hr, cfg.scale, max_side=cfg.max_side, lr=lr)


def cache_key(item_identity: str, cfg: DataConfig) -> str:
    """The cache file stem of one prepared pair."""
    key = repr((CACHE_VERSION, item_identity, cfg.scale, cfg.max_side))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _save_atomic(path: Path, array: np.ndarray) -> None:
    # Write then rename: a concurrent worker or a crash never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _load_cached(name: str, stack_path: Path, lr_path: Path) -> Pair:
    stack = np.load(stack_path, mmap_mode="r")
    if stack.ndim != 3 or stack.shape[2] != 6 or stack.dtype != np.uint8:
        raise ValueError(f"expected an HxWx6 uint8 array, found {stack.shape} {stack.dtype}")
    np.load(lr_path, mmap_mode="r")  # fail now, not in the middle of a run
    return Pair(name, path=stack_path, lr_path=lr_path, offset=int(stack.offset))


def _prepare_cached(item: _Item, cfg: DataConfig, folder: Path) -> Pair:
    """A pair from the disk cache, made and stored first if it is not there yet."""
    key = cache_key(item.identity(), cfg)
    stack_path, lr_path = folder / f"{key}.npy", folder / f"{key}.lr.npy"
    if not (stack_path.exists() and lr_path.exists()):
        pair = _prepare(item, cfg)
        _save_atomic(lr_path, pair.lr)
        _save_atomic(stack_path, pair.stack)  # written last: its presence marks a complete entry
    try:
        return _load_cached(item.name, stack_path, lr_path)
    except (ValueError, OSError) as exc:  # truncated by a full disk, or a foreign file
        raise UserError(f"cache file {stack_path} is unreadable ({exc}); delete it and run again") from None


def _check_memory(items: list[_Item], cfg: DataConfig) -> None:
    """Refuse ``cache: memory`` for a set that cannot fit, before decoding any of it."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: nothing reliable to compare with
        return
    total = 0
    for it in items:
        h, w = it.image.shape[:2] if it.image is not None else image_size(it.path)  # type: ignore[arg-type]
        if cfg.max_side:
            h, w = min(h, cfg.max_side), min(w, cfg.max_side)
        total += h * w * (6 + 3 / cfg.scale**2)
    # The patch pipeline copies the training pairs once more into its buffer.
    total *= 2
    if total > MEMORY_SHARE * free:
        raise UserError(f"data.cache: memory needs about {total / 2**30:.1f} GiB for these "
                        f"{len(items)} images but only {free / 2**30:.1f} GiB of RAM are free; "
                        "set data.cache: disk (pairs memory-mapped from $DOE_SR_CACHE/pairs) or data.max_side")


def pair_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where ``cache: disk`` keeps prepared pairs: ``cache_dir`` or ``$DOE_SR_CACHE/pairs``."""
    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "pairs"


def load_splits(cfg: DataConfig, *, cache_dir: Path | None = None, workers: int | None = None) -> Splits:
    """Discover, split and prepare all image pairs of a study's data section.

    Images are decoded and resized in ``workers`` threads (default: one per CPU; PNG
    decoding and the resize's matrix products release the GIL). With ``cache: disk`` a
    second call, in this or any other process, only memory-maps the cached files.
    """
    items, (tr, va, te), protocol = _sources(cfg)
    identity = data_identity(items, (tr, va, te), protocol, cfg, workers=workers)
    if cfg.cache == "disk":
        folder = pair_cache_dir(cache_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"data.cache: disk cannot create {folder} ({exc}); set DOE_SR_CACHE to a "
                            "writable folder") from None

        def job(i: int) -> Pair:
            return _prepare_cached(items[i], cfg, folder)
    else:
        _check_memory(items, cfg)

        def job(i: int) -> Pair:
            return _prepare(items[i], cfg)

    order = tr + va + te
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        prepared = dict(zip(order, pool.map(job, order)))
    with_lr = sum(1 for i in order if items[i].lr_path is not None)
    lr_origin = "bicubic" if with_lr == 0 else "official" if with_lr == len(order) else "mixed"
    return Splits(train=[prepared[i] for i in tr], val=[prepared[i] for i in va], test=[prepared[i] for i in te],
                  scale=cfg.scale, source=cfg.source, fingerprint=identity.digest, protocol=protocol,
                  lr_origin=lr_origin, cache=cfg.cache, identity=identity)


# -- training patches --------------------------------------------------------------------
INPUTS = ("bicubic", "lr")


def _augment(tf, patch, rand):
    """One of the 8 dihedral transforms (EDSR's flips and 90-degree rotations)."""
    patch = tf.image.stateless_random_flip_left_right(patch, seed=rand)
    return tf.image.rot90(patch, k=tf.cast(rand[0] % 4, tf.int32))


def _augment_both(tf, lr, hr, rand):
    """The same one of the 8 dihedral transforms applied to an LR patch and its HR patch.

    The flip and the number of quarter turns are taken from the bits of ``rand`` (one
    draw each) rather than from ``stateless_random_flip_left_right``, so that the two
    patches provably get the same transform whatever their sizes.
    """
    flip = tf.equal(rand[0] % 2, 1)
    k = tf.cast(rand[1] % 4, tf.int32)

    def one(x):
        x = tf.cond(flip, lambda: tf.reverse(x, [1]), lambda: x)
        return tf.image.rot90(x, k=k)

    return one(lr), one(hr)


def patch_dataset(pairs: list[Pair], *, patch_size: int, batch_size: int, seed: int, augment: bool = True,
                  patches_per_read: int = 16, shuffle_buffer: int = 1024, input: str = "bicubic",
                  scale: int | None = None):
    """An infinite ``tf.data.Dataset`` of (input patch, HR patch) float32 batches in [0, 1].

    ``input="bicubic"`` (pre-upsampling models such as SR-NET): the input patch is the
    bicubic-upscaled image at the HR patch's place, both ``patch_size`` pixels square.
    ``input="lr"`` (post-upsampling models such as EDSR and RRDBNet): the input patch is
    the LR image's ``patch_size/scale`` square whose pixels cover the HR patch exactly
    (the HR crop starts at a multiple of ``scale``: HR ``[s*ly:s*ly+p, s*lx:s*lx+p]``
    goes with LR ``[ly:ly+p/s, lx:lx+p/s]``); ``scale`` is required and ``patch_size``
    must be a multiple of it. The bicubic channels are not read at all in this mode.

    Images are drawn with probability proportional to their area (so every HR pixel is
    equally likely to be seen), then a random aligned crop, and, with ``augment``, a
    random flip and 90-degree rotation (the 8 dihedral transforms used by EDSR and later
    SR papers), the same for input and target. All of it runs in the TensorFlow graph
    with stateless random ops seeded from ``seed``, so a run is reproducible.

    Pairs in memory are sliced out of one flat buffer, one patch per draw (in LR mode the
    buffer holds the HR and LR pixels, not the 6-channel stacks). Pairs cached on disk
    are read whole (``tf.io.read_file``, from the page cache after the first epoch),
    ``patches_per_read`` patches are cut from each read, and a shuffle buffer mixes
    patches of different images before batching.
    """
    if input not in INPUTS:
        raise ValueError(f"patch_dataset: input must be one of {INPUTS}, not {input!r}")
    if input == "lr":
        if scale is None:
            raise ValueError("patch_dataset(input='lr') needs the scale")
        check_lr_patch(patch_size, scale)
    import tensorflow as tf

    usable = [p for p in pairs if min(p.shape) >= patch_size]
    if not usable:
        raise UserError(f"data.patch_size {patch_size} is larger than every training image; use a smaller patch")
    shapes = np.array([p.shape for p in usable], dtype=np.int64)
    areas_t = tf.constant(np.cumsum(shapes[:, 0] * shapes[:, 1]).astype(np.int64))
    on_disk = all(p.path is not None for p in usable)

    def pick(r):
        return tf.searchsorted(areas_t, [r % areas_t[-1]], side="right")[0]

    if input == "lr":
        assert scale is not None
        ds = _lr_patches(tf, usable, shapes, pick, on_disk, patch_size=patch_size, scale=scale, seed=seed,
                         augment=augment, patches_per_read=patches_per_read, shuffle_buffer=shuffle_buffer)
    else:
        ds = _bicubic_patches(tf, usable, shapes, pick, on_disk, patch_size=patch_size, seed=seed,
                              augment=augment, patches_per_read=patches_per_read, shuffle_buffer=shuffle_buffer)

    if input == "lr":
        def to_float(x, y):
            return tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.float32) / 255.0
    else:
        def to_float(batch):
            batch = tf.cast(batch, tf.float32) / 255.0
            return batch[..., :3], batch[..., 3:]

    # Casting whole batches (not single patches) keeps the per-element work in the graph small.
    ds = ds.batch(batch_size, drop_remainder=True).map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _bicubic_patches(tf, usable, shapes, pick, on_disk, *, patch_size, seed, augment, patches_per_read,
                     shuffle_buffer):
    """Unbatched HxWx6 (bicubic, HR) patches: one crop of the stack is an aligned pair."""
    shapes_t = tf.constant(shapes)

    def cut(img, rand):
        out = tf.image.stateless_random_crop(img, [patch_size, patch_size, 6], seed=rand[0:2])
        return _augment(tf, out, rand[2:4]) if augment else out

    rng = tf.data.Dataset.random(seed=seed).map(tf.abs)
    if on_disk:
        files = tf.constant([str(p.path) for p in usable])
        offsets = tf.constant([p.offset for p in usable], dtype=tf.int64)
        k = max(1, patches_per_read)

        def read(rand):
            i = pick(rand[0])
            raw = tf.io.decode_raw(tf.io.read_file(files[i]), tf.uint8)
            h, w = shapes_t[i][0], shapes_t[i][1]
            img = tf.reshape(raw[offsets[i]:offsets[i] + h * w * 6], tf.stack([h, w, 6]))
            return tf.stack([cut(img, rand[1 + 4 * j:5 + 4 * j]) for j in range(k)])

        ds = rng.batch(1 + 4 * k, drop_remainder=True)
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    stacks = [np.ascontiguousarray(p.stack) for p in usable]
    offsets = tf.constant(np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1] * 6)[:-1]]).astype(np.int64))
    # A variable rather than a constant: large buffers must not be serialised into the graph.
    buffer = tf.Variable(np.concatenate([s.ravel() for s in stacks]), trainable=False, dtype=tf.uint8)
    del stacks

    def slice_one(rand):
        i = pick(rand[0])
        h, w = shapes_t[i][0], shapes_t[i][1]
        img = tf.reshape(buffer[offsets[i]:offsets[i] + h * w * 6], tf.stack([h, w, 6]))
        return cut(img, rand[1:5])

    return rng.batch(5, drop_remainder=True).map(slice_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _lr_header(pair: Pair) -> tuple[tuple[int, int], int]:
    """(LR height and width, byte offset of its pixels) of a pair, reading only a header."""
    lr = pair.lr
    if lr.dtype != np.uint8 or lr.ndim != 3 or lr.shape[2] != 3 or not lr.flags.c_contiguous:
        raise ValueError(f"LR image of {pair.name} must be a C-ordered HxWx3 uint8 array, "
                         f"found {lr.shape} {lr.dtype}")
    return (int(lr.shape[0]), int(lr.shape[1])), int(getattr(lr, "offset", 0))


def _lr_patches(tf, usable, shapes, pick, on_disk, *, patch_size, scale, seed, augment, patches_per_read,
                shuffle_buffer):
    """Unbatched (LR patch, HR patch) uint8 pairs, the LR patch covering the HR patch exactly.

    Only the rows a patch needs are sliced out of the flat pixels (a patch of a large
    image touches ``patch_size`` rows of it, not the whole image).
    """
    p, q, s = patch_size, patch_size // scale, scale
    headers = [_lr_header(pair) for pair in usable]
    lr_shapes = np.array([hw for hw, _ in headers], dtype=np.int64)
    # Positions ly (lx) with LR rows ly..ly+q-1 and HR rows s*ly..s*ly+p-1 both inside the image.
    room = np.minimum(lr_shapes, shapes // s) - q + 1
    if (room < 1).any():
        bad = usable[int(np.argwhere((room < 1).any(axis=1))[0][0])]
        raise ValueError(f"LR image of {bad.name} is smaller than its HR image divided by {s}")
    room_t, width_t, lr_width_t = tf.constant(room), tf.constant(shapes[:, 1]), tf.constant(lr_shapes[:, 1])

    def cut(hr_rows, lr_rows, i, rand):
        """rand: ly, lx, flip, turns. ``*_rows(i, first, n)``: n full rows of image i."""
        ly, lx = rand[0] % room_t[i][0], rand[1] % room_t[i][1]
        hr = hr_rows(i, s * ly, p)[:, s * lx:s * lx + p]
        lr = lr_rows(i, ly, q)[:, lx:lx + q]
        if augment:
            lr, hr = _augment_both(tf, lr, hr, rand[2:4])
        return tf.ensure_shape(lr, [q, q, 3]), tf.ensure_shape(hr, [p, p, 3])

    def rows(flat, start, width, channels, first, n):
        begin = start + first * width * channels
        return tf.reshape(flat[begin:begin + n * width * channels], tf.stack([n, width, channels]))

    rng = tf.data.Dataset.random(seed=seed).map(tf.abs)
    if on_disk:
        files = tf.constant([str(pair.path) for pair in usable])
        lr_files = tf.constant([str(pair.lr_path) for pair in usable])
        offsets = tf.constant([pair.offset for pair in usable], dtype=tf.int64)
        lr_offsets = tf.constant([off for _, off in headers], dtype=tf.int64)
        k = max(1, patches_per_read)

        def read(rand):
            i = pick(rand[0])
            raw = tf.io.decode_raw(tf.io.read_file(files[i]), tf.uint8)
            lr_raw = tf.io.decode_raw(tf.io.read_file(lr_files[i]), tf.uint8)

            def hr_rows(i, first, n):  # the stack's HR channels
                return rows(raw, offsets[i], width_t[i], 6, first, n)[..., 3:]

            def lr_rows(i, first, n):
                return rows(lr_raw, lr_offsets[i], lr_width_t[i], 3, first, n)

            lrs, hrs = zip(*[cut(hr_rows, lr_rows, i, rand[1 + 4 * j:5 + 4 * j]) for j in range(k)])
            return tf.stack(lrs), tf.stack(hrs)

        ds = rng.batch(1 + 4 * k, drop_remainder=True)
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    hr_sizes = shapes[:, 0] * shapes[:, 1] * 3
    lr_sizes = lr_shapes[:, 0] * lr_shapes[:, 1] * 3
    starts = np.concatenate([[0], np.cumsum(np.concatenate([hr_sizes, lr_sizes]))[:-1]]).astype(np.int64)
    hr_off, lr_off = tf.constant(starts[:len(usable)]), tf.constant(starts[len(usable):])
    # One variable (not a constant: large buffers must not be serialised into the graph)
    # holding every HR image, then every LR image; the bicubic channels are not needed.
    flat = np.concatenate([np.asarray(pair.hr).ravel() for pair in usable]
                          + [np.asarray(pair.lr).ravel() for pair in usable])
    buffer = tf.Variable(flat, trainable=False, dtype=tf.uint8)
    del flat

    def hr_rows(i, first, n):
        return rows(buffer, hr_off[i], width_t[i], 3, first, n)

    def lr_rows(i, first, n):
        return rows(buffer, lr_off[i], lr_width_t[i], 3, first, n)

    def slice_one(rand):
        return cut(hr_rows, lr_rows, pick(rand[0]), rand[1:5])

    return rng.batch(5, drop_remainder=True).map(slice_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
