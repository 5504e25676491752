"""Fresh enough (spec section 10): the service writes to the CRM the profiles of customers whose asks it records.

With `ADVOCACY_SYNC_TARGET` set, `POST /asks` queues its customers here, and a background thread
sends their profiles (and campaign asks) within `ADVOCACY_SYNC_SECONDS`, through the same use case
as `advocacy sync` (`usecases.sync.sync` over those customers: the published snapshot, the ask log,
the served model), so a new decline or pause reaches the account team in the same minute, not the
next night. The thread waits a moment to gather a burst of asks into one sync, and after a failure
(the CRM unreachable, another sync holding the lock) keeps the customers queued and tries again;
records the CRM refuses are logged by id, and sent again by the next sync that changes them or by
`advocacy sync`. Logs name customers by id only, never by name, and never a token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from models.bundle import Bundle
from storage.settings import Settings
from storage.syncstate import SyncBusyError
from usecases.sources import Sources
from usecases.sync import Sink, SyncJob, sync

log = logging.getLogger("bentoml.advocacy")

GATHER_SECONDS = 1.0  # wait this long after the first queued ask for others (never beyond a tenth of the interval)


class CrmSync:
    """Queues customers and syncs their profiles in the background, within `settings.sync_seconds`."""

    def __init__(self, settings: Settings, sink: Sink, bundle_of: Callable[[], Bundle | None]) -> None:
        self.settings = settings
        self.sink = sink
        from crm import sync_state

        self.bundle_of = bundle_of  # the served model, None until the service is ready
        self.state = sync_state(settings, sink.target)
        self._pending: set[str] = set()
        self._since: float | None = None  # when the oldest pending customer was queued
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="advocacy-crm-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def queue(self, customer_ids: Iterable[str]) -> None:
        with self._lock:
            self._pending.update(str(c) for c in customer_ids)
            if self._since is None and self._pending:
                self._since = time.monotonic()
        self._wake.set()

    def _take(self) -> tuple[set[str], float | None]:
        with self._lock:
            taken, since = self._pending, self._since
            self._pending, self._since = set(), None
            return taken, since

    def _put_back(self, customers: set[str], since: float | None) -> None:
        with self._lock:
            self._pending |= customers
            if since is not None:
                self._since = since if self._since is None else min(self._since, since)

    def _run(self) -> None:
        seconds = self.settings.sync_seconds
        gather, retry = min(GATHER_SECONDS, seconds / 10), max(0.5, min(5.0, seconds / 6))
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.wait(gather):
                return
            customers, since = self._take()
            if not customers:
                continue
            if not self.sync_now(customers):
                self._put_back(customers, since)
                self._stop.wait(retry)
                self._wake.set()

    def sync_now(self, customers: set[str]) -> bool:
        """Sync these customers' records now; whether the CRM was reached (False: try again later)."""
        bundle = self.bundle_of()
        if bundle is None:
            return False
        job = SyncJob(
            self.settings.feature_store_path(), Sources.from_settings(self.settings), tuple(sorted(customers))
        )
        try:
            report = sync(bundle, job, self.sink, self.state)
        except SyncBusyError:
            return False
        except Exception:  # anything else: keep serving, say why, try again
            log.exception("advocacy: CRM sync to %s failed (retrying)", self.sink.target)
            return False
        if report.error:
            log.error("advocacy: CRM sync to %s stopped: %s (retrying)", self.sink.target, report.error)
            return False
        sent = ", ".join(f"{part.acknowledged} {kind}" for kind, part in report.kinds.items())
        log.info("advocacy: CRM sync to %s for %d customer(s): sent %s", self.sink.target, len(customers), sent)
        for kind, failed in report.failed.items():
            for key, why in failed.items():
                log.error("advocacy: %s refused %s %s: %s", self.sink.target, kind, key, why)
        return True


def start_crm_sync(settings: Settings, bundle_of: Callable[[], Bundle | None]) -> CrmSync | None:
    """The background sync when `ADVOCACY_SYNC_TARGET` is set (started), else None. A target that
    cannot be reached as configured (a setting missing) is logged once and left off: the service
    still serves."""
    if not settings.sync_target:
        return None
    from crm import connect  # the vendors' clients load only in a service that syncs

    try:
        sink = connect(settings, settings.sync_target.strip().lower())
    except ValueError as err:
        log.error("advocacy: no CRM sync: ADVOCACY_SYNC_TARGET=%s but %s", settings.sync_target, err)
        return None
    syncer = CrmSync(settings, sink, bundle_of)
    syncer.start()
    log.info("advocacy: recorded asks reach %s within %.0f s", sink.target, settings.sync_seconds)
    return syncer


__all__ = ["CrmSync", "start_crm_sync"]
