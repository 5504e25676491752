"""The contract's rules across tables (spec section 2): every event's customer exists, and an activity
that names an ask delivers an ask of its own customer made before it. `check_foreign_keys` runs where
tables are read; `check_activity_asks` once the ask log's asks are merged in (the final asks)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from features.catalog import TABLES
from features.contracts import DataContractError, rule_problem, to_micros


def is_in(values: pd.Series, known: pd.Series) -> pd.Series:
    """`values.isin(known)` by one hash look-up. pandas' own `isin` on Arrow-backed text makes a
    Python scalar of every known value: seconds for a million customers' ids."""
    found = pd.Index(pd.unique(known.astype(object)))
    return pd.Series(found.get_indexer(values.astype(object)) >= 0, index=values.index)


def check_foreign_keys(tables: Mapping[str, pd.DataFrame]) -> None:
    """Every event's `customer_id` must exist in `customers`."""
    known = tables["customers"]["customer_id"]
    for name in TABLES[1:]:
        frame = tables.get(name)
        if frame is None or frame.empty:
            continue
        unknown = ~is_in(frame["customer_id"], known)
        if unknown.any():
            raise DataContractError(
                name, [rule_problem("customer_id", "exists in customers", frame["customer_id"], unknown)]
            )


# An activity that names an ask delivers it (spec section 5): the ask must be its own customer's, and
# made before: else another customer's ask, or one asked later, would count as delivered.
ACTIVITY_ASK_RULES = ("ask_id", "an ask of the same customer"), ("occurred_at", "not before its ask's asked_at")


def activity_ask_failures(activities: pd.DataFrame, asks: pd.DataFrame) -> list[tuple[str, str, pd.Series]]:
    """(column, rule, bad rows) of the `activities` whose `ask_id` breaks `ACTIVITY_ASK_RULES`;
    `asks` are the final ones (the table's and the ask log's, `features.io.merge_asks`)."""
    asks = asks.drop_duplicates("ask_id", keep="last")
    at = pd.Index(asks["ask_id"].astype("str")).get_indexer(activities["ask_id"].astype("str"))
    own = activities["ask_id"].notna().to_numpy() & (at >= 0)
    own[own] = asks["customer_id"].to_numpy()[at[own]] == activities["customer_id"].to_numpy()[own]
    early = own.copy()
    early[own] = to_micros(activities["occurred_at"])[own] < to_micros(asks["asked_at"])[at[own]]
    masks = (activities["ask_id"].notna().to_numpy() & ~own, early)
    rules = zip(ACTIVITY_ASK_RULES, masks, strict=True)
    return [(col, rule, pd.Series(bad, index=activities.index)) for (col, rule), bad in rules if bad.any()]


def check_activity_asks(activities: pd.DataFrame, asks: pd.DataFrame) -> None:
    """A `DataContractError` naming the rows of `activity_ask_failures`; run where the final asks are known."""
    failed = activity_ask_failures(activities, asks)
    if failed:
        raise DataContractError("activities", [rule_problem(c, r, activities[c], bad) for c, r, bad in failed])
