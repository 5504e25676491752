"""The program report (spec section 7, `advocacy report`): what the advocacy program asked, what came
of it, and whether the plans kept their promise.

Three views of the asks made since a time (all of them by default), with outcomes as recorded: the
report speaks as of the data's end, when every answer it counts has its `responded_at`.

- Asks, acceptance and delivery by ask type and month of `asked_at`. An accepted ask is delivered
  when an activity names its `ask_id` (`features.commitments.delivered_at`, the rule the committed
  pipeline uses): matched ask by ask, never by counts, so one customer's review cannot deliver
  their case study.
- Planned asks: asks recorded with a `plan_id` whose plan holds that (customer, ask type), made at
  or after the plan's `as_of`; the plan promised one ask per pair, so the first such ask is the one
  on plan. Each carries the acceptance the plan promised for it; binned, promised against realised
  is the reliability table (the calibration chart), and per plan the promised expected yeses
  against the yeses. An ask naming a plan that does not hold it (another type, another customer, a
  plan no longer stored), made before the plan, or a second ask of a planned pair is counted as off
  plan, never dropped unseen.
- Yeses per ask of the planned asks against the points rule's picks: the asks made over the same
  period (from the first planned ask on) and of the same ask types to customers the rule qualified
  (more than 60 points) on point-in-time features as of each ask's `asked_at`.

With an `opportunities` table, a fourth view: the deals created since that time, the effect of a
delivered reference on winning them and the referral pipeline (`models.deal_report`, spec 9).

Frames in, report out: the caller reads the data directory, the ask log and the stored plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.baseline import score_baseline
from features.catalog import ASK_TYPE_NAMES, OUTCOMES
from features.commitments import delivered_at
from features.contracts import TIMESTAMP, as_utc
from features.io import World
from features.labels import observed_until
from features.pointintime import acceptance_features
from models.deal_report import DealOptions, DealReport, KeptEstimate, deal_report

COUNTS: tuple[str, ...] = ("asks", *OUTCOMES, "delivered")
RATES: tuple[str, ...] = ("acceptance_rate", "delivery_rate")
PLANNED_COLUMNS: tuple[str, ...] = (
    "ask_id",
    "plan_id",
    "customer_id",
    "ask_type",
    "asked_at",
    "outcome",
    "accepted",
    "on_plan",
    "plan_stored",
    "promised",
    "rank",
    "wave",
)
RELIABILITY_COLUMNS: tuple[str, ...] = ("bin", "lower", "upper", "asks", "mean_promised", "yeses", "realised_rate")
PLAN_SUMMARY_COLUMNS: tuple[str, ...] = (
    "plan_id",
    "stored",
    "planned",
    "asked",
    "off_plan",
    "promised_yeses",
    "yeses",
)
WAVE_COLUMNS: tuple[str, ...] = ("plan_id", "wave", "asked", "promised_yeses", "yeses", "realised_rate")
VERSUS_COLUMNS: tuple[str, ...] = ("ask_type", "picked_by", "asks", "yeses", "yeses_per_ask")
PLANNED, POINTS_RULE, ALL_TYPES = "plan", "points rule", "all"
RELIABILITY_BINS = 10


@dataclass(frozen=True)
class ProgramReport:
    """The program report's tables; `tables()` names them as they are written and logged."""

    since: pd.Timestamp | None
    until: pd.Timestamp  # the end of the data read (`features.labels.observed_until`)
    by_month: pd.DataFrame  # ask_type x month: COUNTS and RATES
    by_type: pd.DataFrame  # the same per ask type, all months
    monthly: pd.DataFrame  # the same per month, all ask types
    planned: pd.DataFrame  # one row per ask recorded with a plan_id (PLANNED_COLUMNS)
    reliability: pd.DataFrame  # on-plan asks binned by promised acceptance (RELIABILITY_COLUMNS)
    plans: pd.DataFrame  # per plan_id: promised expected yeses against yeses (PLAN_SUMMARY_COLUMNS)
    waves: pd.DataFrame  # per plan_id and wave (campaigns): the same on-plan figures (WAVE_COLUMNS)
    versus_rule: pd.DataFrame  # yeses per ask, plan against points rule (VERSUS_COLUMNS)
    compared_from: pd.Timestamp | None  # the start of the period `versus_rule` compares
    left_out: dict[str, int] = field(default_factory=dict)
    deals: DealReport | None = None  # the deals section: only with an opportunities table

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {
            "by_type_and_month": self.by_month,
            "by_type": self.by_type,
            "by_month": self.monthly,
            "planned_asks": self.planned,
            "reliability": self.reliability,
            "plans": self.plans,
            "waves": self.waves,
            "versus_points_rule": self.versus_rule,
        }
        return tables if self.deals is None else tables | self.deals.tables()

    def metrics(self) -> dict[str, float]:
        """Headline figures (MLflow metrics): totals over the period, NaN where nothing was counted."""
        total = rollup(self.by_type, []) if len(self.by_type) else None
        on_plan = self.planned[self.planned["on_plan"]]
        every = self.versus_rule[self.versus_rule["ask_type"] == ALL_TYPES].set_index("picked_by")["yeses_per_ask"]
        deals = {} if self.deals is None else self.deals.metrics()
        return deals | {
            "asks": float(self.by_type["asks"].sum()),
            "acceptance_rate": float(total["acceptance_rate"].iloc[0]) if total is not None else np.nan,
            "delivery_rate": float(total["delivery_rate"].iloc[0]) if total is not None else np.nan,
            "planned_asks": float(len(on_plan)),
            "off_plan_asks": float(len(self.planned) - len(on_plan)),
            "promised_yeses": float(on_plan["promised"].sum()),
            "planned_yeses": float(on_plan["accepted"].sum()),
            "planned_yeses_per_ask": float(every.get(PLANNED, np.nan)),
            "points_rule_yeses_per_ask": float(every.get(POINTS_RULE, np.nan)),
        }


