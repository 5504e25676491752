"""The durable ask log: asks and their outcomes recorded through the API (spec section 5, `POST /asks`).

A SQLite file in WAL mode with `synchronous=FULL`: once `record` returns, the asks survive a process
kill or a power cut. Each `record` call is one transaction (all rows or none), upserting on `ask_id`
so a re-sent ask updates the stored one (an outcome arriving later) and never duplicates it.
Timestamps are stored as int64 microseconds since the epoch (UTC), so `read` returns exactly what
was recorded. Every write stamps its rows with the next number of a sequence (in commit order, as
writes are serialised), so a reader can fetch only what changed since it last looked
(`read_changes`) instead of the whole log. Safe to share across threads: every call opens its own
connection, and writes in this process are serialised by a lock (SQLite's own locking covers other
processes).

An ask made from a plan may name it (an optional `plan_id` column), and an ask made for a deal the
deal (an optional `opportunity_id` column): each link is kept beside the ask (`plan_links`,
`deal_links`), in the same transaction, and outlives later re-sends of the ask without it, so the
program report can set what was promised against what happened, and count a deal's references.

The log knows no data contract of its own: it is handed one (`features.contracts.CONTRACTS["asks"]`
in the product), which validates what is recorded and gives the canonical columns and types of what
is read, so the rules of the asks table live in one place.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from storage.files import atomic_path

_COLUMNS: tuple[str, ...] = ("ask_id", "customer_id", "ask_type", "asked_at", "outcome", "responded_at")
_NAT = np.iinfo(np.int64).min  # numpy's NaT as int64; never a real microsecond count
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS asks (
    ask_id       TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    ask_type     TEXT NOT NULL,
    asked_at     INTEGER NOT NULL,  -- microseconds since 1970-01-01 UTC
    outcome      TEXT NOT NULL,
    responded_at INTEGER,           -- microseconds since 1970-01-01 UTC; NULL if not answered
    recorded_at  INTEGER NOT NULL,  -- when this version was written (audit only)
    seq          INTEGER            -- the write that stored this version: increases in commit order
);
CREATE INDEX IF NOT EXISTS asks_by_customer ON asks (customer_id, asked_at);
CREATE TABLE IF NOT EXISTS plan_asks (
    ask_id       TEXT PRIMARY KEY,  -- an ask made from a plan (`POST /plan`, `advocacy plan`) ...
    plan_id      TEXT NOT NULL      -- ... and that plan; kept when the ask is later re-sent without it
);
CREATE TABLE IF NOT EXISTS deal_asks (
    ask_id         TEXT PRIMARY KEY,  -- an ask made for a deal (a reference for it) ...
    opportunity_id TEXT NOT NULL      -- ... and that deal; kept when the ask is later re-sent without it
);
"""
# Each optional link column of an ask -> the table that keeps it (created above; a log written
# before a table existed gets it when next opened).
_LINK_TABLES: dict[str, str] = {"plan_id": "plan_asks", "opportunity_id": "deal_asks"}
# Logs written before `seq` existed get the column; their rows count as written before any new one.
_MIGRATE = ("ALTER TABLE asks ADD COLUMN seq INTEGER", "UPDATE asks SET seq = rowid")
_SEQ_INDEX = "CREATE INDEX IF NOT EXISTS asks_by_seq ON asks (seq)"
_LINK = "INSERT INTO {table} (ask_id, {column}) VALUES (?, ?) ON CONFLICT (ask_id) DO NOTHING"

_UPSERT = """
INSERT INTO asks (ask_id, customer_id, ask_type, asked_at, outcome, responded_at, recorded_at, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (ask_id) DO UPDATE SET
    customer_id = excluded.customer_id,
    ask_type = excluded.ask_type,
    asked_at = excluded.asked_at,
    outcome = excluded.outcome,
    responded_at = excluded.responded_at,
    recorded_at = excluded.recorded_at,
    seq = excluded.seq
"""


def _links(asks: pd.DataFrame) -> dict[str, list[tuple[str, str]]]:
    """Per link column (`_LINK_TABLES`): (ask_id, value) for the asks that name one."""
    found: dict[str, list[tuple[str, str]]] = {}
    for column in _LINK_TABLES:
        if column in asks.columns:
            named = asks.loc[asks[column].notna(), ["ask_id", column]]
            found[column] = [(str(a), str(v)) for a, v in named.itertuples(index=False)]
    return found


