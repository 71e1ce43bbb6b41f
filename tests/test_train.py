"""The trainer's precision policy and whole-image evaluation: batched, tiled, and a
DIV2K-size image on the CPU within a bounded memory budget."""

from __future__ import annotations

import numpy as np
import pytest

from doe_sr.sr.data import make_pair
from doe_sr.sr.metrics import psnr
from doe_sr.sr.models.srnet import build_srnet
from doe_sr.sr.train import (activation_bytes_per_pixel, bicubic_metrics, compute_policy, device_info, evaluate_srnet,
                          super_resolve, super_resolve_batch)


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_precision_policy_on_cpu():
    assert compute_policy("auto") == "float32"  # this machine has no GPU
    assert compute_policy("off") == "float32"
    assert compute_policy("float16") == "mixed_float16"
    assert compute_policy("bfloat16") == "mixed_bfloat16"


def test_device_info_names_device_versions_and_precision():
    import keras
    import tensorflow as tf

    info = device_info("bfloat16")
    assert info["device"] == "CPU" and info["precision"] == "mixed_bfloat16"
    assert info["tensorflow"] == tf.__version__ and info["keras"] == keras.__version__


def test_untrained_residual_srnet_scores_exactly_bicubic():
    """Zero-initialised last convolution + global residual = identity on the bicubic input,
    so evaluation (padding, batching by size, cropping back) must reproduce bicubic's numbers."""
    pairs = [make_pair(f"p{i}", _noise(h, w, seed=i), 4) for i, (h, w) in
             enumerate([(64, 64), (64, 64), (64, 64), (52, 76)])]  # three batch together; 52x76 is padded
    model = build_srnet(filters=4, depth=3)
    rows = evaluate_srnet(model, pairs, scale=4, multiple=8)
    base = bicubic_metrics(pairs, scale=4)
    assert np.mean([r["psnr_y"] for r in rows]) == pytest.approx(base["psnr"], abs=1e-9)
    assert np.mean([r["ssim_y"] for r in rows]) == pytest.approx(base["ssim"], abs=1e-9)


def test_batched_evaluation_equals_one_image_at_a_time():
    model = build_srnet(filters=4, depth=3, residual=False)
    images = [_noise(40, 48, seed=i) for i in range(3)]
    batched = super_resolve_batch(model, images, multiple=8)
    for img, out in zip(images, batched):
        single = super_resolve(model, img, multiple=8)
        assert np.abs(out.astype(int) - single.astype(int)).max() <= 1  # float summation order only


def test_tiled_evaluation_is_close_to_whole_image():
    """A budget too small for the whole image forces tiles; with 4 strides of context on each
    side they agree with the whole-image output except for tiny seam differences."""
    model = build_srnet(filters=4, depth=3, residual=False)
    img = _noise(200, 264, seed=3)
    whole = super_resolve(model, img, multiple=8, memory_budget=1 << 30)
    budget = int(activation_bytes_per_pixel(model) * 120 * 120)  # windows of about 120x120
    assert activation_bytes_per_pixel(model) * 200 * 264 > budget
    tiled = super_resolve(model, img, multiple=8, memory_budget=budget)
    assert tiled.shape == whole.shape == img.shape
    assert psnr(tiled, whole) > 40
    assert np.mean(tiled == whole) > 0.95


def test_activation_size_is_never_another_models(monkeypatch):
    """Regression: the cache was keyed by ``id(model)``, and a worker training runs back to
    back reuses a freed model's id for the next model, which may have other ``filters``.
    Every id is made the same here (the reuse, forced): each model must still get its own size."""
    import gc

    from doe_sr.sr import train

    monkeypatch.setattr(train, "id", lambda obj: 42, raising=False)  # shadows the builtin inside train
    small = build_srnet(filters=4, depth=2)
    small_size = activation_bytes_per_pixel(small)
    del small
    gc.collect()
    wide = build_srnet(filters=16, depth=2)
    assert activation_bytes_per_pixel(wide) > 2 * small_size  # 4x the channels inside (3 at both ends)
    assert activation_bytes_per_pixel(build_srnet(filters=4, depth=2)) == pytest.approx(small_size)
    assert len(train._BYTES_PER_PIXEL) <= 2  # a freed model's entry goes with it


@pytest.mark.parametrize("filters", [32, 64])
def test_div2k_size_image_evaluates_on_cpu_within_budget(filters):
    """2040x1356, DIV2K's usual validation size, at 1 GiB of activations: run in tiles and
    stitched back exactly (the untrained residual network returns its input)."""
    img = _noise(1356, 2040, seed=filters)
    model = build_srnet(filters=filters, depth=5)
    assert activation_bytes_per_pixel(model) * 1356 * 2048 > 1 << 30  # the whole image would not fit
    out = super_resolve(model, img, multiple=32, memory_budget=1 << 30)
    np.testing.assert_array_equal(out, img)


def test_mixed_precision_run_records_its_policy_and_restores_float32(tmp_path):
    import keras

    from doe_sr.sr.data import Splits
    from doe_sr.study.schema import TrainingConfig, parse_study
    from doe_sr.sr.train import train_run

    pairs = [make_pair(f"p{i}", _noise(64, 64, seed=i), 4) for i in range(3)]
    splits = Splits(train=pairs[:1], val=pairs[1:2], test=pairs[2:], scale=4, source="test")
    study = parse_study({"name": "t", "design": {"array": "L4(2^3)", "factors": [{"name": "filters", "levels": [4, 6]}]},
                         "data": {"patch_size": 32}, "model": {"depth": 3}})
    training = TrainingConfig(epochs=1, steps_per_epoch=1, batch_size=2, mixed_precision="bfloat16")
    cfg = study.run_config({"filters": 4}).model_copy(update={"training": training})
    result = train_run(cfg, splits, patch_size=32, seed=0, workdir=tmp_path)
    assert result.tags["env.precision"] == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert np.isfinite(result.history["val_psnr"][0])
