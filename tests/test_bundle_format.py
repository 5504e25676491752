"""A saved model of another format is refused in one line that says what to do, never filled in with guesses.

The bundles here are real (LightGBM boosters, calibrators, tiers, saved by `save`) but tiny, trained
on random numbers in well under a second: what is tested is the saved layout, not the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.catalog import ASK_TYPE_NAMES
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES
from models.bundle import BUNDLE_FORMAT, Bundle, TargetModel, ask_rows_matrix
from models.calibration import Calibrator
from models.encoding import FeatureEncoder
from models.table_model import TABLE_FORMAT, TableBundle
from models.tiers import Tiers

ROWS = 300
PARAMS = {"objective": "binary", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5}


def _booster(x: np.ndarray, y: np.ndarray) -> lgb.Booster:
    return lgb.train(PARAMS, lgb.Dataset(x, y), num_boost_round=3)


def _small_bundle() -> Bundle:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, len(FEATURE_NAMES)))
    y = (x[:, 0] + rng.normal(size=ROWS) > 0).astype(int)
    propensity = _booster(x, y)
    propensity_model = TargetModel(propensity, Calibrator.fit(propensity.predict(x, raw_score=True), y))

    ask_types = [ASK_TYPE_NAMES[i] for i in rng.integers(0, len(ASK_TYPE_NAMES), ROWS)]
    asks = ask_rows_matrix(x, ask_types)
    answered = (x[:, 1] + rng.normal(size=ROWS) > 0).astype(int)
    acceptance = _booster(asks, answered)
    group_column = len(FEATURE_NAMES)
    calibrator = Calibrator.fit(
        acceptance.predict(asks, raw_score=True), answered, groups=asks[:, group_column], n_groups=len(ASK_TYPE_NAMES)
    )
    return Bundle(
        encoder=FeatureEncoder(FEATURE_NAMES, {c: ("a", "b") for c in CATEGORICAL_FEATURES}),
        propensity=propensity_model,
        acceptance=TargetModel(acceptance, calibrator, group_column),
        tiers=Tiers.fit(propensity_model.proba(x)),
        trained_at="2026-01-01T00:00:00+00:00",
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_bundle().save(tmp_path_factory.mktemp("bundle") / "bundle")


def _rewritten(saved: Path, tmp_path: Path, change: Any) -> Path:
    """A copy of the saved bundle whose bundle.json `change` rewrote in place."""
    copy = tmp_path / "bundle"
    copy.mkdir()
    for path in saved.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    meta = json.loads((copy / "bundle.json").read_text())
    change(meta)
    (copy / "bundle.json").write_text(json.dumps(meta))
    return copy


def test_a_bundle_of_this_format_loads_as_saved(saved: Path) -> None:
    loaded = Bundle.load(saved)
    again = _small_bundle()
    x = np.random.default_rng(1).normal(size=(20, len(FEATURE_NAMES)))
    np.testing.assert_array_equal(loaded.propensity.proba(x), again.propensity.proba(x))
    assert loaded.acceptance.group_column == again.acceptance.group_column
    assert loaded.acceptance.calibrator == again.acceptance.calibrator
    assert loaded.lapse_days == again.lapse_days
    assert json.loads((saved / "bundle.json").read_text())["format"] == BUNDLE_FORMAT


def _older(meta: dict[str, Any]) -> None:
    # What a bundle of the previous format may look like: fields it could lack, gone.
    meta["format"] = BUNDLE_FORMAT - 1
    del meta["lapse_days"]
    for name in ("propensity", "acceptance"):
        del meta[name]["sha256"], meta[name]["group_column"]
        for key in ("offsets", "slopes", "centre", "level_se"):
            del meta[name]["calibrator"][key]


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        (_older, str(BUNDLE_FORMAT - 1)),
        (lambda meta: meta.update(format=BUNDLE_FORMAT - 1), str(BUNDLE_FORMAT - 1)),
        (lambda meta: meta.pop("format"), "(none)"),
    ],
    ids=["older-and-missing-fields", "older", "before-formats-were-numbered"],
)
def test_an_older_bundle_is_refused_with_one_line_that_says_retrain(
    saved: Path, tmp_path: Path, change: Any, shown: str
) -> None:
    old = _rewritten(saved, tmp_path, change)
    with pytest.raises(ValueError, match="retrain") as refused:
        Bundle.load(old)
    message = str(refused.value)
    assert message == (
        f"model bundle format {shown} in {old} is older than this code's {BUNDLE_FORMAT}: retrain with `advocacy train`"
    )
    assert "\n" not in message


def test_a_newer_bundle_is_refused_too(saved: Path, tmp_path: Path) -> None:
    newer = _rewritten(saved, tmp_path, lambda meta: meta.update(format=BUNDLE_FORMAT + 1))
    with pytest.raises(ValueError, match=re.escape(f"format {BUNDLE_FORMAT + 1} in {newer} is newer than")):
        Bundle.load(newer)


def test_an_older_table_model_is_refused_with_one_line_that_says_retrain(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(ROWS, 2))
    y = (x[:, 0] + rng.normal(size=ROWS) > 0).astype(int)
    model = TableBundle("y", FeatureEncoder(("a", "b"), {}), _booster(x, y), Calibrator("platt", (0.9, -0.1)), {})
    directory = model.save(tmp_path / "table")
    frame = pd.DataFrame(x[:10], columns=["a", "b"])
    np.testing.assert_array_equal(TableBundle.load(directory).proba(frame), model.proba(frame))

    meta = json.loads((directory / "table_model.json").read_text())
    assert meta.pop("format") == TABLE_FORMAT
    del meta["linear"], meta["tree_weight"]  # what a table model saved before the regression existed lacks
    (directory / "table_model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="retrain") as refused:
        TableBundle.load(directory)
    assert str(refused.value) == (
        f"model bundle format (none) in {directory} is older than this code's {TABLE_FORMAT}: "
        "retrain with `advocacy train --table`"
    )
