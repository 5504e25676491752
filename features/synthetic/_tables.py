"""Table assembly: the simulated months' event blocks into the seven raw tables and the truth.

Rows are sorted by customer then time; ids are issued as a CRM would (asks and activities in
time order). Column order is the data contract's (`features.contracts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES, OUTCOMES, PRIORITIES
from features.synthetic._calendar import Calendar
from features.synthetic._params import CHANNELS

Parts = list[dict[str, np.ndarray]]


def ts(cal: Calendar, days: np.ndarray) -> pd.DatetimeIndex:
    """Float days since origin -> UTC timestamps, whole seconds (NaN -> NaT)."""
    sec = np.floor(np.nan_to_num(days, nan=0.0) * 86400.0).astype(np.int64)
    t = (cal.origin + sec.astype("timedelta64[s]")).astype("datetime64[us]")
    t[np.isnan(days)] = np.datetime64("NaT")
    return pd.DatetimeIndex(t).tz_localize("UTC")


def ids(prefix: str, n: int, width: int) -> np.ndarray:
    """prefix + zero-padded 1..n, as Python strings."""
    if n == 0:
        return np.empty(0, dtype=object)
    return np.char.add(prefix, np.char.zfill(np.arange(1, n + 1).astype(str), width)).astype(object)


def _cat(parts: Parts, key: str, dtype: Any = None) -> np.ndarray:
    arrays = [p[key] for p in parts]
    if not arrays:
        return np.zeros(0, dtype=dtype or np.float64)
    return np.concatenate(arrays)


def _frame(columns: dict[str, Any], order: np.ndarray) -> pd.DataFrame:
    """Columns (numpy arrays, DatetimeIndex or extension arrays) reordered into a frame.

    Object arrays hold Python strings (or None) and become pandas `str` columns, also when empty.
    """
    out = {}
    for name, col in columns.items():
        is_text = isinstance(col, np.ndarray) and col.dtype == object
        out[name] = pd.Series(col[order], dtype="str" if is_text else None)
    return pd.DataFrame(out)


def customers_table(
    cal: Calendar, cust_ids: np.ndarray, attrs: dict[str, np.ndarray], start_day: np.ndarray, churn_day: np.ndarray
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(cust_ids, dtype="str"),
            **{
                col: pd.Series(attrs[col].astype(object), dtype="str")
                for col in ("name", "industry", "segment", "region", "use_case", "plan")
            },
            "contract_start": ts(cal, start_day),
            "churned_at": ts(cal, churn_day),
            "arr": attrs["arr"],
        }
    )


def usage_table(cal: Calendar, cust_ids: np.ndarray, p: Parts) -> pd.DataFrame:
    cust, month = _cat(p, "cust", np.int64), _cat(p, "month")
    order = np.lexsort((month, cust))
    return _frame(
        {
            "customer_id": cust_ids[cust],
            "month": ts(cal, month),
            "licensed_seats": _cat(p, "licensed_seats", np.int64),
            "active_users": _cat(p, "active_users", np.int64),
            "feature_adoption": _cat(p, "feature_adoption"),
            "logins": _cat(p, "logins", np.int64),
            "health_score": _cat(p, "health_score"),
        },
        order,
    )


def nps_table(cal: Calendar, cust_ids: np.ndarray, p: Parts) -> pd.DataFrame:
    cust, time = _cat(p, "cust", np.int64), _cat(p, "time")
    return _frame(
        {"customer_id": cust_ids[cust], "responded_at": ts(cal, time), "score": _cat(p, "score", np.int64)},
        np.lexsort((time, cust)),
    )


def tickets_table(cal: Calendar, cust_ids: np.ndarray, p: Parts) -> pd.DataFrame:
    cust, time = _cat(p, "cust", np.int64), _cat(p, "time")
    csat = _cat(p, "csat", np.int64)
    return _frame(
        {
            "customer_id": cust_ids[cust],
            "opened_at": ts(cal, time),
            "priority": np.asarray(PRIORITIES, dtype=object)[_cat(p, "priority", np.int64)],
            "sentiment": _cat(p, "sentiment"),
            "csat": pd.arrays.IntegerArray(np.maximum(csat, 1), csat < 0),
        },
        np.lexsort((time, cust)),
    )


def social_table(cal: Calendar, cust_ids: np.ndarray, p: Parts) -> pd.DataFrame:
    cust, time = _cat(p, "cust", np.int64), _cat(p, "time")
    return _frame(
        {
            "customer_id": cust_ids[cust],
            "mentioned_at": ts(cal, time),
            "sentiment": _cat(p, "sentiment"),
            "channel": np.asarray(CHANNELS, dtype=object)[_cat(p, "channel", np.int64)],
        },
        np.lexsort((time, cust)),
    )


def asks_tables(
    cal: Calendar, cust_ids: np.ndarray, p: Parts, n_asks: int, answered_by: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The asks table, the acceptance truth, and the ask id of each internal ask number.

    An answer at or after its customer's `answered_by` day (churn, or the end of the world) has
    not reached the company: the ask is recorded as no response; its true acceptance stays.
    """
    # Ask ids are issued in time order (as a CRM would); rows are sorted by customer then time.
    cust, time, internal = _cat(p, "cust", np.int64), _cat(p, "time"), _cat(p, "id", np.int64)
    outcome, responded = _cat(p, "outcome", np.int64), _cat(p, "responded")
    unheard = responded >= answered_by[cust]  # NaN (no answer) compares False
    outcome = np.where(unheard, OUTCOMES.index("no_response"), outcome)
    responded = np.where(unheard, np.nan, responded)
    ask_id_of = np.empty(n_asks, dtype=object)
    ask_id_of[internal[np.lexsort((cust, time))]] = ids("A", n_asks, 8)
    order = np.lexsort((time, cust))
    asks = _frame(
        {
            "ask_id": ask_id_of[internal],
            "customer_id": cust_ids[cust],
            "ask_type": np.asarray(ASK_TYPE_NAMES, dtype=object)[_cat(p, "type", np.int64)],
            "asked_at": ts(cal, time),
            "outcome": np.asarray(OUTCOMES, dtype=object)[outcome],
            "responded_at": ts(cal, responded),
        },
        order,
    )
    acceptance = pd.DataFrame({"ask_id": asks["ask_id"], "p_true": _cat(p, "p_true")[order]})
    return asks, acceptance, ask_id_of


