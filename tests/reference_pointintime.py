"""The point-in-time engine as it was before the DuckDB engine (pandas merge_asof), kept only as the
reference the new engine is compared with (tests/test_pointintime_engine.py). Not product code."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import ANSWERS
from features.commitments import COMMITMENT_LAPSE_DAYS, open_commitments
from features.contracts import TIMESTAMP, answer_known_at
from features.io import World
from features.pointintime import _add_months, _quarter_start, _ratio, customer_codes, tenure_months
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

_DAY = pd.Timedelta(days=1)
_AVG_MONTH_DAYS = 30.4375


class _AsOf:
    """As-of look-ups of many event tables for one fixed set of points."""

    def __init__(self, customer_codes: np.ndarray, as_of: pd.Series) -> None:
        frame = pd.DataFrame({"_c": customer_codes.astype(np.int64), "_t": as_of.to_numpy()})
        frame["_t"] = frame["_t"].astype(TIMESTAMP)
        self.order = np.argsort(frame["_t"].to_numpy(), kind="stable")
        self.sorted = frame.iloc[self.order].reset_index(drop=True)
        self.t = self.sorted["_t"]

    def lookup(
        self,
        events: pd.DataFrame,
        on: str,
        columns: list[str],
        at: pd.Series | None = None,
        strict: bool = True,
    ) -> pd.DataFrame:
        """Columns of each point's last event with `on` < `at` (<= if not strict); NaN if none."""
        left = pd.DataFrame({"_c": self.sorted["_c"], "_q": (self.t if at is None else at).astype(TIMESTAMP)})
        right = events.loc[:, ["_c", on, *columns]]
        merged = pd.merge_asof(
            left,
            right,
            left_on="_q",
            right_on=on,
            by="_c",
            allow_exact_matches=not strict,
            direction="backward",
        )
        return merged.loc[:, [on, *columns]]

    def days_since(self, moment: pd.Series) -> np.ndarray:
        return ((self.t - moment) / _DAY).to_numpy(dtype=float)

    def minus_days(self, days: int) -> pd.Series:
        return self.t - pd.Timedelta(days=days)


def _prepare(events: pd.DataFrame, codes: pd.Index, on: str) -> pd.DataFrame:
    """Events with integer customer codes, sorted per customer by time (for running totals)."""
    # Integer codes instead of id strings: sorting and merging move far less memory.
    out = events.drop(columns=["customer_id"])
    out["_c"] = codes.get_indexer(events["customer_id"]).astype(np.int64)
    return out.sort_values(["_c", on], kind="stable").reset_index(drop=True)


def _by_time(events: pd.DataFrame, on: str) -> pd.DataFrame:
    # merge_asof needs the right side sorted by time; a stable sort keeps, within one customer and
    # one instant, the per-customer order, so the last match carries the largest running total.
    return events.sort_values(on, kind="stable").reset_index(drop=True)


def _running(events: pd.DataFrame, values: dict[str, pd.Series]) -> pd.DataFrame:
    grouped = events.groupby("_c", sort=False)
    out = events.copy()
    out["cum_n"] = grouped.cumcount().to_numpy() + 1
    for name, series in values.items():
        out[name] = series.groupby(events["_c"], sort=False).cumsum().to_numpy()
    return out


def _cum(frame: pd.DataFrame, col: str) -> np.ndarray:
    return frame[col].fillna(0.0).to_numpy(dtype=float)


