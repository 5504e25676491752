"""The rule-based 100-point baseline (spec section 4), computed from the point-in-time features."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

RULES_VERSION = "1.0.0"
QUALIFIED_ABOVE = 60
BASELINE_TIERS: tuple[tuple[str, int], ...] = (
    ("champion", 90),
    ("advocate", 75),
    ("supporter", 61),
)
NO_TIER = "none"


# A DataFrame or a mapping of column name -> array: the API scores without building a DataFrame.
Features: TypeAlias = pd.DataFrame | Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    """One criterion of the points rule: points earned when `applies` holds."""

    name: str
    label: str
    points: int
    description: str
    applies: Callable[[Features], np.ndarray]


def _num(frame: Features, col: str) -> np.ndarray:
    # NaN (unknown) compares False, so an unknown signal earns no points.
    return np.asarray(frame[col], dtype="float64")


RULES: tuple[Rule, ...] = (
    Rule(
        "promoter",
        "Promoter",
        25,
        "latest NPS score 9 or 10",
        lambda f: _num(f, "nps_last") >= 9,
    ),
    Rule(
        "power_user",
        "Power user",
        20,
        "feature adoption above 70%",
        lambda f: _num(f, "adoption") > 0.70,
    ),
    Rule(
        "healthy",
        "Healthy",
        20,
        "health score above 80",
        lambda f: _num(f, "health_score") > 80,
    ),
    Rule(
        "established",
        "Established",
        15,
        "tenure above 12 months",
        lambda f: _num(f, "tenure_months") > 12,
    ),
    Rule(
        "active",
        "Active",
        10,
        "a positive social mention in 12 months",
        lambda f: _num(f, "social_positive_12m") >= 1,
    ),
    Rule(
        "willing",
        "Willing",
        10,
        "accepted at least one earlier ask",
        lambda f: _num(f, "accepts_total") >= 1,
    ),
)
BASELINE_FEATURES: tuple[str, ...] = (
    "nps_last",
    "adoption",
    "health_score",
    "tenure_months",
    "social_positive_12m",
    "accepts_total",
)


def baseline_tier(points: np.ndarray | pd.Series) -> np.ndarray:
    """Tier names for point totals: champion >= 90, advocate 75..89, supporter 61..74, else none."""
    values = np.asarray(points)
    tiers = np.full(values.shape, NO_TIER, dtype=object)
    for name, floor in reversed(BASELINE_TIERS):
        tiers[values >= floor] = name
    return tiers


def qualified(points: np.ndarray | pd.Series | int) -> np.ndarray:
    """True where a point total qualifies: strictly more than `QUALIFIED_ABOVE`."""
    return np.asarray(points) > QUALIFIED_ABOVE


def rule_points(features: Features) -> np.ndarray:
    """Points earned per criterion: an (n rows x len(RULES)) int matrix."""
    return np.stack([np.where(rule.applies(features), rule.points, 0) for rule in RULES], axis=1).astype(np.int64)


def score_baseline(features: pd.DataFrame) -> pd.DataFrame:
    """Points per criterion (`points_<rule>`), total `points`, `qualified` and `tier`, one row per feature row."""
    earned = rule_points(features)
    out = pd.DataFrame(earned, index=features.index, columns=[f"points_{r.name}" for r in RULES])
    total = earned.sum(axis=1)
    out["points"] = total
    out["qualified"] = qualified(total)
    out["tier"] = baseline_tier(total)
    return out


def breakdown(row: pd.Series) -> list[dict[str, object]]:
    """The breakdown of one scored row, for people: each criterion, its points and whether it was earned."""
    return [
        {
            "criterion": r.name,
            "label": r.label,
            "description": r.description,
            "points": int(row[f"points_{r.name}"]),
            "max_points": r.points,
        }
        for r in RULES
    ]
