"""`advocacy recalibrate`: new calibrators on the champion's own trees, through the gate (issue 17)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy.cli import app
from features.io import read_world
from models.pyfunc import load_bundle
from storage.files import write_tables
from storage.settings import Settings
from tests.conftest import SAMPLE
from training import registry
from training.pipeline import train

pytestmark = pytest.mark.slow


def _faded(out: Path) -> Path:
    """The sample with willingness fading: in the newest 45% of asks, half the yeses became noes."""
    world = read_world(SAMPLE)
    tables = world.as_dict()
    asks = tables["asks"].copy()
    newest = asks["asked_at"] >= asks["asked_at"].quantile(0.55)
    rng = np.random.default_rng(0)
    flip = newest & asks["outcome"].eq("accepted") & (rng.random(len(asks)) < 0.5)
    asks.loc[flip, "outcome"] = "declined"
    tables["asks"] = asks
    # A declined ask leaves no delivered activity behind.
    acts = tables["activities"]
    tables["activities"] = acts[~acts["ask_id"].isin(set(asks.loc[flip, "ask_id"]))].reset_index(drop=True)
    write_tables(tables, out)
    return out


def test_recalibration_fixes_faded_acceptance_without_touching_the_trees(tmp_path: Path) -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    home = tmp_path / "home"
    settings = Settings(home=home, data_dir=SAMPLE)
    env = {"ADVOCACY_HOME": str(home), "COLUMNS": "300", "MLFLOW_TRACKING_URI": settings.tracking_uri()}

    missing = CliRunner().invoke(app, ["recalibrate", "--data", str(SAMPLE)], env=env)
    assert missing.exit_code != 0 and "no @champion" in " ".join(missing.stderr.split())

    first = train(settings)
    assert first.promoted
    faded = _faded(tmp_path / "faded")
    result = CliRunner().invoke(app, ["recalibrate", "--data", str(faded)], env=env)
    assert result.exit_code == 0, result.output
    assert "promoted: recalibrated" in " ".join(result.output.split())

    registry.configure(settings)
    champion = registry.champion(settings.model_name)
    assert champion is not None and champion.version != first.version
    old, new = load_bundle(f"models:/{settings.model_name}/{first.version}"), load_bundle(champion.uri)
    for target in ("propensity", "acceptance"):  # the same trees, new calibrators
        assert getattr(new, target).booster.model_to_string() == getattr(old, target).booster.model_to_string()
    assert new.acceptance.calibrator != old.acceptance.calibrator
    assert len(new.acceptance.calibrator.offsets) == 9  # one per ask type

    # On the newest answered asks, the recalibrated promise is near what happened; the old one is not.
    from training.datasets import build_training_data
    from training.fit import encode

    data = build_training_data(read_world(faded))
    m = encode(data, new.encoder)["acceptance"]
    observed = m.y["test"].mean()
    assert abs(new.acceptance.proba(m.x["test"]).mean() - observed) < 0.03
    assert old.acceptance.proba(m.x["test"]).mean() - observed > 0.05

    # Recalibrating a model that is already calibrated on these rows gains nothing: refused, it stays.
    again = CliRunner().invoke(app, ["recalibrate", "--data", str(faded)], env=env)
    assert again.exit_code == 0, again.output
    assert "refused" in again.output and "stays" in " ".join(again.output.split())
    after = registry.champion(settings.model_name)
    assert after is not None and after.version == champion.version
    frame = pd.DataFrame(new.metrics, index=[0])
    assert {"gate_acceptance_ece_drop_ci_low", "gate_propensity_auc_change_ci_high"} <= set(frame.columns)