def build_features(world: World, points: pd.DataFrame, lapse_days: int = COMMITMENT_LAPSE_DAYS) -> pd.DataFrame:
    """Feature rows for each (`customer_id`, `as_of`) of `points`, in the same order.

    Returns `customer_id`, `as_of` and the columns of `features.spec.FEATURES` in their order:
    numeric features as float64 (NaN where unknown), categorical ones as strings. `lapse_days`:
    how long an accepted ask stays pipeline (`features.commitments`); the model's bundle keeps it.
    """
    as_of = pd.to_datetime(points["as_of"], utc=True).astype(TIMESTAMP).reset_index(drop=True)
    ids = points["customer_id"].astype("str").reset_index(drop=True)
    codes = customer_codes(world, ids)
    q = _AsOf(codes, as_of)
    index = pd.Index(world.customers["customer_id"])
    nps = _nps_features(q, world, index)
    usage = _usage_features(q, world, index)
    tickets = _ticket_features(q, world, index)
    social = _social_features(q, world, index)
    asks = _ask_features(q, world, index)
    activity = _activity_features(q, world, index)
    pending = open_commitments(world.asks, world.activities, points, lapse_days)["open_asks"].to_numpy()
    activity["accepted_not_delivered"] = pending[q.order]
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
    cols = {**_customer_features(q, world), **nps, **usage, **tickets, **social, **asks, **activity, **rates}

    out = pd.DataFrame({name: cols[name] for name in FEATURE_NAMES})
    for name in FEATURE_NAMES:
        if name not in CATEGORICAL_FEATURES:
            out[name] = out[name].astype("float64")
        else:
            out[name] = out[name].astype("str")
    out.insert(0, KEYS[1], q.t.to_numpy())
    out.insert(0, KEYS[0], ids.to_numpy()[q.order])
    # Back to the caller's order.
    restored = np.empty_like(q.order)
    restored[q.order] = np.arange(len(q.order))
    return out.iloc[restored].reset_index(drop=True)


# One feature group's columns (name -> one value per point, in `_AsOf` order). Names starting
# with "_" are totals that `build_features` turns into rates; they are not features themselves.
_Columns = dict[str, np.ndarray]


def _customer_features(q: _AsOf, world: World) -> _Columns:
    """Customer attributes, taken as they are (churn is not a feature: it is unknown until it happens)."""
    cust = world.customers.iloc[q.sorted["_c"].to_numpy()].reset_index(drop=True)
    cols: _Columns = {"tenure_months": tenure_months(cust["contract_start"], q.t)}
    for name in CATEGORICAL_FEATURES:
        cols[name] = cust[name].to_numpy()
    cols["log_arr"] = np.log1p(cust["arr"].to_numpy(dtype=float))
    return cols


def _nps_features(q: _AsOf, world: World, index: pd.Index) -> _Columns:
    cols: _Columns = {}
    ev = _prepare(world.nps, index, "responded_at")
    ev["prev_score"] = ev.groupby("_c", sort=False)["score"].shift(1)
    ev = _by_time(_running(ev, {"cum_score": ev["score"].astype(float)}), "responded_at")
    now = q.lookup(ev, "responded_at", ["score", "prev_score", "cum_n", "cum_score"])
    year_ago = q.lookup(ev, "responded_at", ["cum_n", "cum_score"], at=q.minus_days(WINDOW_12M_DAYS))
    n12 = _cum(now, "cum_n") - _cum(year_ago, "cum_n")
    last = now["score"].to_numpy(dtype=float)
    cols["nps_last"] = last
    cols["nps_days_since"] = q.days_since(now["responded_at"])
    cols["nps_mean_12m"] = _ratio(_cum(now, "cum_score") - _cum(year_ago, "cum_score"), n12)
    cols["nps_trend"] = last - now["prev_score"].to_numpy(dtype=float)
    cols["nps_promoter"] = np.where(last >= 9, 1.0, 0.0)
    cols["nps_responses_12m"] = n12
    cols["nps_mean_all"] = _ratio(_cum(now, "cum_score"), _cum(now, "cum_n"))
    cols["_nps_responses_total"] = _cum(now, "cum_n")
    return cols


