"""Deals (spec section 9): the optional `opportunities` table, the asks made for a deal (the asks
table's optional `opportunity_id`), and the per-deal frame the effect of references is measured on.

Frames in, frames out. A deal's reference counts when an ask made for it was delivered (an activity
naming the ask) before the deal closed; the deal's features are what it showed when it was created.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import CLOSED_OUTCOMES, DEALS
from features.contracts import (
    DataContractError,
    empty_table,
    rule_problem,
    validate_table,
)
from features.keys import is_in
from features.plan_links import ask_links, optional_id

REFERRED_BY = "referred_by"  # the opportunities table's optional column: the customer who referred the deal
DEAL_LINK_COLUMNS: tuple[str, ...] = ("ask_id", "opportunity_id")
# What a deal shows when it is created: the adjustment's features (spec 9).
DEAL_CATEGORIES: tuple[str, ...] = ("industry", "segment", "region", "use_case")
DEAL_COLUMNS: tuple[str, ...] = (
    "opportunity_id",
    "account",
    *DEAL_CATEGORIES,
    "amount",
    "created_at",
    "outcome",
    "closed_at",
    REFERRED_BY,
    "requested_at",
    "delivered_at",
    "referenced",
    "closed",
    "won",
    "days_to_close",
)


def empty_opportunities() -> pd.DataFrame:
    """No deals: the table's canonical columns with its optional `referred_by`."""
    frame = empty_table(DEALS)
    frame[REFERRED_BY] = pd.Series([], dtype="str")
    return frame


def empty_deal_links() -> pd.DataFrame:
    """No (`ask_id`, `opportunity_id`) links: an asks table without the optional column."""
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in DEAL_LINK_COLUMNS})


def validate_opportunities(raw: pd.DataFrame) -> pd.DataFrame:
    """The `opportunities` table in canonical types with its optional `referred_by` (an id, or
    empty), or a `DataContractError` naming the table, the column, the rule and rows."""
    table = validate_table(DEALS, raw)
    if REFERRED_BY not in raw.columns:
        table[REFERRED_BY] = pd.Series(np.nan, index=table.index, dtype="str")
        return table
    referrer = optional_id(raw, DEALS, REFERRED_BY)
    table[REFERRED_BY] = referrer.astype("str").where(referrer.notna(), np.nan)
    return table


def ask_deal_links(raw_asks: pd.DataFrame) -> pd.DataFrame:
    """(`ask_id`, `opportunity_id`) of the asks table's rows that name a deal."""
    return ask_links(raw_asks, "opportunity_id")


def check_deal_keys(opportunities: pd.DataFrame, links: pd.DataFrame, customers: pd.DataFrame) -> None:
    """An ask's `opportunity_id` must name a deal in `opportunities`, and a deal's `referred_by` a
    customer: else a `DataContractError` naming the table, the column and rows."""
    unknown = ~is_in(links["opportunity_id"], opportunities["opportunity_id"])
    if unknown.any():
        raise DataContractError(
            "asks", [rule_problem("opportunity_id", f"exists in {DEALS}", links["opportunity_id"], unknown)]
        )
    referrer = opportunities[REFERRED_BY]
    stranger = referrer.notna() & ~is_in(referrer, customers["customer_id"])
    if stranger.any():
        raise DataContractError(DEALS, [rule_problem(REFERRED_BY, "exists in customers", referrer, stranger)])


def deal_frame(
    opportunities: pd.DataFrame, asks: pd.DataFrame, activities: pd.DataFrame, links: pd.DataFrame
) -> pd.DataFrame:
    """One row per deal (`DEAL_COLUMNS`): when a reference was first requested for it (an ask naming
    it) and first delivered (an activity naming such an ask), whether that delivery came before the
    deal closed (`referenced`; for an open deal, before now: influenced pipeline), and, for a closed
    deal, whether it was won and in how many days."""
    deals = opportunities.reset_index(drop=True)
    asked = links.merge(asks.loc[:, ["ask_id", "asked_at"]], on="ask_id", how="inner")
    requested = asked.groupby("opportunity_id")["asked_at"].min()
    named = activities.dropna(subset=["ask_id"]).loc[:, ["ask_id", "occurred_at"]]
    done = asked.merge(named, on="ask_id", how="inner").groupby("opportunity_id")["occurred_at"].min()
    ids = deals["opportunity_id"].to_numpy()
    out = deals.copy()
    out["requested_at"] = requested.reindex(ids).to_numpy()
    out["delivered_at"] = done.reindex(ids).to_numpy()
    for col in ("requested_at", "delivered_at"):
        out[col] = pd.to_datetime(out[col], utc=True).astype(deals["created_at"].dtype)
    out["closed"] = deals["outcome"].isin(CLOSED_OUTCOMES)
    before_close = out["delivered_at"].notna() & (
        ~out["closed"] | (out["delivered_at"] < out["closed_at"]).fillna(False).astype(bool)
    )
    out["referenced"] = before_close.astype(bool)
    out["won"] = (deals["outcome"] == "won").where(out["closed"])
    out["days_to_close"] = ((deals["closed_at"] - deals["created_at"]) / pd.Timedelta(days=1)).where(out["closed"])
    return out.loc[:, list(DEAL_COLUMNS)]
