"""Guardrail blocks per customer: the snapshot's asks plus every ask recorded through `POST /asks`.

Blocks are cached per customer from the moment they were worked out for until the moment they can
next change (a block lifting, an ask or answer becoming known, the day count in a reason ticking
over); a question about an earlier moment works them out again. A write to the ask log (the durable
`storage.asklog.AskLog`), by this or any other worker process, invalidates the customers it touched
before the next request.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from features.context import RECENT_REFERENCE_DAYS
from features.contracts import (
    DAY_MICROS,
    NAT_MICROS,
    NEVER_MICROS,
    empty_table,
    from_micros,
    timestamp_micros,
    to_micros,
)
from features.deals import empty_deal_links
from features.io import FIXED_ASK_FIELDS, table_answer_later
from features.plan_links import empty_plan_links, merge_plan_links
from models.guardrails import GuardrailConfig, blocked_asks
from models.scoring import Blocked
from serving.store import ASK_TABLE_COLUMNS, FeatureStore, UnknownCustomersError
from storage.asklog import AskLog, ConflictingAskError

# Up to this many customers, their snapshot asks are gathered by index ranges; beyond, by one mask.
_RANGE_GATHER_MAX = 64
_MAX_CHUNKS = 16
_ASK_TYPES = pd.Index(ASK_TYPE_NAMES)
_REFERENCE_CALL = ASK_TYPE_NAMES.index("reference_call")


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
        self,
        store: FeatureStore,
        snapshot_asks: pd.DataFrame,
        log: AskLog,
        config: GuardrailConfig,
        now: pd.Timestamp,
        plan_links: pd.DataFrame | None = None,
        deal_links: pd.DataFrame | None = None,
    ) -> None:
        self._store = store
        self._log = log
        # The asks table's (ask_id, plan_id) and (ask_id, opportunity_id), as the snapshot kept them
        # (`features.context.Snapshot`): what each of its asks was made for, fixed like the ask.
        self._snapshot_links = empty_plan_links() if plan_links is None else plan_links
        deals = empty_deal_links() if deal_links is None else deal_links
        self._snapshot_made_for = {
            column: dict(zip(links["ask_id"], links[column], strict=True))
            for column, links in (("plan_id", self._snapshot_links), ("opportunity_id", deals))
        }
        self._config = config
        n = len(store)
        base = snapshot_asks.loc[:, list(ASK_TABLE_COLUMNS)].copy()
        base["customer_id"] = base["customer_id"].astype("str")
        base["ask_id"] = base["ask_id"].astype("str")
        self.known_customers: frozenset[str] = frozenset(store.index) | frozenset(base["customer_id"].unique())
        codes = pd.Index(store.ids).get_indexer(base["customer_id"])
        order = np.argsort(codes, kind="stable")
        self._base = base.iloc[order].reset_index(drop=True)
        self._base_delivered = to_micros(snapshot_asks["delivered_at"])[order]
        self._base_code = codes[order]
        self._base_position = {a: k for k, a in enumerate(self._base["ask_id"].tolist())}
        self._restate: set[int] = set()  # store rows whose asks the log changed, not yet restated
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
        # The moment each row's blocks were computed for: a question about an earlier moment (a plan
        # dated in the past) is not answered from them, since asks made meanwhile count in them.
        self._valid_from = np.full(n, NEVER_MICROS, dtype=np.int64)
        # Per store row and catalog ask type: blocked (as of the row's last refresh); and the blocked
        # rows refreshed without their reasons (`blocked_matrix`), which `blocked` recomputes first.
        self._blocked_types = np.zeros((n, len(ASK_TYPE_NAMES)), dtype=bool)
        self._unexplained = np.zeros(n, dtype=bool)
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
        self._restate.update(rows)
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

    def _base_at(self, rows: np.ndarray) -> np.ndarray:
        """Positions of these customers' asks in the snapshot's asks."""
        if len(rows) <= _RANGE_GATHER_MAX:
            starts, ends = self._base_span[0][rows], self._base_span[1][rows]
            spans = [np.arange(s, e, dtype=np.int64) for s, e in zip(starts, ends, strict=True)]
            return np.concatenate(spans) if spans else np.empty(0, np.int64)
        wanted = np.zeros(len(self._store), dtype=bool)
        wanted[rows] = True
        return np.flatnonzero((self._base_code >= 0) & wanted[np.maximum(self._base_code, 0)])

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        """These customers' asks as one ask per `ask_id` (`features.io.merge_asks`' rule): positions in
        the snapshot's asks, and the logged asks, each version that lost to the other left out."""
        at = self._base_at(rows)
        if len(rows) <= _RANGE_GATHER_MAX:
            logged = self._logged.iloc[np.flatnonzero(np.isin(self._logged_code, rows))]
        else:
            wanted = np.zeros(len(self._store), dtype=bool)
            wanted[rows] = True
            logged = self._logged.loc[(self._logged_code >= 0) & wanted[np.maximum(self._logged_code, 0)]]
        if not len(logged):
            return at, logged
        position = self._base_position
        pos = np.array([position.get(a, -1) for a in logged["ask_id"].tolist()], dtype=np.int64)
        both = pos >= 0
        if not both.any():
            return at, logged
        table_wins = table_answer_later(self._base["responded_at"].iloc[pos[both]], logged["responded_at"][both])
        keep_logged = np.ones(len(logged), dtype=bool)
        keep_logged[np.flatnonzero(both)[table_wins]] = False
        return at[~np.isin(at, pos[both][~table_wins])], logged.loc[keep_logged]

    def _asks_for(self, rows: np.ndarray) -> pd.DataFrame:
        """The asks of these customers: the snapshot's and the log's, one per `ask_id`."""
        return self._frame(*self._gather(rows))

    def _frame(self, at: np.ndarray, logged: pd.DataFrame) -> pd.DataFrame:
        base = self._base.iloc[at]
        if not len(logged):
            return base
        return pd.concat([base, logged.loc[:, list(ASK_TABLE_COLUMNS)]], ignore_index=True)

    def take_restatements(self) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame] | None:
        """The store rows whose asks the log changed since the last call (the snapshot's features for
        them are stale), with their asks (one per `ask_id`) and their deliveries known to the snapshot
        (`customer_id`, `ask_id`, `occurred_at`): what `features.pointintime.restate_ask_history` needs;
        None when there are none. An ask recorded after the snapshot is delivered, here, only from the
        next snapshot on."""
        with self._lock:
            self._sync_log()
            if not self._restate:
                return None  # every route calls this first: nothing is built when nothing changed
            rows = np.array(sorted(self._restate), dtype=np.int64)
            self._restate.clear()
            asks = self._asks_for(rows)
        # Deliveries name the ask, whichever version of it counts: every snapshot ask of theirs.
        at = self._base_at(rows)
        delivered = self._base_delivered[at]
        done = delivered != NAT_MICROS
        deliveries = pd.DataFrame(
            {
                "customer_id": self._base["customer_id"].iloc[at[done]].to_numpy(),
                "ask_id": self._base["ask_id"].iloc[at[done]].to_numpy(),
                "occurred_at": from_micros(delivered[done]),
            }
        )
        return rows, asks, deliveries

    # ---- blocks ----------------------------------------------------------------------------------
    def _refresh(self, rows: np.ndarray, now: pd.Timestamp, reasons: bool = True) -> None:
        """Recompute the blocks of `rows` at `now` and how long each stays valid; with `reasons`, each
        blocked customer's reasons too (`Blocked`'s mapping, a Python loop over every block: a plan
        over the whole base reads only which asks are blocked, `blocked_matrix`)."""
        asks = self._asks_for(rows)
        blocks = blocked_asks(asks, self._store.signals(rows), now, self._config)
        ids = self._store.ids
        local = pd.Index(ids[rows])
        types = np.zeros((len(rows), len(ASK_TYPE_NAMES)), dtype=bool)
        block_at = np.empty(0, dtype=np.int64)  # each block's position in `rows`
        if len(blocks):
            block_at = local.get_indexer(blocks["customer_id"].astype("str"))
            types[block_at, _ASK_TYPES.get_indexer(blocks["ask_type"].astype("str"))] = True
        self._blocked_types[rows] = types
        has_block = types.any(axis=1)
        if reasons:
            by_customer = Blocked.from_frame(blocks).by_customer
            for r in rows.tolist():
                found = by_customer.get(ids[r])
                if found:
                    self._entries[r] = found
                else:
                    self._entries.pop(r, None)
            self._unexplained[rows] = False
        else:
            for r in rows.tolist():
                self._entries.pop(r, None)
            self._unexplained[rows] = has_block

        # Valid until the first moment anything can change: a block lifts, or an ask or answer becomes known.
        now_us = timestamp_micros(now)
        valid = np.full(len(rows), NEVER_MICROS, dtype=np.int64)
        if len(blocks):
            until = to_micros(blocks["until"])
            later = until > now_us
            np.minimum.at(valid, block_at[later], until[later])
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
        for anchor in (last_ask, urgent):
            counts = has_block & (anchor != NAT_MICROS) & (anchor <= now_us)
            since = np.where(counts, anchor, now_us)  # no int64 overflow on NaT
            boundary = since + ((now_us - since) // DAY_MICROS + 1) * DAY_MICROS
            valid = np.where(counts, np.minimum(valid, boundary), valid)
        self._valid_until[rows] = valid
        self._valid_from[rows] = now_us

    def _stale(self, rows: np.ndarray | slice, now: pd.Timestamp) -> np.ndarray:
        """Per row: its cached blocks do not hold at `now` (computed for a later moment, or past their validity)."""
        now_us = timestamp_micros(now)
        return (self._valid_until[rows] <= now_us) | (self._valid_from[rows] > now_us)

    def blocked(self, rows: np.ndarray, now: pd.Timestamp) -> Blocked:
        """The guardrail blocks of these customers at `now`."""
        with self._lock:
            self._sync_log()
            # Still valid without their reasons: recomputed now, which gives what was cached (valid).
            due = self._stale(rows, now) | self._unexplained[rows]
            if due.any():
                self._refresh(np.unique(rows[due]), now)
            ids, entries = self._store.ids, self._entries
            return Blocked({ids[r]: entries[r] for r in rows.tolist() if r in entries})

    def blocked_matrix(self, rows: np.ndarray, now: pd.Timestamp) -> np.ndarray:
        """Boolean (rows x catalog ask types), True where a guardrail blocks the ask at `now`: what
        `blocked(rows, now).matrix(ids)` gives, without making each customer's reasons (a plan over
        the whole base needs none; `blocked` makes them when next asked for those customers)."""
        with self._lock:
            self._sync_log()
            stale = rows[self._stale(rows, now)]
            if len(stale):
                self._refresh(np.unique(stale), now, reasons=False)
            return self._blocked_types[rows]

    def reference_blocked(self, now: pd.Timestamp) -> np.ndarray:
        """Boolean per store row: a guardrail blocks a reference call now."""
        with self._lock:
            self._sync_log()
            stale = np.flatnonzero(self._stale(slice(None), now))
            if len(stale):
                self._refresh(stale, now, reasons=False)
            return self._blocked_types[:, _REFERENCE_CALL].copy()

    def recent_reference_calls(self, now: pd.Timestamp) -> np.ndarray:
        """Per store row: the snapshot's recent reference calls plus those recorded through the API since."""
        with self._lock:
            logged, code, posted = self._logged, self._logged_code, self._logged_new
        counts = self._store.recent_reference_calls.copy()
        if len(logged):
            asked = to_micros(logged["asked_at"])
            now_us = timestamp_micros(now)
            new = (
                (code >= 0)
                & (logged["ask_type"] == "reference_call").to_numpy(dtype=bool)
                & posted
                & (asked >= now_us - RECENT_REFERENCE_DAYS * DAY_MICROS)
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

    def known_asks(self, now: pd.Timestamp) -> pd.DataFrame:
        """Every stored customer's asks made before `now`, the snapshot's and the log's, one per ask_id."""
        with self._lock:
            self._sync_log()
            asks = self._asks_for(np.arange(len(self._store), dtype=np.int64))
        return asks[asks["asked_at"] < now].reset_index(drop=True)

    def plan_links(self) -> pd.DataFrame:
        """(`ask_id`, `plan_id`) of the asks made from a plan: the asks table's (in the snapshot) and
        the ask log's (`features.plan_links.merge_plan_links`)."""
        return merge_plan_links(self._snapshot_links, self._log.plan_links())

    # ---- recording ---------------------------------------------------------------------------------
    def record(self, asks: pd.DataFrame) -> int:
        """Store asks durably (validated, idempotent on ask_id); the guardrails see them before this returns."""
        unknown = [c for c in asks["customer_id"].astype("str") if c not in self.known_customers]
        if unknown:
            raise UnknownCustomersError(unknown)
        self._refuse_conflicts(asks)
        stored = self._log.record(asks)
        with self._lock:
            self._sync_log()
        return stored

    def _refuse_conflicts(self, asks: pd.DataFrame) -> None:
        """`ConflictingAskError` if an ask of the snapshot is sent with another customer, type, time,
        plan or deal (the log refuses the same against its own asks, in its write transaction)."""
        ask_ids = asks["ask_id"].astype("str").tolist()
        for i, ask_id in enumerate(ask_ids):
            k = self._base_position.get(ask_id)
            if k is None:
                continue
            for field in FIXED_ASK_FIELDS:
                stored, sent = self._base[field].iloc[k], asks[field].iloc[i]
                if pd.isna(sent):
                    continue  # the data contract refuses it, naming the row
                same = pd.Timestamp(sent) == stored if field == "asked_at" else str(sent) == str(stored)
                if not same:
                    raise ConflictingAskError(ask_id, field, stored, sent)
            # Its plan and deal as the asks table gave them are fixed too; re-sent without one, it keeps it.
            for column, made_for in self._snapshot_made_for.items():
                sent = asks[column].iloc[i] if column in asks.columns else None
                if sent is not None and not pd.isna(sent) and str(sent) != made_for.get(ask_id, "none"):
                    raise ConflictingAskError(ask_id, column, made_for.get(ask_id, "none"), sent)
