"""Point-in-time context the service shows beside the features, and the snapshot it reads.

A `Snapshot` is what the batch job hands the service for one `as_of` (spec section 7):
- `features`: one row per active customer: `customer_id`, `as_of`, every feature of `features.spec`,
  and context (`name`, `last_urgent_ticket_at`, `recent_reference_calls`, and the oldest open
  accepted ask, the first to lapse, `features.commitments.COMMITMENT_COLUMNS`);
- `asks`: the asks known at `as_of` (the guardrails' history), answers after `as_of` unknown;
- `history`: the last 12 months of events per customer for the CSM timeline;
- `meta`: as_of, when it was built, row counts, feature version;
- small tables written whole (`WHOLE_TABLES`): the asks table's links to plans and deals, and the deals.

Storing it is `storage.snapshots`' job; this module only computes it, frames in, frames out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import DEALS
from features.commitments import COMMITMENT_COLUMNS, COMMITMENT_LAPSE_DAYS, delivered_at, open_commitments
from features.contracts import TIMESTAMP, answer_known_at
from features.deals import empty_deal_links, empty_opportunities
from features.io import World
from features.plan_links import empty_plan_links
from features.pointintime import active_points, build_features
from features.spec import FEATURE_VERSION

HISTORY_DAYS = 365
RECENT_REFERENCE_DAYS = 90
SNAPSHOT_TABLES = ("features", "asks", "history")  # a row per customer or event: the batch job writes them by chunk
PLAN_LINKS = "plan_links"  # the asks table's (ask_id, plan_id): small, written whole
DEAL_LINKS = "deal_links"  # the asks table's (ask_id, opportunity_id): small, written whole
# The snapshot's small tables, each written whole, and what one reads as when a snapshot written
# before it existed lacks it: no links, no deals.
WHOLE_TABLES: dict[str, Callable[[], pd.DataFrame]] = {
    PLAN_LINKS: empty_plan_links,
    DEALS: empty_opportunities,
    DEAL_LINKS: empty_deal_links,
}


@dataclass
class Snapshot:
    features: pd.DataFrame
    asks: pd.DataFrame
    history: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    # Which campaign the snapshot's asks were made for, where the asks table says (its `plan_id`
    # column): the service counts them for their campaigns beside the ask log's.
    plan_links: pd.DataFrame = field(default_factory=empty_plan_links)
    # The deals (spec 9), so the service can find a deal's references and check the deal an ask
    # names; and which deal the snapshot's asks were made for (its `opportunity_id` column), fixed
    # like their plan.
    opportunities: pd.DataFrame = field(default_factory=empty_opportunities)
    deal_links: pd.DataFrame = field(default_factory=empty_deal_links)

    @property
    def as_of(self) -> pd.Timestamp:
        return pd.Timestamp(self.meta["as_of"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """The snapshot's tables by name (`SNAPSHOT_TABLES` and `WHOLE_TABLES`), as `storage.snapshots` writes them."""
        return {name: getattr(self, name) for name in (*SNAPSHOT_TABLES, *WHOLE_TABLES)}

    @classmethod
    def from_tables(cls, tables: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> Snapshot:
        """A snapshot as read back; one written before a small table was kept reads as without it."""
        return cls(**{name: tables[name] for name in SNAPSHOT_TABLES}, meta=dict(meta), **whole_tables(tables))


def whole_tables(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each of `WHOLE_TABLES` as `tables` holds it, or empty where it does not; links as text."""
    out = {name: tables[name] if name in tables else empty() for name, empty in WHOLE_TABLES.items()}
    return {**out, PLAN_LINKS: out[PLAN_LINKS].astype("str"), DEAL_LINKS: out[DEAL_LINKS].astype("str")}


def _last_before(events: pd.DataFrame, time_col: str, as_of: pd.Timestamp, ids: pd.Series) -> pd.Series:
    known = events[events[time_col] < as_of]
    last = known.groupby("customer_id")[time_col].max()
    # Not `ids.map(last)`: pandas maps through an empty Series as float, which a time cannot be
    # (a chunk of customers none of whom had such an event failed with a TypeError).
    out = last.reindex(ids.to_numpy()).astype(TIMESTAMP)
    out.index = ids.index
    return out


def _count_since(
    events: pd.DataFrame, time_col: str, start: pd.Timestamp, as_of: pd.Timestamp, ids: pd.Series
) -> np.ndarray:
    window = events[(events[time_col] >= start) & (events[time_col] < as_of)]
    return ids.map(window.groupby("customer_id").size()).fillna(0).to_numpy(dtype=float)


def history_table(world: World, as_of: pd.Timestamp, days: int = HISTORY_DAYS) -> pd.DataFrame:
    """Recent events in one long table (`customer_id`, `at`, `kind`, `detail`), newest first."""
    start = as_of - pd.Timedelta(days=days)

    def window(frame: pd.DataFrame, col: str) -> pd.DataFrame:
        return frame[(frame[col] >= start) & (frame[col] < as_of)]

    nps = window(world.nps, "responded_at")
    tickets = window(world.tickets, "opened_at")
    asks = window(world.asks, "asked_at")
    activities = window(world.activities, "occurred_at")
    # An answer given after as_of is not known at as_of.
    known_at = answer_known_at(asks)
    outcome = asks["outcome"].where(known_at.notna() & (known_at < as_of), "no answer yet")
    parts = [
        pd.DataFrame(
            {
                "customer_id": nps["customer_id"],
                "at": nps["responded_at"],
                "kind": "nps",
                "detail": "NPS " + nps["score"].astype("str"),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": tickets["customer_id"],
                "at": tickets["opened_at"],
                "kind": "ticket",
                "detail": tickets["priority"] + " ticket",
            }
        ),
        pd.DataFrame(
            {
                "customer_id": asks["customer_id"],
                "at": asks["asked_at"],
                "kind": "ask",
                "detail": asks["ask_type"].str.replace("_", " ") + ": " + outcome.str.replace("_", " "),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": activities["customer_id"],
                "at": activities["occurred_at"],
                "kind": "activity",
                "detail": activities["activity_type"].str.replace("_", " ")
                + np.where(activities["ask_id"].isna(), " (unsolicited)", ""),
            }
        ),
    ]
    out = pd.concat(parts, ignore_index=True)
    out["at"] = out["at"].astype(TIMESTAMP)
    return out.sort_values(["customer_id", "at"], ascending=[True, False], kind="stable").reset_index(drop=True)


def build_snapshot(
    world: World,
    as_of: pd.Timestamp,
    features: pd.DataFrame | None = None,
    lapse_days: int = COMMITMENT_LAPSE_DAYS,
) -> Snapshot:
    """Features of every active customer as of `as_of`, with the context the service needs.

    `lapse_days` must be the one the features were built with (the model's, `Bundle.lapse_days`);
    `features` built with `commitments=True` already carry the open accepted asks.
    """
    if features is None:
        features = build_features(world, active_points(world, as_of), lapse_days, commitments=True)
    ids = features["customer_id"]
    names = world.customers.set_index("customer_id")["name"]
    frame = features.copy()
    frame["name"] = ids.map(names).astype("str")
    urgent = world.tickets[world.tickets["priority"] == "urgent"]
    frame["last_urgent_ticket_at"] = _last_before(urgent, "opened_at", as_of, ids)  # same index as frame
    refs = world.asks[world.asks["ask_type"] == "reference_call"]
    frame["recent_reference_calls"] = _count_since(
        refs, "asked_at", as_of - pd.Timedelta(days=RECENT_REFERENCE_DAYS), as_of, ids
    )
    if not set(COMMITMENT_COLUMNS) <= set(frame.columns):
        pending = open_commitments(world.asks, world.activities, frame[["customer_id", "as_of"]], lapse_days)
        for column in COMMITMENT_COLUMNS:
            frame[column] = pending[column].to_numpy()
    asks = world.asks[world.asks["asked_at"] < as_of].copy()
    # Answers after as_of are unknown at as_of: they arrive through POST /asks or the next snapshot.
    known_at = answer_known_at(asks)
    later = known_at.notna() & (known_at >= as_of)
    asks.loc[later, "outcome"] = "no_response"
    asks.loc[later, "responded_at"] = pd.NaT
    # When each was delivered, if before as_of: what the service needs to restate a customer's
    # commitments when an ask is recorded after this snapshot (`features.pointintime.restate_ask_history`).
    asks["delivered_at"] = delivered_at(asks, world.activities[world.activities["occurred_at"] < as_of])
    meta = snapshot_meta(as_of, customers=len(frame), asks=len(asks))
    history = history_table(world, as_of)
    # The table's links and deals whole, as the batch job keeps them: a link counts only beside its ask.
    whole = whole_tables({PLAN_LINKS: world.plan_links, DEALS: world.opportunities, DEAL_LINKS: world.deal_links})
    return Snapshot(frame.reset_index(drop=True), asks.reset_index(drop=True), history, meta, **whole)


def snapshot_meta(as_of: pd.Timestamp, customers: int, asks: int, forced: bool = False) -> dict[str, Any]:
    """A snapshot's `meta`: what it describes and when it was built (every snapshot writer uses this).

    `forced`: published past the base check (`storage.snapshots.check_base`) on purpose.
    """
    return {
        "as_of": as_of.isoformat(),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": customers,
        "asks": asks,
        "feature_version": FEATURE_VERSION,
        "forced": forced,
    }


def guardrail_signals(features: pd.DataFrame) -> pd.DataFrame:
    """The per-customer inputs of `models.guardrails.blocked_asks`."""
    return features.loc[:, ["customer_id", "health_score", "last_urgent_ticket_at"]]
