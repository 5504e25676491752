"""Point-in-time features: for each (customer, as_of) pair, features from events strictly before as_of.

The look-backs (each customer's events before each point's as_of: window counts and sums, the last
event's values) are `features.lookback`'s, in DuckDB; this module says which, and turns them into
features with numpy.

Knowledge rules (spec section 3): a usage row is known from the first day of the next month; an
ask is known from `asked_at`, its outcome only from `responded_at`; a customer exists only from
`contract_start`, and a future `churned_at` is unknown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import ANSWERS, ASK_EFFORT_HOURS
from features.commitments import COMMITMENT_COLUMNS, COMMITMENT_LAPSE_DAYS, open_commitments
from features.contracts import TIMESTAMP, answer_known_at
from features.io import World
from features.lookback import DAY_US, Columns, LookBack, exact, latest, micros, open_lookback, since
from features.spec import (
    ACCEPTANCE_PRIOR,
    ACCEPTANCE_PRIOR_WEIGHT,
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    KEYS,
    URGENT_OPEN_DAYS,
    WINDOW_12M_DAYS,
    WINDOW_90D_DAYS,
)

_AVG_MONTH_DAYS = 30.4375
_DAY = pd.Timedelta(days=1)


def _cum(cols: Columns, col: str) -> np.ndarray:
    return np.nan_to_num(cols[col], nan=0.0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _quarter_start(t: pd.Series) -> pd.Series:
    naive = t.dt.tz_localize(None)
    start = naive.dt.to_period("Q").dt.start_time
    return start.dt.tz_localize("UTC").astype(TIMESTAMP)


def tenure_months(contract_start: pd.Series, as_of: pd.Series) -> np.ndarray:
    """Calendar months from contract start to as_of: whole months plus the leftover days / 30.44.

    Exactly 12.0 on the first anniversary (same day and time), so "more than 12 months" is exact.
    """
    s, t = contract_start.reset_index(drop=True), as_of.reset_index(drop=True)
    whole = (t.dt.year - s.dt.year) * 12 + (t.dt.month - s.dt.month)
    s_in_month = s - _add_months(s, 0)
    t_in_month = t - _add_months(t, 0)
    leftover = (t_in_month - s_in_month) / _DAY
    return (whole + leftover / _AVG_MONTH_DAYS).to_numpy(dtype=float)


def _add_months(ts: pd.Series, months: int) -> pd.Series:
    periods = ts.dt.tz_localize(None).dt.to_period("M") + months
    return periods.dt.start_time.dt.tz_localize("UTC").astype(TIMESTAMP)


def customer_codes(world: World, customer_ids: pd.Series) -> np.ndarray:
    """Row positions of `customer_ids` in `world.customers`; raise naming unknown ids."""
    codes = pd.Index(world.customers["customer_id"]).get_indexer(customer_ids)
    if (codes < 0).any():
        unknown = pd.Series(customer_ids)[codes < 0].unique()[:5].tolist()
        raise KeyError(f"unknown customer_id: {', '.join(map(str, unknown))}")
    return codes


def _as_of(points: pd.DataFrame) -> pd.Series:
    """The points' `as_of` as UTC times; a `ValueError` naming the rows where it is missing."""
    as_of = pd.to_datetime(points["as_of"], utc=True).astype(TIMESTAMP).reset_index(drop=True)
    missing = np.flatnonzero(as_of.isna().to_numpy())
    if missing.size:
        rows = ", ".join(map(str, missing[:5].tolist())) + (f" and {missing.size - 5} more" if missing.size > 5 else "")
        raise ValueError(f"as_of is missing for {missing.size} point(s): rows {rows}")
    return as_of


def _times(as_of: pd.Series) -> dict[str, np.ndarray]:
    """The look-up times of every feature window, per point (microseconds)."""
    t = micros(as_of)
    return {
        "_t": t,
        "_t90": t - WINDOW_90D_DAYS * DAY_US,
        "_t365": t - WINDOW_12M_DAYS * DAY_US,
        "_t182": t - 182 * DAY_US,
        "_t_urgent": t - URGENT_OPEN_DAYS * DAY_US,
        "_t_quarter": micros(_quarter_start(as_of)),
    }


