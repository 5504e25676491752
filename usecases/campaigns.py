"""Campaigns in waves (spec 5a): wave 1 sized for the waves left, and each next wave from the
campaign's own answers.

A campaign is a stored plan whose record says how many waves, how many days apart, its deadline
(fixed at wave 1: its date plus waves x wave_days) and the date of each wave planned so far; its
rows carry their `wave`. The answers are the asks recorded with its `plan_id` (the ask log's
links) that name a customer and type it planned, asked at or after that wave's date. At each wave,
per type (`models.campaign`): how long answers take, learnt from the data's settled asks; the
yeses so far; the pending asks and their chance of still answering yes in time; the type's level,
a posterior from the campaign's answers; then the fewest more asks that bring the chance of the
need by the deadline to the wave's target (`wave_target`), and a forecast of the whole campaign
under that policy for the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from models.bundle import Bundle
from models.campaign import Answers, AnswerTimes, Pace, Schedule, SoFar, forecast, outlook, wave_target
from models.planner import PLAN_COLUMNS, Candidates, PlanRequest, Wave, acceptance_level_sd
from storage.plans import PlanStore

FORECAST_DRAWS = 100  # simulated campaigns per type behind each summary's chance


@dataclass(frozen=True)
class CampaignState:
    """A stored campaign at a wave's date: its record and rows, and what its answers say per type."""

    plan_id: str
    record: dict[str, Any]
    rows: pd.DataFrame
    wave: int
    as_of: pd.Timestamp
    deadline: pd.Timestamp
    yeses: dict[int, int]
    answers: dict[int, Answers]

    @property
    def schedule(self) -> Schedule:
        return Schedule(int(self.record["campaign"]["waves"]), int(self.record["campaign"]["wave_days"]))

    @property
    def request(self) -> PlanRequest:
        return PlanRequest(dict(self.record["need"]), float(self.record["confidence"]), dict(self.record["filters"]))


def campaign_record(schedule: Schedule, as_of: pd.Timestamp, data_dir: str | None) -> dict[str, Any]:
    """What a new campaign stores beside its plan record: its calendar, its waves so far, its data."""
    deadline = as_of + pd.Timedelta(days=schedule.waves * schedule.wave_days)
    return {
        "waves": schedule.waves,
        "wave_days": schedule.wave_days,
        "deadline": deadline.isoformat(),
        "wave_dates": [as_of.isoformat()],
        "data_dir": data_dir,
    }


