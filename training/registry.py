"""MLflow tracking and the model registry: where runs go, the `@champion` alias, promotion and rollback."""

from __future__ import annotations

import json

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from models.registry import CHAMPION, ChampionRef, find_champion
from storage.settings import Settings
from storage.tracking import configure as configure_tracking

_HISTORY_TAG = "champion_history"


def configure(settings: Settings, experiment: str | None = None) -> str:
    """Point MLflow at the configured store, creating it and the experiment if missing."""
    return configure_tracking(settings, experiment)


def champion(model_name: str) -> ChampionRef | None:
    """The version `@champion` names, or None if there is none yet."""
    return find_champion(model_name)


def _history(client: MlflowClient, model_name: str) -> list[str]:
    tags = client.get_registered_model(model_name).tags
    return list(json.loads(tags.get(_HISTORY_TAG, "[]")))


def promote(model_name: str, version: str, reason: str = "promoted by hand") -> None:
    """Move `@champion` to `version`, remembering the previous champion for rollback."""
    client = MlflowClient()
    try:
        client.get_model_version(model_name, version)
    except MlflowException:
        raise ValueError(f"model {model_name!r} has no version {version!r}") from None
    history = _history(client, model_name)
    if not history or history[-1] != str(version):
        history.append(str(version))
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    client.set_registered_model_tag(model_name, _HISTORY_TAG, json.dumps(history[-50:]))
    client.set_model_version_tag(model_name, str(version), "promotion", reason)


def rollback(model_name: str) -> str:
    """Move `@champion` back to the champion before the current one; return that version."""
    client = MlflowClient()
    try:
        history = _history(client, model_name)
    except MlflowException:
        raise ValueError(f"no registered model named {model_name!r}") from None
    if len(history) < 2:
        raise ValueError("there is no earlier champion to roll back to")
    history.pop()
    previous = history[-1]
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.set_registered_model_tag(model_name, _HISTORY_TAG, json.dumps(history))
    client.set_model_version_tag(model_name, previous, "promotion", "restored by rollback")
    return previous
