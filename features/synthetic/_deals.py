"""Deals of prospects (spec section 9), drawn beside a generated customer base from a stream of
their own, with the truth of what a delivered reference adds.

The story each deal follows:
- A prospect opens a deal that looks like one of the customers (its industry, segment, region and
  use case), with an amount by segment; some are referred by a customer live at the time.
- Its chance of being won is a logistic in what the deal shows when it is created (segment,
  industry, region, use case, amount, referral): `p_without`.
- Sales asks for a reference on the deals it expects to win: the chance of a request rises with
  that same logit, so the deals that get a reference would have won more often anyway and the plain
  difference of win rates overstates what a reference adds. Sales sees nothing the table does not
  record, so the adjustment for the deal's features can recover the effect.
- A request goes to the reference pool: it takes an existing `reference_call` or `case_study` ask
  of the world that its customer accepted, made in the weeks after the request (the closest match
  to the deal first), and names the deal in its `opportunity_id`: the customer tables and the asks
  themselves are the world's own, unchanged, and whether a reference is delivered depends on the
  customer, not on the deal.
- The reference counts when the ask's activity came before the deal would have closed without it;
  it shortens the cycle and raises the win logit, more when the reference shares the deal's
  industry and segment: `p_with`.
- A deal is closed when it would have closed by the end without a reference, so that references'
  shorter cycles do not decide which deals have closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import DEALS, SEGMENTS
from features.contracts import CONTRACTS

DEALS_STREAM = 9  # the spawn key of the deals' own random stream: other tables never see it
DEALS_PER_CUSTOMER = 0.15  # deals over the whole period, per customer in the base
FIRST_DEAL_DAYS = 90  # no deal in the simulated period's first months, before any reference could be made
REQUEST_TYPES = ("reference_call", "case_study")
REQUEST_DAYS = (1.0, 14.0)  # a request comes this many days after the deal opens
WINDOW_DAYS = 30.0  # an ask made this long after the request can be the reference
REFERRED_SHARE = 0.15

SEG_AMOUNT = np.log([12_000.0, 50_000.0, 200_000.0])  # lognormal mean of the amount, by segment
AMOUNT_SD = 0.6
SEG_CYCLE_DAYS = np.array([60.0, 90.0, 130.0])  # median days to close without a reference
CYCLE_SD = 0.35
CYCLE_DAYS = (20.0, 300.0)
REFERENCE_CYCLE = 0.75  # a delivered reference shortens what is left of the cycle to this share

# The win logit: what a deal shows when it opens.
WIN_BASE = -0.35
SEG_WIN = np.array([0.35, 0.0, -0.45])
WIN_EFFECT_SD = 0.45  # industry, region and use-case effects are drawn once per world
AMOUNT_WIN = -0.45  # per unit of log amount above the segment's mean
REFERRED_WIN = 0.8

# Sales' choice: the chance of a request rises with the deal's win logit.
REQUEST_BASE = -0.6
REQUEST_SLOPE = 1.4

# A delivered reference's effect on the win logit.
EFFECT_BASE = 0.35
EFFECT_SAME_INDUSTRY = 0.45
EFFECT_SAME_SEGMENT = 0.3


@dataclass(frozen=True)
class Deals:
    """The deals of a world: the `opportunities` table, the asks table's `opportunity_id` per ask
    (`ask_id`, `opportunity_id`) and the truth per deal."""

    opportunities: pd.DataFrame
    links: pd.DataFrame
    truth: pd.DataFrame


def with_deals(
    tables: dict[str, pd.DataFrame], seed: int, end: pd.Timestamp, per_customer: float = DEALS_PER_CUSTOMER
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The world's raw `tables` with its deals (`generate_deals` from `deals_stream(seed)`): the
    `opportunities` table and the asks' `opportunity_id` column, the other tables as they were;
    and the deals' truth."""
    deals = generate_deals(tables, end, deals_stream(seed), per_customer)
    asks = tables["asks"].copy()
    named = asks["ask_id"].map(deals.links.set_index("ask_id")["opportunity_id"])
    asks["opportunity_id"] = named.astype("str").where(named.notna(), np.nan)
    return {**tables, "asks": asks, DEALS: deals.opportunities}, deals.truth