def _usage_features(q: _AsOf, world: World, index: pd.Index) -> _Columns:
    cols: _Columns = {}
    usage = world.usage.loc[
        :,
        [
            "customer_id",
            "month",
            "licensed_seats",
            "active_users",
            "feature_adoption",
            "logins",
            "health_score",
        ],
    ]
    earlier = usage.loc[:, ["customer_id", "month", "feature_adoption", "active_users", "health_score"]].copy()
    earlier["month"] = _add_months(earlier["month"], 3)
    usage = usage.merge(earlier, on=["customer_id", "month"], how="left", suffixes=("", "_3m"))
    # A month's row describes the whole month: it is known from the first day of the next month.
    usage["known_at"] = _add_months(usage["month"], 1)
    ev = _prepare(usage, index, "known_at")
    ev = _by_time(_running(ev, {"cum_health": ev["health_score"].astype(float)}), "known_at")
    half_year = q.lookup(ev, "known_at", ["cum_n", "cum_health"], at=q.minus_days(182), strict=False)
    now = q.lookup(
        ev,
        "known_at",
        [
            "feature_adoption",
            "feature_adoption_3m",
            "active_users",
            "active_users_3m",
            "licensed_seats",
            "logins",
            "health_score",
            "health_score_3m",
            "cum_n",
            "cum_health",
        ],
        strict=False,
    )
    adoption = now["feature_adoption"].to_numpy(dtype=float)
    users = now["active_users"].to_numpy(dtype=float)
    users_3m = now["active_users_3m"].to_numpy(dtype=float)
    health = now["health_score"].to_numpy(dtype=float)
    cols["adoption"] = adoption
    cols["adoption_trend_3m"] = adoption - now["feature_adoption_3m"].to_numpy(dtype=float)
    cols["seat_utilisation"] = _ratio(users, now["licensed_seats"].to_numpy(dtype=float))
    cols["active_users_trend_3m"] = (users - users_3m) / np.maximum(users_3m, 1.0)
    cols["logins"] = now["logins"].to_numpy(dtype=float)
    cols["health_score"] = health
    cols["health_trend_3m"] = health - now["health_score_3m"].to_numpy(dtype=float)
    cols["health_mean_6m"] = _ratio(
        _cum(now, "cum_health") - _cum(half_year, "cum_health"), _cum(now, "cum_n") - _cum(half_year, "cum_n")
    )
    cols["usage_months"] = _cum(now, "cum_n")
    cols["health_mean_all"] = _ratio(_cum(now, "cum_health"), _cum(now, "cum_n"))
    return cols


def _ticket_features(q: _AsOf, world: World, index: pd.Index) -> _Columns:
    cols: _Columns = {}
    ev = _prepare(world.tickets, index, "opened_at")
    csat = ev["csat"].astype("Float64")
    ev = _running(
        ev,
        {
            "cum_urgent": (ev["priority"] == "urgent").astype(float),
            "cum_sentiment": ev["sentiment"].astype(float),
            "cum_csat": csat.fillna(0.0).astype(float),
            "cum_csat_n": csat.notna().astype(float),
        },
    )
    ev = _by_time(ev, "opened_at")
    names = ["cum_n", "cum_urgent", "cum_sentiment", "cum_csat", "cum_csat_n"]
    now = q.lookup(ev, "opened_at", names)
    d90 = q.lookup(ev, "opened_at", names, at=q.minus_days(WINDOW_90D_DAYS))
    d14 = q.lookup(ev, "opened_at", ["cum_urgent"], at=q.minus_days(URGENT_OPEN_DAYS))
    d365 = q.lookup(ev, "opened_at", names, at=q.minus_days(WINDOW_12M_DAYS))
    n90 = _cum(now, "cum_n") - _cum(d90, "cum_n")
    cols["tickets_90d"] = n90
    cols["urgent_tickets_90d"] = _cum(now, "cum_urgent") - _cum(d90, "cum_urgent")
    cols["urgent_tickets_open"] = _cum(now, "cum_urgent") - _cum(d14, "cum_urgent")
    cols["ticket_sentiment_90d"] = _ratio(_cum(now, "cum_sentiment") - _cum(d90, "cum_sentiment"), n90)
    n365 = _cum(now, "cum_n") - _cum(d365, "cum_n")
    cols["tickets_12m"] = n365
    cols["ticket_sentiment_12m"] = _ratio(_cum(now, "cum_sentiment") - _cum(d365, "cum_sentiment"), n365)
    cols["_tickets_total"] = total = _cum(now, "cum_n")
    cols["ticket_sentiment_all"] = _ratio(_cum(now, "cum_sentiment"), total)
    cols["csat_mean_all"] = _ratio(_cum(now, "cum_csat"), _cum(now, "cum_csat_n"))
    cols["csat_mean_12m"] = _ratio(
        _cum(now, "cum_csat") - _cum(d365, "cum_csat"),
        _cum(now, "cum_csat_n") - _cum(d365, "cum_csat_n"),
    )
    return cols


