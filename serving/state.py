"""The state behind the routes: bundle + feature store + guardrail book + results, one method per route.

Every number comes from `models.scoring.score`, the function the batch job calls, so the API and the
batch job agree.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from features.context import Snapshot
from features.contracts import CONTRACTS, TIMESTAMP, as_utc, empty_table
from features.deals import empty_opportunities
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES
from models.bundle import Bundle
from models.guardrails import GuardrailConfig, blocked_asks
from models.reasons import describe, reason
from models.references import Prospect, matches
from models.registry import ChampionRef
from models.scoring import Blocked, next_asks, next_best_ask, score, ungated_of
from serving.guardrail_book import GuardrailBook
from serving.overview import Overview
from serving.plan_json import asks_json, campaign_json
from serving.results import ResultCache
from serving.schemas import NextBestAsk
from serving.store import (
    FeatureStore,
    json_value,
    now_utc,
    score_stored,
)
from storage.asklog import AskLog
from storage.plans import PlanStore, Retention
from storage.reports import ReportStore, ReportUnavailableError, UnreadableReportError
from storage.settings import Settings
from storage.snapshots import current_snapshot_dir, read_snapshot
from usecases.asks import record_asks
from usecases.campaigns import campaign_wave, campaigns_in_progress
from usecases.plans import (
    FILTERS,
    MadePlan,
    PlanJob,
    PlanRequest,
    Schedule,
    ScoredBase,
    make_and_store,
    next_wave,
    parse_need,
    plannable,
)
from usecases.recipe import restate_asks
from usecases.references import ReferencePool, ReferenceRequest, find_references
from usecases.reports import remake_and_keep, report_stamp
from usecases.sources import Sources


@dataclass
class ServingState:
    """One loaded model with one loaded snapshot: everything a request needs."""

    champion: ChampionRef
    bundle: Bundle
    store: FeatureStore
    book: GuardrailBook
    snapshot_dir: Path
    plans: PlanStore | None = None  # where `POST /plan` stores its plans (none: not stored)
    default_need: Mapping[str, int] = field(default_factory=dict)  # the worklist's plan until a CSM edits it
    reports: ReportStore | None = None  # where the latest program report is kept for the page
    sources: Sources | None = None  # what a program report is made from (none: never remade here)
    opportunities: pd.DataFrame = field(default_factory=empty_opportunities)  # the snapshot's deals
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    results: ResultCache = field(init=False)

    def __post_init__(self) -> None:
        self.results = ResultCache(self.bundle, self.store)
        self.deal_ids = frozenset(self.opportunities["opportunity_id"].astype("str"))  # what an ask may name
        self._overview: Overview | None = None
        self._overview_lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._restate_lock = threading.Lock()

    def catch_up(self) -> int:
        """Restate the ask-history features (acceptance, the committed pipeline) of the customers whose
        asks the ask log changed since the last look, in this or any worker, at the snapshot's as_of:
        what `advocacy score` would now write for them. Every route that reads the store calls this
        first, so an ask recorded through `POST /asks` counts at once. Returns how many were restated."""
        with self._restate_lock:
            taken = self.book.take_restatements()
            if taken is None:
                return 0
            rows, asks, deliveries = taken
            store = self.store
            restated = restate_asks(asks, deliveries, store.ids[rows].tolist(), store.as_of, self.bundle.lapse_days)
            store.restate(rows, restated)
            self.results.forget(rows)
            with self._overview_lock:
                if self._overview is not None:
                    self._overview.update(self.bundle, store, rows)
            return len(rows)

    def overview(self) -> Overview:
        """Every stored customer's tier, propensity and points (computed once per state, vectorised)."""
        self.catch_up()
        with self._overview_lock:
            if self._overview is None:
                self._overview = Overview.build(self.bundle, self.store)
            return self._overview

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        """Customers whose id starts with, or whose name contains, the query (case-insensitive); ids first."""
        view = self.overview()
        q = query.strip().casefold()
        by_id = view.id_folded.str.startswith(q).to_numpy(dtype=bool)
        by_name = view.name_folded.str.contains(q, regex=False).fillna(False).to_numpy(dtype=bool)
        rows = np.concatenate([np.flatnonzero(by_id), np.flatnonzero(by_name & ~by_id)])[:limit]
        return [
            {
                "customer_id": str(self.store.ids[r]),
                "name": view.name[r],
                "tier": str(view.tier[r]),
                "propensity": json_value(view.propensity[r]),
            }
            for r in rows.tolist()
        ]

    def disagreements(self, tier: str | None, segment: str | None, limit: int) -> list[dict[str, Any]]:
        """Where the model and the points rule differ most: largest tier gap, then highest propensity."""
        view = self.overview()
        keep = view.gap != 0
        if tier is not None:
            keep &= view.tier == tier
        if segment is not None:
            keep &= view.segment_folded == segment.casefold()
        rows = np.flatnonzero(keep)
        order = np.lexsort((-np.nan_to_num(view.propensity[rows], nan=-1.0), -np.abs(view.gap[rows])))
        rows = rows[order][:limit]
        if not len(rows):
            return []
        kept = self.results.get(rows.astype(np.int64))
        out = []
        for r, (body, _) in zip(rows.tolist(), kept, strict=True):
            result = json.loads(body + b"}")
            out.append(
                {
                    "customer_id": str(self.store.ids[r]),
                    "name": view.name[r],
                    "segment": view.segment[r],
                    "tier": str(view.tier[r]),
                    "baseline_tier": str(view.baseline_tier[r]),
                    "baseline_points": int(view.baseline_points[r]),
                    "propensity": json_value(view.propensity[r]),
                    "gap": int(view.gap[r]),
                    "text": (result.get("disagreement") or {}).get("text", ""),
                }
            )
        return out

    def now(self) -> pd.Timestamp:
        # Features describe the snapshot's as_of; the guardrails look at the present (never before as_of).
        return max(now_utc(), self.store.as_of)

    def score_ids_json(self, customer_ids: Sequence[str]) -> bytes:
        """`{"results": [...]}` for stored customers, in the order asked (404 naming the unknown ones)."""
        self.catch_up()
        rows = self.store.rows(customer_ids)
        blocked = self.book.blocked(rows, self.now())
        kept = self.results.get(rows)
        ids = self.store.ids[rows].tolist()
        acceptance = np.stack([acc for _, acc in kept])
        choice = next_asks(acceptance, blocked.matrix(ids), self.bundle.ask_values, ungated_of(self.bundle))
        parts = []
        for i, (body, _) in enumerate(kept):
            ask = next_best_ask(acceptance[i], int(choice[i]), blocked.for_customer(ids[i]))
            ask_json = NextBestAsk.model_validate(ask).model_dump_json().encode()
            parts.append(body + b',"next_best_ask":' + ask_json + b"}")
        return b'{"results":[' + b",".join(parts) + b"]}"

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Results for feature rows sent by the caller; a known customer_id also brings its guardrails."""
        now = self.now()
        n = len(records)
        given = [r.get("customer_id") for r in records]
        stored = [g is not None and g in self.store.index for g in given]
        # Records of customers not in the store (with or without an id) each get a private key, so that
        # guardrail look-ups cannot mix them up: the same unknown id twice is two what-if rows.
        keys = np.array(
            [g if s else f"\x00record-{i}" for i, (g, s) in enumerate(zip(given, stored, strict=True))], dtype=object
        )
        values: dict[str, np.ndarray] = {"customer_id": keys}
        values["as_of"] = np.array([as_utc(r["as_of"]) if r.get("as_of") else now for r in records], dtype=object)
        for name in FEATURE_NAMES:
            column = [r.get(name) for r in records]
            if name in CATEGORICAL_FEATURES:
                values[name] = np.array([np.nan if v is None else v for v in column], dtype=object)
            else:
                values[name] = np.array([np.nan if v is None else v for v in column], dtype=float)
        matrix = self.bundle.encoder.transform_records(records)

        known = [i for i, s in enumerate(stored) if s]
        by_customer: dict[str, Mapping[str, tuple[str, str, str | None]]] = {}
        if known:
            rows = self.store.rows([keys[i] for i in known])
            by_customer.update(self.book.blocked(rows, now).by_customer)
        others = [i for i in range(n) if i not in set(known)]
        if others:
            # No ask history here: only what the record itself shows (low health, an urgent ticket).
            signals = pd.DataFrame(
                {
                    "customer_id": pd.Series(keys[others], dtype="str"),
                    "health_score": values["health_score"][others],
                    "last_urgent_ticket_at": pd.to_datetime(
                        [records[i].get("last_urgent_ticket_at") for i in others], utc=True
                    ).astype(TIMESTAMP),
                }
            )
            blocks = blocked_asks(empty_table("asks"), signals, now, self.book.config)
            by_customer.update(Blocked.from_frame(blocks).by_customer)
        scores = score(self.bundle, values, matrix=matrix, blocked=Blocked(by_customer), num_threads=1)
        results = scores.results()
        for result, g in zip(results, given, strict=True):
            result["customer_id"] = g
        return results

    def explain(self, customer_id: str) -> dict[str, Any]:
        """A result with every contribution, the base value, and the recent history."""
        self.catch_up()
        rows = self.store.rows([customer_id])
        now = self.now()
        values = self.store.values(rows)
        scores = score_stored(self.bundle, self.store, rows, self.book.blocked(rows, now))
        result = scores.result(0)
        assert scores.contributions is not None
        contrib = scores.contributions[0]
        row = {name: json_value(values[name][0]) for name in FEATURE_NAMES}
        as_of = pd.Timestamp(values["as_of"][0])
        order = np.argsort(-np.abs(contrib[:-1]), kind="stable")
        contributions = []
        for j in order.tolist():
            name = FEATURE_NAMES[j]
            item = reason(name, row[name], float(contrib[j]), row, as_of)
            if contrib[j] == 0:
                item["direction"] = "none"
                item["text"] = f"{describe(name, row[name], row, as_of)} (no effect)"
            contributions.append(item)
        since = self.store.as_of - pd.Timedelta(days=365)
        history = self.book.logged_history(customer_id, since) + self.store.history(customer_id)
        history.sort(key=lambda e: e["at"], reverse=True)
        result.update(
            base_value=float(contrib[-1]),
            raw_score=float(contrib.sum()),
            contributions=contributions,
            history=history,
        )
        return result

    def references(self, request: ReferenceRequest) -> list[dict[str, Any]]:
        """`POST /references`: candidates for a deal of the snapshot or a prospect, best first,
        skipping customers a guardrail protects now; the same use case as `advocacy references`."""
        self.catch_up()
        return find_references(request, self.opportunities, self._reference_pool).records()

    def _reference_pool(self, prospect: Prospect) -> ReferencePool:
        now, store = self.now(), self.store
        # Only customers sharing an attribute with the prospect can be candidates (similarity > 0):
        # ranking just those gives the same answer for a fraction of the work.
        could_match = np.zeros(len(store), dtype=bool)
        for attr, column in store.matchable.items():
            could_match |= matches(prospect, attr, column)
        return ReferencePool(
            customers=store.customers.loc[could_match],
            acceptance=store.reference_acceptance,
            recent=pd.Series(self.book.recent_reference_calls(now), index=pd.Index(store.ids.astype(str))),
            blocked=frozenset(store.ids[self.book.reference_blocked(now)].tolist()),
        )

    def plan(
        self,
        request: PlanRequest,
        keep_it: bool = True,
        schedule: Schedule | None = None,
        as_of: pd.Timestamp | None = None,
    ) -> dict[str, Any]:
        """`POST /plan`: the ask plan over every stored customer the model speaks for, guardrails
        at the present (or `as_of`), stored under its plan_id (unless `keep_it` is false: a look, not
        a plan to record asks against); with a `schedule` of several waves, wave 1 of a campaign. The
        same use case as `advocacy plan`."""
        schedule = schedule or Schedule()
        if as_of is not None and as_of < self.store.as_of:
            raise ValueError(
                f"as_of: a plan cannot be made for before the snapshot's as_of ({self.store.as_of:%Y-%m-%d})"
            )
        when = as_of if as_of is not None else (self.now() if schedule.waves > 1 else self.store.as_of)
        job = PlanJob(request, store=keep_it, schedule=schedule)
        links = self.book.plan_links() if schedule.waves > 1 else None  # only a campaign reads them
        return self._answer_plan(make_and_store(self.bundle, self.champion, self._base(when), job, self.plans, links))

    def next_wave(self, plan_id: str, as_of: pd.Timestamp | None = None) -> dict[str, Any]:
        """`POST /plan {"plan_id"}`: a campaign's next wave at `as_of` (default: the last wave's date
        plus its wave days), from the answers recorded with its plan_id; the same use case as
        `advocacy plan --continue`."""
        if self.plans is None:
            raise ValueError("plan_id: this service stores no plans, so it has no campaign to continue")
        links = self.book.plan_links()
        return self._answer_plan(next_wave(self.bundle, self.champion, self.plans, links, plan_id, as_of, self._base))

    def _base(self, when: pd.Timestamp) -> ScoredBase:
        """The rows the model speaks for (the others are never candidates), guardrails at `when`,
        and every ask known (the snapshot's and the log's), for a campaign's answers."""
        self.catch_up()
        store = self.store
        rows = np.flatnonzero(plannable(store.cold_start, store.committed))
        frame = pd.DataFrame({name: store.columns[name][rows] for name in ("customer_id", "as_of", *FEATURE_NAMES)})
        for name in ("name", *FILTERS):
            frame[name] = store.customers[name].to_numpy()[rows]
        blocked = self.book.blocked_matrix(rows, max(when, store.as_of))  # no reasons: the plan reads none
        ones = np.ones(len(rows), dtype=bool)
        return ScoredBase(when, frame, store.acceptance[rows], blocked, ones, self.book.known_asks(when))

    @staticmethod
    def _answer_plan(made: MadePlan) -> dict[str, Any]:
        return {
            "plan_id": made.plan.plan_id,
            "asks": asks_json(made.table),
            "summary": made.plan.summary,
            "campaign": made.plan.campaign,
        }

    def worklist(self, limit: int) -> dict[str, Any]:
        """What the CSM page opens on, besides the plan: deliveries due from committed customers (the
        oldest promise first: it lapses first) and advocates going cold (the likeliest first)."""
        view, store = self.overview(), self.store
        lapse = pd.Timedelta(days=self.bundle.lapse_days)
        due = np.flatnonzero(store.committed)
        accepted = pd.to_datetime(pd.Series(store.columns["committed_accepted_at"][due]), utc=True)
        first = np.argsort(accepted.to_numpy(), kind="stable")[:limit]
        due, accepted = due[first], accepted.iloc[first]
        deliveries = [
            {
                "customer_id": str(store.ids[r]),
                "name": view.name[r],
                "segment": view.segment[r],
                "ask_id": json_value(store.columns["committed_ask_id"][r]),
                "ask_type": json_value(store.columns["committed_ask_type"][r]),
                "accepted_at": None if pd.isna(at) else at.isoformat(),
                "lapses_at": None if pd.isna(at) else (at + lapse).isoformat(),
            }
            for r, at in zip(due.tolist(), accepted, strict=True)
        ]
        cold = np.flatnonzero(view.re_engage & ~store.committed)
        cold = cold[np.argsort(-np.nan_to_num(view.propensity[cold], nan=-1.0), kind="stable")][:limit]
        quiet = store.columns["days_since_last_activity"]
        going_cold = [
            {
                "customer_id": str(store.ids[r]),
                "name": view.name[r],
                "segment": view.segment[r],
                "tier": str(view.tier[r]),
                "propensity": json_value(view.propensity[r]),
                "days_since_last_activity": json_value(quiet[r]),
            }
            for r in cold.tolist()
        ]
        return {
            "need": dict(self.default_need),
            "ask_types": list(ASK_TYPE_NAMES),
            "as_of": store.as_of.isoformat(),
            "lapse_days": self.bundle.lapse_days,
            "deliveries_due": deliveries,
            "going_cold": going_cold,
        }

    def campaigns(self, limit: int) -> dict[str, Any]:
        """`POST /campaigns`: the campaigns in progress now, counted from every ask known (the
        snapshot's and the log's) and the plan ids the log's asks carry (`usecases.campaigns`)."""
        now = self.now()
        if self.plans is None:
            return {"as_of": now.isoformat(), "campaigns": []}
        found = campaigns_in_progress(self.plans, self.book.known_asks(now), self.book.plan_links(), now)
        return {"as_of": now.isoformat(), "campaigns": [campaign_json(c) for c in found[:limit]]}

    def campaign_wave(self, plan_id: str, wave: int) -> dict[str, Any]:
        """`POST /campaign_wave`: the asks a campaign planned in one wave, as `POST /plan` gave them."""
        if self.plans is None:
            raise ValueError("plan_id: this service stores no plans, so it has no campaign")
        table = campaign_wave(self.plans, plan_id, wave)
        return {"plan_id": plan_id, "wave": wave, "asks": asks_json(table)}

    def refresh_report(self, force: bool) -> bool:
        """Remake and keep the program report (`usecases.reports`, over the period and from the data
        directory of the kept one) if forced, or if the ask log or the champion changed since the kept
        one was made; whether it was remade. Without `force` a service never makes the first report
        (`advocacy report` and `advocacy up` do). The work runs in a spawned process: the data, the
        features as of each ask and the charts cost the service no memory once it is done."""
        if self.reports is None or self.sources is None:
            return False
        with self._report_lock:
            stamp = report_stamp(self.sources, self.champion.version)
            try:
                kept = self.reports.load()
            except UnreadableReportError:
                if not force:
                    return False  # `report()` says so, and how to remake it
                kept = None  # remade whole, from the service's own data directory and period
            if not force and (kept is None or kept.get("made_from") == stamp):
                return False
            since = None if kept is None or not kept.get("since") else pd.Timestamp(kept["since"])
            data_dir = Path(kept["data_dir"]) if kept is not None and kept.get("data_dir") else self.sources.data_dir
            sources = replace(self.sources, data_dir=data_dir)
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                child.submit(remake_and_keep, sources, since, self.reports, stamp).result()
            return True

    def report(self, refresh: bool = False) -> dict[str, Any]:
        """`POST /report`: the latest program report, read afresh (remade first with `refresh`).

        Raises `ReportUnavailableError` (a fault of the server's files, not of the request) when the
        kept report is unreadable, or when the data refuse to make one on `refresh`."""
        if refresh:
            try:
                self.refresh_report(force=True)
            except ValueError as err:  # the data directory's tables (a full disk stays an OSError: 507)
                raise ReportUnavailableError(
                    "could not remake the program report from the service's data directory: fix what the server "
                    "log names, then ask for a refresh again",
                    f"{type(err).__name__}: {err}",
                ) from err
        made = self.reports.load() if self.reports is not None else None
        if made is None:
            return {
                "available": False,
                "message": "No program report yet: run `advocacy report --data DIR`, or ask for a refresh.",
            }
        period = f"asks from {(made.get('since') or 'the start')[:10]} to {str(made.get('until'))[:10]}"
        return {"available": True, "message": f"Program report of {period}.", **made}

    def record_asks(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store asks through the data contract (`usecases.asks`); unknown customers, plans never
        made and deals the snapshot does not hold are refused (nothing stored)."""
        return record_asks(rows, self.book.record, self.plans, self.deal_ids)

    def close(self) -> None:
        self.book.close()


def default_need(text: str) -> dict[str, int]:
    """`ADVOCACY_WORKLIST_NEED` (`TYPE=N,TYPE=N`) as a need, checked as `POST /plan` checks one."""
    try:
        need = parse_need([item for item in text.split(",") if item.strip()])
        return dict(PlanRequest(need).need)
    except ValueError as error:
        raise ValueError(f"ADVOCACY_WORKLIST_NEED={text!r}: {error}") from None


def load_state(settings: Settings, champion: ChampionRef, bundle: Bundle) -> ServingState:
    """Read the current snapshot and build the state for this bundle (raises if they do not fit)."""
    root = settings.feature_store_path()
    folder = current_snapshot_dir(root)
    snapshot = Snapshot.from_tables(*read_snapshot(root))
    store = FeatureStore(snapshot, bundle)
    now = max(now_utc(), store.as_of)
    book = GuardrailBook(
        store,
        snapshot.asks,
        AskLog(settings.ask_log_path(), CONTRACTS["asks"]),
        GuardrailConfig.from_saved(bundle.guardrails),
        now,
        snapshot.plan_links,
        snapshot.deal_links,
    )
    state = ServingState(
        champion,
        bundle,
        store,
        book,
        folder,
        PlanStore(settings.plans_path(), Retention.from_settings(settings)),
        default_need(settings.worklist_need),
        ReportStore(settings.report_path()),
        Sources.from_settings(settings),
        snapshot.opportunities,
    )
    # Results for (up to the cache's capacity of) stored customers before the first request needs them.
    state.results.warm()
    state.overview()
    return state
