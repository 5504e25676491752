"""What the CRM is told (spec section 10): one Advocate Profile per customer, one Advocacy Activity per campaign ask.

The profiles describe what the service serves: the published feature snapshot, with the asks
recorded through `POST /asks` since then counted as the service counts them (one ask per `ask_id`,
`features.io.merge_asks`; ask-history features restated, `usecases.recipe.restate_asks`; guardrails
at the present), scored by `models.scoring.score`, so a profile's tier, score and reasons are the
batch output's and the API's. A customer the CRM was sent before who is no longer in the snapshot
has churned: the profile says so, unavailable, and empties what would otherwise go stale.

Records are plain dicts of JSON values under our field names (`PROFILE_FIELDS`, `ACTIVITY_FIELDS`,
kinds in `FIELD_KINDS`); the CRM adapters rename and format them. Nothing here reads the time of
day into a record: a record changes only when what it says changes, so the sync sends only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from features.context import PLAN_LINKS, guardrail_signals
from features.contracts import CONTRACTS
from features.io import merge_asks
from features.keys import is_in
from features.plan_links import empty_plan_links, merge_plan_links
from features.spec import FEATURE_VERSION
from models.bundle import Bundle
from models.explain_fast import PatternTreeShap
from models.guardrails import GuardrailConfig, blocked_asks
from models.scoring import Blocked, Scores, score
from storage.asklog import AskLog
from storage.snapshots import current_snapshot_dir, read_meta
from usecases.recipe import restate_asks, score_inputs

PROFILES, ACTIVITIES = "profiles", "activities"  # the two kinds of record, in the order they are sent
KEYS = {PROFILES: "customer_id", ACTIVITIES: "ask_id"}  # the unique (external id) field of each kind
FIELD_KINDS: dict[str, str] = {  # our field -> text, number, bool, date or datetime
    "customer_id": "text",
    "advocacy_tier": "text",
    "advocacy_score": "number",
    "advocacy_points": "number",
    "activities_completed": "number",
    "last_participation": "date",
    "preferred_activities": "text",
    "available_for_references": "bool",
    "unavailable_until": "date",
    "unavailable_reason": "text",
    "next_best_ask": "text",
    "committed_ask_id": "text",
    "committed_ask_type": "text",
    "top_reasons": "text",
    "re_engage": "bool",
    "industry": "text",
    "churned": "bool",
    "model_version": "text",
    "features_as_of": "datetime",
    "ask_id": "text",
    "ask_type": "text",
    "asked_at": "datetime",
    "outcome": "text",
    "responded_at": "datetime",
    "plan_id": "text",
    "delivered_at": "datetime",
}
PROFILE_FIELDS: tuple[str, ...] = (
    "customer_id",
    "advocacy_tier",
    "advocacy_score",
    "advocacy_points",
    "activities_completed",
    "last_participation",
    "preferred_activities",
    "available_for_references",
    "unavailable_until",
    "unavailable_reason",
    "next_best_ask",
    "committed_ask_id",
    "committed_ask_type",
    "top_reasons",
    "re_engage",
    "industry",
    "churned",
    "model_version",
    "features_as_of",
)
ACTIVITY_FIELDS: tuple[str, ...] = (
    "ask_id",
    "customer_id",
    "ask_type",
    "asked_at",
    "outcome",
    "responded_at",
    "plan_id",
    "delivered_at",
)
FIELDS = {PROFILES: PROFILE_FIELDS, ACTIVITIES: ACTIVITY_FIELDS}
PREFERRED_ACTIVITIES = 3  # the likeliest ask types a profile lists
CHURNED = "churned"
MULTI_SEPARATOR = ";"  # between values of one field: both CRMs' multi-select separator
REASON_SEPARATOR = " | "
EXACT_REASONS_UP_TO = 2_000  # rows explained with LightGBM's exact call; more go through PatternTreeShap
_ASK_COLUMNS = ("ask_id", "customer_id", "ask_type", "asked_at", "outcome", "responded_at")


@dataclass
class ProfileBase:
    """The published snapshot's rows for the customers to describe, their asks (the snapshot's and
    the ask log's, one per `ask_id`, with `delivered_at` where the snapshot knew it) and which
    recorded asks were made for a campaign (`ask_id`, `plan_id`)."""

    as_of: pd.Timestamp
    features: pd.DataFrame
    asks: pd.DataFrame
    links: pd.DataFrame

    @property
    def customer_ids(self) -> list[str]:
        return [str(c) for c in self.features["customer_id"].tolist()]


def read_base(
    feature_store: Path, log: AskLog | None, lapse_days: int, customer_ids: Sequence[str] | None = None
) -> ProfileBase:
    """The profile base from the snapshot `CURRENT` points at and the ask log (None: nothing recorded),
    for every customer of the snapshot or only `customer_ids` (those it holds)."""
    folder = current_snapshot_dir(feature_store)
    meta = read_meta(folder)
    if meta.get("feature_version") != FEATURE_VERSION:
        raise ValueError(
            f"the feature snapshot has feature version {meta.get('feature_version')}, this code computes "
            f"{FEATURE_VERSION}: write a new one (`advocacy score`)"
        )
    wanted = None if customer_ids is None else [("customer_id", "in", sorted({str(c) for c in customer_ids}) or [""])]
    features = pd.read_parquet(folder / "features.parquet", filters=wanted).reset_index(drop=True)
    stored = pd.read_parquet(folder / "asks.parquet", filters=wanted)
    ids = features["customer_id"].astype("str")
    logged = CONTRACTS["asks"].empty() if log is None else log.read(None if customer_ids is None else ids.tolist())
    logged = logged[is_in(logged["customer_id"].astype("str"), ids)].reset_index(drop=True)
    asks = merge_asks(stored.loc[:, list(_ASK_COLUMNS)].reset_index(drop=True), logged)
    delivered = stored.set_index(stored["ask_id"].astype("str"))["delivered_at"]
    asks["delivered_at"] = delivered.reindex(asks["ask_id"].astype("str").to_numpy()).to_numpy()
    snapshot_links = folder / f"{PLAN_LINKS}.parquet"
    links = merge_plan_links(
        pd.read_parquet(snapshot_links).astype("str") if snapshot_links.exists() else empty_plan_links(),
        empty_plan_links() if log is None else log.plan_links(),
    )
    features = _restated(features, asks, stored, logged, pd.Timestamp(meta["as_of"]), lapse_days)
    return ProfileBase(pd.Timestamp(meta["as_of"]), features, asks, links)


def _restated(
    features: pd.DataFrame,
    asks: pd.DataFrame,
    stored: pd.DataFrame,
    logged: pd.DataFrame,
    as_of: pd.Timestamp,
    lapse_days: int,
) -> pd.DataFrame:
    """The feature rows with the ask history of customers who have recorded asks restated, as the
    service restates them (`serving.state.ServingState.catch_up`): deliveries are the snapshot's."""
    touched = sorted(set(logged["customer_id"].astype("str")) & set(features["customer_id"].astype("str")))
    if not touched:
        return features
    mine = asks[asks["customer_id"].astype("str").isin(touched)].loc[:, list(_ASK_COLUMNS)]
    done = stored[stored["delivered_at"].notna() & stored["customer_id"].astype("str").isin(touched)]
    deliveries = pd.DataFrame(
        {"customer_id": done["customer_id"], "ask_id": done["ask_id"], "occurred_at": done["delivered_at"]}
    )
    restated = restate_asks(mine.reset_index(drop=True), deliveries, touched, as_of, lapse_days)
    restated.index = pd.Index(touched)
    mask = features["customer_id"].astype("str").isin(touched).to_numpy()
    part = features[mask].copy()
    for name in restated.columns:  # whole columns: each takes the restated type
        part[name] = restated[name].reindex(part["customer_id"].astype("str").to_numpy()).to_numpy()
    return pd.concat([features[~mask], part]).sort_index()


