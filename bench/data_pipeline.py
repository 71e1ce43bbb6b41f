"""Does the patch pipeline keep up with the trainer? Patches/s delivered vs consumed.

    .venv/bin/python bench/data_pipeline.py [--seconds 8] [--div2k-images 8]

Two settings, each measured side by side in this one process:

* quickstart: scikit-image's sample images (max_side 384), ``cache: memory``,
  64-pixel patches, batch 8;
* div2k: synthetic DIV2K-size images (2040x1356, smooth noise), ``cache: disk``
  (memory-mapped .npy pairs, read whole by tf.data), 128-pixel patches, batch 16, as
  ``studies/srnet_l9.yaml``.

"Delivered" is the pipeline alone (``patch_dataset`` iterated, nothing else running).
"Consumed" is SR-NET (depth 5) training on one fixed in-memory batch, so it measures the
trainer's compute alone, for filters 32, 64 and 128. The ratio must be at least 3: then
the pipeline never starves the trainer, even when both share the CPU cores.
Timings on a shared machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _machine import describe  # noqa: E402


def delivered(ds, batch: int, seconds: float) -> float:
    """Patches/s the dataset yields (after a warm-up that fills the prefetch buffers)."""
    it = iter(ds)
    for _ in range(3):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    return n / (time.perf_counter() - t0)


def consumed(filters: int, patch: int, batch: int, seconds: float) -> float:
    """Patches/s SR-NET trains at on a fixed batch (compute only, no input pipeline)."""
    import keras

    from doe_sr.sr.models.srnet import build_srnet

    keras.utils.set_random_seed(0)
    model = build_srnet(filters=filters, depth=5)
    model.compile(optimizer="adam", loss="mae")
    x = np.random.default_rng(0).random((batch, patch, patch, 3), dtype=np.float32)
    model.train_on_batch(x, x)  # trace and warm up
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        model.train_on_batch(x, x)
        n += batch
    return n / (time.perf_counter() - t0)


def synthetic_div2k(folder: Path, n: int) -> None:
    """n smooth 2040x1356 images: noise upscaled, so PNG sizes and content are photo-like."""
    import imageio.v3 as iio

    from doe_sr.sr.resize import imresize

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        small = rng.integers(0, 256, (1356 // 8, 2040 // 8, 3), dtype=np.uint8)
        iio.imwrite(folder / f"{i + 1:04d}.png", imresize(small, 8.0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="measuring time per figure")
    ap.add_argument("--div2k-images", type=int, default=8)
    args = ap.parse_args()

    from doe_sr.sr.data import load_splits, patch_dataset
    from doe_sr.study.schema import DataConfig

    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "DIV2K" / "DIV2K_train_HR"
        synthetic_div2k(folder, args.div2k_images)
        settings = {
            "quickstart": (DataConfig(source="sample", max_side=384, patch_size=64), 64, 8),
            "div2k": (DataConfig(source=str(folder.parent), cache="disk", patch_size=128), 128, 16),
        }
        for name, (cfg, patch, batch) in settings.items():
            t0 = time.perf_counter()
            splits = load_splits(cfg, cache_dir=Path(tmp) / "cache")
            prep = time.perf_counter() - t0
            ds = patch_dataset(splits.train, patch_size=patch, batch_size=batch, seed=0)
            supply = delivered(ds, batch, args.seconds)
            print(f"\n[{name}] {len(splits.train)} training images ({splits.cache} cache, prepared in {prep:.1f} s), "
                  f"{patch}x{patch} patches, batch {batch}")
            print(f"  pipeline delivers {supply:10.0f} patches/s")
            for filters in (32, 64, 128):
                demand = consumed(filters, patch, batch, args.seconds)
                verdict = "ok" if supply >= 3 * demand else "TOO SLOW"
                print(f"  SR-NET filters {filters:3d} consumes {demand:8.1f} patches/s  "
                      f"-> pipeline/trainer = {supply / demand:8.1f}x  ({verdict}; need >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
