"""Recording asks (spec sections 5 and 7, `POST /asks`): the loop closes here.

Asks are stored in the ask log through the asks table's data contract, so every job reads them
back as asks of the table (`usecases.sources`). An ask may name the plan it was made from and the
deal it was made for; a plan never made here, or a deal the caller's opportunities do not hold, is
refused, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pandas as pd

from features.contracts import CONTRACTS
from storage.plans import PlanStore

LINK_COLUMNS = ("plan_id", "opportunity_id")  # what an ask may say it was made for, beside the table's columns


def asks_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows of the asks table (as the API receives them) as a frame, times in UTC."""
    frame = pd.DataFrame({col: [r.get(col) for r in rows] for col in (*CONTRACTS["asks"].columns, *LINK_COLUMNS)})
    for col in ("asked_at", "responded_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def record_asks(
    rows: Sequence[Mapping[str, Any]],
    store: Callable[[pd.DataFrame], int],
    plans: PlanStore | None,
    deals: Collection[str],
) -> int:
    """Store the asks with `store` (the ask log's writer, which checks the contract and the
    customers) and return how many; a `plan_id` no plan in `plans` has, or an `opportunity_id` not
    among `deals` (the ids of the deals known), is refused first."""
    frame = asks_frame(rows)
    named = sorted(set(frame["plan_id"].dropna()))
    # One look-up per plan named, never a listing of the plans folder (it grows with every plan).
    unknown = [p for p in named if plans is None or not plans.has(str(p))]
    if unknown:
        raise ValueError(f"plan_id: no plan {unknown[0]!r} was made here (POST /plan makes one)")
    strangers = sorted(d for d in {str(d) for d in frame["opportunity_id"].dropna()} if d not in deals)
    if strangers:
        raise ValueError(
            f"opportunity_id: no deal {strangers[0]!r} in the opportunities table the service reads (its latest "
            "feature snapshot holds the data's deals)"
        )
    return store(frame)
