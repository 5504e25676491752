"""Data contracts for the seven raw tables (spec section 2), checked with pandera.

`validate_table` turns a raw frame (from CSV or Parquet) into the canonical typed frame, or
raises `DataContractError` naming the table, the column, the rule and a few offending rows.
Canonical types: ids and free text are `str`, timestamps are `datetime64[us, UTC]` (naive
input is read as UTC, aware input converted), counts are int64, `csat` is nullable Int64. Rules
across tables are `features.keys`';
the API reads its times with `read_timestamp` and caps its ids at `MAX_ID_LENGTH`, as the tables do.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.catalog import (
    ANSWERS,
    ASK_TYPE_NAMES,
    CLOSED_OUTCOMES,
    DEAL_OUTCOMES,
    DEALS,
    OUTCOMES,
    PRIORITIES,
    SEGMENTS,
    TABLES,
)

TIMESTAMP = "datetime64[us, UTC]"
YEARS = (1900, 2199)  # every timestamp the product reads or is sent falls in these years (inclusive)
# Data is about the past: a time later than the moment it reached us, by more than this much clock
# difference between machines, is a mistake (a wrong year, a unit, a time zone), not a plan.
CLOCK_SKEW = pd.Timedelta(minutes=5)
NAT_MICROS = np.iinfo(np.int64).min  # numpy's NaT as int64; never a real microsecond count
NEVER_MICROS = np.iinfo(np.int64).max  # later than every real microsecond count: a moment that never comes
DAY_MICROS = 86_400 * 1_000_000
MAX_ID_LENGTH = 200  # the longest id a table or a request may carry (the API's `Id` reads it)
_MAX_EXAMPLES = 5


# ---- the one UTC rule: naive input is read as UTC, aware input converted ----------------------
def as_utc(value: Any) -> pd.Timestamp:
    """A UTC timestamp from anything `pd.Timestamp` reads; naive values are read as UTC."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_micros(values: Any) -> np.ndarray:
    """Microseconds since the epoch (UTC) as int64, NaT as `NAT_MICROS`; naive values are read as UTC."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("us").asi8


def timestamp_micros(ts: pd.Timestamp) -> int:
    """Microseconds since the epoch of one UTC timestamp: `to_micros` of a scalar, without an array round trip."""
    return int(ts.value // 1_000)


def from_micros(micros: np.ndarray) -> pd.Series:
    """`TIMESTAMP` values from microseconds since the epoch (`NAT_MICROS` -> NaT); the inverse of `to_micros`."""
    return pd.Series(micros.astype("datetime64[us]")).dt.tz_localize("UTC").astype(TIMESTAMP)


class DataContractError(ValueError):
    """Raw input breaks the data contract; the message names table, column, rule and rows."""

    def __init__(self, table: str, problems: list[str]) -> None:
        self.table = table
        self.problems = problems
        super().__init__(f"table '{table}': " + "; ".join(problems))

    def __reduce__(self) -> tuple[type[DataContractError], tuple[str, list[str]]]:
        # Raised in a worker process (the batch job's, Dask's), it must cross back as itself.
        return (DataContractError, (self.table, self.problems))


@dataclass(frozen=True)
class TableContract:
    name: str
    schema: pa.DataFrameSchema
    strings: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()
    nullable_timestamps: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    # (column, rule, bad-row mask) checked across columns after parsing
    row_rules: tuple[tuple[str, str, Callable[[pd.DataFrame], pd.Series]], ...] = ()
    columns: tuple[str, ...] = field(default=())
    integers: tuple[str, ...] = field(default=())  # the columns of an integer type (see `_integer_problems`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.schema.columns))
        dtypes = {name: column.dtype for name, column in self.schema.columns.items()}
        ints = tuple(c for c, t in dtypes.items() if t is not None and pd.api.types.is_integer_dtype(str(t)))
        object.__setattr__(self, "integers", ints)

    def validate(self, raw: pd.DataFrame, received_at: pd.Timestamp | None = None) -> pd.DataFrame:
        """`validate_table` of this table."""
        return validate_table(self.name, raw, received_at)

    def dated_after(self, table: pd.DataFrame, moment: pd.Timestamp) -> pd.Series:
        """Rows of the canonical `table` with any time later than `moment` plus `CLOCK_SKEW`."""
        late = pd.Series(False, index=table.index)
        for col in (*self.timestamps, *self.nullable_timestamps):
            late |= (table[col] > moment + CLOCK_SKEW).fillna(False).astype(bool)
        return late

    def empty(self) -> pd.DataFrame:
        """`empty_table` of this table."""
        return empty_table(self.name)


def answer_known_at(asks: pd.DataFrame) -> pd.Series:
    """When each ask's outcome became known (spec section 3): its `responded_at` (the contract
    refuses an answer without one). The one coding of the rule: point-in-time features, guardrails
    and the service's context all read an ask's answer through it."""
    return asks["responded_at"]


def _first_of_month(s: pd.Series) -> pd.Series:
    return (s.dt.day == 1) & (s.dt.hour == 0) & (s.dt.minute == 0) & (s.dt.second == 0)


def _col(dtype: object, *checks: pa.Check, nullable: bool = False) -> pa.Column:
    return pa.Column(dtype, checks=list(checks), nullable=nullable, coerce=True)


def _ts(nullable: bool = False) -> pa.Column:
    # Timestamps are parsed before pandera sees them; this only checks nulls.
    return pa.Column(nullable=nullable)


def _text(nullable: bool = False) -> pa.Column:
    return pa.Column(nullable=nullable)


# Every id column (`*_id`): what the API's `Id` lets through, so that an id a table holds can be asked
# for: not empty, at most `MAX_ID_LENGTH` characters, no surrounding spaces (the API strips them).
_ID = [
    pa.Check.str_length(min_value=1),
    pa.Check(lambda s: s.str.len() <= MAX_ID_LENGTH, name=f"at most {MAX_ID_LENGTH} characters"),
    pa.Check(lambda s: s == s.str.strip(), name="no surrounding spaces"),
]
_UNIT = pa.Check.in_range(-1.0, 1.0)
_NON_NEG = pa.Check.ge(0)
# `ge(0)` lets +inf through; the API refuses non-finite numbers, and so does the contract.
_FINITE = pa.Check(lambda s: s.isna() | (s.abs() < np.inf), name="finite")

CONTRACTS: dict[str, TableContract] = {
    "customers": TableContract(
        "customers",
        pa.DataFrameSchema(
            {
                "customer_id": pa.Column(checks=_ID),
                "name": _text(nullable=True),
                "industry": _text(nullable=True),
                "segment": pa.Column(checks=[pa.Check.isin(SEGMENTS)]),
                "region": _text(nullable=True),
                "use_case": _text(nullable=True),
                "plan": _text(nullable=True),
                "contract_start": _ts(),
                "churned_at": _ts(nullable=True),
                "arr": _col("float64", _NON_NEG, _FINITE),
            }
        ),
        strings=(
            "customer_id",
            "name",
            "industry",
            "segment",
            "region",
            "use_case",
            "plan",
        ),
        timestamps=("contract_start",),
        nullable_timestamps=("churned_at",),
        unique=("customer_id",),
        row_rules=(("churned_at", "not before contract_start", lambda df: df["churned_at"] < df["contract_start"]),),
    ),
    "usage": TableContract(
        "usage",
        pa.DataFrameSchema(
            {
                "customer_id": pa.Column(checks=_ID),
                "month": pa.Column(
                    checks=[pa.Check(_first_of_month, name="first_day_of_month", error="first_day_of_month")]
                ),
                "licensed_seats": _col("int64", _NON_NEG),
                "active_users": _col("int64", _NON_NEG),
                "feature_adoption": _col("float64", pa.Check.in_range(0.0, 1.0)),
                "logins": _col("int64", _NON_NEG),
                "health_score": _col("float64", pa.Check.in_range(0.0, 100.0)),
            },
            unique=["customer_id", "month"],
        ),
        strings=("customer_id",),
        timestamps=("month",),
    ),
    "nps": TableContract(
        "nps",
        pa.DataFrameSchema(
            {
                "customer_id": pa.Column(checks=_ID),
                "responded_at": _ts(),
                "score": _col("int64", pa.Check.in_range(0, 10)),
            }
        ),
        strings=("customer_id",),
        timestamps=("responded_at",),
    ),
    "tickets": TableContract(
        "tickets",
        pa.DataFrameSchema(
            {
                "customer_id": pa.Column(checks=_ID),
                "opened_at": _ts(),
                "priority": pa.Column(checks=[pa.Check.isin(PRIORITIES)]),
                "sentiment": _col("float64", _UNIT),
                "csat": _col("Int64", pa.Check.in_range(1, 5), nullable=True),
            }
        ),
        strings=("customer_id", "priority"),
        timestamps=("opened_at",),
    ),
    "social": TableContract(
        "social",
        pa.DataFrameSchema(
            {
                "customer_id": pa.Column(checks=_ID),
                "mentioned_at": _ts(),
                "sentiment": _col("float64", _UNIT),
                "channel": _text(nullable=True),
            }
        ),
        strings=("customer_id", "channel"),
        timestamps=("mentioned_at",),
    ),
    "asks": TableContract(
        "asks",
        pa.DataFrameSchema(
            {
                "ask_id": pa.Column(checks=_ID),
                "customer_id": pa.Column(checks=_ID),
                "ask_type": pa.Column(checks=[pa.Check.isin(ASK_TYPE_NAMES)]),
                "asked_at": _ts(),
                "outcome": pa.Column(checks=[pa.Check.isin(OUTCOMES)]),
                "responded_at": _ts(nullable=True),
            },
        ),
        strings=("ask_id", "customer_id", "ask_type", "outcome"),
        timestamps=("asked_at",),
        nullable_timestamps=("responded_at",),
        unique=("ask_id",),
        row_rules=(
            ("responded_at", "not before asked_at", lambda df: df["responded_at"] < df["asked_at"]),
            # The answer's time is unknown: using the answer at all would leak it (spec section 3).
            (
                "responded_at",
                "given when the outcome is accepted or declined",
                lambda df: df["outcome"].isin(ANSWERS) & df["responded_at"].isna(),
            ),
        ),
    ),
    "activities": TableContract(
        "activities",
        pa.DataFrameSchema(
            {
                "activity_id": pa.Column(checks=_ID),
                "customer_id": pa.Column(checks=_ID),
                "activity_type": pa.Column(checks=[pa.Check.isin(ASK_TYPE_NAMES)]),
                "occurred_at": _ts(),
                "ask_id": pa.Column(checks=_ID, nullable=True),
            }
        ),
        strings=("activity_id", "customer_id", "activity_type", "ask_id"),
        timestamps=("occurred_at",),
        unique=("activity_id",),
    ),
    DEALS: TableContract(
        DEALS,
        pa.DataFrameSchema(
            {
                "opportunity_id": pa.Column(checks=_ID),
                "account": _text(nullable=True),
                "industry": _text(nullable=True),
                "segment": pa.Column(checks=[pa.Check.isin(SEGMENTS)]),
                "region": _text(nullable=True),
                "use_case": _text(nullable=True),
                "amount": _col("float64", _NON_NEG, _FINITE),
                "created_at": _ts(),
                "outcome": pa.Column(checks=[pa.Check.isin(DEAL_OUTCOMES)]),
                "closed_at": _ts(nullable=True),
            }
        ),
        strings=("opportunity_id", "account", "industry", "segment", "region", "use_case", "outcome"),
        timestamps=("created_at",),
        nullable_timestamps=("closed_at",),
        unique=("opportunity_id",),
        row_rules=(
            (
                "closed_at",
                "given when the outcome is won or lost",
                lambda df: df["outcome"].isin(CLOSED_OUTCOMES) & df["closed_at"].isna(),
            ),
            (
                "closed_at",
                "empty while the outcome is open",
                lambda df: (df["outcome"] == "open") & df["closed_at"].notna(),
            ),
            ("closed_at", "not before created_at", lambda df: df["closed_at"] < df["created_at"]),
        ),
    ),
}
assert tuple(CONTRACTS) == (*TABLES, DEALS)


def _examples(rows: pd.Series, values: pd.Series) -> str:
    pairs = [f"row {r} ({v!r})" for r, v in zip(rows[:_MAX_EXAMPLES], values[:_MAX_EXAMPLES], strict=False)]
    more = f" and {len(rows) - _MAX_EXAMPLES} more" if len(rows) > _MAX_EXAMPLES else ""
    return ", ".join(pairs) + more


def rule_problem(name: str, rule: str, s: pd.Series, bad: pd.Series) -> str:
    return (
        f"column '{name}': rule '{rule}' failed for {int(bad.sum())} rows, "
        f"e.g. {_examples(s.index[bad].to_series(), s[bad])}"
    )


def _timestamps(s: pd.Series, nullable: bool) -> tuple[pd.Series, list[tuple[str, pd.Series]]]:
    """Timestamps as the contract reads them, and the (rule, bad rows) that failed: typed ones as they
    are, text only as ISO 8601 (never guessed row by row: `12/02/2016` is refused, not read day- or
    month-first), numbers and booleans never (epoch seconds would read as 1970), blank text as
    missing, and every value in the years `YEARS`."""
    failed: list[tuple[str, pd.Series]] = []
    missing = s.isna()
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        parsed = s.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(s.dtype):
        parsed = s.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        failed.append(("ISO 8601 timestamp, not a number", s.notna()))
        parsed = pd.Series(pd.NaT, index=s.index, dtype=TIMESTAMP)
    else:
        parsed = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
        missing |= s.astype("str").str.strip() == ""
        failed.append(("ISO 8601 timestamp", parsed.isna() & ~missing))
    years = parsed.dt.year
    outside = parsed.notna() & ((years < YEARS[0]) | (years > YEARS[1]))
    failed.append((f"year {YEARS[0]} to {YEARS[1]}", outside))
    if not nullable:
        failed.append(("not null", missing))
    bad = [(rule, rows.fillna(False).astype(bool)) for rule, rows in failed]
    return parsed.where(~outside).astype(TIMESTAMP), [(rule, rows) for rule, rows in bad if rows.any()]


def _parse_timestamps(name: str, s: pd.Series, nullable: bool, problems: list[str]) -> pd.Series:
    """`_timestamps` of column `name`, its failed rules added to `problems`."""
    parsed, failed = _timestamps(s, nullable)
    problems.extend(rule_problem(name, rule, s, bad) for rule, bad in failed)
    return parsed


def read_timestamp(name: str, value: Any) -> pd.Timestamp:
    """One timestamp (a request's `name`) read by the tables' rule (`_parse_timestamps`): ISO 8601 text
    (naive read as UTC) or a typed time, never a number; a `ValueError` in the contract's words."""
    if value is not None and not isinstance(value, str | datetime | int | float | np.number | np.bool_):
        raise ValueError(f"column '{name}': rule 'ISO 8601 timestamp' failed ({value!r})")
    parsed, failed = _timestamps(pd.Series([value]), nullable=False)
    if failed:
        raise ValueError("; ".join(f"column '{name}': rule '{rule}' failed ({value!r})" for rule, _ in failed))
    return pd.Timestamp(parsed.iloc[0])


def _integer_problems(name: str, s: pd.Series) -> list[str]:
    """An integer column holds whole numbers: coercion would read 7.5 as 7 and True as 1, so both are
    refused here, before it."""
    if pd.api.types.is_integer_dtype(s.dtype):
        return []
    if pd.api.types.is_bool_dtype(s.dtype):
        flags = s.notna()
    elif s.dtype == object:
        flags = s.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)
    else:
        flags = pd.Series(False, index=s.index)
    numbers = pd.to_numeric(s.where(~flags), errors="coerce")
    fraction = (numbers.notna() & np.isfinite(numbers) & (numbers % 1 != 0)).astype(bool)
    rules = (("integer, not a boolean", flags), ("integer, not a fraction", fraction))
    return [rule_problem(name, rule, s, bad) for rule, bad in rules if bad.any()]


