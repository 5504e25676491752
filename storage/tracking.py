"""Where MLflow tracks runs and keeps the registry: the one place it is set up.

The tracking URI comes from the settings (`MLFLOW_TRACKING_URI`, else a SQLite store under the
project's state folder). A job that writes (training, the batch job's run, the program report)
creates the local store and its experiment; one that only reads (the service, a look-up of the
champion) must not invent an empty registry where the configured one is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.settings import Settings


def configure(settings: Settings, experiment: str | None = None, *, create: bool = True) -> str:
    """Point MLflow at the configured store and return its URI.

    With `create`, the local store's folder and the experiment (`experiment`, default the
    settings') are created if missing, with artifacts under the project; without it, a missing
    local store is a `FileNotFoundError` and no experiment is touched."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = settings.tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if create:
            db.parent.mkdir(parents=True, exist_ok=True)
        elif not db.exists():
            raise FileNotFoundError(f"no MLflow store at {db}: run `advocacy train` (or `advocacy up`) first")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if create:
        name = experiment or settings.experiment
        if mlflow.get_experiment_by_name(name) is None:
            location = settings.artifact_root().resolve().as_uri() if uri.startswith("sqlite:") else None
            mlflow.create_experiment(name, artifact_location=location)
        mlflow.set_experiment(name)
    return uri
