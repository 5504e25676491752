"""Our record fields as each CRM names and spells them.

HubSpot properties are named as our fields (`advocacy_score`); Salesforce custom fields as their
API names (`Advocacy_Score__c`, keys `Customer_Id__c` and `Ask_Id__c`). A team whose objects use
other names says so in `ADVOCACY_HUBSPOT_FIELDS` / `ADVOCACY_SALESFORCE_FIELDS` as
`ours=theirs,ours=theirs`. Values travel as text: `true`/`false`, numbers without a needless `.0`,
dates `YYYY-MM-DD`, times ISO 8601 in UTC; an empty value clears the CRM's (HubSpot takes an empty
string, Salesforce's Bulk API `#N/A`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from usecases.profiles import FIELD_KINDS, FIELDS

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
SALESFORCE_NULL = "#N/A"  # Bulk API 2.0: set the field to null (an empty cell leaves it as it is)


def salesforce_name(field: str) -> str:
    """`advocacy_score` -> `Advocacy_Score__c`: the custom field's API name."""
    return "_".join(part.capitalize() for part in field.split("_")) + "__c"


def field_names(defaults: Mapping[str, str], overrides: str, setting: str) -> dict[str, str]:
    """Our field -> the CRM's, from the defaults and `ours=theirs,...` (a `ValueError` naming the setting)."""
    names = dict(defaults)
    for item in (part.strip() for part in overrides.split(",")):
        if not item:
            continue
        ours, sep, theirs = (s.strip() for s in item.partition("="))
        if not sep or ours not in names:
            known = ", ".join(sorted(names))
            raise ValueError(f"{setting}: {item!r} is not ours=theirs with one of our fields ({known})")
        if not _NAME.match(theirs):
            raise ValueError(f"{setting}: {theirs!r} is not a field name (letters, digits and _)")
        names[ours] = theirs
    taken = [n for n in names.values() if list(names.values()).count(n) > 1]
    if taken:
        raise ValueError(f"{setting}: two of our fields would be written to {taken[0]!r}")
    return names


def hubspot_names(overrides: str = "") -> dict[str, str]:
    return field_names({f: f for f in FIELD_KINDS}, overrides, "ADVOCACY_HUBSPOT_FIELDS")


def salesforce_names(overrides: str = "") -> dict[str, str]:
    return field_names({f: salesforce_name(f) for f in FIELD_KINDS}, overrides, "ADVOCACY_SALESFORCE_FIELDS")


def text(value: Any, empty: str = "") -> str:
    """One value as the CRMs read it (`empty` for none)."""
    if value is None:
        return empty
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def renamed(record: Mapping[str, Any], names: Mapping[str, str], empty: str = "") -> dict[str, str]:
    """A record under the CRM's field names, every value as text."""
    return {names[name]: text(value, empty) for name, value in record.items()}


def columns(kind: str, names: Mapping[str, str]) -> list[str]:
    """The CRM's names of one kind's fields, in our order (a CSV header)."""
    return [names[f] for f in FIELDS[kind]]


def fingerprint(*parts: object) -> str:
    """A short digest of what makes a destination (URL, objects, field names), for the sync state."""
    return hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).hexdigest()


__all__ = [
    "SALESFORCE_NULL",
    "columns",
    "field_names",
    "fingerprint",
    "hubspot_names",
    "renamed",
    "salesforce_name",
    "salesforce_names",
    "text",
]
