"""The pattern-cached TreeSHAP behind the batch job's reasons: LightGBM's exact values, faster."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from models.explain_fast import PatternTreeShap, ambiguous_rows


def _synthetic_booster(**params: Any) -> tuple[lgb.Booster, np.ndarray]:
    """A booster with every kind of split: numeric with NaN or zero as missing, categorical, a lone leaf."""
    rng = np.random.default_rng(5)
    n = 3000
    x = rng.normal(size=(n, 6))
    x[:, 1] = rng.integers(0, 6, n)  # categorical
    x[rng.random(n) < 0.2, 0] = np.nan
    x[rng.random(n) < 0.3, 2] = 0.0
    x[rng.random(n) < 0.1, 1] = np.nan
    logit = np.nan_to_num(x[:, 0]) + (x[:, 1] % 2) - x[:, 2] * x[:, 3] + 0.5 * x[:, 4]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    data = lgb.Dataset(x, y, categorical_feature=[1], free_raw_data=False)
    base = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1, "seed": 1, "num_threads": 1}
    return lgb.train({**base, **params}, data, num_boost_round=25), x


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False}, {"num_leaves": 63}])
def test_fast_treeshap_on_every_kind_of_split(params: dict[str, Any]) -> None:
    booster, x = _synthetic_booster(**params)
    fast, _ = PatternTreeShap(booster).fast_contributions(x)
    exact = np.asarray(booster.predict(x, pred_contrib=True))
    assert np.max(np.abs(fast - exact)) < 1e-10


def test_near_ties_are_recomputed_exactly() -> None:
    booster, x = _synthetic_booster()
    exact = np.asarray(booster.predict(x[:50], pred_contrib=True))
    nudged = exact.copy()
    nudged[0, 3] = nudged[0, 4] = 0.7  # a tie among the top: rounding could order it either way
    assert ambiguous_rows(nudged)[0]
    assert PatternTreeShap(booster).exact_where_ambiguous(nudged, x[:50]) >= 1
    np.testing.assert_array_equal(nudged[0], exact[0])
