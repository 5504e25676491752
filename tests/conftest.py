"""Shared fixtures: small generated worlds and a trained champion, each made once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from features.context import Snapshot
from features.io import World, world_from_tables
from storage.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def pytest_configure(config: pytest.Config) -> None:
    # OpenMP threads that spin while waiting starve everything else on a 2-core machine (servers,
    # other workers); passive waiting made LightGBM-heavy tests 5x faster under load. OpenMP reads
    # it when LightGBM loads its runtime: this runs before any test module is imported (the imports
    # above do not load LightGBM), and subprocesses that tests start inherit it. scripts/test also
    # exports it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Every program report made from data with deals (the sample's) estimates the effect of a
    # reference, refitting its learner per bootstrap resample and refutation simulation: tests of
    # anything else, and the servers they start, must not pay for a real interval.
    os.environ.setdefault("ADVOCACY_DEAL_RESAMPLES", "3")
    os.environ.setdefault("ADVOCACY_DEAL_REFUTATION_SIMULATIONS", "0")


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow exports MLFLOW_TRACKING_URI whenever a store is chosen, and the CLI caches the settings
    of its first command: keep one test's store and home out of the next."""
    from storage.settings import get_settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def generated_world() -> World:
    """A small synthetic world (validated through the data contract like user data)."""
    from features.synthetic import generate_world

    return world_from_tables(generate_world(n_customers=400, months=24, seed=7).tables)


@dataclass
class TrainedHome:
    """A project home with a local MLflow store whose `@champion` was trained on the sample data."""

    settings: Settings
    version: str
    metrics: dict[str, float]

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (server, CLI) that should use this home."""
        return {
            **os.environ,
            "ADVOCACY_HOME": str(self.settings.home),
            "ADVOCACY_DATA_DIR": str(self.settings.resolved_data_dir()),
            **extra,
        }


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """Train once on `data/sample` into a fresh local MLflow store and promote it to `@champion`."""
    from training.pipeline import train

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, data_dir=SAMPLE)
    result = train(settings)
    assert result.promoted, result.gate.reason
    return TrainedHome(settings, result.version, result.metrics)


@pytest.fixture(scope="session")
def served_snapshot(trained_home: TrainedHome) -> Snapshot:
    """The feature snapshot test servers serve: the champion's data as of its last observed day."""
    from features.context import build_snapshot
    from features.io import read_world
    from features.labels import observed_until

    world = read_world(trained_home.settings.resolved_data_dir())
    return build_snapshot(world, observed_until(world))
