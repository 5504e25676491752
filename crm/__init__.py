"""The CRM adapters (spec section 10): HubSpot and Salesforce behind the sync's `usecases.sync.Sink`.

A door-level concern like the service and the command line: the use case (`usecases.sync`) decides
what to send and keeps the sync state; these modules only speak each vendor's API through its
client library (`crm.hubspot`, `crm.salesforce`) or write its import file (`crm.files`).
Credentials come from the settings, which read them from the environment, and are never logged.
"""

from __future__ import annotations

from pathlib import Path

from crm.fields import hubspot_names, salesforce_names
from crm.files import write_import_files
from crm.hubspot import HubSpotSink
from crm.salesforce import SalesforceSink
from storage.settings import Settings
from storage.syncstate import SyncState
from usecases.profiles import ACTIVITIES, PROFILES
from usecases.sync import Sink

TARGETS = ("hubspot", "salesforce")


def check_target(target: str) -> str:
    """`target` if it is a CRM we sync to, else a `ValueError` naming the choices."""
    if target not in TARGETS:
        raise ValueError(f"unknown CRM {target!r}: sync to hubspot or salesforce")
    return target


def field_names(settings: Settings, target: str) -> dict[str, str]:
    """Our field -> the target's name for it, from the defaults and the settings' renames."""
    check_target(target)
    if target == "hubspot":
        return hubspot_names(settings.hubspot_fields)
    return salesforce_names(settings.salesforce_fields)


def _required(value: str | None, variable: str, what: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{variable} is not set: {what}")
    return value.strip()


def _token(secret: str | None, needed: bool, variable: str, what: str) -> str:
    if secret:
        return secret
    if not needed:
        return "unset"  # a dry run: nothing is sent, so nothing is authenticated
    raise ValueError(f"{variable} is not set: {what} (from the environment, never from a file in the repo)")


def connect(settings: Settings, target: str, *, token_needed: bool = True) -> Sink:
    """The sink for `target` from the settings; a `ValueError` naming the first setting missing.

    Without `token_needed` (a dry run), a missing token is no error: nothing will be sent."""
    names = field_names(settings, target)
    if target == "hubspot":
        secret = settings.hubspot_token.get_secret_value() if settings.hubspot_token else None
        objects = {
            PROFILES: _required(
                settings.hubspot_profile_object,
                "ADVOCACY_HUBSPOT_PROFILE_OBJECT",
                "the object type id of the Advocate Profile custom object (e.g. 2-1234567)",
            ),
            ACTIVITIES: _required(
                settings.hubspot_activity_object,
                "ADVOCACY_HUBSPOT_ACTIVITY_OBJECT",
                "the object type id of the Advocacy Activity custom object (e.g. 2-7654321)",
            ),
        }
        token = _token(secret, token_needed, "ADVOCACY_HUBSPOT_TOKEN", "the access token of a HubSpot private app")
        return HubSpotSink(token, objects, names, url=settings.hubspot_url)
    secret = settings.salesforce_token.get_secret_value() if settings.salesforce_token else None
    url = _required(settings.salesforce_url, "ADVOCACY_SALESFORCE_URL", "the org's instance URL")
    objects = {PROFILES: settings.salesforce_profile_object, ACTIVITIES: settings.salesforce_activity_object}
    token = _token(secret, token_needed, "ADVOCACY_SALESFORCE_TOKEN", "an OAuth access token for the org")
    return SalesforceSink(token, url, objects, names)


def sync_state(settings: Settings, target: str) -> SyncState:
    """Where the sync state of `target` is kept: `.advocacy/sync/<target>.json`."""
    return SyncState(Path(settings.state_dir()) / "sync", check_target(target))


__all__ = [
    "TARGETS",
    "HubSpotSink",
    "SalesforceSink",
    "check_target",
    "connect",
    "field_names",
    "sync_state",
    "write_import_files",
]