def _social_features(q: _AsOf, world: World, index: pd.Index) -> _Columns:
    cols: _Columns = {}
    ev = _prepare(world.social, index, "mentioned_at")
    ev = _running(
        ev,
        {
            "cum_pos": (ev["sentiment"] > 0).astype(float),
            "cum_neg": (ev["sentiment"] < 0).astype(float),
            "cum_sentiment": ev["sentiment"].astype(float),
        },
    )
    ev = _by_time(ev, "mentioned_at")
    names = ["cum_n", "cum_pos", "cum_neg", "cum_sentiment"]
    now = q.lookup(ev, "mentioned_at", names)
    year_ago = q.lookup(ev, "mentioned_at", names, at=q.minus_days(WINDOW_12M_DAYS))
    cols["social_positive_12m"] = _cum(now, "cum_pos") - _cum(year_ago, "cum_pos")
    cols["social_negative_12m"] = _cum(now, "cum_neg") - _cum(year_ago, "cum_neg")
    cols["_social_positive_total"] = _cum(now, "cum_pos")
    cols["_social_total"] = total = _cum(now, "cum_n")
    cols["social_sentiment_all"] = _ratio(_cum(now, "cum_sentiment"), total)
    cols["social_sentiment_12m"] = _ratio(
        _cum(now, "cum_sentiment") - _cum(year_ago, "cum_sentiment"), _cum(now, "cum_n") - _cum(year_ago, "cum_n")
    )
    return cols


def _known_asks(asks: pd.DataFrame) -> pd.DataFrame:
    """Asks with the time their outcome became known (an answer without a date: known when asked)."""
    return asks.assign(responded_at=answer_known_at(asks))


