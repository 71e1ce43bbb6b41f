"""Train one run of a study's network with Keras and measure its responses.

Why the responses are PSNR/SSIM and not Keras "accuracy": super-resolution is a
regression; accuracy (exact equality of float pixels) is meaningless for it, which is
how the seed report ended up ranking hyperparameters by noise. Validation PSNR is
computed on *whole* validation images (padded to a multiple of ``2**depth`` by
reflection, then cropped back), on the Y channel with ``scale`` border pixels shaved,
exactly as the comparison with ESRGAN and bicubic does. Images of equal size go through
the network in batches; an image whose activations would not fit the memory budget
(a 2040x1356 DIV2K image at 128 filters needs several GB) is run in overlapping tiles.

Precision: ``training.mixed_precision: auto`` computes in bfloat16 (Ampere and newer) or
float16 (older GPUs, with Keras' dynamic loss scaling) on a GPU, and in float32 on a CPU;
the policy used is returned in :attr:`RunResult.tags` so every MLflow run records it.

The network is the run's :class:`~doe_sr.study.models.ModelRun` (SR-NET, RRDBNet, EDSR
or the user's own, see :mod:`doe_sr.sr.models.registry`). A model of the bicubic image
(SR-NET) is fed bicubic-upscaled patches and images; a model of the LR image is fed LR
patches and images and upscales them itself; targets are the HR patches either way.
Besides quality, each run measures its cost: ``params``, ``inference_seconds_per_mp``
(seconds of inference per megapixel of output on the test images) and
``train_memory_mb`` (peak memory of training, :mod:`doe_sr.sr.memory`).

This module knows nothing of MLflow or Optuna: it reports each epoch through a plain
callable and returns a :class:`RunResult`; :mod:`doe_sr.engine.executor` wires it to tracking.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doe_sr.sr.data import Pair, Splits, patch_dataset
from doe_sr.core.errors import RunFailed
from doe_sr.sr.metrics import evaluate_pair, to_uint8
from doe_sr.study.schema import RunConfig


class RunDiverged(RunFailed):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    """What one run produced: per-epoch history, final metrics and the saved model."""

    history: dict[str, list[float]]
    metrics: dict[str, float]
    model_path: Path | None
    per_image: list[dict] = field(default_factory=list)
    #: what the run actually used, to log as MLflow tags: ``env.precision`` (the Keras
    #: dtype policy ``auto`` resolved to), ``env.jit_compile``, ``env.device``
    tags: dict[str, str] = field(default_factory=dict)


def device_info(mixed_precision: str = "auto") -> dict[str, str]:
    """The device TensorFlow will train on, the versions involved and the precision
    ``mixed_precision`` resolves to there (logged with each run as ``env.*`` tags)."""
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
        "precision": compute_policy(mixed_precision),
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


def build_model(cfg: RunConfig, scale: int = 4):
    """The run's network (see :func:`doe_sr.sr.models.registry.build_model`)."""
    from doe_sr.sr.models.registry import build_model as build

    return build(cfg.model, scale)