def deals_stream(seed: int) -> np.random.Generator:
    """The deals' own random stream of a world's `seed`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(DEALS_STREAM,)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _days(values: pd.Series) -> np.ndarray:
    """Days since the epoch of UTC timestamps (NaT as nan)."""
    micros = pd.DatetimeIndex(values).as_unit("us").asi8.astype(np.float64)
    micros[pd.isna(values).to_numpy()] = np.nan
    return micros / 86_400e6


def _timestamps(days: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.round(days * 86_400), unit="s", utc=True)).astype("datetime64[us, UTC]")


def generate_deals(
    tables: dict[str, pd.DataFrame],
    end: pd.Timestamp,
    rng: np.random.Generator,
    per_customer: float = DEALS_PER_CUSTOMER,
) -> Deals:
    """The deals of the world whose raw `tables` end at `end`, drawn from `rng` only."""
    customers, asks, activities = tables["customers"], tables["asks"], tables["activities"]
    end_day = float(_days(pd.Series([end]))[0])
    start_day = float(np.nanmin(_days(tables["usage"]["month"]))) + FIRST_DEAL_DAYS
    n = round(per_customer * len(customers))
    created = np.sort(rng.uniform(start_day, end_day, n))

    # What the deal looks like: a customer's firmographics, an amount, perhaps a referral.
    look = rng.integers(0, len(customers), n)
    industry = customers["industry"].to_numpy()[look]
    segment = customers["segment"].to_numpy()[look]
    region = customers["region"].to_numpy()[look]
    use_case = customers["use_case"].to_numpy()[look]
    seg = pd.Index(SEGMENTS).get_indexer(segment)
    amount_z = rng.normal(0.0, AMOUNT_SD, n)
    amount = np.round(np.exp(SEG_AMOUNT[seg] + amount_z), 2)
    referred_by = _referrers(customers, created, rng)

    logit = _win_logit(seg, amount_z, referred_by, (industry, region, use_case), rng)

    requested = rng.random(n) < _sigmoid(REQUEST_BASE + REQUEST_SLOPE * (logit - logit.mean()))
    request_day = created + rng.uniform(*REQUEST_DAYS, n)
    ask_at = _references(customers, asks, industry, segment, requested, request_day, rng)
    delivered_day = _delivered(asks, activities, ask_at)

    cycle0 = np.clip(SEG_CYCLE_DAYS[seg] * np.exp(rng.normal(0.0, CYCLE_SD, n)), *CYCLE_DAYS)
    treated = delivered_day < created + cycle0
    elapsed = np.where(treated, delivered_day - created, 0.0)
    cycle = np.where(treated, np.maximum(elapsed + (cycle0 - elapsed) * REFERENCE_CYCLE, elapsed + 1.0), cycle0)
    ref_cust = np.full(n, -1)
    has_ref = ask_at >= 0
    ref_cust[has_ref] = pd.Index(customers["customer_id"]).get_indexer(asks["customer_id"].to_numpy()[ask_at[has_ref]])
    same_industry = has_ref & (customers["industry"].to_numpy()[ref_cust] == industry)
    same_segment = has_ref & (customers["segment"].to_numpy()[ref_cust] == segment)
    effect = EFFECT_BASE + EFFECT_SAME_INDUSTRY * same_industry + EFFECT_SAME_SEGMENT * same_segment
    p_without, p_with = _sigmoid(logit), _sigmoid(logit + effect)
    won = rng.random(n) < np.where(treated, p_with, p_without)
    closed = created + cycle0 <= end_day  # never by the shorter cycle: see the module's docstring

    ids = pd.Series([f"O{i:06d}" for i in range(n)], dtype="str")
    outcome = np.where(closed, np.where(won, "won", "lost"), "open")
    opportunities = pd.DataFrame(
        {
            "opportunity_id": ids,
            "account": [f"Prospect {i:06d}" for i in range(n)],
            "industry": industry,
            "segment": segment,
            "region": region,
            "use_case": use_case,
            "amount": amount,
            "created_at": _timestamps(created),
            "outcome": outcome,
            "closed_at": _timestamps(np.where(closed, created + cycle, np.nan)),
            "referred_by": referred_by,
        }
    )
    opportunities = opportunities[[*CONTRACTS[DEALS].columns, "referred_by"]]
    links = pd.DataFrame(
        {"ask_id": asks["ask_id"].to_numpy()[ask_at[has_ref]].astype(str), "opportunity_id": ids[has_ref].to_numpy()}
    )
    truth = pd.DataFrame(
        {
            "opportunity_id": ids,
            "p_win_without": p_without,
            "p_win_with": p_with,
            "referenced": treated,
            "closed": closed,
            "same_industry": same_industry,
            "same_segment": same_segment,
        }
    )
    return Deals(opportunities, links, truth)


def _win_logit(
    seg: np.ndarray,
    amount_z: np.ndarray,
    referred_by: np.ndarray,
    categories: tuple[np.ndarray, ...],
    rng: np.random.Generator,
) -> np.ndarray:
    """The deals' win logit without a reference: what each shows when it is created."""
    logit = WIN_BASE + SEG_WIN[seg] + AMOUNT_WIN * amount_z + REFERRED_WIN * pd.notna(referred_by)
    for values in categories:  # industry, region and use case: effects drawn once per world
        levels, codes = np.unique(values.astype(str), return_inverse=True)
        logit = logit + rng.normal(0.0, WIN_EFFECT_SD, levels.size)[codes]
    return np.asarray(logit, dtype=float)