def build_features(
    world: World,
    points: pd.DataFrame,
    lapse_days: int = COMMITMENT_LAPSE_DAYS,
    threads: int | None = None,
    commitments: bool = False,
) -> pd.DataFrame:
    """Feature rows for each (`customer_id`, `as_of`) of `points`, in the same order.

    Returns `customer_id`, `as_of` and the columns of `features.spec.FEATURES` in their order:
    numeric features as float64 (NaN where unknown), categorical ones as strings. `lapse_days`:
    how long an accepted ask stays pipeline (`features.commitments`); the model's bundle keeps it.
    `threads`: DuckDB's threads (default: every core). `commitments`: also the oldest open accepted
    ask (`features.commitments.COMMITMENT_COLUMNS`), as the service's snapshot keeps it.
    """
    as_of = _as_of(points)
    ids = points["customer_id"].astype("str").reset_index(drop=True)
    codes = customer_codes(world, ids)
    with open_lookback(world, codes, _times(as_of), threads) as q:
        nps = _nps_features(q, world)
        usage = _usage_features(q, world)
        tickets = _ticket_features(q, world)
        social = _social_features(q, world)
        asks = _ask_features(q, world)
        activity = _activity_features(q, world)
    pending = open_commitments(world.asks, world.activities, points, lapse_days)
    activity["accepted_not_delivered"] = pending["open_asks"].to_numpy()
    # Rates over the observed history: long-run habits (how often they answer surveys or post) are
    # steadier signals of affinity than any one window.
    months = np.maximum(usage["usage_months"], 1.0)
    rates = {
        "nps_responses_per_month": nps["_nps_responses_total"] / months,
        "social_positive_per_month": social["_social_positive_total"] / months,
        "tickets_per_month": tickets["_tickets_total"] / months,
        "social_mentions_per_month": social["_social_total"] / months,
        "organic_activities_per_month": activity["organic_activities_total"] / months,
    }
    cols = {**_customer_features(world, codes, as_of), **nps, **usage, **tickets, **social, **asks, **activity, **rates}
    out = pd.DataFrame({name: cols[name] for name in FEATURE_NAMES})
    for name in FEATURE_NAMES:
        out[name] = out[name].astype("str" if name in CATEGORICAL_FEATURES else "float64")
    out.insert(0, KEYS[1], as_of.to_numpy())
    out.insert(0, KEYS[0], ids.to_numpy())
    if commitments:
        for column in COMMITMENT_COLUMNS:
            out[column] = pending[column].to_numpy()
    return out


# Each feature group below gives `Columns`: names starting with "_" are totals that `build_features`
# turns into rates; they are not features themselves.


def _customer_features(world: World, codes: np.ndarray, as_of: pd.Series) -> Columns:
    """Customer attributes, taken as they are (churn is not a feature: it is unknown until it happens)."""
    cust = world.customers.iloc[codes].reset_index(drop=True)
    cols: Columns = {"tenure_months": tenure_months(cust["contract_start"], as_of)}
    for name in CATEGORICAL_FEATURES:
        cols[name] = cust[name].to_numpy()
    cols["log_arr"] = np.log1p(cust["arr"].to_numpy(dtype=float))
    return cols


def _nps_features(q: LookBack, world: World) -> Columns:
    q.table(
        "nps",
        world.nps,
        "responded_at",
        {"score": "r.score::DOUBLE"},
        "SELECT *, lag(score) OVER w AS prev_score FROM {rows} {window}",
    )
    a = q.aggregate(
        "nps",
        {
            "n": "count(e.t)",
            "total": "sum(e.score)",
            "n_12m": since("count(e.t)", "_t365"),
            "total_12m": since("sum(e.score)", "_t365"),
            "last": latest("score"),
            "before_last": latest("prev_score"),
            "last_t": "max(e.t)",
        },
    )
    last = a["last"]
    return {
        "nps_last": last,
        "nps_days_since": q.days_since(a["last_t"]),
        "nps_mean_12m": _ratio(_cum(a, "total_12m"), a["n_12m"]),
        "nps_trend": last - a["before_last"],
        "nps_promoter": np.where(last >= 9, 1.0, 0.0),
        "nps_responses_12m": a["n_12m"],
        "nps_mean_all": _ratio(_cum(a, "total"), a["n"]),
        "_nps_responses_total": a["n"],
    }


_USAGE_VALUES = ("licensed_seats", "active_users", "feature_adoption", "logins", "health_score")
_USAGE_3M = ("feature_adoption", "active_users", "health_score")


