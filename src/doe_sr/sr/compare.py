"""Evaluate super-resolvers the way SR papers do, and compare a study's best SR-NET with ESRGAN.

The protocol (EDSR, RCAN and ESRGAN papers; BasicSR):

* HR is cropped to a multiple of the scale;
* LR is MATLAB-compatible bicubic ``imresize(HR, 1/scale)`` with antialiasing, rounded
  to 8 bits, unless an LR folder is given (a benchmark's official LR images);
* the model's output is rounded to 8 bits; PSNR and SSIM are computed on the Y channel
  (ITU-R BT.601) with ``scale`` border pixels shaved; RGB PSNR is reported beside them.

Greyscale HR images (Set14's bridge) are scored on their grey values: the model sees
the grey image as RGB and its output is averaged back to one plane. This reproduces
the published bicubic numbers (Set14 26.00 dB).

Every model is an *upscaler*: a callable from an LR image (HxWx3 float in [0, 1]) to
its x``scale`` super-resolution, with ``name`` and ``scale`` attributes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from doe_sr.core.errors import UserError
from doe_sr.core.folders import make_output_folder
from doe_sr.sr.data import IMAGE_SUFFIXES, to_rgb
from doe_sr.sr.images import check_pixels, image_size, read_image, read_raw
from doe_sr.sr.metrics import evaluate_pair, to_uint8
from doe_sr.sr.resize import imresize, modcrop


class Upscaler(Protocol):
    """What every model here is to the evaluation: LR image in, x``scale`` image out.

    `BicubicUpscaler`, `TrainedUpscaler` and `doe_sr.sr.models.esrgan.KerasUpscaler`
    (ESRGAN, Real-ESRGAN) all fit it.
    """

    name: str
    scale: int

    def __call__(self, lr: np.ndarray) -> np.ndarray: ...


@dataclass
class BicubicUpscaler:
    """MATLAB-compatible bicubic: the baseline of every SR table.

    Large images go tile by tile (`doe_sr.sr.tiling.upscale_tiled`): ``imresize`` holds
    float64 copies of the whole image per pass, about 50 bytes per output pixel, which
    is what drove a 12000x12000 upscale past 15 GB. Bicubic reads 2 LR pixels either
    side, so with ``overlap`` = 8 the tiles equal the whole-image result exactly.
    """

    scale: int = 4
    name: str = "bicubic"
    tile: int = 512
    overlap: int = 8

    def _batch(self, stack: np.ndarray) -> np.ndarray:
        return np.stack([imresize(to_uint8(t), float(self.scale)).astype(np.float32) / 255.0 for t in stack])

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        from doe_sr.sr.tiling import upscale_tiled

        lr = np.asarray(lr)
        if lr.ndim == 2:
            return imresize(to_uint8(lr), float(self.scale)).astype(np.float32) / 255.0
        return upscale_tiled(self._batch, lr, scale=self.scale, tile=self.tile, overlap=self.overlap, batch=1)


@dataclass
class TrainedUpscaler:
    """A network trained by a study (SR-NET, RRDBNet, EDSR or the user's own).

    A model of the bicubic image (SR-NET) gets the LR image bicubic-upscaled first; a model
    of the LR image gets it as it is. ``input`` and ``multiple`` come from the run's params
    (``model.input``, ``model.multiple``); when they are unknown (a bare ``.keras`` file)
    they are read from the model itself: an output ``scale`` times its input's size means
    an LR model, and SR-NET's down blocks give its ``2**depth``.
    """

    model: object
    scale: int = 4
    name: str = "SR-NET"
    input: str | None = None
    multiple_: int | None = None

    @property
    def input_kind(self) -> str:
        if self.input is None:
            side = 8 * self.multiple
            shape = self.model.compute_output_shape((1, side, side, 3))
            self.input = "lr" if shape[1] == side * self.scale and self.scale > 1 else "bicubic"
        return self.input

    @property
    def multiple(self) -> int:
        if self.multiple_ is None:
            downs = [l for l in self.model.layers if l.name.startswith("down") and l.name.endswith("_conv")]
            self.multiple_ = 2 ** len(downs)
        return self.multiple_

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        from doe_sr.sr.train import super_resolve

        if self.input_kind == "lr":
            sr = super_resolve(self.model, _quantise(np.asarray(lr)), multiple=self.multiple, scale=self.scale)
            return sr.astype(np.float32) / 255.0
        bicubic = _quantise(BicubicUpscaler(scale=self.scale)(lr))  # tiled: bounded memory
        return super_resolve(self.model, bicubic, multiple=self.multiple).astype(np.float32) / 255.0


#: The name this class had when SR-NET was the only network a study trained.
SrnetUpscaler = TrainedUpscaler

def model_label(params: Mapping[str, str]) -> str:
    """A trained run's network as a table names it (from its MLflow params)."""
    from doe_sr.study.models import model_label as label

    return label(params.get("model.name"))


def load_trained(path: Path, *, scale: int, name: str, params: Mapping[str, str] | None = None) -> TrainedUpscaler:
    """A trained network from its local ``.keras`` file (a run's artifact, once downloaded).

    ``params``: the run's MLflow params. A user's builder file or module is imported first
    (best effort), so custom layers it registers with Keras are known when the file loads.
    """
    import keras

    import importlib

    importlib.import_module("doe_sr.sr.models.layers")  # registers PixelShuffle (EDSR) with Keras before loading

    params = params or {}
    builder = params.get("model.builder_file") or params.get("model.builder")
    from doe_sr.study.models import BUILTINS

    if builder and params.get("model.name", "srnet") not in BUILTINS:
        from doe_sr.core.imports import load_object

        spec = f"{builder}:{params['model.builder'].rpartition(':')[2]}" if "model.builder_file" in params else builder
        try:
            load_object(spec, what="model.builder")
        except UserError:
            pass  # the model may still load (no custom layers); if not, Keras says which class is missing
    multiple = params.get("model.multiple")
    if multiple is None and params.get("model.name") and params.get("model.name") != "srnet":
        multiple = 1
    model = keras.saving.load_model(path, compile=False)
    return TrainedUpscaler(model, scale=scale, name=name, input=params.get("model.input"),
                           multiple_=None if multiple is None else int(multiple))


def load_srnet(path: Path, *, scale: int, name: str) -> TrainedUpscaler:
    """:func:`load_trained` of a bare ``.keras`` file (its kind read from the model)."""
    return load_trained(path, scale=scale, name=name)


#: MLflow run ids are uuid4 hex strings.
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def is_run_id(spec: str) -> bool:
    """Whether a ``--model`` names an MLflow run (32 hex digits)."""
    return bool(_RUN_ID.match(spec))


def check_model_name(spec: str) -> None:
    """Refuse a ``--model`` that names nothing we can load, before any store is opened."""
    if spec in ("bicubic", "esrgan", "realesrgan") or Path(spec).suffix == ".keras" or is_run_id(spec):
        return
    raise UserError(f"--model: {spec!r} is not bicubic, esrgan, realesrgan, a .keras file or an MLflow run id "
                    "(32 hex digits); see `doe-sr status STUDY` or the MLflow UI for run ids")


#: (local ``.keras`` file, params) of an MLflow run id: how `make_upscaler` gets a run's
#: model without importing the tracking package (`doe_sr.tracking.models.run_model`).
RunModel = Callable[[str], tuple[Path, Mapping[str, str]]]


def make_upscaler(spec: str, *, scale: int = 4, weights: str | None = None, tile: int = 128,
                  run_model: RunModel | None = None) -> Upscaler:
    """An upscaler by name: bicubic, esrgan, realesrgan, a ``.keras`` file or an MLflow run id.

    A run id needs ``run_model``, which fetches the run's model file and params (the
    workflow passes the tracking store's); the run's ``data.scale`` wins over ``scale``.
    """
    check_model_name(spec)
    if scale < 1:
        raise UserError(f"--scale {scale}: the scale must be a positive whole number (e.g. 4)")
    if spec == "bicubic":
        return BicubicUpscaler(scale=scale)
    if spec in ("esrgan", "realesrgan"):
        if scale != 4:
            raise UserError(f"--scale {scale}: the ESRGAN-family models here are x4 only; use --scale 4")
        if spec == "realesrgan":
            from doe_sr.sr.models.realesrgan import realesrgan_upscaler

            return realesrgan_upscaler(tile=tile)
        from doe_sr.sr.models.esrgan import esrgan_upscaler

        return esrgan_upscaler(weights or "auto", tile=tile)
    path = Path(spec)
    if path.suffix == ".keras":
        if not path.is_file():
            raise UserError(f"--model: model file {path} not found")
        return load_srnet(path, scale=scale, name=f"{path.stem} ({path.name})")
    if run_model is None:
        raise ValueError(f"make_upscaler({spec!r}): an MLflow run id needs run_model")
    path, params = run_model(spec)
    run_scale = int(params.get("data.scale", scale))
    return load_trained(path, scale=run_scale, name=f"{model_label(params)} ({spec[:8]})", params=params)


def _as_model_input(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


def _like(sr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """Bring the output back to the HR's layout (grey HR: average the channels)."""
    sr8 = to_uint8(sr)
    if hr.ndim == 2 and sr8.ndim == 3:
        return np.round(sr8.astype(np.float64).mean(axis=-1)).astype(np.uint8)
    return sr8


def read_hr(path: Path) -> np.ndarray:
    """An HR image as uint8, greyscale kept as HxW (scored on its grey values)."""
    img = read_raw(path)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        return to_rgb(img)
    if img.ndim == 3:  # grey (+ alpha)
        img = img[..., 0]
    return img if img.dtype == np.uint8 else to_rgb(img)[..., 0]


def _check_evaluable(path: Path, hr: np.ndarray, scale: int) -> None:
    """The metrics shave ``scale`` pixels per side and SSIM needs an 11x11 window after that."""
    smallest = 2 * scale + 11
    h, w = hr.shape[:2]
    if min(h - h % scale, w - w % scale) < smallest:
        raise UserError(f"image {path} is {w}x{h}, too small to evaluate at x{scale} (it needs at least "
                        f"{smallest}x{smallest} pixels); remove it from the folder")


def _find_lr(lr_dir: Path, name: str, scale: int) -> Path:
    for cand in (f"{name}x{scale}.png", f"{name}.png", f"{name}_LR.png", f"{name}x{scale}.jpg"):
        if (lr_dir / cand).exists():
            return lr_dir / cand
    raise UserError(f"--lr: no LR image for {name} in {lr_dir} (looked for {name}x{scale}.png, {name}.png)")


def evaluate_folder(upscaler: Upscaler, hr_dir: Path, *, scale: int, lr_dir: Path | None = None) -> dict:
    """Per-image and mean PSNR-Y, SSIM-Y, RGB PSNR and seconds on a benchmark folder."""
    if not hr_dir.is_dir():
        raise UserError(f"--hr: folder {hr_dir} does not exist")
    files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"--hr: no PNG/JPEG images in {hr_dir}")
    if lr_dir is not None and not lr_dir.is_dir():
        raise UserError(f"--lr: folder {lr_dir} does not exist")
    rows = []
    for path in files:
        hr = read_hr(path)
        _check_evaluable(path, hr, scale)
        hr = modcrop(hr, scale)
        lr = read_hr(_find_lr(lr_dir, path.stem, scale)) if lr_dir else imresize(hr, 1.0 / scale)
        rows.append(_score(upscaler, path.stem, hr, lr, scale))
    return {"model": upscaler.name, "scale": scale, "images": rows, "mean": _means(rows)}


def _score(upscaler: Upscaler, name: str, hr: np.ndarray, lr: np.ndarray, scale: int) -> dict:
    x = _as_model_input(lr).astype(np.float32) / 255.0
    t0 = time.perf_counter()
    sr = upscaler(x)
    seconds = time.perf_counter() - t0
    sr = _like(sr, hr)
    if sr.shape[:2] != hr.shape[:2]:
        raise UserError(f"{upscaler.name} made {sr.shape[1]}x{sr.shape[0]} from {name}, expected "
                        f"{hr.shape[1]}x{hr.shape[0]}; check --scale")
    return {"name": name, **evaluate_pair(sr, hr, scale=scale), "seconds": seconds}


def _means(rows: list[dict]) -> dict:
    keys = ("psnr_y", "ssim_y", "psnr_rgb", "seconds")
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def evaluate_pairs(upscaler: Upscaler, pairs, *, scale: int) -> dict:
    """The same on a study's prepared pairs (HR and its LR as the training saw them)."""
    rows = [_score(upscaler, p.name, p.hr, p.lr, scale) for p in pairs]
    return {"model": upscaler.name, "scale": scale, "images": rows, "mean": _means(rows)}


def comparison_tables(results: list[dict]):
    """(per-image long table, mean table) as DataFrames."""
    import pandas as pd

    long = pd.DataFrame([{"model": r["model"], **img} for r in results for img in r["images"]])
    mean = pd.DataFrame([{"model": r["model"], "PSNR-Y (dB)": r["mean"]["psnr_y"], "SSIM-Y": r["mean"]["ssim_y"],
                          "PSNR-RGB (dB)": r["mean"]["psnr_rgb"], "seconds/image": r["mean"]["seconds"]}
                         for r in results])
    return long, mean


def _quantise(sr: np.ndarray) -> np.ndarray:
    """`to_uint8` a band of rows at a time: it works in float64, 8 bytes per value of a whole image."""
    out = np.empty(sr.shape, dtype=np.uint8)
    rows = max(1, (1 << 24) // max(1, sr[0].size))
    for top in range(0, sr.shape[0], rows):
        out[top:top + rows] = to_uint8(sr[top:top + rows])
    return out


def upscale_files(upscaler: Upscaler, images: list[Path], out_dir: Path) -> list[Path]:
    """Super-resolve photos of any size; PNG/JPEG in, PNG out (``<stem>_x4.png``).

    Every input is checked before any work: its header must be readable and its output
    (input x scale^2) within the pixel cap of `doe_sr.sr.images`.
    """
    import imageio.v3 as iio

    s = upscaler.scale
    for path in images:
        h, w = image_size(path)
        check_pixels(path, h * s, w * s, made=f"upscaled x{s} would be")
    make_output_folder(out_dir, "-o", holds="a folder for the upscaled images", fix="choose a writable folder")
    written = []
    for path in images:
        img = read_image(path).astype(np.float32) / 255.0
        sr = _quantise(upscaler(img))
        del img
        dest = out_dir / f"{path.stem}_x{s}.png"
        try:
            iio.imwrite(dest, sr)
        except OSError as exc:
            raise UserError(f"-o: cannot write {dest} ({exc.strerror or exc}); choose a writable folder") from None
        written.append(dest)
    return written