def score_base(bundle: Bundle, base: ProfileBase, now: pd.Timestamp) -> Scores:
    """`models.scoring.score` over the base with the guardrails at `now`, with the top reasons (exact
    for a few rows, `PatternTreeShap` for many: the same top three either way)."""
    features = base.features
    config = GuardrailConfig.from_saved(bundle.guardrails)
    asks = base.asks.loc[:, list(_ASK_COLUMNS)]
    blocked = Blocked.from_frame(blocked_asks(asks, guardrail_signals(features), now, config))
    matrix = bundle.encoder.transform(features)
    exact = len(features) <= EXACT_REASONS_UP_TO
    scores = score(bundle, score_inputs(features), matrix=matrix, blocked=blocked, explain=exact, num_threads=2)
    if not exact:
        scores.contributions, _ = PatternTreeShap(bundle.propensity.booster).contributions(matrix)
    return scores


def _plain(values: Any) -> list[Any]:
    """A column as JSON values: numpy scalars unwrapped, NaN, NaT and pandas' NA as None."""
    out = pd.Series(values, dtype=object)
    return out.where(out.notna(), None).tolist()


def _dates(values: Any) -> list[str | None]:
    stamps = pd.to_datetime(pd.Series(values), utc=True)
    return [None if pd.isna(t) else f"{t:%Y-%m-%d}" for t in stamps]


def _times(values: Any) -> list[str | None]:
    stamps = pd.to_datetime(pd.Series(values), utc=True)
    return [None if pd.isna(t) else f"{t:%Y-%m-%dT%H:%M:%SZ}" for t in stamps]


