"""What a CRM was last sent, per target: one content hash per record, kept so a sync sends only changes.

A target's state is a JSON file (`<target>.json`: the destination it describes and, per kind of
record, key -> hash), replaced whole through `storage.files.atomic_path`. During a sync each batch
the CRM acknowledges is appended to a journal beside it (`<target>.journal`, one JSON line, synced
to disk before the next batch goes): a sync killed half-way loses nothing it was told, and the next
one resumes where it stopped instead of sending everything again. `save` folds the journal into the
file and removes it. A state written for another destination (another URL, object or field names)
is not used: that CRM was never sent these records.

One sync runs at a time per target: `locked` holds an exclusive `flock` on `<target>.lock` (across
processes and threads; the operating system drops it if the holder dies) and refuses at once when
another sync holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from storage.files import atomic_path

Hashes = dict[str, dict[str, str]]  # kind of record -> key -> content hash


class SyncBusyError(RuntimeError):
    """Another sync to the same target holds its lock."""


class SyncState:
    """The sync state of one target (`hubspot`, `salesforce`) in `folder`."""

    def __init__(self, folder: Path, target: str) -> None:
        self.folder = Path(folder)
        self.target = target
        self.path = self.folder / f"{target}.json"
        self.journal = self.folder / f"{target}.journal"
        self.lock_path = self.folder / f"{target}.lock"
        self.destination = ""
        self.hashes: Hashes = {}
        self._replaces_other = False  # loaded for a destination the kept state does not describe

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this target's lock for the block; `SyncBusyError` if another sync holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SyncBusyError(
                    f"another sync to {self.target} is running (it holds {self.lock_path.name}); "
                    "run this one when it is done"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def load(self, destination: str) -> Hashes:
        """The hashes last acknowledged by `destination` (the file, then the journal of a sync that
        stopped half-way); empty when the kept state describes another destination (which is then
        replaced at the first acknowledged batch: loading alone writes nothing)."""
        kept = self._read_file()
        self.destination = destination
        self._replaces_other = kept.get("destination") != destination
        if self._replaces_other:
            self.hashes = {}
            return self.hashes
        records = kept.get("records")
        self.hashes = {str(k): dict(v) for k, v in records.items()} if isinstance(records, dict) else {}
        for kind, keys in self._read_journal():
            self.hashes.setdefault(kind, {}).update(keys)
        return self.hashes

    def acknowledge(self, kind: str, hashes: Mapping[str, str]) -> None:
        """Record that the CRM took these records (key -> hash), durably, before anything else is sent."""
        if not hashes:
            return
        if self._replaces_other:  # the kept file and journal describe another destination: start afresh
            self._replaces_other = False
            self.save()
        self.hashes.setdefault(kind, {}).update(hashes)
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"kind": kind, "records": dict(hashes)}, separators=(",", ":")) + "\n"
        with open(self.journal, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def save(self) -> None:
        """Write the state whole (atomically), then drop the journal it now holds (nothing, while the
        kept state describes another destination and nothing was acknowledged here)."""
        if self._replaces_other:
            return
        body = {
            "target": self.target,
            "destination": self.destination,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": self.hashes,
        }
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(body, separators=(",", ":")), encoding="utf-8")
        self.journal.unlink(missing_ok=True)

    def _read_file(self) -> dict[str, object]:
        try:
            kept = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(
                f"the sync state {self.path} is unreadable ({err}): delete it to send every record again"
            ) from None
        return kept if isinstance(kept, dict) else {}

    def _read_journal(self) -> Iterator[tuple[str, dict[str, str]]]:
        try:
            lines = self.journal.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # the last line of a sync killed while writing it: never acknowledged
                continue
            yield str(entry["kind"]), {str(k): str(v) for k, v in entry["records"].items()}


__all__ = ["Hashes", "SyncBusyError", "SyncState"]
