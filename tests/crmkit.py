"""Local CRM servers for tests: HubSpot's batch upsert and Salesforce's Bulk API 2.0, answered as the vendors document.

Real HTTP on 127.0.0.1 (pytest-httpserver), so the real clients (`hubspot-api-client` over urllib3,
`simple-salesforce` over requests) run every byte of their code; the Salesforce server speaks TLS
(simple-salesforce always calls https), with a throwaway CA from `trustme` that the test trusts.
Written from the vendors' public documentation (no vendor specification file is copied here):

- HubSpot `POST /crm/v3/objects/{objectType}/batch/upsert`, `{"inputs": [{"id", "idProperty",
  "properties", "objectWriteTraceId"}]}`: at most 100 inputs; `idProperty` must be a property with
  unique values, else 400 `VALIDATION_ERROR`; 200 when every input was written, 207 with `errors`
  and `numErrors` when some were refused; 429 with `Retry-After` over the rate limit.
- Salesforce `/services/data/vXX.X/jobs/ingest`: create (`upsert` on an external id field), `PUT
  .../batches` with the CSV (201), `PATCH` `UploadComplete`, then `InProgress` and `JobComplete` (or
  `Failed`, records past the failure unprocessed), with `successfulResults`, `failedResults` and
  `unprocessedrecords` as CSV; `#N/A` empties a field.

Knobs let a test make the server refuse records, rate-limit, or fail part-way, and the servers keep
what they were sent (`HubSpotServer.sent`, `SalesforceServer.jobs`) and what they hold (`records`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trustme
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

HUBSPOT_TOKEN = "pat-test-hubspot"
SALESFORCE_TOKEN = "00Dtest!salesforce"
PROFILE_OBJECT, ACTIVITY_OBJECT = "2-1001", "2-1002"  # HubSpot custom object type ids of the tests


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")


def _authorised(request: Request, token: str) -> bool:
    return request.headers.get("Authorization", "") == f"Bearer {token}"


@dataclass
class HubSpotObject:
    unique: tuple[str, ...]  # properties with unique values (hasUniqueValue)
    records: dict[str, dict[str, str]] = field(default_factory=dict)  # record id -> properties
    index: dict[tuple[str, str], str] = field(default_factory=dict)  # (unique property, value) -> record id


class HubSpotServer:
    """HubSpot's CRM objects batch upsert for custom objects, on 127.0.0.1."""

    def __init__(self, token: str = HUBSPOT_TOKEN) -> None:
        self.token = token
        self.objects = {PROFILE_OBJECT: HubSpotObject(("customer_id",)), ACTIVITY_OBJECT: HubSpotObject(("ask_id",))}
        self.sent: list[tuple[str, list[str]]] = []  # (object type, ids) of every batch written (200 or 207)
        self.answers: list[int] = []  # status of every upsert request, in order
        self.refuse: dict[str, str] = {}  # id -> why: refused in a 207
        self.limited = 0  # answer this many next requests 429
        self.retry_after = "1"
        self.fail_after: int | None = None  # after this many more written batches, answer 500
        self.stall_after: int | None = None  # after this many more written batches, write the next and stall
        self.release = threading.Event()  # ends a stall (the answer then goes to whoever still listens)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server = HTTPServer(host="127.0.0.1")
        self.server.expect_request(re.compile(r"^/.*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @contextmanager
    def running(self) -> Iterator[HubSpotServer]:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
        self.server.start()
        try:
            yield self
        finally:
            self.server.stop()

    def records(self, object_type: str = PROFILE_OBJECT) -> dict[str, dict[str, str]]:
        """The object's records by the value of its unique property."""
        obj = self.objects[object_type]
        return {props[obj.unique[0]]: props for props in obj.records.values()}

    def sent_ids(self, object_type: str = PROFILE_OBJECT) -> list[str]:
        return [i for kind, ids in self.sent if kind == object_type for i in ids]

    def _handle(self, request: Request) -> Response:
        with self._lock:
            response = self._answer(request)
            self.answers.append(response.status_code)
            return response

    def _answer(self, request: Request) -> Response:
        match = re.fullmatch(r"/crm/v3/objects/([^/]+)/batch/upsert", request.path)
        if request.method != "POST" or not match:
            return _json({"status": "error", "message": "Not found", "category": "OBJECT_NOT_FOUND"}, 404)
        if not _authorised(request, self.token):
            message = "Authentication credentials not found."
            return _json({"status": "error", "message": message, "category": "INVALID_AUTHENTICATION"}, 401)
        if self.limited > 0:
            self.limited -= 1
            headers = {
                "Retry-After": self.retry_after,
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "0",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            }
            body = {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
            }
            return _json(body, 429, headers)
        obj = self.objects.get(match.group(1))
        if obj is None:
            return self._invalid(f"Unable to infer object type from: {match.group(1)}")
        inputs = (request.get_json(silent=True) or {}).get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return self._invalid("inputs: must not be empty")
        if len(inputs) > 100:
            return self._invalid(f"Batch input limit exceeded: {len(inputs)} inputs, at most 100")
        for item in inputs:
            if item.get("idProperty") not in obj.unique:
                return self._invalid(
                    f"Unable to perform update/upsert by non-unique {match.group(1)} property {item.get('idProperty')}"
                )
        ids = [str(item["id"]) for item in inputs]
        if len(set(ids)) < len(ids):
            return self._invalid("Duplicate IDs found in batch input")
        if self.fail_after is not None:
            if self.fail_after <= 0:
                return _json({"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"}, 500)
            self.fail_after -= 1
        answer = self._upsert(match.group(1), obj, inputs)
        if self.stall_after is not None:
            if self.stall_after <= 0:
                self.release.wait(120)  # written, but the client hears nothing: killed now, it never knows
            self.stall_after -= 1
        return answer

    @staticmethod
    def _invalid(message: str) -> Response:
        return _json({"status": "error", "message": message, "category": "VALIDATION_ERROR"}, 400)

    def _upsert(self, object_type: str, obj: HubSpotObject, inputs: list[dict[str, Any]]) -> Response:
        started, results, errors = _now(), [], []
        for item in inputs:
            key = str(item["id"])
            if key in self.refuse:
                context = {"ids": [key]}
                errors.append(
                    {"status": "error", "category": "VALIDATION_ERROR", "message": self.refuse[key], "context": context}
                )
                continue
            prop = item["idProperty"]
            found = obj.index.get((prop, key))
            new = found is None
            rid = str(next(self._ids)) if found is None else found
            obj.index[(prop, key)] = rid
            stored = obj.records.setdefault(rid, {"hs_object_id": rid, "hs_createdate": started})
            stored.update({k: str(v) for k, v in (item.get("properties") or {}).items()})
            stored[prop] = key
            stored["hs_lastmodifieddate"] = started
            result = {"id": rid, "properties": dict(stored), "createdAt": stored["hs_createdate"], "updatedAt": started}
            results.append(
                result | {"archived": False, "new": new, "objectWriteTraceId": item.get("objectWriteTraceId")}
            )
        self.sent.append((object_type, [r["objectWriteTraceId"] for r in results]))
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now()}
        if errors:
            return _json(body | {"errors": errors, "numErrors": len(errors)}, 207)
        return _json(body)


@dataclass
class SalesforceJob:
    id: str
    object: str
    external: str
    state: str = "Open"
    data: str = ""
    looks: int = 0  # GETs of the job since it was closed (the first says InProgress)
    final: str = "JobComplete"
    error: str = ""
    successful: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    unprocessed: list[dict[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


class SalesforceServer:
    """Salesforce's Bulk API 2.0 ingest jobs (upsert on an external id field), over TLS on 127.0.0.1."""

    VERSION = "59.0"

    def __init__(self, folder: Path, token: str = SALESFORCE_TOKEN) -> None:
        self.token = token
        self.external = {"Advocate_Profile__c": "Customer_Id__c", "Advocacy_Activity__c": "Ask_Id__c"}
        self.stored: dict[str, dict[str, dict[str, str | None]]] = {name: {} for name in self.external}
        self.jobs: dict[str, SalesforceJob] = {}
        self.refuse: dict[str, str] = {}  # external id -> sf__Error
        self.stop_at: set[str] = set()  # processing of a job fails at these external ids: they and the rest unprocessed
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        ca = trustme.CA()
        self.ca_file = folder / "salesforce-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.server = HTTPServer(host="127.0.0.1", ssl_context=context)
        self.server.expect_request(re.compile(r"^/.*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    @contextmanager
    def running(self) -> Iterator[SalesforceServer]:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server.start()
        try:
            yield self
        finally:
            self.server.stop()

    def records(self, object_name: str = "Advocate_Profile__c") -> dict[str, dict[str, str | None]]:
        return self.stored[object_name]

    def _handle(self, request: Request) -> Response:
        with self._lock:
            if not _authorised(request, self.token):
                return _json([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}], 401)
            base = f"/services/data/v{self.VERSION}/jobs/ingest"
            rest = request.path.removeprefix(base).strip("/")
            if not request.path.startswith(base):
                return _json([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], 404)
            if not rest and request.method == "POST":
                return self._create(request)
            job_id, _, what = rest.partition("/")
            job = self.jobs.get(job_id)
            if job is None:
                return _json([{"errorCode": "NOT_FOUND", "message": f"no job {job_id}"}], 404)
            return self._job_request(request, job, what.lower())

    def _create(self, request: Request) -> Response:
        spec = request.get_json(silent=True) or {}
        name, external = spec.get("object"), spec.get("externalIdFieldName")
        if name not in self.external:
            return _json([{"errorCode": "INVALIDJOB", "message": f"Unable to find object: {name}"}], 400)
        if spec.get("operation") != "upsert" or spec.get("contentType") != "CSV":
            return _json([{"errorCode": "INVALIDJOB", "message": "only CSV upsert jobs here"}], 400)
        if external != self.external[name]:
            message = f"The field {external} is not an External ID field of {name}"
            return _json([{"errorCode": "INVALIDJOB", "message": message}], 400)
        job = SalesforceJob(f"750T{next(self._ids):014d}", name, external)
        self.jobs[job.id] = job
        return _json(self._info(job))

    def _info(self, job: SalesforceJob) -> dict[str, Any]:
        info = {
            "id": job.id,
            "operation": "upsert",
            "object": job.object,
            "externalIdFieldName": job.external,
            "state": job.state,
            "contentType": "CSV",
            "apiVersion": float(self.VERSION),
            "contentUrl": f"services/data/v{self.VERSION}/jobs/ingest/{job.id}/batches",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
            "numberRecordsProcessed": len(job.successful) + len(job.failed),
            "numberRecordsFailed": len(job.failed),
        }
        return info | ({"errorMessage": job.error} if job.error and job.state == "Failed" else {})

    def _job_request(self, request: Request, job: SalesforceJob, what: str) -> Response:
        if what == "batches" and request.method == "PUT":
            if job.state != "Open":
                return _json([{"errorCode": "INVALIDJOB", "message": f"job is {job.state}"}], 409)
            job.data += request.get_data(as_text=True)
            return Response(status=201)
        if not what and request.method == "PATCH":
            state = (request.get_json(silent=True) or {}).get("state")
            if state == "UploadComplete" and job.state == "Open":
                self._process(job)
                job.state = "UploadComplete"
            elif state == "Aborted":
                job.state = "Aborted"
            return _json(self._info(job))
        if not what and request.method == "GET":
            if job.state in ("UploadComplete", "InProgress"):
                job.looks += 1
                job.state = "InProgress" if job.looks == 1 else job.final
            return _json(self._info(job))
        results = {
            "successfulresults": ("sf__Id", "sf__Created"),
            "failedresults": ("sf__Id", "sf__Error"),
            "unprocessedrecords": (),
        }
        if what in results and request.method == "GET":
            rows = {
                "successfulresults": job.successful,
                "failedresults": job.failed,
                "unprocessedrecords": job.unprocessed,
            }
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=[*results[what], *job.columns], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows[what])
            return Response(out.getvalue(), content_type="text/csv")
        return _json([{"errorCode": "NOT_FOUND", "message": f"{request.method} {request.path}"}], 404)

    def _process(self, job: SalesforceJob) -> None:
        reader = csv.DictReader(io.StringIO(job.data))
        job.columns = list(reader.fieldnames or [])
        if job.external not in job.columns:
            job.final, job.error = "Failed", f"InvalidBatch : Field name not found : {job.external}"
            job.unprocessed = list(reader)
            return
        stopped = False
        for row in reader:
            key = row[job.external]
            if stopped or key in self.stop_at:
                stopped = True
                job.unprocessed.append(row)
                continue
            if key in self.refuse:
                job.failed.append({"sf__Id": "", "sf__Error": self.refuse[key], **row})
                continue
            kept = self.stored[job.object]
            created = key not in kept
            record = kept.setdefault(key, {"Id": f"a0{next(self._ids):016d}"})
            record.update({k: (None if v == "#N/A" else v) for k, v in row.items() if v != ""})
            job.successful.append({"sf__Id": str(record["Id"]), "sf__Created": str(created).lower(), **row})
        if stopped:
            job.final, job.error = "Failed", "InternalServerError : processing stopped"
