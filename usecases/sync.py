"""The CRM sync (spec section 10): what to send, what changed since the last sync, and sending it.

One road for every door: `advocacy sync` (every customer of the published snapshot, churned ones
included) and the service's background sync (the customers whose asks it just recorded) both call
`sync`, with a `Sink` for the CRM (`crm.HubSpotSink`, `crm.SalesforceSink`: this layer knows no
HTTP) and the target's `storage.syncstate.SyncState`.

Change detection: each record's content hash (`record_hash`) is compared with the hash the CRM
last acknowledged for its key; only records whose hash differs are sent (`full`: all). Records go
in the sink's batches, and every batch the CRM acknowledges is journalled before the next is sent,
so a sync killed half-way resumes with what was not acknowledged, and the upsert on the unique key
never makes a second record of one customer or ask. Records the CRM refuses are reported by key
and not acknowledged: the next sync sends them again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from models.bundle import Bundle
from storage.syncstate import SyncState
from usecases.profiles import (
    ACTIVITIES,
    KEYS,
    PROFILES,
    activity_records,
    churned_by,
    churned_profile,
    profile_records,
    read_base,
    score_base,
)
from usecases.sources import Sources

Record = dict[str, Any]
Progress = Callable[[str, int, int], None]  # kind, records done, records to send


class CrmError(RuntimeError):
    """The CRM refused a whole batch or could not be reached; the message names no customer and no token."""


@dataclass
class Sent:
    """What the CRM said about one batch: the keys it took, and why it refused the others."""

    acknowledged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Sink(Protocol):
    """A CRM the records are upserted into, by their unique key (`usecases.profiles.KEYS`)."""

    target: str
    batch_size: int

    def destination(self) -> str:
        """Where the records go (URL, objects, field names): a sync state describes one destination."""
        ...

    def send(self, kind: str, records: Sequence[Record]) -> Sent:
        """Upsert one batch (at most `batch_size` records); `CrmError` if the whole batch failed."""
        ...


@dataclass(frozen=True)
class SyncJob:
    """What to sync: the published snapshot and the sources' ask log; every customer (then those the
    CRM was sent before and the snapshot lacks are sent as churned) or just `customer_ids`. With
    `churn_from_data`, customers the data directory's `customers` table shows churned before now are
    sent as churned too, though the snapshot predates it."""

    feature_store: Path
    sources: Sources
    customer_ids: tuple[str, ...] | None = None
    full: bool = False
    dry_run: bool = False
    now: pd.Timestamp | None = None
    churn_from_data: bool = False


@dataclass
class KindReport:
    """One kind of record in one sync: how many were due, sent and acknowledged, and the refusals."""

    total: int = 0
    due: list[str] = field(default_factory=list)  # keys of the records that changed (or all, with --full)
    acknowledged: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    churned: int = 0
    error: str | None = None  # why the CRM stopped this sync (`CrmError`): the rest was not sent

    @property
    def unchanged(self) -> int:
        return self.total - len(self.due)


@dataclass
class SyncReport:
    target: str
    kinds: dict[str, KindReport]
    dry_run: bool = False

    @property
    def failed(self) -> dict[str, dict[str, str]]:
        return {kind: report.failed for kind, report in self.kinds.items() if report.failed}

    @property
    def error(self) -> str | None:
        return next((report.error for report in self.kinds.values() if report.error), None)


def record_hash(record: Mapping[str, Any]) -> str:
    """A stable digest of a record's content (whatever the order of its fields)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def build_records(bundle: Bundle, job: SyncJob, known: Mapping[str, Mapping[str, str]]) -> dict[str, list[Record]]:
    """Every record the job describes, by kind: profiles (with churned ones for customers in `known`
    profiles that the snapshot no longer holds, on a whole sync) and campaign activities."""
    log = job.sources.ask_log()
    base = read_base(job.feature_store, log, bundle.lapse_days, job.customer_ids)
    now = job.now if job.now is not None else pd.Timestamp.now(tz="UTC")
    profiles = profile_records(score_base(bundle, base, max(now, base.as_of)), base.features)
    if job.churn_from_data:
        gone = churned_by(job.sources.read(now).world.customers, now)  # the one reader: checks, log, future rows
        profiles = [churned_profile(p["customer_id"]) if p["customer_id"] in gone else p for p in profiles]
    if job.customer_ids is None:
        present = set(base.customer_ids)
        profiles += [churned_profile(c) for c in sorted(set(known.get(PROFILES, {})) - present)]
    return {PROFILES: profiles, ACTIVITIES: activity_records(base)}


def _due(records: Sequence[Record], key: str, known: Mapping[str, str], full: bool) -> list[tuple[Record, str]]:
    hashed = [(r, record_hash(r)) for r in records]
    return hashed if full else [(r, h) for r, h in hashed if known.get(str(r[key])) != h]


def _send(sink: Sink, state: SyncState, kind: str, due: list[tuple[Record, str]], progress: Progress) -> KindReport:
    report = KindReport(due=[str(r[KEYS[kind]]) for r, _ in due])
    for start in range(0, len(due), sink.batch_size):
        batch = due[start : start + sink.batch_size]
        try:
            sent = sink.send(kind, [r for r, _ in batch])
        except CrmError as err:
            report.error = str(err)
            return report
        hashes = {str(r[KEYS[kind]]): h for r, h in batch}
        state.acknowledge(kind, {k: hashes[k] for k in sent.acknowledged if k in hashes})
        report.acknowledged += len(sent.acknowledged)
        report.failed.update(sent.failed)
        progress(kind, start + len(batch), len(due))
    return report


def sync(
    bundle: Bundle, job: SyncJob, sink: Sink, state: SyncState, progress: Progress = lambda *_: None
) -> SyncReport:
    """Send what changed (everything with `job.full`; nothing with `job.dry_run`) and return what happened.

    Holds the target's lock throughout (`SyncBusyError` if another sync holds it). A `CrmError` stops
    the sync (the report's `error`); what the CRM acknowledged before it is kept, so the next sync
    resumes from there."""
    with state.locked():
        known = state.load(sink.destination())
        records = build_records(bundle, job, known)
        report = SyncReport(sink.target, {}, job.dry_run)
        plans = {kind: _due(rows, KEYS[kind], known.get(kind, {}), job.full) for kind, rows in records.items()}
        try:
            for kind, due in plans.items():
                if job.dry_run:
                    kind_report = KindReport(due=[str(r[KEYS[kind]]) for r, _ in due])
                else:
                    kind_report = _send(sink, state, kind, due, progress)
                kind_report.total = len(records[kind])
                kind_report.churned = sum(1 for r, _ in due if r.get("churned"))
                report.kinds[kind] = kind_report
                if kind_report.error:
                    break
        finally:
            if not job.dry_run:
                state.save()
    return report


__all__ = [
    "CrmError",
    "KindReport",
    "Progress",
    "Record",
    "Sent",
    "Sink",
    "SyncJob",
    "SyncReport",
    "build_records",
    "record_hash",
    "sync",
]
