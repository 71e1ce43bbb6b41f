"""Train one array run of SR-NET with Keras and measure its responses.

Why the responses are PSNR/SSIM and not Keras "accuracy": super-resolution is a
regression; accuracy (exact equality of float pixels) is meaningless for it, which is
how the seed report ended up ranking hyperparameters by noise. Validation PSNR is
computed on *whole* validation images (padded to a multiple of ``2**depth`` by
reflection, then cropped back), on the Y channel with ``scale`` border pixels shaved,
exactly as the comparison with ESRGAN and bicubic does.

This module knows nothing of MLflow or Optuna: it reports each epoch through a plain
callable and returns a :class:`RunResult`; ``execute.py`` wires it to tracking.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import Pair, Splits, patch_dataset
from .errors import RunFailed
from .metrics import evaluate_pair, to_uint8
from .study import RunConfig


class RunDiverged(RunFailed):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    """What one run produced: per-epoch history, final metrics and the saved model."""

    history: dict[str, list[float]]
    metrics: dict[str, float]
    model_path: Path | None
    per_image: list[dict] = field(default_factory=list)


def device_info() -> dict[str, str]:
    """The device TensorFlow will train on and the versions involved (logged with each run)."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    build = tf.sysconfig.get_build_info()
    info = {
        "device": "GPU" if gpus else "CPU",
        "gpus": ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cuda": str(build.get("cuda_version", "")) if gpus else "",
        "cudnn": str(build.get("cudnn_version", "")) if gpus else "",
    }
    return info


def compute_policy(mixed_precision: str) -> str:
    """Keras dtype policy for a run: reduced precision only where it pays (a GPU).

    ``auto`` picks ``mixed_bfloat16`` on GPUs that support it (Ampere and newer: no loss
    scaling needed), ``mixed_float16`` on older GPUs, and ``float32`` on CPUs, where
    half precision is slower and less accurate.
    """
    import tensorflow as tf

    if mixed_precision == "off":
        return "float32"
    if mixed_precision in ("float16", "bfloat16"):
        return f"mixed_{mixed_precision}"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return "mixed_bfloat16" if cc and cc[0] >= 8 else "mixed_float16"


def make_optimizer(name: str, learning_rate: float):
    """A Keras optimizer by name with the run's learning rate."""
    import keras

    classes = {
        "adam": keras.optimizers.Adam, "adadelta": keras.optimizers.Adadelta,
        "adagrad": keras.optimizers.Adagrad, "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD, "nadam": keras.optimizers.Nadam, "adamw": keras.optimizers.AdamW,
    }
    return classes[name](learning_rate=learning_rate)


def build_model(cfg: RunConfig):
    from .models.srnet import build_srnet

    m = cfg.model
    return build_srnet(filters=m.filters, activation=m.activation, depth=m.depth,
                       kernel_size=m.kernel_size, dropout=m.dropout, residual=m.residual,
                       head_width=m.head_width)


def super_resolve(model, bicubic: np.ndarray, *, multiple: int) -> np.ndarray:
    """Run SR-NET on a whole bicubic-upscaled image (HxWx3 uint8) -> HxWx3 uint8.

    The U-Net needs sides divisible by ``multiple`` (= 2**depth): reflect-pad, predict,
    crop back. Reflection avoids the dark frame zero padding would teach at the border.
    """
    h, w = bicubic.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    x = bicubic.astype(np.float32) / 255.0
    if ph or pw:
        x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    y = np.asarray(model(x[None], training=False))[0, :h, :w]
    return to_uint8(np.clip(y, 0.0, 1.0))


def evaluate_srnet(model, pairs: list[Pair], *, scale: int, multiple: int) -> list[dict]:
    """Per-image PSNR-Y, SSIM-Y and RGB PSNR of SR-NET on whole images."""
    rows = []
    for p in pairs:
        t0 = time.perf_counter()
        sr = super_resolve(model, p.bicubic, multiple=multiple)
        seconds = time.perf_counter() - t0
        rows.append({"name": p.name, **evaluate_pair(sr, p.hr, scale=scale), "seconds": seconds})
    return rows


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def train_run(
    cfg: RunConfig,
    splits: Splits,
    *,
    patch_size: int,
    seed: int,
    workdir: Path,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    verbose: int | str = "auto",
) -> RunResult:
    """Train SR-NET with one run's settings; return history, metrics and the model file.

    Raises :class:`RunDiverged` when the loss becomes NaN/inf (the engine records the run
    as failed with that reason and the study goes on).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_dtype_policy(compute_policy(cfg.training.mixed_precision))
    tr = cfg.training
    multiple = 2 ** cfg.model.depth
    model = build_model(cfg)
    model.compile(optimizer=make_optimizer(tr.optimizer, tr.learning_rate), loss=tr.loss,
                  jit_compile=tr.jit_compile)
    dataset = patch_dataset(splits.train, patch_size=patch_size, batch_size=tr.batch_size, seed=seed)

    history: dict[str, list[float]] = {}
    diverged: dict[str, object] = {}

    class _Epoch(keras.callbacks.Callback):
        """Validation PSNR on whole images, NaN guard, and the epoch hook."""

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                diverged.setdefault("where", f"epoch {len(history.get('loss', [])) + 1}, batch {batch + 1}")
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if diverged:
                return
            rows = evaluate_srnet(self.model, splits.val, scale=splits.scale, multiple=multiple)
            logs["val_psnr"] = _mean(rows, "psnr_y")
            logs["val_ssim"] = _mean(rows, "ssim_y")
            for k, v in logs.items():
                history.setdefault(k, []).append(float(v))
            if on_epoch_end is not None:
                on_epoch_end(epoch, {k: float(v) for k, v in logs.items()})

    t0 = time.perf_counter()
    model.fit(dataset, epochs=tr.epochs, steps_per_epoch=tr.steps_per_epoch, callbacks=[_Epoch()],
              verbose=verbose)
    train_seconds = time.perf_counter() - t0
    if diverged:
        raise RunDiverged(f"loss became NaN/inf at {diverged['where']} "
                          f"(optimizer {tr.optimizer}, learning rate {tr.learning_rate})")

    test_rows = evaluate_srnet(model, splits.test, scale=splits.scale, multiple=multiple)
    metrics = {
        "val_psnr": history["val_psnr"][-1],
        "val_ssim": history["val_ssim"][-1],
        "best_val_psnr": max(history["val_psnr"]),
        "test_psnr": _mean(test_rows, "psnr_y"),
        "test_ssim": _mean(test_rows, "ssim_y"),
        "test_psnr_rgb": _mean(test_rows, "psnr_rgb"),
        "train_seconds": train_seconds,
        "params": float(model.count_params()),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / "model.keras"
    model.save(model_path)
    keras.mixed_precision.set_dtype_policy("float32")
    del tf
    return RunResult(history=history, metrics=metrics, model_path=model_path, per_image=test_rows)


def bicubic_metrics(pairs: list[Pair], *, scale: int) -> dict[str, float]:
    """Mean PSNR-Y/SSIM-Y of plain bicubic upscaling: the baseline every run must beat."""
    rows = [evaluate_pair(p.bicubic, p.hr, scale=scale) for p in pairs]
    return {"psnr": _mean(rows, "psnr_y"), "ssim": _mean(rows, "ssim_y"), "psnr_rgb": _mean(rows, "psnr_rgb")}