def _usage_features(q: LookBack, world: World) -> Columns:
    values = {c: f"r.{c}::DOUBLE" for c in _USAGE_VALUES}
    # Calendar arithmetic on the month as a plain timestamp of its UTC microseconds: the same values
    # as on the time-zone-aware one in UTC, at a quarter of the cost (no time-zone rules to look up).
    month = "make_timestamp(epoch_us(r.month))"
    # Months in a row (the contract holds `month` to first days of months, so these are exact).
    values["month_index"] = f"year({month}) * 12 + month({month})"
    values["health_exact"] = exact("r.health_score")  # for the means
    # A month's row describes the whole month: it is known from the first day of the next month.
    known_at = f"epoch_us({month} + INTERVAL 1 MONTH)"
    # Each row beside the same customer's row of three months earlier (a hash join).
    earlier = ", ".join(f"b.{c} AS {c}_3m" for c in _USAGE_3M)
    q.table(
        "usage",
        world.usage,
        known_at,
        values,
        f"""SELECT a.*, {earlier} FROM {{rows}} a
        LEFT JOIN {{rows}} b ON b._c = a._c AND b.month_index + 3 = a.month_index""",
    )
    lasts = {c: latest(c) for c in (*_USAGE_VALUES, *(f"{c}_3m" for c in _USAGE_3M))}
    half_year = {
        "n_6m": since("count(e.t)", "_t182", known_at_as_of=True),
        "health_6m": since("sum(e.health_exact)", "_t182", known_at_as_of=True),
    }
    a = q.aggregate("usage", {**lasts, "n": "count(e.t)", "health": "sum(e.health_exact)", **half_year}, True)
    adoption, users, users_3m, health = (
        a["feature_adoption"],
        a["active_users"],
        a["active_users_3m"],
        a["health_score"],
    )
    return {
        "adoption": adoption,
        "adoption_trend_3m": adoption - a["feature_adoption_3m"],
        "seat_utilisation": _ratio(users, a["licensed_seats"]),
        "active_users_trend_3m": (users - users_3m) / np.maximum(users_3m, 1.0),
        "logins": a["logins"],
        "health_score": health,
        "health_trend_3m": health - a["health_score_3m"],
        "health_mean_6m": _ratio(_cum(a, "health_6m"), a["n_6m"]),
        "usage_months": a["n"],
        "health_mean_all": _ratio(_cum(a, "health"), a["n"]),
    }


def _ticket_features(q: LookBack, world: World) -> Columns:
    tickets = world.tickets
    values = {
        "urgent": "(r.priority = 'urgent')::DOUBLE",
        "sentiment": exact("r.sentiment"),
        "csat": "coalesce(r.csat, 0)::DOUBLE",
        "csat_n": "(r.csat IS NOT NULL)::DOUBLE",
    }
    q.table("tickets", tickets, "opened_at", values)
    sums = {"n": "count(e.t)", "sentiment": "sum(e.sentiment)", "csat": "sum(e.csat)", "csat_n": "sum(e.csat_n)"}
    a = q.aggregate(
        "tickets",
        {
            **sums,
            **{f"{name}_12m": since(expr, "_t365") for name, expr in sums.items()},
            "n_90d": since("count(e.t)", "_t90"),
            "sentiment_90d": since("sum(e.sentiment)", "_t90"),
            "urgent_90d": since("sum(e.urgent)", "_t90"),
            "urgent_open": since("sum(e.urgent)", "_t_urgent"),
        },
    )
    return {
        "tickets_90d": a["n_90d"],
        "urgent_tickets_90d": _cum(a, "urgent_90d"),
        "urgent_tickets_open": _cum(a, "urgent_open"),
        "ticket_sentiment_90d": _ratio(_cum(a, "sentiment_90d"), a["n_90d"]),
        "tickets_12m": a["n_12m"],
        "ticket_sentiment_12m": _ratio(_cum(a, "sentiment_12m"), a["n_12m"]),
        "_tickets_total": a["n"],
        "ticket_sentiment_all": _ratio(_cum(a, "sentiment"), a["n"]),
        "csat_mean_all": _ratio(_cum(a, "csat"), _cum(a, "csat_n")),
        "csat_mean_12m": _ratio(_cum(a, "csat_12m"), _cum(a, "csat_n_12m")),
    }