def as_text(s: pd.Series) -> pd.Series:
    out = s.astype("str")
    # Empty strings from CSV are missing values, as they would be in Parquet.
    return out.where(out.str.len() > 0, np.nan)


def validate_table(
    name: str, raw: pd.DataFrame, received_at: pd.Timestamp | None = None, *, keys: bool = True
) -> pd.DataFrame:
    """Return the table in canonical types, or raise `DataContractError`.

    With `received_at` (when the rows arrived: the API's clock), no time may be later than that
    plus `CLOCK_SKEW`. `keys=False` leaves out the rules over several rows (unique ids, one usage
    row per customer and month), for a caller that reads the table in parts and checks those across
    the whole table itself (the batch job's split).
    """
    contract = CONTRACTS[name]
    missing = [c for c in contract.columns if c not in raw.columns]
    if missing:
        raise DataContractError(
            name,
            [f"column '{c}': rule 'required column' failed (missing)" for c in missing],
        )
    df = raw.loc[:, list(contract.columns)].reset_index(drop=True).copy()
    problems: list[str] = []
    for col in contract.strings:
        df[col] = as_text(df[col])
    for col in contract.timestamps:
        df[col] = _parse_timestamps(col, df[col], nullable=False, problems=problems)
    for col in contract.nullable_timestamps:
        df[col] = _parse_timestamps(col, df[col], nullable=True, problems=problems)
    for col in contract.integers:
        problems.extend(_integer_problems(col, df[col]))
    if received_at is not None and not problems:
        limit = received_at + CLOCK_SKEW
        for col in (*contract.timestamps, *contract.nullable_timestamps):
            late = (df[col] > limit).fillna(False).astype(bool)
            if late.any():
                rule = (
                    f"not in the future (at most {limit:%Y-%m-%d %H:%M} UTC, now plus "
                    f"{CLOCK_SKEW.seconds // 60} minutes of clock skew)"
                )
                problems.append(rule_problem(col, rule, df[col].astype(str), late))
    for col in contract.unique if keys else ():
        dup = df[col].duplicated(keep=False) & df[col].notna()
        if dup.any():
            problems.append(rule_problem(col, "unique", df[col], dup))
    if not problems:
        for col, rule, bad_rows in contract.row_rules:
            bad = bad_rows(df).fillna(False).astype(bool)
            if bad.any():
                problems.append(rule_problem(col, rule, df[col], bad))
    if problems:
        raise DataContractError(name, problems)
    try:
        df = (contract.schema if keys else _without_keys(name)).validate(df, lazy=True)
    except SchemaErrors as err:
        raise DataContractError(name, _describe(err.failure_cases)) from None
    return df