def type_order(ask_types: pd.Series) -> pd.Series:
    """Sort key: the catalogue's order of ask types (by effort), unknown names last."""
    rank = {name: i for i, name in enumerate(ASK_TYPE_NAMES)}
    return ask_types.map(lambda t: rank.get(t, len(rank)))


def ask_flags(asks: pd.DataFrame, activities: pd.DataFrame) -> pd.DataFrame:
    """One row per ask: its type, month (`YYYY-MM` of `asked_at`) and 0/1 flags for each of COUNTS."""
    flags = pd.DataFrame(
        {"ask_type": asks["ask_type"].astype("str"), "month": asks["asked_at"].dt.strftime("%Y-%m"), "asks": 1},
        index=asks.index,
    )
    for outcome in OUTCOMES:
        flags[outcome] = (asks["outcome"] == outcome).astype(np.int64)
    delivered = delivered_at(asks, activities).notna() & (asks["outcome"] == "accepted")
    flags["delivered"] = delivered.astype(np.int64)
    return flags.reset_index(drop=True)


def rollup(flags: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """COUNTS summed by `by` (nothing: one total row), with acceptance (accepted / asks) and
    delivery (delivered / accepted, NaN with nothing accepted) rates."""
    counts = list(COUNTS)
    if by:
        out = flags.groupby(by, sort=True)[counts].sum().reset_index()
    else:
        out = flags[counts].sum().to_frame().T.reset_index(drop=True)
    out[counts] = out[counts].astype(np.int64)
    out["acceptance_rate"] = out["accepted"] / out["asks"].where(out["asks"] > 0)
    out["delivery_rate"] = out["delivered"] / out["accepted"].where(out["accepted"] > 0)
    if "ask_type" in by:
        keys = ["_type", *[c for c in by if c != "ask_type"]]
        out = out.assign(_type=type_order(out["ask_type"])).sort_values(keys, kind="stable").drop(columns="_type")
    return out.loc[:, [*by, *counts, *RATES]].reset_index(drop=True)


@dataclass(frozen=True)
class StoredPlan:
    """A stored plan as the report reads it: its rows (`models.planner.plan_table`) and the time it
    planned for (`as_of`): asks made before it were not made from it."""

    rows: pd.DataFrame
    as_of: pd.Timestamp


def _plan_rows(plans: Mapping[str, StoredPlan]) -> pd.DataFrame:
    """Every stored plan's rows: plan_id, customer_id, ask_type, promised (its `acceptance`), rank,
    planned_at (the plan's as_of)."""
    frames = [
        plan.rows.loc[:, ["customer_id", "ask_type", "acceptance", "rank"]].assign(
            plan_id=str(plan_id),
            planned_at=as_utc(plan.as_of),
            wave=plan.rows["wave"].to_numpy() if "wave" in plan.rows.columns else 1,
        )
        for plan_id, plan in plans.items()
    ]
    rows = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            {c: pd.Series(dtype="str") for c in ("customer_id", "ask_type", "plan_id")}
            | {"acceptance": pd.Series(dtype="float64"), "rank": pd.Series(dtype="int64")}
            | {"planned_at": pd.Series(dtype=TIMESTAMP), "wave": pd.Series(dtype="int64")}
        )
    )
    rows = rows.astype(
        {"customer_id": "str", "ask_type": "str", "plan_id": "str", "acceptance": "float64", "planned_at": TIMESTAMP}
    )
    # A plan asks each customer once; should a stored one hold a pair twice, its first (best) rank speaks.
    rows = rows.sort_values(["plan_id", "rank"], kind="stable").drop_duplicates(["plan_id", "customer_id", "ask_type"])
    return rows.rename(columns={"acceptance": "promised"})


