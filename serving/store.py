"""What the service keeps in memory and how it answers from it (spec sections 5-7).

- `FeatureStore`: the latest feature snapshot, encoded for the bundle once at start-up (a float
  matrix and per-column arrays with an id -> row index), so scoring one customer slices arrays and
  never builds a DataFrame.
- `GuardrailBook`: guardrail blocks per customer from the snapshot's asks plus every ask recorded
  through `POST /asks` (the durable `AskLog`). Blocks are cached per customer until the moment they
  can next change (a block lifting, an ask or answer becoming known, the day count in a reason
  ticking over), and a write to the ask log, by this or any other worker process, invalidates the
  customers it touched before the next request.
- `ResultCache`: each customer's result (reasons included) made once by `models.scoring.score` and
  kept as JSON; only the next best ask is re-chosen per request, under the current guardrails.
- `ServingState`: bundle + store + book + results, with one method per route. Every number comes
  from `models.scoring.score`, the function the batch job calls, so the API and the batch job agree.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.asklog import AskLog
from features.contracts import NAT_MICROS, TIMESTAMP, as_utc, empty_table, from_micros, to_micros
from features.settings import Settings
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES, FEATURE_VERSION, KEYS
from models.bundle import Bundle, ask_rows_matrix
from models.guardrails import GuardrailConfig, blocked_asks
from models.reasons import describe, reason
from models.references import SIMILARITY_WEIGHTS, Prospect, rank_references
from models.scoring import Blocked, Scores, next_asks, next_best_ask, score
from models.tiers import tier_rank
from serving.registry import ChampionRef
from serving.schemas import NextBestAsk, Result
from serving.snapshot import RECENT_REFERENCE_DAYS, Snapshot, current_snapshot_dir, read_snapshot

ASK_TABLE_COLUMNS: tuple[str, ...] = ("ask_id", "customer_id", "ask_type", "asked_at", "outcome", "responded_at")
CONTEXT_COLUMNS: tuple[str, ...] = ("name", "last_urgent_ticket_at", "recent_reference_calls")
_NEVER = np.iinfo(np.int64).max
_US_PER_DAY = 86_400 * 1_000_000
RESULT_CACHE_ROWS = 20_000  # about 6 kB each: about 120 MB per worker when full
# Up to this many customers, their snapshot asks are gathered by index ranges; beyond, by one mask.
_RANGE_GATHER_MAX = 64


class UnknownCustomersError(KeyError):
    """Customer ids the service has no features for (a 404 naming them)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(dict.fromkeys(ids))
        shown = ", ".join(self.ids[:10]) + (f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else "")
        super().__init__(f"unknown customer_id: {shown}")

    def __str__(self) -> str:
        return str(self.args[0])


class IncompatibleStateError(ValueError):
    """The snapshot and the model do not fit together (or this code): serving them would be garbage."""