def _social_features(q: LookBack, world: World) -> Columns:
    q.table("social", world.social, "mentioned_at", {"sentiment": exact("r.sentiment")})
    sums = {
        "n": "count(e.t)",
        "positive": "count(e.t) FILTER (WHERE e.sentiment > 0)",
        "negative": "count(e.t) FILTER (WHERE e.sentiment < 0)",
        "sentiment": "sum(e.sentiment)",
    }
    windowed = {
        "n_12m": since("count(e.t)", "_t365"),
        "positive_12m": "count(e.t) FILTER (WHERE e.sentiment > 0 AND e.t >= p._t365)",
        "negative_12m": "count(e.t) FILTER (WHERE e.sentiment < 0 AND e.t >= p._t365)",
        "sentiment_12m": since("sum(e.sentiment)", "_t365"),
    }
    a = q.aggregate("social", {**sums, **windowed})
    return {
        "social_positive_12m": a["positive_12m"],
        "social_negative_12m": a["negative_12m"],
        "_social_positive_total": a["positive"],
        "_social_total": a["n"],
        "social_sentiment_all": _ratio(_cum(a, "sentiment"), a["n"]),
        "social_sentiment_12m": _ratio(_cum(a, "sentiment_12m"), a["n_12m"]),
    }


def _ask_features(q: LookBack, world: World) -> Columns:
    asks = world.asks
    q.table("asks", asks, "asked_at", {"ref": "(r.ask_type = 'reference_call')::DOUBLE"})
    made = q.aggregate(
        "asks",
        {
            "n": "count(e.t)",
            "n_90d": since("count(e.t)", "_t90"),
            "ref_quarter": since("sum(e.ref)", "_t_quarter"),
            "last_t": "max(e.t)",
        },
    )
    # Outcomes are known only once responded: before that an ask counts as no_response.
    answered = asks[asks["outcome"].isin(ANSWERS)]
    rows = answered.assign(responded_at=answer_known_at(answered))
    # Declines in a row, as the guardrail counts them: over answers only, newest back, so a
    # no_response neither extends nor breaks a streak. Declines so far minus those at the last accept.
    q.table(
        "answers",
        rows,
        "responded_at",
        {"acc": "(r.outcome = 'accepted')::DOUBLE"},
        """SELECT *, declines - max(CASE WHEN acc > 0 THEN declines ELSE 0 END) OVER w AS streak
        FROM (SELECT *, sum(1 - acc) OVER w AS declines FROM {rows} {window}) {window}""",
    )
    known = q.aggregate(
        "answers",
        {
            "accepts": "sum(e.acc)",
            "declines": "sum(1 - e.acc)",
            "streak": latest("streak"),
            "last_accept": "max(e.t) FILTER (WHERE e.acc > 0)",
        },
    )
    asks_total, accepts, declines = made["n"], _cum(known, "accepts"), _cum(known, "declines")
    return {
        "days_since_last_accept": q.days_since(known["last_accept"]),
        "asks_total": asks_total,
        "accepts_total": accepts,
        "declines_total": declines,
        # Asks never answered (or not yet): silence is its own signal, apart from declines.
        "unanswered_rate": (asks_total - accepts - declines) / (asks_total + ACCEPTANCE_PRIOR_WEIGHT),
        "acceptance_rate": (accepts + ACCEPTANCE_PRIOR * ACCEPTANCE_PRIOR_WEIGHT)
        / (asks_total + ACCEPTANCE_PRIOR_WEIGHT),
        "days_since_last_ask": q.days_since(made["last_t"]),
        "asks_90d": made["n_90d"],
        "reference_calls_quarter": _cum(made, "ref_quarter"),
        "decline_streak": _cum(known, "streak"),
    }


# The features a customer's asks make (with the activities that deliver them): what an ask recorded
# after a snapshot was written can change, so the service restates these alone (`restate_ask_history`).
ASK_HISTORY_FEATURES: tuple[str, ...] = (
    "days_since_last_accept",
    "asks_total",
    "accepts_total",
    "declines_total",
    "unanswered_rate",
    "acceptance_rate",
    "days_since_last_ask",
    "asks_90d",
    "reference_calls_quarter",
    "decline_streak",
    "accepted_not_delivered",
)