def _refuse_conflicts(
    conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]], links: dict[str, list[tuple[str, str]]]
) -> None:
    """`ConflictingAskError` for the first row whose ask_id is stored with another customer, type,
    time, plan or deal (an ask re-sent without its plan or deal keeps it)."""
    for column, named_links in links.items():
        linked = conn.execute(
            f"SELECT a.ask_id, l.{column} FROM asks a LEFT JOIN {_LINK_TABLES[column]} l ON l.ask_id = a.ask_id "
            "WHERE a.ask_id IN (SELECT value FROM json_each(?))",
            [json.dumps([a for a, _ in named_links])],
        ).fetchall()
        named = dict(named_links)
        for ask_id, value in linked:  # asks already recorded that this request links
            if named[ask_id] != value:
                raise ConflictingAskError(ask_id, column, value or "none", named[ask_id])
    sent = {row[0]: row[1:4] for row in rows}
    stored = conn.execute(
        "SELECT ask_id, customer_id, ask_type, asked_at FROM asks WHERE ask_id IN (SELECT value FROM json_each(?))",
        [json.dumps(list(sent))],
    ).fetchall()
    for ask_id, *fixed in stored:
        for field, old, new in zip(("customer_id", "ask_type", "asked_at"), fixed, sent[ask_id], strict=True):
            if old != new:
                if field == "asked_at":
                    old, new = _timestamps(np.array([old]))[0], _timestamps(np.array([new]))[0]
                raise ConflictingAskError(ask_id, field, old, new)


def _has_seq(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "seq" for row in conn.execute("PRAGMA table_info(asks)"))


def _micros(s: pd.Series) -> list[int | None]:
    values = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype(np.int64)
    return [None if v == _NAT else int(v) for v in values.tolist()]


def _timestamps(values: np.ndarray) -> pd.Series:
    # NULL is read as _NAT, which numpy turns back into NaT.
    return pd.Series(values.astype(np.int64).astype("datetime64[us]")).dt.tz_localize("UTC")


class ConflictingAskError(ValueError):
    """An ask sent again with another customer, type, time, plan or deal: an ask's identity never
    changes, only its answer may (spec section 7), so it is refused (a 409 naming the field), and
    nothing of the request is stored."""

    def __init__(self, ask_id: str, field: str, stored: object, sent: object) -> None:
        super().__init__(
            f"ask_id {ask_id!r} is already recorded with {field} {stored}, not {sent}: an ask's customer_id, "
            "ask_type, asked_at, plan_id and opportunity_id never change, only its answer may (a new ask needs "
            "a new ask_id)"
        )
        self.ask_id = ask_id
        self.field = field


class AskContract(Protocol):
    """What the log needs of the asks table's data contract (`features.contracts.TableContract`)."""

    def validate(self, frame: pd.DataFrame, received_at: pd.Timestamp | None = None) -> pd.DataFrame: ...

    def empty(self) -> pd.DataFrame: ...


