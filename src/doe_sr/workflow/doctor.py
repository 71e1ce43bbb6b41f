"""``doe-sr doctor``: the environment a study would run in, checked before hours of training.

Why: a study that silently trains on the CPU because CUDA was not found, in float32
because the GPU is older than expected, into an MLflow store nobody will look in, or
that will try to download ESRGAN on an offline cluster node, wastes a night. The doctor
answers those questions in one screen, without training anything. Each section is a
plain dict so ``--format json`` can print it unchanged.
"""

from __future__ import annotations

import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from doe_sr.core.errors import UserError
from doe_sr.study.schema import Study

PACKAGES = ("doe-sr", "tensorflow", "keras", "numpy", "mlflow", "optuna", "pyDOE3", "scikit-image")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices(mixed_precision: str = "auto", jit_compile: bool = False) -> dict[str, object]:
    """What TensorFlow sees and the precision ``mixed_precision`` resolves to on it."""
    import tensorflow as tf

    from doe_sr.sr.train import compute_policy, device_info

    info = device_info(mixed_precision)
    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    return {
        "train_on": info["device"],
        "gpus": [{"name": d.get("device_name", g.name), "compute_capability": ".".join(map(str, d.get("compute_capability", ())))}
                 for g, d in zip(gpus, details)],
        "cpu": f"{_cpu_model()} ({os.cpu_count()} logical cores)",
        "cuda_build": str(tf.sysconfig.get_build_info().get("cuda_version", "")) or "none (CPU-only TensorFlow)",
        "cudnn_build": str(tf.sysconfig.get_build_info().get("cudnn_version", "")) or "none",
        "precision": compute_policy(mixed_precision),
        "mixed_precision_setting": mixed_precision,
        "jit_compile": jit_compile,
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def stores(study: Study | None) -> dict[str, str]:
    """Where the study's runs are recorded (MLflow) and queued (Optuna)."""
    from doe_sr.core.errors import UserError
    from doe_sr.engine.queue import default_storage
    from doe_sr.tracking.store import resolve_uri

    uri = study.tracking.uri if study else "mlruns"
    try:
        tracking, artifacts = resolve_uri(uri)
    except UserError as exc:  # doctor reports an unreachable server or a bad URI; it does not stop there
        tracking, artifacts = f"{uri} (problem: {exc})", None
    out = {"mlflow_tracking_uri": tracking, "mlflow_artifacts": artifacts or "(the server's default)"}
    if study is not None:
        out["optuna_storage"] = default_storage(study)
        out["mlflow_experiment"] = study.experiment
    else:
        out["optuna_storage"] = "sqlite:///<tracking folder>/optuna.db (per study; pass a study file)"
    return out


def data_section(study: Study | None) -> dict[str, object]:
    """What ``data.source`` points at, without decoding any image."""
    from doe_sr.sr.data import list_images, pair_cache_dir
    from doe_sr.sr.div2k import discover

    cache = pair_cache_dir()
    free = shutil.disk_usage(cache if cache.exists() else Path.home()).free
    out: dict[str, object] = {"pair_cache": f"{cache} ({free / 2**30:.0f} GiB free)"}
    if study is None:
        return out
    d = study.data
    out.update({"source": d.source, "scale": d.scale, "protocol": d.protocol, "cache": d.cache})
    if d.source == "sample":
        out["layout"] = "scikit-image's bundled images"
        return out
    folder = Path(d.source)
    layout = discover(folder, scale=d.scale) if folder.is_dir() else None
    if layout is not None:
        n = len(layout.train_hr) + len(layout.valid_hr)
        out["layout"] = (f"DIV2K: {len(layout.train_hr)} train + {len(layout.valid_hr)} valid HR images, "
                         f"official x{d.scale} LR for {len(layout.lr)} of {n}")
    else:
        try:
            out["layout"] = f"folder of {len(list_images(folder))} HR images"
        except UserError as exc:
            out["layout"] = f"PROBLEM: {exc}"
    return out


def esrgan_weights() -> dict[str, str]:
    """Where the comparison's ESRGAN weights come from; nothing is downloaded here."""
    from doe_sr.sr.download import default_cache_dir
    from doe_sr.sr.models.esrgan import ESRGAN_FILENAME, ESRGAN_URL
    from doe_sr.sr.weights.ncnn import PACKAGE, realesrgan_x4plus_files

    try:
        param, _ = realesrgan_x4plus_files()
        real = f"{param.parent} (installed package {PACKAGE})"
    except UserError as exc:
        real = f"PROBLEM: {exc}"
    cached = default_cache_dir() / ESRGAN_FILENAME
    original = (f"{cached} (cached)" if cached.is_file()
                else f"not cached; first use downloads {ESRGAN_URL} into {cached.parent}")
    return {"realesrgan_x4plus": real, "esrgan_original": original}


def diagnose(study: Study | None) -> dict[str, dict]:
    """Every section of the report, for a study (or the defaults without one)."""
    tr = study.training if study else None
    return {
        "devices": devices(tr.mixed_precision if tr else "auto", tr.jit_compile if tr else False),
        "versions": versions(),
        "tracking": stores(study),
        "data": data_section(study),
        "esrgan": esrgan_weights(),
    }