def restate_ask_history(
    asks: pd.DataFrame, activities: pd.DataFrame, points: pd.DataFrame, lapse_days: int = COMMITMENT_LAPSE_DAYS
) -> pd.DataFrame:
    """`ASK_HISTORY_FEATURES` and the open accepted ask (`COMMITMENT_COLUMNS`) for each point
    (`customer_id`, `as_of`), in the points' order: the same code as `build_features`, from the asks
    and the activities naming them alone, the other tables untouched. `activities` needs
    `customer_id`, `ask_id` and `occurred_at`."""
    as_of = _as_of(points)
    ids = points["customer_id"].astype("str").reset_index(drop=True)
    customers = pd.DataFrame({"customer_id": pd.Series(ids.unique(), dtype="str")})
    world = World(
        customers=customers,
        usage=pd.DataFrame(),
        nps=pd.DataFrame(),
        tickets=pd.DataFrame(),
        social=pd.DataFrame(),
        asks=asks,
        activities=activities,
    )
    with open_lookback(world, customer_codes(world, ids), _times(as_of), threads=1) as q:
        cols = _ask_features(q, world)
    pending = open_commitments(asks, activities, points, lapse_days)
    cols["accepted_not_delivered"] = pending["open_asks"].to_numpy()
    out = pd.DataFrame({name: np.asarray(cols[name], dtype="float64") for name in ASK_HISTORY_FEATURES})
    for column in COMMITMENT_COLUMNS:
        out[column] = pending[column].to_numpy()
    return out


def _activity_features(q: LookBack, world: World) -> Columns:
    """Activity history (the accepted asks not yet delivered are `features.commitments`')."""
    q.table("activities", world.activities, "occurred_at", {"organic": "(r.ask_id IS NULL)::DOUBLE"})
    a = q.aggregate(
        "activities",
        {
            "n": "count(e.t)",
            "organic": "sum(e.organic)",
            "n_90d": since("count(e.t)", "_t90"),
            "n_12m": since("count(e.t)", "_t365"),
            "organic_12m": since("sum(e.organic)", "_t365"),
            "last_t": "max(e.t)",
        },
    )
    return {
        "days_since_last_activity": q.days_since(a["last_t"]),
        "activities_12m": a["n_12m"],
        "activities_total": a["n"],
        "activities_90d": a["n_90d"],
        "organic_activities_12m": _cum(a, "organic_12m"),
        "organic_activities_total": _cum(a, "organic"),
    }


def active_points(world: World, as_of: pd.Timestamp) -> pd.DataFrame:
    """(`customer_id`, `as_of`) for every customer who exists at `as_of` and has not churned before it."""
    return snapshot_points(world, [as_of])


def snapshot_points(world: World, dates: list[pd.Timestamp] | pd.DatetimeIndex) -> pd.DataFrame:
    """One point per snapshot date and customer alive at that date (started before, not churned before)."""
    cust = world.customers
    frames = []
    for t in pd.DatetimeIndex(pd.to_datetime(list(dates), utc=True)):
        alive = (cust["contract_start"] < t) & (cust["churned_at"].isna() | (cust["churned_at"] >= t))
        frames.append(pd.DataFrame({"customer_id": cust.loc[alive, "customer_id"].to_numpy(), "as_of": t}))
    if not frames:
        return pd.DataFrame(
            {
                "customer_id": pd.Series([], dtype="str"),
                "as_of": pd.Series([], dtype=TIMESTAMP),
            }
        )
    out = pd.concat(frames, ignore_index=True)
    out["as_of"] = out["as_of"].astype(TIMESTAMP)
    return out


def acceptance_features(world: World, asks: pd.DataFrame, lapse_days: int = COMMITMENT_LAPSE_DAYS) -> pd.DataFrame:
    """Features of each ask as of its `asked_at`, plus the ask's own inputs (`ask_type`, effort)."""
    points = pd.DataFrame(
        {
            "customer_id": asks["customer_id"].to_numpy(),
            "as_of": asks["asked_at"].to_numpy(),
        }
    )
    out = build_features(world, points, lapse_days)
    out["ask_type"] = asks["ask_type"].astype("str").to_numpy()
    out["ask_effort_hours"] = out["ask_type"].map(ASK_EFFORT_HOURS).astype("float64")
    return out


def count_events(
    times: pd.DataFrame,
    on: str,
    world: World,
    points: pd.DataFrame,
    start_offset: pd.Timedelta,
    end_offset: pd.Timedelta,
) -> np.ndarray:
    """Per point, the number of rows of `times` with `on` in (as_of + start_offset, as_of + end_offset]."""
    t = micros(_as_of(points))
    # The engine's look-back ends at `_t` (here as_of + end_offset, included) and the window starts
    # after `_start`.
    window = {"_t": t + end_offset.value // 1000, "_start": t + start_offset.value // 1000}
    ids = points["customer_id"].astype("str").reset_index(drop=True)
    with open_lookback(world, customer_codes(world, ids), window) as q:
        q.table("events", times, on, {})
        counts = q.aggregate("events", {"n": since("count(e.t)", "_start", known_at_as_of=True)}, True)
    return counts["n"]
