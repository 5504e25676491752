"""The committed pipeline (spec section 5): accepted asks whose advocacy has not happened yet.

An accepted ask is delivered by the first activity that names its `ask_id`; counts are never
subtracted, so one customer's delivered review cannot settle their pending case study. As of
`t`, an ask is *open* when its acceptance is known (answered before `t`), it was not delivered
before `t`, and it was accepted less than `lapse_days` before `t`: a promise that old is taken
as broken, not as pipeline. A customer with an open ask is `committed`.

The feature `accepted_not_delivered` counts open asks; the service and the batch job name the
oldest one (the first to lapse). Both come from `open_commitments`, the one coding of the rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contracts import TIMESTAMP, answer_known_at

COMMITMENT_LAPSE_DAYS = 90
COMMITMENT_COLUMNS = ("committed_ask_id", "committed_ask_type", "committed_accepted_at")


def delivered_at(asks: pd.DataFrame, activities: pd.DataFrame) -> pd.Series:
    """Per ask (same index): when the first activity of the same customer naming its `ask_id`
    happened, NaT if none has."""
    named = activities[activities["ask_id"].notna()]
    keys = [named["customer_id"].astype("str"), named["ask_id"].astype("str")]
    first = named.groupby(keys, sort=False)["occurred_at"].min()
    # reindex, not map: mapping through an empty Series gives floats, which a time cannot be
    wanted = pd.MultiIndex.from_arrays([asks["customer_id"].astype("str"), asks["ask_id"].astype("str")])
    out = first.reindex(wanted).astype(TIMESTAMP)
    out.index = asks.index
    return out


def open_commitments(
    asks: pd.DataFrame, activities: pd.DataFrame, points: pd.DataFrame, lapse_days: int = COMMITMENT_LAPSE_DAYS
) -> pd.DataFrame:
    """Per point (`customer_id`, `as_of`), in the points' order: `open_asks` (how many accepted asks
    are open at `as_of`) and the oldest open one, the first to lapse (`COMMITMENT_COLUMNS`, null
    where none is). An ask accepted exactly `lapse_days` before `as_of` has lapsed.

    Cost: one row per point and accepted ask of its customer (a join, not an as-of look-up), small
    beside the events since accepted asks are few per customer."""
    if lapse_days < 1:
        raise ValueError(f"the commitment lapse must be at least 1 day, got {lapse_days}")
    n = len(points)
    out = pd.DataFrame(
        {
            "open_asks": np.zeros(n),
            "committed_ask_id": pd.Series([None] * n, dtype="object"),
            "committed_ask_type": pd.Series([None] * n, dtype="object"),
            "committed_accepted_at": pd.Series(pd.NaT, index=range(n), dtype=TIMESTAMP),
        }
    )
    accepted = asks[asks["outcome"] == "accepted"]
    if n == 0 or accepted.empty:
        return out
    accepted = pd.DataFrame(
        {
            "customer_id": accepted["customer_id"].astype("str").to_numpy(),
            "ask_id": accepted["ask_id"].astype("str").to_numpy(),
            "ask_type": accepted["ask_type"].astype("str").to_numpy(),
            "accepted_at": answer_known_at(accepted).astype(TIMESTAMP).reset_index(drop=True),
            "delivered_at": delivered_at(accepted, activities).reset_index(drop=True),
        }
    )
    at = pd.DataFrame(
        {
            "point": np.arange(n),
            "customer_id": points["customer_id"].astype("str").to_numpy(),
            "as_of": pd.to_datetime(points["as_of"], utc=True).astype(TIMESTAMP).reset_index(drop=True),
        }
    )
    pairs = at.merge(accepted, on="customer_id", how="inner")
    lapse = pd.Timedelta(days=lapse_days)
    is_open = (
        (pairs["accepted_at"] < pairs["as_of"])
        & (pairs["accepted_at"] > pairs["as_of"] - lapse)
        & ~(pairs["delivered_at"] < pairs["as_of"])  # NaT compares False: not delivered
    )
    pairs = pairs[is_open.to_numpy()]
    if pairs.empty:
        return out
    counts = pairs.groupby("point").size()
    out.loc[counts.index.to_numpy(), "open_asks"] = counts.to_numpy(dtype=float)
    oldest = pairs.sort_values(["point", "accepted_at", "ask_id"], kind="stable").groupby("point").head(1)
    rows = oldest["point"].to_numpy()
    out.loc[rows, "committed_ask_id"] = oldest["ask_id"].to_numpy()
    out.loc[rows, "committed_ask_type"] = oldest["ask_type"].to_numpy()
    out.loc[rows, "committed_accepted_at"] = oldest["accepted_at"].reset_index(drop=True).set_axis(rows)
    return out
