"""Salesforce through `simple-salesforce`: a Bulk API 2.0 upsert job per batch, on an external id field.

A job's whole life: create it (`operation: upsert`, `externalIdFieldName`: `Customer_Id__c` on
`Advocate_Profile__c`, `Ask_Id__c` on `Advocacy_Activity__c`), upload the CSV, close it
(`UploadComplete`: nothing runs without it), poll until `JobComplete`, `Failed` or `Aborted`, then
read its three result sets: successful records (acknowledged), failed records (`sf__Error`, reported
by key) and unprocessed ones (a job that failed or was aborted part-way; reported, sent again by
the next sync). An empty CSV cell leaves a field as it is, so an emptied value goes as `#N/A`.

simple-salesforce's one-call `upsert` raises on a `Failed` job without saying which job, so its
unprocessed records could not be read: this module drives the steps itself with the library's
Bulk 2.0 client (`SFBulk2Type._client`, the one object that has them) and reads the results with
the public `get_*_records`. The sync tests run every step against a local server, so a change in
the library shows there. The library always speaks https to the instance (`instance_url` is
rewritten), and its requests carry no timeout of their own: the session here adds one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import JobState, Operation
from simple_salesforce.exceptions import SalesforceBulkV2LoadError, SalesforceError
from urllib3.util.retry import Retry

from crm.fields import SALESFORCE_NULL, columns, fingerprint, renamed
from usecases.profiles import KEYS
from usecases.sync import CrmError, Record, Sent

BATCH_LIMIT = 10_000  # records per job: one job's results acknowledged at a time
API_VERSION = "59.0"
TIMEOUT = (10.0, 300.0)  # seconds to connect, to read one answer
POLL_SECONDS = (0.2, 2.0)  # first and longest wait between looks at a running job
JOB_TIMEOUT_S = 3600.0
_DONE = (JobState.job_complete, JobState.failed, JobState.aborted)


class TimeoutSession(requests.Session):
    """A session whose requests time out (simple-salesforce passes none) and retry 429 and 503 as told."""

    def __init__(self) -> None:
        super().__init__()
        retry = Retry(
            total=5, status_forcelist=(429, 503), allowed_methods=None, backoff_factor=0.5, raise_on_status=False
        )
        self.mount("https://", HTTPAdapter(max_retries=retry))

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(method, url, *args, **kwargs)


class SalesforceSink:
    """Advocate Profiles and Advocacy Activities into Salesforce custom objects (`usecases.sync.Sink`)."""

    target = "salesforce"
    batch_size = BATCH_LIMIT

    def __init__(
        self,
        token: str,
        instance_url: str,
        objects: Mapping[str, str],
        names: Mapping[str, str],
        session: requests.Session | None = None,
    ) -> None:
        self.url = instance_url.rstrip("/")
        self.objects = dict(objects)  # kind -> object API name
        self.names = dict(names)  # our field -> field API name
        self._sf = Salesforce(
            instance_url=self.url, session_id=token, version=API_VERSION, session=session or TimeoutSession()
        )

    def destination(self) -> str:
        objects = ",".join(f"{kind}={self.objects[kind]}" for kind in sorted(self.objects))
        return f"salesforce {self.url} {objects} fields {fingerprint(sorted(self.names.items()))}"

    def send(self, kind: str, records: Sequence[Record]) -> Sent:
        if not records:
            return Sent()
        external = self.names[KEYS[kind]]
        bulk = getattr(self._sf.bulk2, self.objects[kind])
        try:
            job_id, state = self._run_job(bulk, external, _csv(records, kind, self.names))
            return _results(bulk, job_id, state, external, [str(r[KEYS[kind]]) for r in records])
        except SalesforceError as err:
            raise CrmError(_refusal(err, self.objects[kind])) from None
        except SalesforceBulkV2LoadError as err:  # the upload was not taken (its message names no record)
            raise CrmError(f"Salesforce refused the upload for {self.objects[kind]}: {err}") from None
        except requests.RequestException as err:
            raise CrmError(f"Salesforce at {self.url} could not be reached: {type(err).__name__}") from None

    def _run_job(self, bulk: Any, external: str, data: str) -> tuple[str, str]:
        """Create, upload, close and wait for one upsert job; its id and final state."""
        client = bulk._client
        job = client.create_job(Operation.upsert, external_id_field=external)
        job_id = str(job["id"])
        try:
            client.upload_job_data(job_id, data)
            client.close_job(job_id)
        except Exception:
            with contextlib.suppress(Exception):  # never leave an open job behind; the first error is the one to tell
                client.abort_job(job_id, False)
            raise
        wait, deadline = POLL_SECONDS[0], time.monotonic() + JOB_TIMEOUT_S
        while True:
            info = client.get_job(job_id, False)
            if info["state"] in _DONE:
                return job_id, str(info["state"]) + (f" ({info['errorMessage']})" if info.get("errorMessage") else "")
            if time.monotonic() > deadline:
                raise CrmError(f"Salesforce job {job_id} still {info['state']} after {JOB_TIMEOUT_S:.0f} s")
            time.sleep(wait)
            wait = min(wait * 2, POLL_SECONDS[1])


def _csv(records: Sequence[Record], kind: str, names: Mapping[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(kind, names), lineterminator="\n")
    writer.writeheader()
    writer.writerows(renamed(r, names, empty=SALESFORCE_NULL) for r in records)
    return out.getvalue()


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text))) if text.strip() else []


def _results(bulk: Any, job_id: str, state: str, external: str, keys: Sequence[str]) -> Sent:
    """The job's successful, failed and unprocessed records, by key."""
    sent = set(keys)
    done = [r[external] for r in _rows(bulk.get_successful_records(job_id)) if r.get(external) in sent]
    failed = {
        r[external]: r.get("sf__Error") or "failed"
        for r in _rows(bulk.get_failed_records(job_id))
        if r.get(external) in sent
    }
    for r in _rows(bulk.get_unprocessed_records(job_id)):
        if r.get(external) in sent:
            failed[r[external]] = f"unprocessed: job {job_id} ended {state}"
    acknowledged = set(done)
    for key in keys:
        if key not in acknowledged and key not in failed:
            failed[key] = f"no result for this record in job {job_id} (ended {state})"
    return Sent(acknowledged=done, failed=failed)


def _refusal(err: SalesforceError, object_name: str) -> str:
    items: list[Any] = err.content if isinstance(err.content, list) else []
    said = "; ".join(
        f"{item.get('errorCode', '')}: {item.get('message', '')}".strip(": ")
        for item in items
        if isinstance(item, dict)
    )
    if err.status == 401:
        return f"Salesforce refused the token (401): check ADVOCACY_SALESFORCE_TOKEN. {said}".strip()
    return f"Salesforce refused a Bulk API 2.0 job for {object_name} ({err.status}): {said or 'no detail given'}"


__all__ = ["API_VERSION", "BATCH_LIMIT", "SalesforceSink", "TimeoutSession"]
