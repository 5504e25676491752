"""Which model the service runs: the version `@champion` names in the MLflow registry, and its bundle.

The service never trains and never imports `training/`: it only reads the registry, so promoting or
rolling back a model (`advocacy promote` / `rollback`) is all it takes to change what is served.
`import_champion_to_bentoml` copies the champion into the BentoML model store so that
`bentoml build` can pack it into a Bento (see `bentofile.yaml`); a Bento then serves that copy when
no registry is reachable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from features.settings import Settings, redact
from models.bundle import Bundle
from models.pyfunc import BUNDLE_ARTIFACT

CHAMPION = "champion"
BENTO_MODEL_LABEL = "registered_version"

log = logging.getLogger("bentoml.advocacy")


class ChampionUnavailableError(ValueError):
    """No usable champion: no store, no alias, registry unreachable, or an unreadable artifact.

    Its message never carries credentials from the tracking URI.
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True)
class ChampionRef:
    """A registered model version, as the service reports it."""

    name: str
    version: str
    uri: str  # models:/NAME/VERSION (pinned, so a promotion during a download cannot mix versions)
    source: str  # where it came from: the tracking URI, or "bentoml:<tag>"


def _configure(settings: Settings) -> str:
    """Point MLflow at the configured store without creating one (a service must not invent a registry)."""
    import mlflow

    uri = settings.tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.exists():
            raise ChampionUnavailableError(f"no MLflow store at {db}: run `advocacy train` (or `advocacy up`) first")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def resolve_champion(settings: Settings) -> ChampionRef:
    """The version `@champion` names; `ChampionUnavailableError` (with the reason) if there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = _configure(settings)
    try:
        mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(settings.model_name, CHAMPION)
    except MlflowException as err:
        code = getattr(err, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ChampionUnavailableError(
                f"model {settings.model_name!r} has no @{CHAMPION} in {uri}: run `advocacy train` or `advocacy promote`"
            ) from None
        if _connection_failed(err):
            raise ChampionUnavailableError(f"MLflow registry at {uri} is unreachable: {err.message}") from None
        raise ChampionUnavailableError(f"MLflow registry at {uri} failed: {err.message}") from None
    except Exception as err:  # connection refused, DNS, timeouts: the registry is unreachable
        problem = f"{type(err).__name__}: {err}"
        raise ChampionUnavailableError(f"MLflow registry at {uri} is unreachable: {problem}") from None
    version = str(mv.version)
    return ChampionRef(settings.model_name, version, f"models:/{settings.model_name}/{version}", redact(uri))


def _connection_failed(err: BaseException) -> bool:
    """Whether MLflow's client gave up because it could not reach the server (refused, DNS, timeout)."""
    import requests

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def load_champion(settings: Settings) -> tuple[ChampionRef, Bundle]:
    """Resolve `@champion` and load its bundle, stamped with the registered version."""
    from models.pyfunc import load_bundle

    ref = resolve_champion(settings)
    try:
        bundle = load_bundle(ref.uri, model_version=ref.version)
    except Exception as err:  # a missing or corrupt artifact must never be served
        raise ChampionUnavailableError(
            f"champion {ref.name} version {ref.version} could not be loaded from {ref.source}: "
            f"{type(err).__name__}: {err}"
        ) from None
    return ref, bundle


def load_bento_model(tag: str | None = None, settings: Settings | None = None) -> tuple[ChampionRef, Bundle]:
    """The champion packed into this Bento (or imported into the local BentoML store)."""
    import bentoml

    name = (settings or Settings()).model_name
    try:
        model = bentoml.models.get(tag or f"{name}:latest")
    except Exception as err:
        raise ChampionUnavailableError(f"no BentoML model {tag or name + ':latest'}: {err}") from None
    version = str(model.info.labels.get(BENTO_MODEL_LABEL, model.tag.version))
    bundle_dir = Path(model.path) / "mlflow_model" / "artifacts" / BUNDLE_ARTIFACT
    try:
        bundle = Bundle.load(bundle_dir, model_version=version)
    except Exception as err:
        problem = f"{type(err).__name__}: {err}"
        raise ChampionUnavailableError(f"BentoML model {model.tag} is unreadable: {problem}") from None
    return ChampionRef(name, version, str(model.tag), f"bentoml:{model.tag}"), bundle


def import_champion_to_bentoml(settings: Settings) -> str:
    """Copy the current champion into the BentoML model store (for `bentoml build`); return its tag."""
    import bentoml

    ref = resolve_champion(settings)
    model = bentoml.mlflow.import_model(
        settings.model_name,
        ref.uri,
        labels={BENTO_MODEL_LABEL: ref.version},
        metadata={"registry": ref.source, "registered_model": ref.name},
    )
    return str(model.tag)


if __name__ == "__main__":  # pragma: no cover - `python -m serving.registry` before `bentoml build`
    print(import_champion_to_bentoml(Settings()))
