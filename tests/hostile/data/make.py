"""Inputs of the data cases: image folders written at test time (binary, or many files).

Each function writes ``study.yaml`` (the small study below with its ``data`` section)
and the images it points at into ``work``.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

STUDY = """name: hostile-data
design:
  array: L4(2^3)
  factors:
    - name: learning_rate
      levels: [0.01, 0.001]
    - name: optimizer
      levels: [adam, sgd]
data:
{data}
training:
  epochs: 1
  steps_per_epoch: 1
  batch_size: 2
tracking:
  uri: {work}/mlruns
"""


def _study(work: Path, **data) -> None:
    lines = "\n".join(f"  {k}: {v}" for k, v in data.items())
    (work / "study.yaml").write_text(STUDY.format(data=lines, work=work))


def _images(folder: Path, n: int, size: tuple[int, int], seed: int = 0, suffix: str = ".png",
            names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = names[i] if names else f"img{i:02d}"
        iio.imwrite(folder / f"{name}{suffix}", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


def source_is_a_file(work: Path) -> None:
    _study(work, source="/etc/passwd")


def source_missing(work: Path) -> None:
    _study(work, source=work / "no-such-folder")


def source_empty_folder(work: Path) -> None:
    (work / "empty").mkdir()
    (work / "empty" / "notes.txt").write_text("no images here\n")
    _study(work, source=work / "empty")


def one_pixel_images(work: Path) -> None:
    _images(work / "hr", 3, (1, 1))
    _study(work, source=work / "hr")


def text_named_png(work: Path) -> None:
    folder = work / "hr"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.png").write_text("this is not a picture\n")
    _study(work, source=folder)


def patch_larger_than_images(work: Path) -> None:
    _study(work, source="sample", patch_size=8192)


def patch_larger_than_max_side(work: Path) -> None:
    _study(work, source="sample", patch_size=128, max_side=96)


def patch_larger_than_one_image(work: Path) -> None:
    _images(work / "hr", 5, (160, 160))
    _images(work / "hr", 1, (48, 300), seed=1, names=["narrow"])
    _study(work, source=work / "hr", patch_size=64, split="[8, 1, 1]", seed=0)  # narrow is a training image


def too_few_images(work: Path) -> None:
    _images(work / "hr", 2, (96, 96))
    _study(work, source=work / "hr")


def split_leaves_no_training_image(work: Path) -> None:
    _images(work / "hr", 4, (96, 96))
    _study(work, source=work / "hr", split="[1, 10, 10]")


def lr_wrong_size(work: Path) -> None:
    _images(work / "hr", 3, (96, 96))
    _images(work / "lr", 3, (30, 30), names=["img00x4", "img01x4", "img02x4"])
    _study(work, source=work / "hr", lr_source=work / "lr")


def lr_missing_image(work: Path) -> None:
    _images(work / "hr", 3, (96, 96))
    _images(work / "lr", 2, (24, 24), names=["img00x4", "img01x4"])
    _study(work, source=work / "hr", lr_source=work / "lr")


def lr_source_is_a_file(work: Path) -> None:
    _images(work / "hr", 3, (96, 96))
    _study(work, source=work / "hr", lr_source=work / "hr" / "img00.png")