def eval_memory_budget() -> int:
    """How much activation memory one evaluation forward may use.

    A GPU gets 2 GiB (safe on a 16 GB card next to the training state); a CPU gets a
    quarter of the free RAM, at most 8 GiB, so a DIV2K image usually runs whole.
    """
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return 2 << 30
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = 8 << 30
    return int(min(8 << 30, max(256 << 20, free // 4)))


#: Per-pixel activation bytes of each model still alive. Why weak keys on the model itself,
#: not ``id(model)``: a worker trains runs back to back, so a freed model's id is reused by
#: the next model, which may have other ``filters``; keyed by id it got the freed model's
#: value and so the wrong evaluation memory budget. A weak key dies with its model.
_BYTES_PER_PIXEL: "weakref.WeakKeyDictionary[object, float]" = weakref.WeakKeyDictionary()


def activation_bytes_per_pixel(model) -> float:
    """Bytes of all layer outputs of one forward pass, per input pixel (an upper bound:
    Keras frees intermediate tensors once their last consumer has run)."""
    value = _BYTES_PER_PIXEL.get(model)
    if value is None:
        import keras

        side = 256
        outputs = [layer.output for layer in model.layers[1:]]
        probe = keras.Model(model.inputs, outputs)
        shapes = probe.compute_output_shape((1, side, side, model.inputs[0].shape[-1]))
        elements = sum(int(np.prod(s[1:])) for s in shapes)
        value = _BYTES_PER_PIXEL[model] = 4.0 * elements / (side * side)  # float32 activations
    return value


def _pad(x: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad the two spatial axes of N x H x W x C (or H x W x C) up to ``multiple``.

    Reflection avoids the dark frame zero padding would teach at the border.
    """
    h, w = x.shape[-3], x.shape[-2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    pad = [(0, 0)] * (x.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    return np.pad(x, pad, mode="reflect" if min(h, w) > max(ph, pw) else "edge")


def _forward(model, batch: np.ndarray) -> np.ndarray:
    return np.asarray(model(batch, training=False), dtype=np.float32)


def super_resolve(model, image: np.ndarray, *, multiple: int, memory_budget: int | None = None,
                  scale: int = 1) -> np.ndarray:
    """Run a network on a whole image (HxWx3 uint8) -> (scale*H)x(scale*W)x3 uint8.

    ``image`` is the network's input: the bicubic-upscaled image for SR-NET (``scale`` 1:
    the output has its size) or the LR image for a post-upsampling network (``scale`` =
    the study's). The U-Net needs sides divisible by ``multiple`` (= 2**depth): reflect-pad,
    predict, crop back. When the activations of the whole image exceed ``memory_budget`` bytes,
    the image is run in tiles (:func:`doe_sr.sr.tiling.upscale_tiled` at scale 1) with
    ``4 * multiple`` pixels of context on each side, offsets on the network's stride
    grid; the U-Net's receptive field is wider than that, so tiled outputs can differ
    from the whole-image one by a fraction of a grey level near tile seams.
    """
    return super_resolve_batch(model, [image], multiple=multiple, memory_budget=memory_budget, scale=scale)[0]


def _to_image(y: np.ndarray) -> np.ndarray:
    """Network output -> uint8 image; NaN/inf output means the weights diverged."""
    if not np.isfinite(y).all():
        raise RunDiverged("the network's output became NaN/inf (its weights diverged; lower the learning rate)")
    return to_uint8(np.clip(y, 0.0, 1.0))


def super_resolve_batch(model, images: list[np.ndarray], *, multiple: int,
                        memory_budget: int | None = None, max_batch: int = 8, scale: int = 1) -> list[np.ndarray]:
    """:func:`super_resolve` for several images: equal sizes are batched within the budget."""
    from doe_sr.sr.tiling import upscale_tiled

    budget = memory_budget or eval_memory_budget()
    per_pixel = activation_bytes_per_pixel(model)
    out: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    for shape, idx in groups.items():
        h, w = shape[:2]
        ph, pw = h + (-h) % multiple, w + (-w) % multiple
        per_image = per_pixel * ph * pw
        if per_image <= budget:
            n = int(max(1, min(max_batch, budget // per_image)))
            for start in range(0, len(idx), n):
                chunk = idx[start:start + n]
                x = _pad(np.stack([np.asarray(images[i], dtype=np.float32) / 255.0 for i in chunk]), multiple)
                y = _forward(model, x)
                for i, yi in zip(chunk, y):
                    out[i] = _to_image(yi[:h * scale, :w * scale])
            continue
        # Tiles: the largest square side (a multiple of the stride) whose window fits the budget.
        overlap = 4 * multiple if scale == 1 else max(16, 4 * multiple)
        window = int((budget / per_pixel) ** 0.5) // multiple * multiple
        tile = max(multiple, window - 2 * overlap)
        # As few tiles as that size allows, then the smallest tile giving that count (less overlap waste).
        n_y, n_x = -(-ph // tile), -(-pw // tile)
        tile = max(-(-ph // n_y), -(-pw // n_x))
        tile = -(-tile // multiple) * multiple
        for i in idx:
            x = _pad(np.asarray(images[i], dtype=np.float32) / 255.0, multiple)
            y = upscale_tiled(lambda b: _forward(model, b), x, scale=scale, tile=tile, overlap=overlap, batch=1)
            out[i] = _to_image(y[:h * scale, :w * scale])
    return out  # type: ignore[return-value]


def evaluate_srnet(model, pairs: list[Pair], *, scale: int, multiple: int, memory_budget: int | None = None,
                   group: int = 8, input: str = "bicubic") -> list[dict]:
    """Per-image PSNR-Y, SSIM-Y and RGB PSNR of a network on whole images.

    ``input``: which image the network takes, ``bicubic`` (SR-NET) or ``lr``. Pairs are
    read ``group`` at a time, so a cached set is never in memory all at once; ``seconds``
    is the image's share of its batch's inference time, ``megapixels`` its output's size.
    """
    rows = []
    out_scale = scale if input == "lr" else 1
    for start in range(0, len(pairs), group):
        chunk = pairs[start:start + group]
        t0 = time.perf_counter()
        srs = super_resolve_batch(model, [p.lr if input == "lr" else p.bicubic for p in chunk], multiple=multiple,
                                  memory_budget=memory_budget, scale=out_scale)
        seconds = (time.perf_counter() - t0) / len(chunk)
        for p, sr in zip(chunk, srs):
            rows.append({"name": p.name, **evaluate_pair(sr, p.hr, scale=scale),
                         "change_from_bicubic": change_from_bicubic(sr, p.bicubic), "seconds": seconds,
                         "megapixels": sr.shape[0] * sr.shape[1] / 1e6})
    return rows


def change_from_bicubic(sr: np.ndarray, bicubic: np.ndarray) -> float:
    """Mean absolute difference, in 8-bit grey levels over all pixels and channels, between
    SR-NET's output and the bicubic upscale it started from.

    Why: a residual SR-NET starts as the identity on its bicubic input (zero-initialised
    last convolution), so 0 means the network's output *is* bicubic: it did not learn
    (see :mod:`doe_sr.analysis.degenerate`). PSNR against the ground truth cannot tell
    "did not move" from "moved and gained nothing"; this can, at the cost of one
    subtraction per validation image.
    """
    return float(np.mean(np.abs(sr.astype(np.int16) - np.asarray(bicubic).astype(np.int16))))


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
    memory_budget: int | None = None,
) -> RunResult:
    """Train one run's network with its settings; return history, metrics and the model file.

    ``train_seconds`` includes the per-epoch validation (also reported alone as
    ``validation_seconds``); ``patches_per_second`` excludes it. ``memory_budget``
    bounds evaluation activations (bytes; default :func:`eval_memory_budget`).

    Raises :class:`RunDiverged` when the loss becomes NaN/inf (the engine records the run
    as failed with that reason and the study goes on).
    """
    import keras

    keras.utils.set_random_seed(seed)
    tr = cfg.training
    policy = compute_policy(tr.mixed_precision)
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        return _train(cfg, splits, patch_size=patch_size, seed=seed, workdir=workdir, on_epoch_end=on_epoch_end,
                      verbose=verbose, policy=policy, memory_budget=memory_budget)
    finally:
        # The policy is process-global: the next run, or an evaluation, must not inherit it.
        keras.mixed_precision.set_dtype_policy("float32")


def _train(cfg: RunConfig, splits: Splits, *, patch_size: int, seed: int, workdir: Path,
           on_epoch_end: Callable[[int, dict[str, float]], None] | None, verbose: int | str, policy: str,
           memory_budget: int | None) -> RunResult:
    import keras

    from doe_sr.sr.losses import make_loss
    from doe_sr.sr.memory import PeakMemory

    tr = cfg.training
    multiple, kind = cfg.model.multiple, cfg.model.input
    model = build_model(cfg, splits.scale)
    model.compile(optimizer=make_optimizer(tr.optimizer, tr.learning_rate), loss=make_loss(tr.loss, cfg.base_dir),
                  jit_compile=tr.jit_compile)
    dataset = patch_dataset(splits.train, patch_size=patch_size, batch_size=tr.batch_size, seed=seed,
                            input=kind, scale=splits.scale)

    history: dict[str, list[float]] = {}
    diverged: dict[str, object] = {}
    timing = {"validation": 0.0}
    step_losses: list[float] = []  # the loss of each optimizer step, in order
    running = {"mean": 0.0}  # Keras' running mean of the loss within the current epoch

    class _Epoch(keras.callbacks.Callback):
        """Validation PSNR on whole images, NaN guard, per-step losses, and the epoch hook."""

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is None:
                return
            loss = float(loss)
            if not math.isfinite(loss):
                diverged.setdefault("where", f"epoch {len(history.get('loss', [])) + 1}, batch {batch + 1}")
                self.model.stop_training = True
                return
            # Keras logs the mean over the epoch so far; the step's own loss is recovered
            # from two consecutive means (no extra device sync: float() above is the NaN guard's).
            mean_before = running["mean"] if batch else 0.0
            step_losses.append((batch + 1) * loss - batch * mean_before)
            running["mean"] = loss

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if diverged:
                return
            t0 = time.perf_counter()
            rows = evaluate_srnet(self.model, splits.val, scale=splits.scale, multiple=multiple,
                                  memory_budget=memory_budget, input=kind)
            timing["validation"] += time.perf_counter() - t0
            logs["val_psnr"] = _mean(rows, "psnr_y")
            logs["val_ssim"] = _mean(rows, "ssim_y")
            logs["val_change_from_bicubic"] = _mean(rows, "change_from_bicubic")
            for k, v in logs.items():
                history.setdefault(k, []).append(float(v))
            if on_epoch_end is not None:
                on_epoch_end(epoch, {k: float(v) for k, v in logs.items()})

    t0 = time.perf_counter()
    # shuffle=False: the pipeline draws random patches itself (Keras would only warn).
    with PeakMemory() as peak:
        model.fit(dataset, epochs=tr.epochs, steps_per_epoch=tr.steps_per_epoch, callbacks=[_Epoch()],
                  verbose=verbose, shuffle=False)
    train_seconds = time.perf_counter() - t0
    if diverged:
        raise RunDiverged(f"loss became NaN/inf at {diverged['where']} "
                          f"(optimizer {tr.optimizer}, learning rate {tr.learning_rate})")

    test_rows = evaluate_srnet(model, splits.test, scale=splits.scale, multiple=multiple, memory_budget=memory_budget,
                               input=kind)
    steps = tr.epochs * tr.steps_per_epoch
    fit_seconds = max(train_seconds - timing["validation"], 1e-9)
    metrics = {
        "val_psnr": history["val_psnr"][-1],
        "val_ssim": history["val_ssim"][-1],
        "best_val_psnr": max(history["val_psnr"]),
        "test_psnr": _mean(test_rows, "psnr_y"),
        "test_ssim": _mean(test_rows, "ssim_y"),
        "test_psnr_rgb": _mean(test_rows, "psnr_rgb"),
        "train_seconds": train_seconds,
        "validation_seconds": timing["validation"],
        "patches_per_second": steps * tr.batch_size / fit_seconds,
        "params": float(model.count_params()),
        "inference_seconds_per_mp": sum(r["seconds"] for r in test_rows) / sum(r["megapixels"] for r in test_rows),
        "train_memory_mb": peak.megabytes,
        **loss_trend(step_losses),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / "model.keras"
    model.save(model_path)
    tags = {"env.precision": policy, "env.jit_compile": str(tr.jit_compile).lower(),
            "env.device": device_info(tr.mixed_precision)["device"]}
    return RunResult(history=history, metrics=metrics, model_path=model_path, per_image=test_rows, tags=tags)


def loss_trend(step_losses: list[float], fraction: float = 0.1) -> dict[str, float]:
    """How the training loss moved: ``train_steps`` (optimizer steps taken) and
    ``train_loss_start`` / ``train_loss_end``, the mean loss over the first and the last
    ``fraction`` of the steps (at least one step each).

    Why windows rather than the first and last step: each step sees other random patches,
    so one step's loss is noisy; the per-epoch ``loss`` is a mean over a whole epoch and
    says nothing within a one-epoch run. These three numbers let
    :mod:`doe_sr.analysis.degenerate` say "the loss moved by 0.1% over 480 steps" or
    "rose from 0.05 to 3.1".
    """
    n = len(step_losses)
    if not n:
        return {"train_steps": 0.0}
    k = max(1, int(n * fraction))
    return {"train_steps": float(n), "train_loss_start": float(np.mean(step_losses[:k])),
            "train_loss_end": float(np.mean(step_losses[-k:]))}


def bicubic_metrics(pairs: list[Pair], *, scale: int) -> dict[str, float]:
    """Mean PSNR-Y/SSIM-Y of plain bicubic upscaling: the baseline every run must beat."""
    rows = [evaluate_pair(p.bicubic, p.hr, scale=scale) for p in pairs]  # cached pairs: one image at a time
    return {"psnr": _mean(rows, "psnr_y"), "ssim": _mean(rows, "ssim_y"), "psnr_rgb": _mean(rows, "psnr_rgb")}
