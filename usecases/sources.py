"""The sources every job reads, read one way everywhere: the raw tables, the ask log, stored plans.

Which asks count is one rule, whatever the door: the data directory's `asks` table and every ask
recorded through `POST /asks` since (the ask log) are one table (`features.io.merge_asks`: an ask
in both is one ask, the later answer wins, fixed fields that disagree are a contract error naming
the `ask_id`). The end of the observed period comes from the data tables alone: the log is always
ahead of the export, and an ask posted now must not move training's windows or a default `as_of`.
Rows that cannot have happened yet (dated after the wall clock, beyond clock skew) are left out
and counted, so that one mistyped year cannot stretch the period either. Activities are checked
against the final asks (`features.keys.check_activity_asks`): an ask recorded only in the log
may be delivered too. What an ask was made for (a plan, a deal) is read from both too, the table's
links and the log's as one (`features.plan_links.merge_links`), so a report counts the asks made
through the API for a campaign or a deal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from features.catalog import DEALS
from features.contracts import CONTRACTS
from features.deals import empty_deal_links
from features.io import World, read_world
from features.keys import check_activity_asks, is_in
from features.labels import observed_until
from features.plan_links import empty_plan_links, merge_links, merge_plan_links
from models.program import StoredPlan, planned_asks
from storage.asklog import AskLog
from storage.plans import PlanStore, Retention, linked_plans
from storage.settings import Settings

LEFT_OUT = "left_out."  # prefix of the counts of rows a job could not use, by table and reason


def leave_out_future(world: World, now: pd.Timestamp) -> tuple[World, dict[str, int]]:
    """`world` without the event rows dated after `now` (beyond clock skew), and how many each table lost.

    Such a row cannot have happened yet: a wrong year or unit that still passed the contract's
    bounds. Kept, one row in 2150 would stretch the monthly snapshots over a century and date every
    command's default `as_of` there. Customers are kept: a contract that starts later is a customer
    who is not live yet.
    """
    tables = world.as_dict()
    counts: dict[str, int] = {}
    for name, frame in tables.items():
        if name == "customers":
            continue
        late = CONTRACTS[name].dated_after(frame, now)
        if late.any():
            counts[f"{LEFT_OUT}{name}.dated_in_the_future"] = int(late.sum())
            tables[name] = frame[~late.to_numpy()].reset_index(drop=True)
    # An activity that delivered an ask left out goes with it: it would name an ask the data no longer has.
    gone = set(world.asks["ask_id"].astype("str")) - set(tables["asks"]["ask_id"].astype("str"))
    if gone:
        activities = tables["activities"]
        orphaned = activities["ask_id"].astype("str").isin(gone).to_numpy() & activities["ask_id"].notna().to_numpy()
        if orphaned.any():
            counts[f"{LEFT_OUT}activities.delivering_an_ask_left_out"] = int(orphaned.sum())
            tables["activities"] = activities[~orphaned].reset_index(drop=True)
    links = world.links()
    late = CONTRACTS[DEALS].dated_after(world.opportunities, now)
    if late.any():  # a deal that closes in 2150 would read as won long before it was
        counts[f"{LEFT_OUT}{DEALS}.dated_in_the_future"] = int(late.sum())
        links["opportunities"] = world.opportunities[~late.to_numpy()].reset_index(drop=True)
        # The asks made for such a deal stay asks; their link to it goes with it.
        named = is_in(world.deal_links["opportunity_id"], world.opportunities.loc[late, "opportunity_id"])
        if named.any():
            counts[f"{LEFT_OUT}asks.naming_a_deal_left_out"] = int(named.sum())
            links["deal_links"] = world.deal_links[~named.to_numpy()].reset_index(drop=True)
    return (World(**tables, data_end=world.data_end, **links) if counts else world), counts


def _split_key(key: str) -> tuple[str, str]:
    table, _, why = key.removeprefix(LEFT_OUT).partition(".")
    return table, why.replace("_", " ")


def left_out_words(counts: Mapping[str, Any]) -> dict[str, int]:
    """Each kind of row left out in words -> rows, e.g. "nps rows dated in the future" -> 3."""
    words = {}
    for key, count in counts.items():
        if key.startswith(LEFT_OUT):
            table, why = _split_key(key)
            words[f"{'logged asks' if table == 'ask_log' else f'{table} rows'} {why}"] = int(count)
    return words


def describe_left_out(counts: Mapping[str, Any]) -> list[str]:
    """One line per kind of row left out, e.g. "asks: 3 rows dated in the future"."""
    lines = []
    for key, count in counts.items():
        if key.startswith(LEFT_OUT):
            table, why = _split_key(key)
            lines.append(f"{table}: {count:,} rows {why}")
    return lines


@dataclass
class Read:
    """What a job reads: the world with the logged asks merged in, the rows it had to leave out, and
    which plan each ask was made for (`ask_id`, `plan_id`: the asks table's and the ask log's)."""

    world: World
    left_out: dict[str, int] = field(default_factory=dict)
    plan_links: pd.DataFrame = field(default_factory=empty_plan_links)

    @property
    def data_end(self) -> pd.Timestamp:
        """The end of the period the data tables cover (the default `as_of` of every job)."""
        return observed_until(self.world)


@dataclass(frozen=True)
class Sources:
    """Where a job's inputs live: a data directory, the ask log and the stored plans."""

    data_dir: Path
    ask_log_path: Path
    plans_path: Path
    plan_keep_days: int = 0  # stored plans older than this are swept when one is stored (0: kept)

    @classmethod
    def from_settings(cls, settings: Settings, data_dir: Path | None = None) -> Sources:
        data = Path(data_dir or settings.resolved_data_dir())
        return cls(data, settings.ask_log_path(), settings.plans_path(), settings.plan_keep_days)

    def ask_log(self) -> AskLog | None:
        """The ask log, or None where nothing was ever recorded (reading must not create one)."""
        return AskLog(self.ask_log_path, CONTRACTS["asks"]) if self.ask_log_path.exists() else None

    def logged_asks(self) -> pd.DataFrame:
        """Every ask recorded through the API, as the canonical asks table."""
        log = self.ask_log()
        return CONTRACTS["asks"].empty() if log is None else log.read()

    def logged_plan_links(self) -> pd.DataFrame:
        """`ask_id` -> `plan_id` of the asks recorded through the API with a plan."""
        log = self.ask_log()
        return empty_plan_links() if log is None else log.plan_links()

    def logged_deal_links(self) -> pd.DataFrame:
        """`ask_id` -> `opportunity_id` of the asks recorded through the API for a deal."""
        log = self.ask_log()
        return empty_deal_links() if log is None else log.deal_links()

    def plans(self) -> PlanStore:
        return PlanStore(self.plans_path, Retention(self.plan_keep_days, lambda: linked_plans(self.ask_log_path)))

    def stored_plans(self, plan_ids: set[str]) -> dict[str, StoredPlan]:
        """Each named plan as stored (its rows and the time it planned for); a plan no longer stored,
        or unreadable, is left out (its asks are then off plan)."""
        store, found = self.plans(), {}
        for plan_id in sorted(plan_ids):
            try:
                rows, meta = store.load(plan_id)
                found[plan_id] = StoredPlan(rows, pd.Timestamp(meta["as_of"]))
            except (KeyError, ValueError, OSError):
                continue
        return found

    def campaign_answers(self, asks: pd.DataFrame, links: pd.DataFrame) -> frozenset[str]:
        """The `ask_id`s of `asks` that count for a stored campaign (spec 5a; a one-shot plan is a
        campaign of one wave), by the program report's rule (`models.program.planned_asks`): the
        first ask of a planned customer and type recorded with the plan's `plan_id` at or after its
        date. `links`: `Read.plan_links`. An ask naming a plan no longer stored is off plan, as the
        report counts it."""
        if links.empty:
            return frozenset()
        planned = planned_asks(asks, links, self.stored_plans(set(links["plan_id"])))
        return frozenset(planned.loc[planned["on_plan"], "ask_id"].astype("str"))

    def read(self, now: pd.Timestamp | None = None) -> Read:
        """The validated tables with the logged asks merged in (see the module docstring)."""
        now = now or pd.Timestamp.now(tz="UTC")
        world, left_out = leave_out_future(read_world(self.data_dir), now)
        end = observed_until(world)
        logged = self.logged_asks()
        late = CONTRACTS["asks"].dated_after(logged, now).to_numpy()  # a log written before they were refused
        if late.any():
            key = f"{LEFT_OUT}asks.dated_in_the_future"
            left_out[key] = left_out.get(key, 0) + int(late.sum())
            logged = logged[~late].reset_index(drop=True)
        world, unknown = world.with_logged_asks(logged, data_end=end)
        if unknown:
            left_out[f"{LEFT_OUT}ask_log.for_customers_not_in_the_data"] = unknown
        check_activity_asks(world.activities, world.asks)  # against the final asks: the log's count too
        links = merge_plan_links(world.plan_links, self.logged_plan_links())
        # Spec 5a: a plan_id in the table that names no plan stored here is a warning; its ask is off plan.
        stored = self.plans().ids() if not world.plan_links.empty else []
        unknown = ~world.plan_links["plan_id"].isin(set(stored))
        if unknown.any():
            left_out[f"{LEFT_OUT}asks.naming_a_plan_not_stored_here_(counted_off_plan)"] = int(unknown.sum())
        return Read(self._with_logged_deals(world, left_out), left_out, links)

    def _with_logged_deals(self, world: World, left_out: dict[str, int]) -> World:
        """`world` whose `deal_links` also hold the ask log's (`merge_links`: an ask's deal is fixed).
        A logged ask naming a deal the data no longer holds (a later export without it) keeps its ask
        but not the link, counted in `left_out`: the report counts a deal's asks only for its deals."""
        deals = merge_links(world.deal_links, self.logged_deal_links(), "opportunity_id")
        known = is_in(deals["opportunity_id"], world.opportunities["opportunity_id"]).to_numpy()
        if not known.all():
            left_out[f"{LEFT_OUT}ask_log.naming_a_deal_not_in_the_data"] = int((~known).sum())
        return replace(world, deal_links=deals[known].reset_index(drop=True))
