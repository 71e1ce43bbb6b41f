"""Trained models that runs logged: find the run, download its ``.keras`` file, read its params.

Why in tracking: only this package speaks MLflow. What it hands out is a local file
path and plain params, so `doe_sr.sr` loads the network with Keras without knowing
where the file came from (``sr`` and ``tracking`` are independent siblings).
"""

from __future__ import annotations

from pathlib import Path

from doe_sr.core.errors import UserError
from doe_sr.tracking.store import quiet_mlflow, resolve_uri

__all__ = ["MODEL_ARTIFACT", "model_file", "run_model"]

#: where an array run logs its trained network (``model/<name>.keras``)
MODEL_ARTIFACT = "model"


def model_file(client, run_id: str) -> Path:  # noqa: ANN001 - an mlflow MlflowClient
    """The run's ``model/*.keras`` artifact, downloaded to a local path.

    Listed before it is downloaded: for a run that logged no ``model/`` folder (a failed
    or unfinished run) MLflow's download raises "Failed to download artifacts" with a
    traceback instead of returning an empty folder.
    """
    names = sorted(Path(a.path).name for a in client.list_artifacts(run_id, MODEL_ARTIFACT)
                   if a.path.endswith(".keras"))
    if not names:
        raise UserError(f"MLflow run {run_id} has no model artifact (model/*.keras); was it a finished array run?")
    return Path(client.download_artifacts(run_id, f"{MODEL_ARTIFACT}/{names[0]}"))


def run_model(run_id: str, tracking_uri: str) -> tuple[Path, dict[str, str]]:
    """(local ``.keras`` file, params) of the array run ``run_id`` in the store at ``tracking_uri``.

    ``tracking_uri`` is what the user typed (``--tracking-uri``): a local folder must
    already hold a store (opening a missing one would create an empty store and then
    report the run as unknown), and a run id the store does not know is one line.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _check_local_store(tracking_uri)
    quiet_mlflow()
    uri, _ = resolve_uri(tracking_uri)

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"--model: {run_id!r} is neither bicubic/esrgan/realesrgan, a .keras file, nor an MLflow "
                        f"run id in {uri}; check --tracking-uri") from None
    return model_file(client, run_id), dict(run.data.params)


def _check_local_store(tracking_uri: str) -> None:
    """A local store must already hold runs: opening a missing one would create an empty store."""
    if "://" in tracking_uri or tracking_uri.startswith("databricks"):
        return
    folder = Path(tracking_uri).expanduser()
    if not (folder / "mlflow.db").is_file():
        raise UserError(f"--tracking-uri: no MLflow store in {folder} (no mlflow.db); point it at the folder "
                        "of the study's runs (its tracking.uri)")