def _reference_blocks(scores: Scores) -> tuple[list[str | None], list[str | None]]:
    """Per customer: the guardrail that keeps a reference call off (None: available) and until when."""
    reasons: list[str | None] = []
    until: list[str | None] = []
    for cid in scores.customer_id.tolist():
        block = scores.blocked.for_customer(str(cid)).get("reference_call")
        reasons.append(None if block is None else block[0])
        until.append(None if block is None or block[2] is None else str(block[2])[:10])
    return reasons, until


def profile_records(scores: Scores, features: pd.DataFrame) -> list[dict[str, Any]]:
    """One Advocate Profile per scored customer (the rows of `features`, in order)."""
    table = scores.columns()
    n = len(table)
    order = np.argsort(-scores.acceptance, axis=1, kind="stable")[:, :PREFERRED_ACTIVITIES]
    names = np.array(ASK_TYPE_NAMES, dtype=object)
    reasons, until = _reference_blocks(scores)
    as_of = pd.to_datetime(features["as_of"], utc=True)
    quiet = pd.to_timedelta(pd.to_numeric(features["days_since_last_activity"], errors="coerce"), unit="D")
    committed = table["committed"].to_numpy(dtype=bool)
    columns: dict[str, list[Any]] = {
        "customer_id": [str(c) for c in table["customer_id"].tolist()],
        "advocacy_tier": _plain(table["tier"]),
        "advocacy_score": _plain(table["percentile"]),
        "advocacy_points": [int(p) for p in table["baseline_points"].tolist()],
        "activities_completed": [int(a) for a in np.nan_to_num(features["activities_total"].to_numpy(float))],
        "last_participation": _dates(as_of - quiet),
        "preferred_activities": [MULTI_SEPARATOR.join(names[row]) for row in order.tolist()],
        "available_for_references": [r is None for r in reasons],
        "unavailable_until": until,
        "unavailable_reason": reasons,
        "next_best_ask": _plain(table["next_best_ask"]),
        "committed_ask_id": _plain(table["committed_ask_id"]),
        "committed_ask_type": _plain(features["committed_ask_type"].where(committed, None)),
        "top_reasons": [
            REASON_SEPARATOR.join(str(r) for r in texts if r is not None and r == r)
            for texts in zip(*(table[f"reason_{k}"].tolist() for k in (1, 2, 3)), strict=True)
        ],
        "re_engage": [bool(v) for v in table["re_engage"].tolist()],
        "industry": _plain(features["industry"]),
        "churned": [False] * n,
        "model_version": [str(v) for v in table["model_version"].tolist()],
        "features_as_of": _times(table["features_as_of"]),
    }
    return [dict(zip(PROFILE_FIELDS, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def churned_profile(customer_id: str) -> dict[str, Any]:
    """The profile of a customer who left: churned, unavailable, nothing else left to go stale."""
    record: dict[str, Any] = dict.fromkeys(PROFILE_FIELDS)
    record.update(
        customer_id=customer_id,
        advocacy_tier=CHURNED,
        available_for_references=False,
        unavailable_reason=CHURNED,
        re_engage=False,
        churned=True,
    )
    return record


def churned_by(customers: pd.DataFrame, now: pd.Timestamp) -> set[str]:
    """The customers a `customers` table shows churned at or before `now`."""
    churned = pd.to_datetime(customers["churned_at"], utc=True)
    return set(customers.loc[(churned.notna() & (churned <= now)).to_numpy(), "customer_id"].astype("str"))


def activity_records(base: ProfileBase) -> list[dict[str, Any]]:
    """One Advocacy Activity per campaign ask (recorded with a `plan_id`) of the base's customers."""
    links = base.links.set_index(base.links["ask_id"].astype("str"))["plan_id"]
    asks = base.asks[base.asks["ask_id"].astype("str").isin(links.index)]
    asks = asks.sort_values("ask_id", kind="stable")
    columns: dict[str, list[Any]] = {
        "ask_id": [str(a) for a in asks["ask_id"].tolist()],
        "customer_id": [str(c) for c in asks["customer_id"].tolist()],
        "ask_type": _plain(asks["ask_type"]),
        "asked_at": _times(asks["asked_at"]),
        "outcome": _plain(asks["outcome"]),
        "responded_at": _times(asks["responded_at"]),
        "plan_id": [str(p) for p in links.reindex(asks["ask_id"].astype("str").to_numpy()).tolist()],
        "delivered_at": _times(asks["delivered_at"]),
    }
    return [dict(zip(ACTIVITY_FIELDS, values, strict=True)) for values in zip(*columns.values(), strict=True)]


__all__ = [
    "ACTIVITIES",
    "ACTIVITY_FIELDS",
    "CHURNED",
    "FIELDS",
    "FIELD_KINDS",
    "KEYS",
    "MULTI_SEPARATOR",
    "PROFILES",
    "PROFILE_FIELDS",
    "ProfileBase",
    "activity_records",
    "churned_by",
    "churned_profile",
    "profile_records",
    "read_base",
    "score_base",
]