def activities_table(cal: Calendar, cust_ids: np.ndarray, p: Parts, ask_id_of: np.ndarray) -> pd.DataFrame:
    cust, time, ask_ref = _cat(p, "cust", np.int64), _cat(p, "time"), _cat(p, "ask", np.int64)
    act_ids = np.empty(cust.size, dtype=object)
    act_ids[np.lexsort((cust, time))] = ids("V", cust.size, 8)
    ref = np.full(cust.size, None, dtype=object)
    has_ref = ask_ref >= 0
    ref[has_ref] = ask_id_of[ask_ref[has_ref]]
    return _frame(
        {
            "activity_id": act_ids,
            "customer_id": cust_ids[cust],
            "activity_type": np.asarray(ASK_TYPE_NAMES, dtype=object)[_cat(p, "type", np.int64)],
            "occurred_at": ts(cal, time),
            "ask_id": ref,
        },
        np.lexsort((time, cust)),
    )


def propensity_table(
    cal: Calendar, cust_ids: np.ndarray, prop_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> pd.DataFrame:
    if prop_parts:
        pc = np.concatenate([q[0] for q in prop_parts])
        pk = np.concatenate([q[1] for q in prop_parts])
        pp = np.concatenate([q[2] for q in prop_parts])
    else:
        pc, pk, pp = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    order = np.lexsort((pk, pc))
    return _frame(
        {"customer_id": cust_ids[pc], "as_of": ts(cal, cal.start[pk]), "p_true": np.clip(pp, 0.0, 1.0)},
        order,
    )


def acceptance_by_type_table(
    cal: Calendar, cust_ids: np.ndarray, parts: list[tuple[np.ndarray, int, np.ndarray]]
) -> pd.DataFrame:
    """One row per live customer x month start x ask type: the true acceptance were they asked then."""
    n_types = len(ASK_TYPE_NAMES)
    cust = np.concatenate([np.repeat(idx, n_types) for idx, _, _ in parts])
    step = np.concatenate([np.full(idx.size * n_types, k) for idx, k, _ in parts])
    p_true = np.concatenate([m.ravel() for _, _, m in parts])
    types = np.tile(np.arange(n_types), cust.size // n_types)
    order = np.lexsort((types, step, cust))
    return pd.DataFrame(
        {
            "customer_id": pd.Series(cust_ids[cust[order]], dtype="str"),
            "as_of": ts(cal, cal.start[step[order]]),
            "ask_type": pd.Categorical.from_codes(types[order], categories=list(ASK_TYPE_NAMES)),
            "p_true": p_true[order],
        }
    )