def _us(ts: pd.Timestamp) -> int:
    """Microseconds since the epoch of a UTC timestamp (cheap: no array round trip)."""
    return int(ts.value // 1_000)


def now_utc() -> pd.Timestamp:
    return pd.Timestamp(time.time_ns() // 1_000, unit="us", tz="UTC")


def _plain(value: Any) -> Any:
    """A JSON-friendly Python value: numpy scalars unwrapped, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


class FeatureStore:
    """The snapshot's feature rows, encoded for the bundle once, with an id -> row index."""

    def __init__(self, snapshot: Snapshot, bundle: Bundle) -> None:
        frame = snapshot.features.reset_index(drop=True)
        if tuple(bundle.encoder.columns) != FEATURE_NAMES:
            raise IncompatibleStateError(
                f"model version {bundle.model_version} was trained on {len(bundle.encoder.columns)} features that are "
                f"not the {len(FEATURE_NAMES)} features of this code: retrain (`advocacy train`) or serve matching code"
            )
        written = snapshot.meta.get("feature_version")
        if written != FEATURE_VERSION:
            raise IncompatibleStateError(
                f"the feature snapshot has feature version {written}, this code computes {FEATURE_VERSION}: "
                "write a new one (`advocacy score`)"
            )
        missing = [c for c in (*KEYS, *FEATURE_NAMES, *CONTEXT_COLUMNS) if c not in frame.columns]
        if missing:
            raise IncompatibleStateError(
                f"the feature snapshot lacks column(s) {', '.join(missing[:8])}: it was written by other code; "
                "write a new one (`advocacy score`)"
            )
        ids = frame["customer_id"].astype("str")
        if ids.duplicated().any():
            raise IncompatibleStateError(f"the feature snapshot repeats customer_id {ids[ids.duplicated()].iloc[0]}")
        self.as_of: pd.Timestamp = snapshot.as_of
        self.ids: np.ndarray = ids.to_numpy(dtype=object)
        self.index: dict[str, int] = {cid: i for i, cid in enumerate(self.ids.tolist())}
        self.matrix: np.ndarray = np.ascontiguousarray(bundle.encoder.transform(frame), dtype=np.float64)
        self.columns: dict[str, np.ndarray] = {"customer_id": self.ids, "as_of": frame["as_of"].to_numpy()}
        for name in FEATURE_NAMES:
            col = frame[name]
            self.columns[name] = col.to_numpy(dtype=object) if name in CATEGORICAL_FEATURES else col.to_numpy(float)
        self.health: np.ndarray = pd.to_numeric(frame["health_score"], errors="coerce").to_numpy(float)
        self.last_urgent_us: np.ndarray = to_micros(frame["last_urgent_ticket_at"])
        self.recent_reference_calls: np.ndarray = (
            pd.to_numeric(frame["recent_reference_calls"], errors="coerce").fillna(0).to_numpy(float)
        )
        self.customers: pd.DataFrame = frame.loc[:, ["customer_id", "name", "industry", "segment", "use_case"]].assign(
            customer_id=ids
        )
        # Normalised as `models.references.similarity` compares them, to find who can match a prospect.
        self.matchable: dict[str, pd.Series] = {
            attr: self.customers[attr].astype("str").str.strip().str.casefold() for attr in SIMILARITY_WEIGHTS
        }
        # Reference matching ranks everyone by acceptance of a reference call: computed once (in slices,
        # to bound the memory of the model's input), not per request.
        acceptance = [
            bundle.acceptance.proba(ask_rows_matrix(part, ["reference_call"] * len(part)), 2)
            for part in np.array_split(self.matrix, max(1, len(frame) // 100_000))
        ]
        self.reference_acceptance = pd.Series(np.concatenate(acceptance), index=pd.Index(ids))
        self._history = _HistoryIndex(snapshot.history)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Row positions of the ids, in order; `UnknownCustomersError` naming every id without features."""
        get = self.index.get
        rows = [get(c, -1) for c in customer_ids]
        if -1 in rows:
            raise UnknownCustomersError([c for c, r in zip(customer_ids, rows, strict=True) if r < 0])
        return np.asarray(rows, dtype=np.int64)

    def values(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """`customer_id`, `as_of` and every feature for the rows, as arrays (what `score` reads)."""
        return {name: col[rows] for name, col in self.columns.items()}

    def signals(self, rows: np.ndarray) -> pd.DataFrame:
        """The guardrails' per-customer inputs for the rows."""
        return pd.DataFrame(
            {
                "customer_id": pd.Series(self.ids[rows], dtype="str"),
                "health_score": self.health[rows],
                "last_urgent_ticket_at": from_micros(self.last_urgent_us[rows]),
            }
        )

    def history(self, customer_id: str) -> list[dict[str, str]]:
        return self._history.events(customer_id)


class _HistoryIndex:
    """The snapshot's recent events, grouped by customer once, turned into dicts only when asked for."""

    def __init__(self, history: pd.DataFrame) -> None:
        frame = history.sort_values(["customer_id", "at"], ascending=[True, False], kind="stable")
        ids = frame["customer_id"].astype("str").to_numpy(dtype=object)
        # Kept as seconds and formatted per request: formatting millions of events at load is slow.
        self._at = to_micros(frame["at"]) // 1_000_000
        self._kind = frame["kind"].astype("str").to_numpy(dtype=object)
        self._detail = frame["detail"].astype("str").to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], dtype=np.int64)
        ends = np.r_[starts[1:], len(ids)]
        self._span = {ids[s]: (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}

    def events(self, customer_id: str) -> list[dict[str, str]]:
        start, end = self._span.get(customer_id, (0, 0))
        at = np.datetime_as_string(self._at[start:end].astype("datetime64[s]"), timezone="UTC").tolist()
        return [
            {"at": when, "kind": self._kind[i], "detail": self._detail[i]}
            for when, i in zip(at, range(start, end), strict=True)
        ]


# ---------------------------------------------------------------------------------------------
# Guardrails: the snapshot's asks + the ask log
# ---------------------------------------------------------------------------------------------


def guardrail_config(bundle: Bundle) -> GuardrailConfig:
    """The guardrail limits saved with the model (defaults where it saved none)."""
    return GuardrailConfig.from_saved(bundle.guardrails)


def snapshot_blocked(
    bundle: Bundle, store: FeatureStore, asks: pd.DataFrame, rows: np.ndarray, now: pd.Timestamp
) -> Blocked:
    """The stored rows' blocks at `now` from these asks, under the limits saved with the model.

    What `GuardrailBook.blocked` answers when the ask log holds nothing beyond `asks` (the CLI's
    `explain`, which reads the raw tables and no ask log).
    """
    return Blocked.from_frame(blocked_asks(asks, store.signals(rows), now, guardrail_config(bundle)))


def score_stored(bundle: Bundle, store: FeatureStore, rows: np.ndarray, blocked: Blocked) -> Scores:
    """`models.scoring.score` on stored rows with their blocks: the scoring behind `/explain`."""
    return score(bundle, store.values(rows), matrix=store.matrix[rows], blocked=blocked)


_MAX_CHUNKS = 16


def _compacted(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its Arrow string columns in one piece once appends have split them into many.

    Every `concat` adds a chunk to an Arrow-backed column, and taking rows from a column of n chunks
    costs O(n): after a few thousand recorded asks each guardrail look-up took tens of milliseconds.
    Rebuilding the columns every `_MAX_CHUNKS` appends keeps look-ups flat at an amortised O(rows / 16).
    """
    text = [c for c in frame.columns if frame[c].dtype == "str"]
    if not text or frame[text[0]].array.__arrow_array__().num_chunks <= _MAX_CHUNKS:
        return frame
    return frame.assign(**{c: pd.Series(frame[c].to_numpy(), dtype=frame[c].dtype, index=frame.index) for c in text})


class GuardrailBook:
    """Which asks each customer may not get now, from the snapshot's asks plus the ask log.

    Thread-safe. `blocked(rows, now)` is exactly `blocked_asks` at `now` (a test checks it): each
    customer's blocks are cached until the earliest moment they can change and recomputed after it,
    and a change to the ask log (seen through SQLite's `data_version`, so writes by other worker
    processes count too) invalidates the customers whose asks changed. Only the asks written since
    the last look are read (`AskLog.read_changes`), so a write costs the same however long the log.
    """

    def __init__(
        self, store: FeatureStore, snapshot_asks: pd.DataFrame, log: AskLog, config: GuardrailConfig, now: pd.Timestamp
    ) -> None:
        self._store = store
        self._log = log
        self._config = config
        n = len(store)
        base = snapshot_asks.loc[:, list(ASK_TABLE_COLUMNS)].copy()
        base["customer_id"] = base["customer_id"].astype("str")
        base["ask_id"] = base["ask_id"].astype("str")
        self.known_customers: frozenset[str] = frozenset(store.index) | frozenset(base["customer_id"].unique())
        codes = pd.Index(store.ids).get_indexer(base["customer_id"])
        order = np.argsort(codes, kind="stable")
        self._base = base.iloc[order].reset_index(drop=True)
        self._base_code = codes[order]
        self._base_position = {a: k for k, a in enumerate(self._base["ask_id"].tolist())}
        self._base_overridden = np.zeros(len(self._base), dtype=bool)  # the ask log has its own version
        self._base_span = (
            np.searchsorted(self._base_code, np.arange(n), side="left"),
            np.searchsorted(self._base_code, np.arange(n), side="right"),
        )
        self._logged = empty_table("asks")
        self._logged_code = np.empty(0, dtype=np.int64)
        self._seen = 0  # the last ask-log write read
        # Per logged ask: not one of the snapshot's (so posted since the snapshot was written).
        self._logged_new = np.zeros(0, dtype=bool)
        self._entries: dict[int, Mapping[str, tuple[str, str, str | None]]] = {}
        self._valid_until = np.full(n, NAT_MICROS, dtype=np.int64)  # everything stale until first computed
        self._reference_blocked = np.zeros(n, dtype=bool)
        self._lock = threading.Lock()
        # One long-lived connection only to ask SQLite whether anyone committed since we last looked.
        self._watch = sqlite3.connect(log.path, check_same_thread=False, isolation_level=None)
        self._data_version: int | None = None
        with self._lock:
            self._sync_log()
            self._refresh(np.arange(n, dtype=np.int64), now)

    @property
    def config(self) -> GuardrailConfig:
        return self._config

    def close(self) -> None:
        with self._lock:
            self._watch.close()

    # ---- the ask log ---------------------------------------------------------------------------
    def _sync_log(self) -> None:
        """Read what was written to the ask log since the last look; invalidate the customers it touches."""
        version = int(self._watch.execute("PRAGMA data_version").fetchone()[0])
        if version == self._data_version:
            return
        self._data_version = version
        changes, self._seen = self._log.read_changes(self._seen)
        if changes.empty:
            return
        changes["customer_id"] = changes["customer_id"].astype("str")
        ids = changes["ask_id"].tolist()
        # isin with the (few) changed ids as its values: cheap however many asks are logged.
        replaced = self._logged["ask_id"].isin(ids).to_numpy(dtype=bool)
        in_base = np.array([self._base_position[a] for a in ids if a in self._base_position], dtype=np.int64)
        touched = set(changes["customer_id"]) | set(self._logged.loc[replaced, "customer_id"])
        touched |= set(self._base["customer_id"].iloc[in_base])
        rows = [self._store.index[c] for c in touched if c in self._store.index]
        self._valid_until[rows] = NAT_MICROS
        self._base_overridden[in_base] = True
        kept = ~replaced
        parts = [self._logged.loc[kept]] if kept.any() else []
        self._logged = _compacted(pd.concat([*parts, changes.loc[:, list(ASK_TABLE_COLUMNS)]], ignore_index=True))
        self._logged_code = np.concatenate(
            [self._logged_code[kept], pd.Index(self._store.ids).get_indexer(changes["customer_id"])]
        )
        # Per logged ask: not one of the snapshot's (so posted since the snapshot was written).
        self._logged_new = np.concatenate(
            [self._logged_new[kept], np.array([a not in self._base_position for a in ids], dtype=bool)]
        )

    def _asks_for(self, rows: np.ndarray) -> pd.DataFrame:
        """The snapshot's asks of these customers, with the ask log's version winning on the same ask_id."""
        if len(rows) <= _RANGE_GATHER_MAX:
            starts, ends = self._base_span[0][rows], self._base_span[1][rows]
            spans = [np.arange(s, e, dtype=np.int64) for s, e in zip(starts, ends, strict=True)]
            at = np.concatenate(spans) if spans else np.empty(0, np.int64)
            logged = self._logged.iloc[np.flatnonzero(np.isin(self._logged_code, rows))]
        else:
            wanted = np.zeros(len(self._store), dtype=bool)
            wanted[rows] = True
            at = np.flatnonzero((self._base_code >= 0) & wanted[np.maximum(self._base_code, 0)])
            logged = self._logged.loc[(self._logged_code >= 0) & wanted[np.maximum(self._logged_code, 0)]]
        base = self._base.iloc[at[~self._base_overridden[at]]]
        if not len(logged):
            return base
        return pd.concat([base, logged.loc[:, list(ASK_TABLE_COLUMNS)]], ignore_index=True)

    # ---- blocks ----------------------------------------------------------------------------------
    def _refresh(self, rows: np.ndarray, now: pd.Timestamp) -> None:
        """Recompute the blocks of `rows` at `now` and how long each stays valid."""
        asks = self._asks_for(rows)
        blocks = blocked_asks(asks, self._store.signals(rows), now, self._config)
        by_customer = Blocked.from_frame(blocks).by_customer
        ids = self._store.ids
        for r in rows.tolist():
            found = by_customer.get(ids[r])
            if found:
                self._entries[r] = found
            else:
                self._entries.pop(r, None)
        self._reference_blocked[rows] = [("reference_call" in self._entries.get(r, ())) for r in rows.tolist()]

        # Valid until the first moment anything can change: a block lifts, or an ask or answer becomes known.
        now_us = _us(now)
        valid = np.full(len(rows), _NEVER, dtype=np.int64)
        local = pd.Index(ids[rows])
        if len(blocks):
            until = to_micros(blocks["until"])
            at = local.get_indexer(blocks["customer_id"].astype("str"))
            later = until > now_us
            np.minimum.at(valid, at[later], until[later])
        last_ask = np.full(len(rows), NAT_MICROS, dtype=np.int64)
        if len(asks):
            at = local.get_indexer(asks["customer_id"].astype("str"))
            asked = to_micros(asks["asked_at"])
            for when in (asked, to_micros(asks["responded_at"])):
                later = (when > now_us) & (at >= 0)
                np.minimum.at(valid, at[later], when[later])
            known = (asked <= now_us) & (at >= 0)
            np.maximum.at(last_ask, at[known], asked[known])
        urgent = self._store.last_urgent_us[rows]
        valid = np.where(urgent > now_us, np.minimum(valid, urgent), valid)
        # Reasons count whole days since the last ask or urgent ticket ("Asked 3 days ago"): a blocked
        # customer's text changes at the next such day boundary, so it is recomputed then.
        has_block = np.array([r in self._entries for r in rows.tolist()], dtype=bool)
        for anchor in (last_ask, urgent):
            counts = has_block & (anchor != NAT_MICROS) & (anchor <= now_us)
            since = np.where(counts, anchor, now_us)  # no int64 overflow on NaT
            boundary = since + ((now_us - since) // _US_PER_DAY + 1) * _US_PER_DAY
            valid = np.where(counts, np.minimum(valid, boundary), valid)
        self._valid_until[rows] = valid

    def blocked(self, rows: np.ndarray, now: pd.Timestamp) -> Blocked:
        """The guardrail blocks of these customers at `now`."""
        with self._lock:
            self._sync_log()
            stale = rows[self._valid_until[rows] <= _us(now)]
            if len(stale):
                self._refresh(np.unique(stale), now)
            ids, entries = self._store.ids, self._entries
            return Blocked({ids[r]: entries[r] for r in rows.tolist() if r in entries})

    def reference_blocked(self, now: pd.Timestamp) -> np.ndarray:
        """Boolean per store row: a guardrail blocks a reference call now."""
        with self._lock:
            self._sync_log()
            stale = np.flatnonzero(self._valid_until <= _us(now))
            if len(stale):
                self._refresh(stale, now)
            return self._reference_blocked.copy()

    def recent_reference_calls(self, now: pd.Timestamp) -> np.ndarray:
        """Per store row: the snapshot's recent reference calls plus those recorded through the API since."""
        with self._lock:
            logged, code, posted = self._logged, self._logged_code, self._logged_new
        counts = self._store.recent_reference_calls.copy()
        if len(logged):
            asked = to_micros(logged["asked_at"])
            now_us = _us(now)
            new = (
                (code >= 0)
                & (logged["ask_type"] == "reference_call").to_numpy(dtype=bool)
                & posted
                & (asked >= now_us - RECENT_REFERENCE_DAYS * _US_PER_DAY)
                & (asked < now_us)
            )
            counts += np.bincount(code[new], minlength=len(counts))
        return counts

    def logged_history(self, customer_id: str, since: pd.Timestamp) -> list[dict[str, str]]:
        """Asks recorded through the API since the snapshot, as history events."""
        with self._lock:
            logged, posted = self._logged, self._logged_new
        mine = logged.loc[(logged["customer_id"] == customer_id).to_numpy(dtype=bool) & posted]
        mine = mine.loc[mine["asked_at"] >= since]
        return [
            {
                "at": f"{at:%Y-%m-%dT%H:%M:%SZ}",
                "kind": "ask",
                "detail": f"{kind.replace('_', ' ')}: {outcome.replace('_', ' ')} (recorded through the API)",
            }
            for at, kind, outcome in zip(mine["asked_at"], mine["ask_type"], mine["outcome"], strict=True)
        ]

    # ---- recording ---------------------------------------------------------------------------------
    def record(self, asks: pd.DataFrame) -> int:
        """Store asks durably (validated, idempotent on ask_id); the guardrails see them before this returns."""
        unknown = [c for c in asks["customer_id"].astype("str") if c not in self.known_customers]
        if unknown:
            raise UnknownCustomersError(unknown)
        stored = self._log.record(asks)
        with self._lock:
            self._sync_log()
        return stored


# ---------------------------------------------------------------------------------------------
# Results kept per customer
# ---------------------------------------------------------------------------------------------


class ResultCache:
    """Each stored customer's result as `models.scoring.score` made it, kept as JSON, minus the next best ask.

    Within one snapshot and one model, everything in a result except the next best ask depends only
    on the customer's features, so it is computed once (TreeSHAP reasons included, the expensive
    part), validated and serialised by the response model, and kept as bytes (one object per
    customer: nothing for the garbage collector to walk), least recently used out first. The next
    best ask depends on guardrails that move with every recorded ask, so it is re-chosen per request
    from the kept acceptance probabilities with the functions `score` itself uses.
    """

    def __init__(self, bundle: Bundle, store: FeatureStore, capacity: int = RESULT_CACHE_ROWS) -> None:
        self._bundle = bundle
        self._store = store
        self._capacity = capacity
        self._kept: OrderedDict[int, tuple[bytes, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def warm(self, limit: int | None = None, chunk: int = 1000, num_threads: int = 2) -> int:
        """Compute the first `limit` customers' results ahead of requests (at load time); return how many."""
        n = min(len(self._store), self._capacity if limit is None else limit)
        for start in range(0, n, chunk):
            self._compute(np.arange(start, min(n, start + chunk), dtype=np.int64), num_threads)
        return n

    def _compute(self, rows: np.ndarray, num_threads: int = 1) -> dict[int, tuple[bytes, np.ndarray]]:
        values, matrix = self._store.values(rows), self._store.matrix[rows]
        scores = score(self._bundle, values, matrix=matrix, explain=True, num_threads=num_threads)
        made: dict[int, tuple[bytes, np.ndarray]] = {}
        for i, r in enumerate(rows.tolist()):
            body = Result.model_validate(scores.result(i)).model_dump_json(exclude={"next_best_ask"}).encode()
            made[r] = (body[:-1], scores.acceptance[i].copy())
        with self._lock:
            self._kept.update(made)
            while len(self._kept) > self._capacity:
                self._kept.popitem(last=False)
        return made

    def get(self, rows: np.ndarray) -> list[tuple[bytes, np.ndarray]]:
        """(result JSON without `next_best_ask` and its closing brace, acceptance per ask type) per row."""
        found: dict[int, tuple[bytes, np.ndarray]] = {}
        with self._lock:
            for r in rows.tolist():
                kept = self._kept.get(r)
                if kept is not None:
                    self._kept.move_to_end(r)
                    found[r] = kept
        missing = np.asarray([r for r in dict.fromkeys(rows.tolist()) if r not in found], dtype=np.int64)
        if len(missing):
            found.update(self._compute(missing))
        return [found[r] for r in rows.tolist()]


# ---------------------------------------------------------------------------------------------
# The state behind the routes
# ---------------------------------------------------------------------------------------------


@dataclass
class Overview:
    """Per stored customer (store row order): what the page's search and disagreement list show."""

    name: list[str | None]
    segment: list[str | None]
    id_folded: pd.Series
    name_folded: pd.Series
    segment_folded: np.ndarray
    tier: np.ndarray
    baseline_tier: np.ndarray
    baseline_points: np.ndarray
    propensity: np.ndarray
    gap: np.ndarray  # model tier rank - points tier rank (0 on cold start)

    @classmethod
    def build(cls, bundle: Bundle, store: FeatureStore, chunk: int = 100_000) -> Overview:
        n = len(store)
        parts = [
            score(bundle, store.values(rows), matrix=store.matrix[rows], explain=False)
            for rows in np.array_split(np.arange(n, dtype=np.int64), max(1, n // chunk))
        ]
        tier = np.concatenate([p.tier for p in parts]) if parts else np.array([], dtype=object)
        base = np.concatenate([p.baseline_tier for p in parts]) if parts else np.array([], dtype=object)
        names = store.customers["name"].astype("object").where(store.customers["name"].notna(), None)
        segments = store.customers["segment"].astype("object").where(store.customers["segment"].notna(), None)
        return cls(
            name=[None if v is None else str(v) for v in names.tolist()],
            segment=[None if v is None else str(v) for v in segments.tolist()],
            id_folded=pd.Series(store.ids, dtype="str").str.casefold(),
            name_folded=store.customers["name"].fillna("").astype("str").str.casefold().reset_index(drop=True),
            segment_folded=store.customers["segment"].astype("str").str.casefold().to_numpy(dtype=object),
            tier=tier,
            baseline_tier=base,
            baseline_points=np.concatenate([p.baseline_points for p in parts]) if parts else np.zeros(0),
            propensity=np.concatenate([p.propensity for p in parts]) if parts else np.zeros(0),
            gap=tier_rank(tier) - tier_rank(base),
        )


@dataclass
class ServingState:
    """One loaded model with one loaded snapshot: everything a request needs."""

    champion: ChampionRef
    bundle: Bundle
    store: FeatureStore
    book: GuardrailBook
    snapshot_dir: Path
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    results: ResultCache = field(init=False)

    def __post_init__(self) -> None:
        self.results = ResultCache(self.bundle, self.store)
        self._overview: Overview | None = None
        self._overview_lock = threading.Lock()

    def overview(self) -> Overview:
        """Every stored customer's tier, propensity and points (computed once per state, vectorised)."""
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
                "propensity": _plain(view.propensity[r]),
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
                    "propensity": _plain(view.propensity[r]),
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
        rows = self.store.rows(customer_ids)
        blocked = self.book.blocked(rows, self.now())
        kept = self.results.get(rows)
        ids = self.store.ids[rows].tolist()
        acceptance = np.stack([acc for _, acc in kept])
        choice = next_asks(acceptance, blocked.matrix(ids), self.bundle.ask_values)
        parts = []
        for i, (body, _) in enumerate(kept):
            ask = next_best_ask(acceptance[i], int(choice[i]), blocked.for_customer(ids[i]))
            ask_json = NextBestAsk.model_validate(ask).model_dump_json().encode()
            parts.append(body + b',"next_best_ask":' + ask_json + b"}")
        return b'{"results":[' + b",".join(parts) + b"]}"

    def score_ids(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The same results as dicts (for callers in this process)."""
        results: list[dict[str, Any]] = json.loads(self.score_ids_json(customer_ids))["results"]
        return results

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
        rows = self.store.rows([customer_id])
        now = self.now()
        values = self.store.values(rows)
        scores = score_stored(self.bundle, self.store, rows, self.book.blocked(rows, now))
        result = scores.result(0)
        assert scores.contributions is not None
        contrib = scores.contributions[0]
        row = {name: _plain(values[name][0]) for name in FEATURE_NAMES}
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

    def references(self, industry: str, segment: str, use_case: str, k: int) -> list[dict[str, Any]]:
        """Reference candidates for a prospect, best first, skipping customers a guardrail protects."""
        now = self.now()
        prospect = Prospect(industry=industry, segment=segment, use_case=use_case)
        blocked = self.book.reference_blocked(now)
        blocks = pd.DataFrame(
            {"customer_id": pd.Series(self.store.ids[blocked], dtype="str"), "ask_type": "reference_call"}
        )
        recent = pd.Series(self.book.recent_reference_calls(now), index=pd.Index(self.store.ids.astype(str)))
        # Only customers sharing an attribute with the prospect can be candidates (similarity > 0):
        # ranking just those gives the same answer for a fraction of the work.
        could_match = np.zeros(len(self.store), dtype=bool)
        for attr, column in self.store.matchable.items():
            could_match |= (column == getattr(prospect, attr).strip().casefold()).fillna(False).to_numpy(dtype=bool)
        customers = self.store.customers.loc[could_match]
        top = rank_references(prospect, customers, self.store.reference_acceptance, blocks, recent, k)
        return [{key: _plain(v) for key, v in row.items()} for row in top.to_dict(orient="records")]

    def record_asks(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store asks through the data contract; unknown customers are refused (nothing stored)."""
        frame = pd.DataFrame(
            {
                col: [
                    pd.Timestamp(r[col]) if col.endswith("_at") and r.get(col) is not None else r.get(col) for r in rows
                ]
                for col in ASK_TABLE_COLUMNS
            }
        )
        for col in ("asked_at", "responded_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        return self.book.record(frame)

    def close(self) -> None:
        self.book.close()


def load_state(settings: Settings, champion: ChampionRef, bundle: Bundle) -> ServingState:
    """Read the current snapshot and build the state for this bundle (raises if they do not fit)."""
    root = settings.feature_store_path()
    folder = current_snapshot_dir(root)
    snapshot = read_snapshot(root)
    store = FeatureStore(snapshot, bundle)
    now = max(now_utc(), store.as_of)
    book = GuardrailBook(store, snapshot.asks, AskLog(settings.ask_log_path()), guardrail_config(bundle), now)
    state = ServingState(champion, bundle, store, book, folder)
    # Results for (up to the cache's capacity of) stored customers before the first request needs them.
    state.results.warm()
    state.overview()
    return state
