"""HubSpot through its official client (`hubspot-api-client`): batch upsert of custom objects.

`POST /crm/v3/objects/{objectType}/batch/upsert` with at most 100 inputs, each addressed by the
value of a property with unique values (`idProperty`: `customer_id` on the Advocate Profile,
`ask_id` on the Advocacy Activity), so sending a record twice updates it and never makes a second.
The answer is 200 (all written) or 207 (some refused: `errors` says which and why); every input
carries its key as `objectWriteTraceId` as well, so results and errors map back to it.

Rate limits: a 429 is retried by the client's urllib3 `Retry` after the `Retry-After` header's
seconds, or, where HubSpot sends none, after its `X-HubSpot-RateLimit-Interval-Milliseconds`
window; gateway hiccups (502-504) are retried with backoff. The upsert is idempotent, so a retried
POST cannot duplicate anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import urllib3
from hubspot import HubSpot
from hubspot.crm.objects import (
    ApiException,
    BatchInputSimplePublicObjectBatchInputUpsert,
    SimplePublicObjectBatchInputUpsert,
)
from urllib3.util.retry import Retry

from crm.fields import fingerprint, renamed
from usecases.profiles import KEYS
from usecases.sync import CrmError, Record, Sent

BATCH_LIMIT = 100  # HubSpot's most inputs per batch request
TIMEOUT = (10.0, 120.0)  # seconds to connect, to read an answer
DEFAULT_URL = "https://api.hubapi.com"


class HubSpotRetry(Retry):
    """urllib3's `Retry`, waiting as HubSpot's 429 headers say: `Retry-After`, else the rate-limit window."""

    def get_retry_after(self, response: Any) -> float | None:
        after = super().get_retry_after(response)
        if after is not None:
            return after
        window = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
        try:
            return max(0.0, float(window) / 1000.0) if window else None
        except ValueError:
            return None


def default_retry() -> Retry:
    return HubSpotRetry(
        total=10,
        connect=3,
        read=2,
        status=8,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=None,  # POST too: an upsert may be repeated
        backoff_factor=0.5,
        backoff_max=30,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer is raised by the client as an ApiException
    )


class HubSpotSink:
    """Advocate Profiles and Advocacy Activities into HubSpot custom objects (`usecases.sync.Sink`)."""

    target = "hubspot"
    batch_size = BATCH_LIMIT

    def __init__(
        self,
        token: str,
        objects: Mapping[str, str],
        names: Mapping[str, str],
        url: str = DEFAULT_URL,
        retry: Retry | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.objects = dict(objects)  # kind -> object type id (e.g. 2-1234567)
        self.names = dict(names)  # our field -> HubSpot property
        client = HubSpot(access_token=token, host=self.url, retry=retry or default_retry())
        self._batches = client.crm.objects.batch_api

    def destination(self) -> str:
        objects = ",".join(f"{kind}={self.objects[kind]}" for kind in sorted(self.objects))
        return f"hubspot {self.url} {objects} fields {fingerprint(sorted(self.names.items()))}"

    def send(self, kind: str, records: Sequence[Record]) -> Sent:
        if len(records) > BATCH_LIMIT:
            raise ValueError(f"HubSpot takes at most {BATCH_LIMIT} records a batch, not {len(records)}")
        key = KEYS[kind]
        prop = self.names[key]
        inputs = [
            SimplePublicObjectBatchInputUpsert(
                id_property=prop,
                id=str(r[key]),
                object_write_trace_id=str(r[key]),
                properties=renamed(r, self.names),
            )
            for r in records
        ]
        body = BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs)
        try:
            # Raw JSON rather than the client's models: deserialising 100 result objects (dates and
            # all) cost more than the request on a local server, and only the keys are needed.
            answer = self._batches.upsert(self.objects[kind], body, _preload_content=False, _request_timeout=TIMEOUT)
            parsed = json.loads(answer.data or b"{}")
        except ApiException as err:
            raise CrmError(_refusal(err, self.objects[kind])) from None
        except urllib3.exceptions.HTTPError as err:
            raise CrmError(f"HubSpot at {self.url} could not be reached: {type(err).__name__}") from None
        except ValueError:
            raise CrmError(f"HubSpot at {self.url} answered something that is not JSON") from None
        return outcome(parsed, [str(r[key]) for r in records], prop)


def _message(body: Any) -> str:
    try:
        parsed = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return ""
    if not isinstance(parsed, dict):
        return ""
    kind = parsed.get("category") or parsed.get("errorType") or ""
    return f"{kind}: {parsed.get('message', '')}".strip(": ")


def _refusal(err: ApiException, object_type: str) -> str:
    said = _message(err.body) or str(err.reason or "")
    if err.status == 401:
        return f"HubSpot refused the token (401): check ADVOCACY_HUBSPOT_TOKEN. {said}".strip()
    if err.status == 403:
        scope = "the private app needs the crm.objects.custom.write scope"
        return f"HubSpot refused access to {object_type} (403): {scope}. {said}".strip()
    if err.status == 429:
        return f"HubSpot's rate limit held after every retry (429): run the sync again later. {said}".strip()
    return f"HubSpot refused a batch for {object_type} ({err.status}): {said}"


def outcome(answer: Mapping[str, Any], keys: Sequence[str], prop: str) -> Sent:
    """Which keys of a batch HubSpot wrote, and why it refused the others (a 207's `errors`)."""
    sent = set(keys)
    written: list[str] = []
    for result in answer.get("results") or []:
        key = result.get("objectWriteTraceId") or (result.get("properties") or {}).get(prop)
        if key in sent:
            written.append(str(key))
    done = set(written)
    failed: dict[str, str] = {}
    unplaced: list[str] = []
    for error in answer.get("errors") or []:
        text = f"{error.get('category', 'ERROR')}: {error.get('message', '')}".strip(": ")
        named = [str(v) for values in (error.get("context") or {}).values() for v in (values or []) if v in sent]
        for key in named:
            if key not in done:
                failed[key] = text
        if not named:
            unplaced.append(text)
    for key in keys:  # neither written nor named by an error: refused all the same
        if key not in done and key not in failed:
            failed[key] = "; ".join(unplaced) or "HubSpot returned no result for this record"
    return Sent(acknowledged=written, failed=failed)


__all__ = ["BATCH_LIMIT", "DEFAULT_URL", "HubSpotRetry", "HubSpotSink", "default_retry", "outcome"]
