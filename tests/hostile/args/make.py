"""Inputs of the argument cases: an HR folder with one image, an empty MLflow store."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np


def hr_folder(work: Path) -> None:
    (work / "hr").mkdir()
    iio.imwrite(work / "hr" / "ok.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def empty_store(work: Path) -> None:
    """An MLflow store (mlflow.db) without the run asked for."""
    from mlflow.tracking import MlflowClient

    hr_folder(work)
    (work / "mlruns").mkdir()
    MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}").search_experiments()