def _ask_features(q: _AsOf, world: World, index: pd.Index) -> _Columns:
    cols: _Columns = {}
    all_asks = _known_asks(world.asks)
    asks = _prepare(all_asks, index, "asked_at")
    asks = _running(asks, {"cum_ref": (asks["ask_type"] == "reference_call").astype(float)})
    asks = _by_time(asks, "asked_at")
    now = q.lookup(asks, "asked_at", ["cum_n", "cum_ref"])
    d90 = q.lookup(asks, "asked_at", ["cum_n"], at=q.minus_days(WINDOW_90D_DAYS))
    quarter = q.lookup(asks, "asked_at", ["cum_ref"], at=_quarter_start(q.t))

    # Outcomes are known only once responded: before that an ask counts as no_response.
    answered = all_asks[all_asks["outcome"].isin(ANSWERS)]
    resp = _prepare(answered, index, "responded_at")
    resp = _running(
        resp,
        {
            "cum_acc": (resp["outcome"] == "accepted").astype(float),
            "cum_dec": (resp["outcome"] == "declined").astype(float),
        },
    )
    # Declines in a row, as the guardrail counts them: over answers only, newest back, so a
    # no_response neither extends nor breaks a streak. Declines so far minus those at the last accept.
    at_accept = resp["cum_dec"].where(resp["outcome"] == "accepted", 0.0)
    resp["streak"] = resp["cum_dec"] - at_accept.groupby(resp["_c"], sort=False).cummax().to_numpy()
    resp = _by_time(resp, "responded_at")
    known = q.lookup(resp, "responded_at", ["cum_acc", "cum_dec", "streak"])
    accepted = _by_time(_prepare(answered[answered["outcome"] == "accepted"], index, "responded_at"), "responded_at")
    cols["days_since_last_accept"] = q.days_since(q.lookup(accepted, "responded_at", [])["responded_at"])

    asks_total = _cum(now, "cum_n")
    accepts = _cum(known, "cum_acc")
    cols["asks_total"] = asks_total
    cols["accepts_total"] = accepts
    cols["declines_total"] = _cum(known, "cum_dec")
    # Asks never answered (or not yet): silence is its own signal, apart from declines.
    cols["unanswered_rate"] = (asks_total - accepts - cols["declines_total"]) / (asks_total + ACCEPTANCE_PRIOR_WEIGHT)
    cols["acceptance_rate"] = (accepts + ACCEPTANCE_PRIOR * ACCEPTANCE_PRIOR_WEIGHT) / (
        asks_total + ACCEPTANCE_PRIOR_WEIGHT
    )
    cols["days_since_last_ask"] = q.days_since(now["asked_at"])
    cols["asks_90d"] = asks_total - _cum(d90, "cum_n")
    cols["reference_calls_quarter"] = _cum(now, "cum_ref") - _cum(quarter, "cum_ref")
    cols["decline_streak"] = _cum(known, "streak")
    return cols


def _activity_features(q: _AsOf, world: World, index: pd.Index) -> _Columns:
    """Activity history (the accepted asks not yet delivered are `features.commitments`')."""
    cols: _Columns = {}
    ev = _prepare(world.activities, index, "occurred_at")
    solicited = ev["ask_id"].notna().astype(float)
    ev = _by_time(_running(ev, {"cum_organic": 1.0 - solicited}), "occurred_at")
    names = ["cum_n", "cum_organic"]
    now = q.lookup(ev, "occurred_at", names)
    d90 = q.lookup(ev, "occurred_at", ["cum_n"], at=q.minus_days(WINDOW_90D_DAYS))
    year_ago = q.lookup(ev, "occurred_at", names, at=q.minus_days(WINDOW_12M_DAYS))
    cols["days_since_last_activity"] = q.days_since(now["occurred_at"])
    cols["activities_12m"] = _cum(now, "cum_n") - _cum(year_ago, "cum_n")
    cols["activities_total"] = _cum(now, "cum_n")
    cols["activities_90d"] = _cum(now, "cum_n") - _cum(d90, "cum_n")
    cols["organic_activities_12m"] = _cum(now, "cum_organic") - _cum(year_ago, "cum_organic")
    cols["organic_activities_total"] = _cum(now, "cum_organic")
    return cols


def count_events(
    times: pd.DataFrame,
    on: str,
    world: World,
    points: pd.DataFrame,
    start_offset: pd.Timedelta,
    end_offset: pd.Timedelta,
) -> np.ndarray:
    """Per point, the number of rows of `times` with `on` in (as_of + start_offset, as_of + end_offset]."""
    as_of = pd.to_datetime(points["as_of"], utc=True).astype(TIMESTAMP).reset_index(drop=True)
    q = _AsOf(customer_codes(world, points["customer_id"]), as_of)
    index = pd.Index(world.customers["customer_id"])
    ev = _by_time(_running(_prepare(times, index, on), {}), on)
    upper = q.lookup(ev, on, ["cum_n"], at=q.t + end_offset, strict=False)
    lower = q.lookup(ev, on, ["cum_n"], at=q.t + start_offset, strict=False)
    counts = _cum(upper, "cum_n") - _cum(lower, "cum_n")
    restored = np.empty_like(q.order)
    restored[q.order] = np.arange(len(q.order))
    return counts[restored]
