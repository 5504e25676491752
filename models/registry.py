"""The champion look-up: the version `@champion` names in the MLflow registry, and its bundle.

The one place the alias is read: the service, the batch job and training (`training.registry`, which
also moves the alias) all ask here. Promoting or rolling back a model (`advocacy promote` /
`rollback`) is all it takes to change what is served and scored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from models.bundle import Bundle
from models.guardrails import GuardrailConfig
from storage.settings import Settings, redact

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION = "champion"
BENTO_MODEL_LABEL = "registered_version"


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
    from storage.tracking import configure

    try:
        return configure(settings, create=False)
    except FileNotFoundError as err:
        raise ChampionUnavailableError(str(err)) from None


def resolve_champion(settings: Settings) -> ChampionRef:
    """The version `@champion` names; `ChampionUnavailableError` (with the reason) if there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = _configure(settings)
    try:
        mv = champion_version(MlflowClient(tracking_uri=uri, registry_uri=uri), settings.model_name)
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


def champion_version(client: MlflowClient, model_name: str) -> ModelVersion:
    """The model version `@champion` names; MLflow's `MlflowException` if there is none."""
    return client.get_model_version_by_alias(model_name, CHAMPION)


def find_champion(model_name: str) -> ChampionRef | None:
    """The version `@champion` of `model_name` names in the registry MLflow is pointed at (by
    `storage.tracking.configure`), or None if there is none yet."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        mv = champion_version(MlflowClient(), model_name)
    except MlflowException:
        return None
    version = str(mv.version)
    return ChampionRef(model_name, version, f"models:/{model_name}/{version}", redact(mlflow.get_tracking_uri()))


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
    return ref, with_policy(bundle, settings)


def with_policy(bundle: Bundle, settings: Settings) -> Bundle:
    """The bundle with the deployment's ungated ask types (`ADVOCACY_UNGATED_TYPES`) among its
    guardrails: a policy of the program, not of the model, so it is read where the model is loaded
    and every door (batch, service, plans) sees the same one."""
    names = settings.ungated_type_names()
    try:
        GuardrailConfig.from_saved({**bundle.guardrails, "ungated_types": names})
    except ValueError as err:
        raise ValueError(f"ADVOCACY_UNGATED_TYPES: {err}") from None
    return replace(bundle, guardrails={**bundle.guardrails, "ungated_types": list(names)})
