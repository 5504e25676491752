"""`advocacy plan` on the sample with the trained champion: the plan file, the stored plan, bad needs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy.cli import app
from models.planner import INVITED_AT_RANDOM, PLAN_COLUMNS
from storage.plans import PlanStore
from storage.settings import get_settings
from tests.conftest import SAMPLE, TrainedHome

pytestmark = pytest.mark.slow


def _env(home: TrainedHome) -> dict[str, str]:
    return {
        "ADVOCACY_HOME": str(home.settings.home),
        "MLFLOW_TRACKING_URI": home.settings.tracking_uri(),
        "COLUMNS": "300",
    }


def test_the_plan_is_written_stored_and_keeps_its_promise_under_the_model(
    trained_home: TrainedHome, tmp_path: Path
) -> None:
    out = tmp_path / "plan.csv"
    args = ["plan", "--data", str(SAMPLE), "--need", "review=30", "--need", "reference_call=10", "--out", str(out)]
    result = CliRunner().invoke(app, args, env=_env(trained_home))
    assert result.exit_code == 0, result.output
    plan = pd.read_csv(out)
    assert list(plan.columns) == list(PLAN_COLUMNS)
    assert plan["plan_id"].nunique() == 1 and plan["customer_id"].is_unique
    for ask_type, need in (("review", 30), ("reference_call", 10)):
        mine = plan[plan["ask_type"] == ask_type]
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert mine["p_at_least_needed"].iloc[-1] >= 0.9 > mine["p_at_least_needed"].iloc[-2]
        assert mine["expected_yes"].iloc[-1] >= need
        # Reviews are invited at random (ungated, spec 5a), and the plan says so on each row.
        drawn = ask_type == "review"
        assert mine["reason_1"].str.endswith("likelihood)").all() != drawn
        assert (mine["reason_1"] == INVITED_AT_RANDOM).all() == drawn
    assert "yes" in result.output and plan["plan_id"].iloc[0] in result.output
    assert "review: invited at random" in " ".join(result.output.split())
    stored, meta = PlanStore(trained_home.settings.plans_path()).load(plan["plan_id"].iloc[0])
    assert stored["customer_id"].tolist() == plan["customer_id"].tolist()
    assert meta["need"] == {"review": 30, "reference_call": 10} and meta["summary"]["review"]["met"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--need", "reviews=3"], "unknown ask type 'reviews'"),
        (["--need", "review=0"], "need.review"),
        (["--need", "review"], "--need review: expected TYPE=N"),
        (["--need", "review=3", "--confidence", "1.5"], "confidence"),
    ],
)
def test_a_bad_need_is_one_line_naming_the_field(trained_home: TrainedHome, extra: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["plan", "--data", str(SAMPLE), *extra], env=_env(trained_home))
    assert result.exit_code == 2
    assert named in " ".join(result.stderr.split())


def test_the_ungated_types_are_the_deployments_setting(trained_home: TrainedHome, tmp_path: Path) -> None:
    out = tmp_path / "plan.csv"
    args = ["plan", "--data", str(SAMPLE), "--need", "review=10", "--out", str(out)]
    gated = CliRunner().invoke(app, args, env={**_env(trained_home), "ADVOCACY_UNGATED_TYPES": ""})
    assert gated.exit_code == 0, gated.output
    assert not (pd.read_csv(out)["reason_1"] == INVITED_AT_RANDOM).any()
    assert "invited at random" not in gated.output
    get_settings.cache_clear()  # each command of a real shell reads its environment afresh
    wrong = CliRunner().invoke(app, args, env={**_env(trained_home), "ADVOCACY_UNGATED_TYPES": "review,reviews"})
    assert wrong.exit_code == 2
    assert "ADVOCACY_UNGATED_TYPES: ungated_types: unknown ask type 'reviews'" in " ".join(wrong.stderr.split())