def planned_asks(asks: pd.DataFrame, links: pd.DataFrame, plans: Mapping[str, StoredPlan]) -> pd.DataFrame:
    """One row per ask of `asks` that `links` (ask_id -> plan_id) ties to a plan (PLANNED_COLUMNS):
    `on_plan` where that plan (`plans`: plan_id -> its stored plan) holds the ask's customer and ask
    type and this is the first such ask made at or after the plan's as_of, with the acceptance it
    `promised` there and the `rank`; off plan, both are null."""
    linked = asks.merge(links.loc[:, ["ask_id", "plan_id"]].astype("str"), on="ask_id", how="inner")
    out = linked.merge(
        _plan_rows(plans), on=["plan_id", "customer_id", "ask_type"], how="left", indicator="_found", validate="m:1"
    )
    out = out.sort_values(["asked_at", "ask_id"], kind="stable").reset_index(drop=True)
    held = (out["_found"] == "both").to_numpy() & (out["asked_at"] >= out["planned_at"]).to_numpy(dtype=bool)
    first = ~out.loc[:, ["plan_id", "customer_id", "ask_type"]].assign(held=held).duplicated(keep="first").to_numpy()
    out["on_plan"] = held & first
    out["promised"] = out["promised"].where(out["on_plan"])
    out["rank"] = out["rank"].where(out["on_plan"]).astype("Int64")
    out["wave"] = out["wave"].where(out["on_plan"]).astype("Int64")  # a campaign's wave (1: a one-shot plan)
    out["plan_stored"] = out["plan_id"].isin(set(plans)).to_numpy()
    out["accepted"] = (out["outcome"] == "accepted").to_numpy()
    return out.loc[:, list(PLANNED_COLUMNS)]