class AskLog:
    """Asks recorded through the service, in a SQLite file (created with its parents if missing)."""

    def __init__(self, path: Path, contract: AskContract) -> None:
        self.path = Path(path)
        self.contract = contract
        self._dtypes = contract.empty().dtypes.to_dict()  # the canonical types of what `read` returns
        self._write_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            # WAL is a property of the file: set once, kept by every later connection.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            if not _has_seq(conn):
                conn.execute("BEGIN IMMEDIATE")  # another process may be migrating the same file
                try:
                    if not _has_seq(conn):
                        for statement in _MIGRATE:
                            conn.execute(statement)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            conn.execute(_SEQ_INDEX)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)) as conn:
            # Per connection: fsync the WAL on every commit, so an acknowledged write survives a crash.
            conn.execute("PRAGMA synchronous=FULL")
            yield conn

    def record(self, asks: pd.DataFrame) -> int:
        """Validate and upsert `asks` (rows of the asks table) in one transaction; return the number stored.

        Raises the contract's error (`features.contracts.DataContractError`, naming the column and rows)
        and stores nothing if any row breaks the data contract, a time later than now (beyond a little
        clock skew) included: an ask is recorded when it was made or answered, never ahead. Whether each
        `customer_id` exists is the caller's check.
        """
        now = time.time_ns() // 1_000
        links = _links(asks)
        table = self.contract.validate(asks, received_at=pd.Timestamp(now, unit="us", tz="UTC"))
        if table.empty:
            return 0
        rows = list(
            zip(
                table["ask_id"].tolist(),
                table["customer_id"].tolist(),
                table["ask_type"].tolist(),
                _micros(table["asked_at"]),
                table["outcome"].tolist(),
                _micros(table["responded_at"]),
                [now] * len(table),
                strict=True,
            )
        )
        with self._write_lock, self._connect() as conn:
            # IMMEDIATE takes the write lock up front, so the transaction cannot fail half-way on a busy
            # file, and no other writer can take the same sequence number meanwhile.
            conn.execute("BEGIN IMMEDIATE")
            try:
                _refuse_conflicts(conn, rows, links)
                seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM asks").fetchone()[0])
                conn.executemany(_UPSERT, [(*row, seq) for row in rows])
                for column, pairs in links.items():
                    conn.executemany(_LINK.format(table=_LINK_TABLES[column], column=column), pairs)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(rows)

    def read(self, customer_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The recorded asks as the canonical asks table, sorted by asked_at then ask_id.

        With `customer_ids`, only those customers' asks.
        """
        where, params = "", list[object]()
        if customer_ids is not None:
            # One JSON parameter instead of one placeholder per id (SQLite caps the number of placeholders).
            where = "WHERE customer_id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps([str(c) for c in customer_ids]))
        with self._connect() as conn:
            return self._select(conn, where, params)

    def plan_links(self) -> pd.DataFrame:
        """(`ask_id`, `plan_id`) of every recorded ask that was made from a plan."""
        return self._links("plan_id")

    def deal_links(self) -> pd.DataFrame:
        """(`ask_id`, `opportunity_id`) of every recorded ask that was made for a deal."""
        return self._links("opportunity_id")

    def _links(self, column: str) -> pd.DataFrame:
        with self._connect() as conn:
            rows = conn.execute(f"SELECT ask_id, {column} FROM {_LINK_TABLES[column]} ORDER BY ask_id").fetchall()
        ask_ids, values = zip(*rows, strict=True) if rows else ((), ())
        return pd.DataFrame({"ask_id": pd.Series(ask_ids, dtype="str"), column: pd.Series(values, dtype="str")})

    def read_changes(self, after: int = 0) -> tuple[pd.DataFrame, int]:
        """The asks written (new or updated) since write number `after`, and the number to pass next time.

        `read_changes(0)` is the whole log; a reader that keeps the returned number sees each later
        write exactly once, whichever process made it.
        """
        with self._connect() as conn:
            conn.execute("BEGIN")  # one read snapshot for both statements
            try:
                last = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM asks").fetchone()[0])
                changes = self._select(conn, "WHERE seq > ? AND seq <= ?", [after, last])
            finally:
                conn.execute("COMMIT")
        return changes, max(last, after)

    def _select(self, conn: sqlite3.Connection, where: str, params: list[object]) -> pd.DataFrame:
        select = (
            "SELECT ask_id, customer_id, ask_type, asked_at, outcome, COALESCE(responded_at, ?) AS responded_at "
            f"FROM asks {where} ORDER BY asked_at, ask_id"
        )
        rows = conn.execute(select, [_NAT, *params]).fetchall()
        if not rows:
            return self.contract.empty()
        ids, customers, types, asked, outcomes, responded = zip(*rows, strict=True)
        frame = pd.DataFrame(
            {
                "ask_id": pd.Series(ids, dtype="str"),
                "customer_id": pd.Series(customers, dtype="str"),
                "ask_type": pd.Series(types, dtype="str"),
                "asked_at": _timestamps(np.asarray(asked, dtype=np.int64)),
                "outcome": pd.Series(outcomes, dtype="str"),
                "responded_at": _timestamps(np.asarray(responded, dtype=np.int64)),
            }
        )
        return frame.loc[:, list(_COLUMNS)].astype(self._dtypes)

    def backup(self, target: Path | str) -> int:
        """A consistent copy of the log at `target` while the service keeps writing; return its row count.

        SQLite's online backup copies a snapshot of committed transactions (never half of one). The copy
        is written beside `target` and renamed, so a failed backup never leaves a broken file there.
        """
        target = Path(target)
        if target.resolve() == self.path.resolve():
            raise ValueError(f"the backup must go somewhere else than the ask log itself: {target}")
        with atomic_path(target) as tmp, self._connect() as source, closing(sqlite3.connect(tmp)) as copy:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            rows = int(copy.execute("SELECT COUNT(*) FROM asks").fetchone()[0])
        return rows

    def last_write(self) -> int:
        """The number of the latest write (0 for an empty log): it changes whenever an ask is stored."""
        with self._connect() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM asks").fetchone()[0])

    def __len__(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM asks").fetchone()[0])
