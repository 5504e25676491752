"""The scoring recipe, written once: point-in-time features -> snapshot -> guardrails -> score.

Every job that scores customers from raw tables walks this road: a batch chunk, `advocacy plan`
(the candidates), `advocacy explain` and the benchmarks. The service starts from the snapshot the
batch job wrote with it, so its features are the recipe's, and it scores them with the same
`models.scoring.score`. Between snapshots it keeps its guardrails up to date
(`serving.guardrail_book`, from the same `models.guardrails.blocked_asks`), and restates the
ask-history features of customers whose asks were recorded since (`restate_asks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.commitments import COMMITMENT_COLUMNS
from features.context import Snapshot, build_snapshot, guardrail_signals
from features.io import World
from features.pointintime import active_points, build_features, restate_ask_history
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES
from models.bundle import Bundle
from models.guardrails import GuardrailConfig, blocked_asks
from models.scoring import Blocked, Scores, score


@dataclass
class Scored:
    """One pass of the recipe: the snapshot (features and the context the service keeps), the
    encoded rows, the guardrail blocks at `as_of` and the scores, all in the snapshot's row order."""

    as_of: pd.Timestamp
    snapshot: Snapshot
    matrix: np.ndarray
    blocked: Blocked
    scores: Scores

    @property
    def features(self) -> pd.DataFrame:
        return self.snapshot.features


def score_inputs(features: pd.DataFrame) -> dict[str, Any]:
    """Feature rows as `score` reads them: the API's types, as lists (the reasons index them per row),
    with the open accepted ask a committed result names."""
    values: dict[str, Any] = {"customer_id": features["customer_id"].to_numpy(dtype=object)}
    values["as_of"] = features["as_of"].to_numpy()
    for name in COMMITMENT_COLUMNS:
        values[name] = features[name].to_numpy(dtype=object)
    for name in FEATURE_NAMES:
        column = features[name]
        values[name] = (
            column.to_numpy(dtype=object) if name in CATEGORICAL_FEATURES else column.to_numpy(float)
        ).tolist()
    return values


def features_at(world: World, as_of: pd.Timestamp, lapse_days: int) -> pd.DataFrame:
    """The point-in-time feature table of every customer of `world` active at `as_of`."""
    return build_features(world, active_points(world, as_of), lapse_days)


def score_world(
    bundle: Bundle,
    world: World,
    as_of: pd.Timestamp,
    customer_ids: Sequence[str] | None = None,
    *,
    explain: bool = False,
    num_threads: int = 2,
    on_stage: Callable[[str], None] = lambda _: None,
) -> Scored:
    """Score the customers of `world` active at `as_of` (or just `customer_ids`, active or not) from
    events strictly before `as_of`, with the guardrail limits and commitment lapse saved with the
    model; with `explain`, every row's SHAP contributions and reasons. `on_stage` is called with
    each stage's name as it ends (a profiler's lap)."""
    if customer_ids is None:
        points = active_points(world, as_of)
    else:
        points = pd.DataFrame({"customer_id": pd.Series(list(customer_ids), dtype="str"), "as_of": as_of})
    features = build_features(world, points, bundle.lapse_days, threads=num_threads, commitments=True)
    on_stage("point-in-time features")
    snapshot = build_snapshot(world, as_of, features, bundle.lapse_days)
    on_stage("feature-store rows")
    config = GuardrailConfig.from_saved(bundle.guardrails)
    blocked = Blocked.from_frame(blocked_asks(snapshot.asks, guardrail_signals(snapshot.features), as_of, config))
    on_stage("guardrails")
    matrix = bundle.encoder.transform(features)
    on_stage("encode")
    scores = score(
        bundle,
        score_inputs(snapshot.features),
        matrix=matrix,
        blocked=blocked,
        explain=explain,
        num_threads=num_threads,
    )
    on_stage("score(): both models, tiers, next ask")
    return Scored(as_of, snapshot, matrix, blocked, scores)


def restate_asks(
    asks: pd.DataFrame, deliveries: pd.DataFrame, customer_ids: Sequence[str], as_of: pd.Timestamp, lapse_days: int
) -> pd.DataFrame:
    """The ask-history features and open accepted ask of `customer_ids` at `as_of`, from their asks
    (one per `ask_id`) and the activities that delivered them: the columns of a snapshot row that an
    ask recorded after the snapshot can change, computed by the code that computed the rest."""
    points = pd.DataFrame({"customer_id": pd.Series(list(customer_ids), dtype="str"), "as_of": as_of})
    return restate_ask_history(asks, deliveries, points, lapse_days)