@functools.cache
def _without_keys(name: str) -> pa.DataFrameSchema:
    """The table's schema less its rule over several rows (`unique`)."""
    schema = copy.deepcopy(CONTRACTS[name].schema)
    schema.unique = None
    return schema


def _describe(cases: pd.DataFrame) -> list[str]:
    problems = []
    cases = cases.copy()
    cases["column"] = cases["column"].fillna("<table>").astype("str")
    # A value that cannot be read as the column's type fails every later rule too: say it once.
    uncoercible = set(cases.loc[cases["check"].astype("str").str.startswith("coerce_dtype"), "column"])
    keep = ~cases["column"].isin(uncoercible) | cases["check"].astype("str").str.startswith("coerce_dtype")
    cases = cases[keep]
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        rule = str(check)
        rows = group["index"]
        if rows.isna().all():
            problems.append(f"column '{column}': rule '{rule}' failed ({', '.join(map(str, group['failure_case']))})")
            continue
        problems.append(
            f"column '{column}': rule '{rule}' failed for {len(group)} rows, "
            f"e.g. {_examples(rows.reset_index(drop=True), group['failure_case'].reset_index(drop=True))}"
        )
    return problems


def empty_table(name: str) -> pd.DataFrame:
    """A zero-row table with the canonical columns and types (for a missing optional table)."""
    contract = CONTRACTS[name]
    frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in contract.columns})
    for col in contract.timestamps + contract.nullable_timestamps:
        frame[col] = pd.Series([], dtype=TIMESTAMP)
    for col, column in contract.schema.columns.items():
        if column.dtype is not None and col not in contract.strings:
            frame[col] = frame[col].astype(str(column.dtype))
    return frame
