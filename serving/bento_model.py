"""The champion inside a Bento: `bentoml build` packs a copy, served when no registry is reachable.

`import_champion_to_bentoml` copies the champion (`models.registry`) into the BentoML model store so
that `bentoml build` can pack it into a Bento (see `bentofile.yaml`).
"""

from __future__ import annotations

from pathlib import Path

from models.bundle import Bundle
from models.pyfunc import BUNDLE_ARTIFACT
from models.registry import ChampionRef, ChampionUnavailableError, resolve_champion, with_policy
from storage.settings import Settings

BENTO_MODEL_LABEL = "registered_version"


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
    ref = ChampionRef(name, version, str(model.tag), f"bentoml:{model.tag}")
    return ref, with_policy(bundle, settings or Settings())


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


if __name__ == "__main__":  # pragma: no cover - `python -m serving.bento_model` before `bentoml build`
    print(import_champion_to_bentoml(Settings()))