def reliability(planned: pd.DataFrame, bins: int = RELIABILITY_BINS) -> pd.DataFrame:
    """On-plan asks in `bins` equal bins of promised acceptance (a promise of 1 in the top bin): per
    non-empty bin its asks, mean promise, yeses and realised rate (RELIABILITY_COLUMNS)."""
    on = planned[planned["on_plan"]]
    promised = on["promised"].to_numpy(dtype="float64")
    frame = pd.DataFrame(
        {
            "k": np.clip(np.floor(promised * bins), 0, bins - 1).astype(np.int64),
            "promised": promised,
            "yes": on["accepted"].to_numpy(dtype=np.int64),
        }
    )
    out = frame.groupby("k").agg(asks=("yes", "size"), mean_promised=("promised", "mean"), yeses=("yes", "sum"))
    out = out.reset_index()
    out["lower"] = out["k"] / bins
    out["upper"] = (out["k"] + 1) / bins
    out["bin"] = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(out["lower"], out["upper"], strict=True)]
    out["realised_rate"] = out["yeses"] / out["asks"]
    return out.astype({"asks": np.int64, "yeses": np.int64}).loc[:, list(RELIABILITY_COLUMNS)]


def plan_summary(planned: pd.DataFrame, plans: Mapping[str, StoredPlan]) -> pd.DataFrame:
    """Per plan named by an ask: whether it is stored, its planned asks, the asks made on it and off
    it, and its promised expected yeses (the sum of the on-plan asks' promises) against their yeses."""
    on = planned["on_plan"]
    parts = pd.DataFrame(
        {
            "plan_id": planned["plan_id"],
            "asked": on.astype(np.int64),
            "off_plan": (~on).astype(np.int64),
            "promised_yeses": planned["promised"].where(on, 0.0).astype("float64"),
            "yeses": (planned["accepted"] & on).astype(np.int64),
        }
    )
    out = parts.groupby("plan_id", sort=True).sum().reset_index()
    out["stored"] = out["plan_id"].isin(set(plans))
    out["planned"] = [len(plans[p].rows) if p in plans else 0 for p in out["plan_id"]]
    return out.astype({"planned": np.int64}).loc[:, list(PLAN_SUMMARY_COLUMNS)]


def wave_summary(planned: pd.DataFrame) -> pd.DataFrame:
    """Per plan and wave (spec 5a: a campaign's promise against what happened, wave by wave): the
    on-plan asks, their promised expected yeses, the yeses and the realised rate (WAVE_COLUMNS)."""
    on = planned[planned["on_plan"]]
    out = (
        on.assign(accepted=on["accepted"].astype(np.int64), wave=on["wave"].astype(np.int64))
        .groupby(["plan_id", "wave"], sort=True)
        .agg(asked=("ask_id", "size"), promised_yeses=("promised", "sum"), yeses=("accepted", "sum"))
        .reset_index()
    )
    out["realised_rate"] = out["yeses"] / out["asked"]
    return out.astype({"wave": np.int64, "asked": np.int64, "yeses": np.int64}).loc[:, list(WAVE_COLUMNS)]


def points_rule_qualified(world: World, asks: pd.DataFrame) -> np.ndarray:
    """Per ask: whether the points rule qualified its customer (more than 60 points) on the
    point-in-time features as of its `asked_at`."""
    if asks.empty:
        return np.zeros(0, dtype=bool)
    features = acceptance_features(world, asks.reset_index(drop=True))
    return score_baseline(features)["qualified"].to_numpy(dtype=bool)


