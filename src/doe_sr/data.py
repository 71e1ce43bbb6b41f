"""Images -> HR/LR pairs -> train/val/test splits -> ``tf.data`` patch pipelines.

Conventions (those of the SR literature, so that numbers are comparable with papers):

* HR images are cropped to a multiple of the scale (``modcrop``);
* LR = MATLAB-compatible bicubic ``imresize(HR, 1/scale)`` with antialiasing, rounded
  to 8 bits, unless the study gives a folder of LR images (DIV2K's official X4 set);
* SR-NET's input is the LR image upscaled back to HR size with the same bicubic
  (as in the seed, and in SRCNN/VDSR); this same image is the bicubic baseline.

The split is by image, deterministic for a given seed, and independent of the training
seed, so every run of a study (and every replicate) sees the same train/val/test images.

Each image pair is decoded and resized once; patches are cut in the ``tf.data`` graph
(random aligned crops, flips and 90-degree rotations) from a flat uint8 buffer, so no
Python code runs per patch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .resize import imresize
from .study import DataConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

# scikit-image ships these inside its wheel (no download). Greyscale ones become RGB.
SAMPLE_IMAGES = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
    "retina.jpg", "motorcycle_left.png", "motorcycle_right.png", "color.png",
    "camera.png", "coins.png", "moon.png", "page.png", "text.png", "brick.png", "grass.png",
    "gravel.png", "cell.png", "clock_motion.png",
)


@dataclass
class Pair:
    """One image: HR ground truth and the bicubic-upscaled LR (the network input)."""

    name: str
    hr: np.ndarray  # HxWx3 uint8, H and W multiples of the scale
    lr: np.ndarray  # (H/s)x(W/s)x3 uint8
    bicubic: np.ndarray  # HxWx3 uint8 = imresize(lr, s)


@dataclass
class Splits:
    """The study's image pairs, split by image."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    scale: int
    source: str
    fingerprint: str = field(default="")

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source, "scale": self.scale, "fingerprint": self.fingerprint,
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
    """Read any PNG/JPEG as HxWx3 uint8."""
    import imageio.v3 as iio

    try:
        return to_rgb(iio.imread(path))
    except Exception as exc:  # a corrupt file must name itself, not crash the study
        raise UserError(f"cannot read image {path}: {exc}; remove or replace the file") from None


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (sorted, so the split is reproducible)."""
    if not folder.is_dir():
        raise UserError(
            f"data.source: folder {folder} does not exist; point it at a folder of HR images "
            "(or use source: sample)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"data.source: no PNG/JPEG images in {folder}; put the HR images directly in it")
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

    With a given ``lr`` (an official LR set), HR must be exactly ``scale`` times its size
    after cropping to a multiple of the scale, as in DIV2K's X4 folders.
    """
    top, left, th, tw = crop_box(hr.shape, max_side, scale)
    if lr is not None:
        expected = (hr.shape[0] // scale, hr.shape[1] // scale)
        if lr.shape[:2] != expected:
            raise UserError(f"LR image for {name} is {lr.shape[1]}x{lr.shape[0]}, expected "
                            f"{expected[1]}x{expected[0]} for x{scale}; check data.lr_source")
        lr = lr[top // scale:(top + th) // scale, left // scale:(left + tw) // scale]
    hr = np.ascontiguousarray(hr[top:top + th, left:left + tw])
    if min(hr.shape[:2]) < 4 * scale:
        raise UserError(f"image {name} is too small ({hr.shape[1]}x{hr.shape[0]}) for x{scale}; remove it")
    if lr is None:
        lr = imresize(hr, 1.0 / scale)
    return Pair(name=name, hr=hr, lr=np.ascontiguousarray(lr), bicubic=imresize(lr, float(scale)))


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


def _named_sources(cfg: DataConfig) -> list[tuple[str, object]]:
    """(name, image-or-path) of every HR image, sorted by name."""
    if cfg.source == "sample":
        return sorted(sample_images(), key=lambda t: t[0])
    folder = cfg.source_path()
    assert folder is not None
    return [(p.stem, p) for p in list_images(folder)]


def load_splits(cfg: DataConfig) -> Splits:
    """Discover, split and prepare all image pairs of a study's data section."""
    items = _named_sources(cfg)
    tr, va, te = split_indices(len(items), cfg.split, cfg.seed)
    lr_folder = Path(cfg.lr_source) if cfg.lr_source else None
    if lr_folder is not None and not lr_folder.is_dir():
        raise UserError(f"data.lr_source: folder {lr_folder} does not exist; fix the path or remove the key")

    def prepare(idx: list[int]) -> list[Pair]:
        pairs = []
        for i in idx:
            name, img = items[i]
            hr = img if isinstance(img, np.ndarray) else read_image(img)  # type: ignore[arg-type]
            lr = None
            if lr_folder is not None:
                cand = [lr_folder / f"{name}x{cfg.scale}{s}" for s in (".png", ".jpg")] + [lr_folder / f"{name}.png"]
                found = next((c for c in cand if c.exists()), None)
                if found is None:
                    raise UserError(f"data.lr_source: no LR image for {name} in {lr_folder} (looked for {cand[0].name})")
                lr = read_image(found)
            pairs.append(make_pair(name, hr, cfg.scale, max_side=cfg.max_side, lr=lr))
        return pairs

    names = [n for n, _ in items]
    digest = hashlib.sha256(repr((names, cfg.split, cfg.seed, cfg.scale, cfg.max_side)).encode()).hexdigest()[:12]
    return Splits(train=prepare(tr), val=prepare(va), test=prepare(te), scale=cfg.scale,
                  source=cfg.source, fingerprint=digest)


def patch_dataset(pairs: list[Pair], *, patch_size: int, batch_size: int, seed: int, augment: bool = True):
    """An infinite ``tf.data.Dataset`` of (bicubic patch, HR patch) float32 batches in [0, 1].

    Images are drawn with probability proportional to their area (so every HR pixel is
    equally likely to be seen), then a random aligned crop, and, with ``augment``, a
    random flip and 90-degree rotation (the 8 dihedral transforms used by EDSR and
    later SR papers). All of it runs in the TensorFlow graph with stateless random ops
    seeded from ``seed``, so a run is reproducible.
    """
    import tensorflow as tf

    usable = [p for p in pairs if min(p.hr.shape[:2]) >= patch_size]
    if not usable:
        raise UserError(f"data.patch_size {patch_size} is larger than every training image; use a smaller patch")
    stacks = [np.concatenate([p.bicubic, p.hr], axis=-1) for p in usable]  # HxWx6
    shapes = np.array([s.shape[:2] for s in stacks], dtype=np.int64)
    sizes = shapes[:, 0] * shapes[:, 1] * 6
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    areas = np.cumsum(shapes[:, 0] * shapes[:, 1]).astype(np.int64)
    # A variable rather than a constant: large buffers must not be serialised into the graph.
    buffer = tf.Variable(np.concatenate([s.ravel() for s in stacks]), trainable=False, dtype=tf.uint8)
    shapes_t, offsets_t, areas_t = tf.constant(shapes), tf.constant(offsets), tf.constant(areas)

    def crop(rand):
        pick = tf.searchsorted(areas_t, [rand[0] % areas_t[-1]], side="right")[0]
        h, w = shapes_t[pick][0], shapes_t[pick][1]
        img = tf.reshape(buffer[offsets_t[pick]:offsets_t[pick] + h * w * 6], tf.stack([h, w, 6]))
        out = tf.image.stateless_random_crop(img, [patch_size, patch_size, 6], seed=rand[1:3])
        if augment:
            out = tf.image.stateless_random_flip_left_right(out, seed=rand[3:5])
            out = tf.image.rot90(out, k=tf.cast(rand[5] % 4, tf.int32))
        out = tf.cast(out, tf.float32) / 255.0
        return out[..., :3], out[..., 3:]

    ds = tf.data.Dataset.random(seed=seed).map(lambda r: tf.abs(r)).batch(6, drop_remainder=True)
    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