def load_campaign(plans: PlanStore, plan_id: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A stored campaign's rows and record; a plan that is not a campaign, or unknown, is refused."""
    try:
        rows, record = plans.load(plan_id)
    except KeyError:
        raise ValueError(f"--continue: no plan {plan_id!r} was made here") from None
    if "campaign" not in record:
        raise ValueError(f"--continue: plan {plan_id} is a one-shot plan, not a campaign (plan with --waves)")
    return rows, record


def campaign_state(
    plan_id: str,
    rows: pd.DataFrame,
    record: dict[str, Any],
    asks: pd.DataFrame,
    links: pd.DataFrame,
    as_of: pd.Timestamp | None,
) -> CampaignState:
    """The campaign at its next wave (`as_of`, by default the last wave's date plus wave_days): the
    yeses, noes and pending asks of each type, from the asks recorded with its plan_id."""
    calendar = record["campaign"]
    dates = [pd.Timestamp(d) for d in calendar["wave_dates"]]
    when = as_of if as_of is not None else dates[-1] + pd.Timedelta(days=int(calendar["wave_days"]))
    if when <= dates[-1]:
        raise ValueError(f"--as-of: the next wave must come after wave {len(dates)} ({dates[-1]:%Y-%m-%d})")
    mine = asks.merge(links[links["plan_id"] == plan_id].loc[:, ["ask_id"]], on="ask_id", how="inner")
    planned = rows.loc[:, ["customer_id", "ask_type", "wave", "acceptance"]].astype({"customer_id": "str"})
    planned["wave_at"] = [dates[int(w) - 1] for w in planned["wave"]]
    made = mine.astype({"customer_id": "str"}).merge(planned, on=["customer_id", "ask_type"], how="inner")
    made = made[(made["asked_at"] >= made["wave_at"]) & (made["asked_at"] < when)]
    made = made.sort_values(["asked_at", "ask_id"], kind="stable").drop_duplicates(["customer_id", "ask_type"])
    known = made["responded_at"].notna() & (made["responded_at"] < when)
    yes = known & (made["outcome"] == "accepted")
    no = known & (made["outcome"] == "declined")
    waiting = ~(yes | no)
    elapsed = (when - made["asked_at"]).dt.total_seconds().to_numpy() / 86_400.0
    yeses, answers = {}, {}
    p = made["acceptance"].to_numpy(dtype=float)
    wave = made["wave"].to_numpy(dtype=np.int64)
    for name in record["need"]:
        t = ASK_TYPE_NAMES.index(name)
        of = (made["ask_type"] == name).to_numpy()
        y, n, w = (mask.to_numpy() & of for mask in (yes, no, waiting))
        yeses[t] = int(y.sum())
        answers[t] = Answers(p[y], p[n], p[w], elapsed[w], (wave[y], wave[n], wave[w]))
    return CampaignState(
        plan_id, record, rows, len(dates) + 1, when, pd.Timestamp(calendar["deadline"]), yeses, answers
    )


def wave_for(
    bundle: Bundle,
    cands: Candidates,
    request: PlanRequest,
    schedule: Schedule,
    wave: int,
    as_of: pd.Timestamp,
    deadline: pd.Timestamp,
    asks: pd.DataFrame,
    state: CampaignState | None = None,
    reserved: frozenset[str] = frozenset(),
) -> tuple[Wave, AnswerTimes]:
    """The planner's view of wave `wave` (`models.planner.Wave`): each type's outlook at `as_of`,
    the wave's target, and the customers it may not ask: those the campaign already planned (never
    asked twice) and those other open campaigns hold (`reserved_elsewhere`)."""
    times = AnswerTimes.learn(asks, as_of)
    level_sd = acceptance_level_sd(bundle)
    days_left = (deadline - as_of).total_seconds() / 86_400.0
    outlooks = {}
    for name, n in request.need.items():
        t = ASK_TYPE_NAMES.index(name)
        outlooks[t] = outlook(_so_far(state, cands, level_sd, t, n), times, t, days_left)
    planned = set(state.rows["customer_id"].astype("str")) if state is not None else set()
    planned |= reserved
    exclude = np.array([c in planned for c in cands.customer_id.astype(str)], dtype=bool)
    return Wave(outlooks, wave_target(request.confidence, wave, schedule.waves), exclude), times


def _so_far(state: CampaignState | None, cands: Candidates, level_sd: np.ndarray | None, t: int, need: int) -> SoFar:
    """Type t of the campaign as its waves left it (nothing yet before wave 1); a random draw is not ranked."""
    answers = state.answers[t] if state is not None else Answers.none()
    yeses = state.yeses[t] if state is not None else 0
    sd = float(level_sd[t]) if level_sd is not None else 0.0
    return SoFar(need, yeses, answers, sd, not cands.is_ungated(t))


def reserved_elsewhere(
    plans: PlanStore, links: pd.DataFrame, asks: pd.DataFrame, as_of: pd.Timestamp, plan_id: str | None = None
) -> frozenset[str]:
    """The customers other open campaigns hold at `as_of` (spec 5a): planned by a campaign whose
    deadline is still ahead and not yet answered there (an answer recorded with its plan_id before
    `as_of` frees them). `plan_id`: the campaign being planned, which holds its own customers anyway."""
    held: set[str] = set()
    answered = asks.loc[asks["responded_at"].notna() & (asks["responded_at"] < as_of), ["ask_id", "customer_id"]]
    freed = answered.merge(links, on="ask_id", how="inner")
    for other in open_campaigns(plans, as_of):
        if other == plan_id:
            continue
        try:
            # Read once while its file is unchanged (`PlanStore.customers`): every wave of every
            # campaign asks this of every open campaign.
            planned = plans.customers(other)
        except (KeyError, ValueError, OSError):
            continue  # a plan cut short or swept meanwhile holds no one
        done = set(freed.loc[freed["plan_id"] == other, "customer_id"].astype("str"))
        held |= planned - done
    return frozenset(held)


def open_campaigns(plans: PlanStore, as_of: pd.Timestamp) -> list[str]:
    """The stored campaigns whose deadline is after `as_of`, from their records alone (most plans
    are one-shot: their tables are not read). A plan cut short or swept meanwhile is not one."""
    found = []
    for plan_id in plans.ids():
        try:
            calendar = plans.record(plan_id).get("campaign")
            if calendar is not None and pd.Timestamp(calendar["deadline"]) > as_of:
                found.append(plan_id)
        except (KeyError, ValueError, OSError):
            continue
    return found


def campaign_summary(
    bundle: Bundle,
    cands: Candidates,
    request: PlanRequest,
    wave: Wave,
    times: AnswerTimes,
    pace: Pace,
    allocation: dict[str, np.ndarray],
    state: CampaignState | None,
) -> dict[str, dict[str, Any]]:
    """Per type the spec's campaign summary: so far, this wave, and the forecast to the deadline
    under the policy (`models.campaign.forecast`)."""
    level_sd = acceptance_level_sd(bundle)
    taken = np.zeros(cands.customer_id.size, dtype=bool)
    for rows in allocation.values():
        taken[rows] = True
    eligible = cands.eligible(request) & ~wave.exclude[:, None] & ~taken[:, None]
    out = {}
    for name, n in request.need.items():
        t = ASK_TYPE_NAMES.index(name)
        rows = allocation[name]
        later = cands.acceptance[eligible[:, t], t]
        if cands.is_ungated(t):  # later waves go on down a random draw: any fixed shuffle forecasts them alike
            later = np.random.default_rng(t).permutation(later)[:5000]
        else:
            later = np.sort(later)[::-1][:5000]
        this = cands.acceptance[rows, t]
        so_far = _so_far(state, cands, level_sd, t, n)
        answers, yeses = so_far.answers, so_far.yeses
        seen = forecast(so_far, times, t, pace, request.confidence, this, later, FORECAST_DRAWS)
        before = int(answers.yes.size + answers.no.size + answers.pending.size)
        out[name] = {
            "need": n,
            "yeses_so_far": yeses,
            "pending": int(answers.pending.size),
            "asked": int(rows.size),
            "expected_yes": float(wave.outlooks[t].expected_yes(this)),
            "p_at_least_needed": seen.chance,
            "expected_asks": before + seen.asks,
            "expected_overshoot": seen.overshoot,
            "met": yeses >= n,
            "acceptance_level_sd": so_far.level_sd,
            "invited_at_random": cands.is_ungated(t),
        }
    return out


# ---- campaigns in progress: what the page's worklist shows of each ---------------------------------


@dataclass(frozen=True)
class TypeProgress:
    """One ask type of a campaign so far: its need, the yeses, and the asks made still unanswered."""

    need: int
    yeses_so_far: int
    pending: int

    @property
    def met(self) -> bool:
        return self.yeses_so_far >= self.need


@dataclass(frozen=True)
class CampaignProgress:
    """A stored campaign at `as_of`: its calendar, per type what its answers say, and its next wave
    (None when none is left: every wave is planned, or the next would fall at the deadline)."""

    plan_id: str
    as_of: pd.Timestamp
    wave_dates: tuple[pd.Timestamp, ...]
    asks_per_wave: tuple[int, ...]
    waves: int
    wave_days: int
    deadline: pd.Timestamp
    types: dict[str, TypeProgress]
    next_wave: int | None
    next_wave_at: pd.Timestamp | None

    @property
    def met(self) -> bool:
        return all(t.met for t in self.types.values())


def campaign_progress(
    plan_id: str,
    rows: pd.DataFrame,
    record: dict[str, Any],
    asks: pd.DataFrame,
    links: pd.DataFrame,
    as_of: pd.Timestamp,
) -> CampaignProgress:
    """A stored campaign at `as_of`, its answers counted by `campaign_state` (spec 5a: the asks
    recorded with its plan_id, naming a customer and type it planned, asked at or after that
    wave's date, before `as_of`)."""
    calendar = record["campaign"]
    dates = tuple(pd.Timestamp(d) for d in calendar["wave_dates"])
    waves, wave_days = int(calendar["waves"]), int(calendar["wave_days"])
    deadline = pd.Timestamp(calendar["deadline"])
    # A wave planned ahead (`as_of` given) has no answer before its date: the count at `as_of` is
    # that of the waves begun, which is also all `campaign_state` accepts (a date after the last wave).
    begun = sum(d < as_of for d in dates)
    types = {name: TypeProgress(int(n), 0, 0) for name, n in record["need"].items()}
    if begun:
        seen = {**record, "campaign": {**calendar, "wave_dates": list(calendar["wave_dates"][:begun])}}
        state = campaign_state(plan_id, rows[rows["wave"] <= begun], seen, asks, links, as_of)
        for name, n in record["need"].items():
            t = ASK_TYPE_NAMES.index(name)
            types[name] = TypeProgress(int(n), state.yeses[t], int(state.answers[t].pending.size))
    counts = rows["wave"].value_counts()
    # `next_wave`'s default date, and its rule: after the last wave, or at the deadline, it asks no one.
    following = dates[-1] + pd.Timedelta(days=wave_days)
    left = len(dates) < waves and following < deadline
    return CampaignProgress(
        plan_id,
        as_of,
        dates,
        tuple(int(counts.get(w, 0)) for w in range(1, len(dates) + 1)),
        waves,
        wave_days,
        deadline,
        types,
        len(dates) + 1 if left else None,
        following if left else None,
    )


def campaigns_in_progress(
    plans: PlanStore, asks: pd.DataFrame, links: pd.DataFrame, as_of: pd.Timestamp
) -> list[CampaignProgress]:
    """The stored campaigns still running at `as_of`, the nearest deadline first: deadline ahead,
    and not every need met yet (a campaign whose yeses reach every need is done). `asks`: every
    ask known at `as_of`; `links`: ask_id -> plan_id (the asks table's and the log's)."""
    found = []
    for plan_id in open_campaigns(plans, as_of):
        try:
            rows, record = plans.load(plan_id)
        except (KeyError, ValueError, OSError):
            continue  # a plan cut short or swept meanwhile is running no longer
        progress = campaign_progress(plan_id, rows, record, asks, links, as_of)
        if not progress.met:
            found.append(progress)
    return sorted(found, key=lambda c: (c.deadline, c.plan_id))


def campaign_wave(plans: PlanStore, plan_id: str, wave: int) -> pd.DataFrame:
    """The asks a stored campaign planned in wave `wave`, in the columns `advocacy plan --out`
    writes; a plan that is not a campaign, or a wave not planned yet, is refused naming the field."""
    try:
        rows, record = plans.load(plan_id)
    except KeyError:
        raise ValueError(f"plan_id: no plan {plan_id!r} was made here") from None
    calendar = record.get("campaign")
    if calendar is None:
        raise ValueError(f"plan_id: plan {plan_id} is a one-shot plan, not a campaign")
    planned = len(calendar["wave_dates"])
    if not 1 <= wave <= planned:
        raise ValueError(f"wave: campaign {plan_id} has planned waves 1 to {planned}, not wave {wave}")
    return rows.loc[rows["wave"] == wave, list(PLAN_COLUMNS)].reset_index(drop=True)