def _yes_rows(frame: pd.DataFrame, who: str, types: list[str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for ask_type in [*types, ALL_TYPES]:
        part = frame if ask_type == ALL_TYPES else frame[frame["ask_type"] == ask_type]
        asks, yeses = len(part), int((part["outcome"] == "accepted").sum())
        rows.append(
            {
                "ask_type": ask_type,
                "picked_by": who,
                "asks": asks,
                "yeses": yeses,
                "yeses_per_ask": yeses / asks if asks else np.nan,
            }
        )
    return rows


def versus_points_rule(
    world: World, asks: pd.DataFrame, planned: pd.DataFrame
) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """Yeses per ask of the on-plan asks against the points rule's picks (VERSUS_COLUMNS), per ask
    type the plans asked for and over all of them, and when the compared period starts.

    The rule's picks are the asks of `asks` made from the first on-plan ask on, of those ask types,
    to customers it qualified as of `asked_at` (planned ones included: the rule would have picked
    them too). With no planned ask, the rule's picks over all of `asks`.
    """
    on = planned[planned["on_plan"]]
    start = on["asked_at"].min() if len(on) else (asks["asked_at"].min() if len(asks) else None)
    kinds = set(on["ask_type"] if len(on) else asks["ask_type"])
    window = asks if start is None else asks[(asks["asked_at"] >= start) & asks["ask_type"].isin(kinds)]
    picks = window[points_rule_qualified(world, window)]
    types = [t for t in ASK_TYPE_NAMES if t in kinds] + sorted(kinds - set(ASK_TYPE_NAMES))
    rows = _yes_rows(on, PLANNED, types) + _yes_rows(picks, POINTS_RULE, types)
    out = pd.DataFrame(rows, columns=list(VERSUS_COLUMNS)).astype({"asks": np.int64, "yeses": np.int64})
    return out.astype({"yeses_per_ask": "float64"}), (None if start is None else pd.Timestamp(start))


def program_report(
    world: World,
    links: pd.DataFrame,
    plans: Mapping[str, StoredPlan],
    since: pd.Timestamp | None = None,
    left_out: Mapping[str, int] | None = None,
    deals: DealOptions | None = None,
    kept_estimate: KeptEstimate | None = None,
) -> ProgramReport:
    """The program report of the asks made at or after `since` (all asks without it).

    `world`: the validated tables, the ask log's asks merged in (`usecases.sources`); `links`: the
    log's ask_id -> plan_id (`AskLog.plan_links()`); `plans`: plan_id -> the stored plan
    (`PlanStore.load`), for the plans the links name that are stored; `left_out`: what the reader
    could not use (what -> rows), reported as it is. `deals`: the deals section's options, given
    when the data has an opportunities table (None: no deals section); `kept_estimate`: an adjusted
    estimate made before, reused if the deals it was made from are unchanged.
    """
    merged = world
    since = None if since is None else as_utc(since)
    asks = merged.asks if since is None else merged.asks[(merged.asks["asked_at"] >= since).to_numpy()]
    asks = asks.sort_values(["asked_at", "ask_id"], kind="stable").reset_index(drop=True)
    flags = ask_flags(asks, merged.activities)
    planned = planned_asks(asks, links, plans)
    versus, compared_from = versus_points_rule(merged, asks, planned)
    return ProgramReport(
        since=since,
        until=observed_until(merged),
        by_month=rollup(flags, ["ask_type", "month"]),
        by_type=rollup(flags, ["ask_type"]),
        monthly=rollup(flags, ["month"]),
        planned=planned,
        reliability=reliability(planned),
        plans=plan_summary(planned, plans),
        waves=wave_summary(planned),
        versus_rule=versus,
        compared_from=compared_from,
        left_out=dict(left_out or {}),
        deals=None if deals is None else deal_report(merged, since, deals, kept_estimate),
    )


__all__ = [
    "ALL_TYPES",
    "COUNTS",
    "PLANNED",
    "PLANNED_COLUMNS",
    "PLAN_SUMMARY_COLUMNS",
    "POINTS_RULE",
    "RATES",
    "RELIABILITY_COLUMNS",
    "VERSUS_COLUMNS",
    "WAVE_COLUMNS",
    "ProgramReport",
    "StoredPlan",
    "ask_flags",
    "plan_summary",
    "planned_asks",
    "points_rule_qualified",
    "program_report",
    "reliability",
    "rollup",
    "type_order",
    "versus_points_rule",
    "wave_summary",
]