def _referrers(customers: pd.DataFrame, created: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A referring customer for about `REFERRED_SHARE` of the deals: one live when the deal opened."""
    out = np.full(created.size, None, dtype=object)
    start = _days(customers["contract_start"])
    churn = np.nan_to_num(_days(customers["churned_at"]), nan=np.inf)
    ids = customers["customer_id"].to_numpy()
    for i in np.flatnonzero(rng.random(created.size) < REFERRED_SHARE):
        live = np.flatnonzero((start < created[i]) & (churn > created[i]))
        if live.size:
            out[i] = ids[rng.choice(live)]
    return out


def _references(
    customers: pd.DataFrame,
    asks: pd.DataFrame,
    industry: np.ndarray,
    segment: np.ndarray,
    requested: np.ndarray,
    request_day: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per deal, the row in `asks` that became its reference request (-1: none): in request order,
    an accepted ask of `REQUEST_TYPES` made within `WINDOW_DAYS` after the request and not taken by another
    deal, the best match of industry and segment first, at random among equals."""
    pool = np.flatnonzero((asks["ask_type"].isin(REQUEST_TYPES) & (asks["outcome"] == "accepted")).to_numpy())
    at = _days(asks["asked_at"])[pool]
    order = np.argsort(at, kind="stable")
    pool, at = pool[order], at[order]
    who = pd.Index(customers["customer_id"]).get_indexer(asks["customer_id"].to_numpy()[pool])
    pool_industry = customers["industry"].to_numpy()[who]
    pool_segment = customers["segment"].to_numpy()[who]
    taken = np.zeros(pool.size, dtype=bool)
    out = np.full(requested.size, -1)
    for i in np.flatnonzero(requested)[np.argsort(request_day[requested], kind="stable")]:
        lo, hi = np.searchsorted(at, [request_day[i], request_day[i] + WINDOW_DAYS])
        free = lo + np.flatnonzero(~taken[lo:hi])
        if free.size == 0:
            continue
        match = 2 * (pool_industry[free] == industry[i]) + (pool_segment[free] == segment[i])
        best = free[match == match.max()]
        pick = best[rng.integers(best.size)]
        taken[pick] = True
        out[i] = pool[pick]
    return out


def _delivered(asks: pd.DataFrame, activities: pd.DataFrame, ask_at: np.ndarray) -> np.ndarray:
    """Per deal, the day its reference ask's first activity happened (nan: none, or no ask)."""
    done = activities.dropna(subset=["ask_id"]).groupby("ask_id")["occurred_at"].min()
    out = np.full(ask_at.size, np.nan)
    has = ask_at >= 0
    when = done.reindex(asks["ask_id"].to_numpy()[ask_at[has]])
    out[has] = _days(pd.Series(when.to_numpy()))
    return out
