"""Worlds of raw tables (spec section 2): validated in memory, or read from a data directory.

A data directory holds one file per table, `NAME.parquet` or `NAME.csv`. Tables are validated
(see `features.contracts`) and foreign keys checked before anything is returned, so callers
never see half-valid data. Writing tables is `storage.files`' job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.catalog import DEALS, REQUIRED_TABLES, TABLES
from features.contracts import (
    CONTRACTS,
    DataContractError,
    empty_table,
    validate_table,
)
from features.deals import (
    REFERRED_BY,
    ask_deal_links,
    check_deal_keys,
    empty_deal_links,
    empty_opportunities,
    validate_opportunities,
)
from features.keys import check_foreign_keys, is_in
from features.plan_links import ask_links, ask_plan_links, empty_plan_links

# Optional id columns a table may carry beyond its contract's (spec 2), read as text like its ids.
OPTIONAL_IDS: dict[str, tuple[str, ...]] = {"asks": ("plan_id", "opportunity_id"), DEALS: (REFERRED_BY,)}
# An ask's customer, type and time are what it is; only its answer may change later (spec section 7).
FIXED_ASK_FIELDS = ("customer_id", "ask_type", "asked_at")


@dataclass(frozen=True)
class World:
    """The seven validated raw tables of one customer base.

    `data_end` is the end of the observed period when it was fixed before asks recorded through the
    API were merged in (`with_logged_asks`): the log is always ahead of the data export, so its
    asks must not move the period the data tables cover (`features.labels.observed_until`).
    `plan_links` are the asks table's (`ask_id`, `plan_id`): the campaign each ask was made for,
    where the table says (its optional `plan_id` column). `opportunities` are the deals of prospects
    (spec 9; with their optional `referred_by`) and `deal_links` the asks table's (`ask_id`,
    `opportunity_id`): the deal each ask was made for."""

    customers: pd.DataFrame
    usage: pd.DataFrame
    nps: pd.DataFrame
    tickets: pd.DataFrame
    social: pd.DataFrame
    asks: pd.DataFrame
    activities: pd.DataFrame
    data_end: pd.Timestamp | None = field(default=None, compare=False)
    plan_links: pd.DataFrame = field(default_factory=empty_plan_links, compare=False)
    opportunities: pd.DataFrame = field(default_factory=empty_opportunities, compare=False)
    deal_links: pd.DataFrame = field(default_factory=empty_deal_links, compare=False)

    def table(self, name: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, name)
        return frame

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {name: self.table(name) for name in TABLES}

    def with_logged_asks(self, logged: pd.DataFrame, data_end: pd.Timestamp | None = None) -> tuple[World, int]:
        """A copy whose asks also hold the ask log's (`merge_asks`), and how many logged asks were
        left out because the data holds no such customer. `data_end` (the data tables' end, which
        the caller computes before merging) is kept with the copy."""
        known = is_in(logged["customer_id"], self.customers["customer_id"]).to_numpy()
        asks = merge_asks(self.asks, logged[known]) if known.any() else self.asks
        end = self.data_end if data_end is None else data_end
        copy = World(**{**self.as_dict(), "asks": asks}, data_end=end, **self.links())
        return copy, int((~known).sum())

    def links(self) -> dict[str, pd.DataFrame]:
        """What a copy of the world with other tables keeps as it is: the asks' plans and deals, and the deals."""
        return {"plan_links": self.plan_links, "opportunities": self.opportunities, "deal_links": self.deal_links}


def table_answer_later(table: pd.Series, logged: pd.Series) -> np.ndarray:
    """Per pair of versions of one ask (`responded_at` in the table, in the log): whether the table's
    answer is the one that counts (answered over unanswered, then the later; the log's on a tie)."""
    mine, other = table.reset_index(drop=True), logged.reset_index(drop=True)
    return np.asarray((mine.notna() & (other.isna() | (mine > other))).to_numpy(), dtype=bool)


def merge_asks(table: pd.DataFrame, logged: pd.DataFrame) -> pd.DataFrame:
    """The asks of the data table and of the ask log as one table: one row per `ask_id` (spec 7).

    An ask in both is one ask: the later answer wins (an answered version over an unanswered one,
    then the later `responded_at`; the log's on a tie, as it was recorded last), and its fixed
    fields (`FIXED_ASK_FIELDS`) must agree, or the `DataContractError` names the `ask_id`. Rows keep
    the table's order, then the log's."""
    columns = list(table.columns)
    logged = logged.loc[:, columns]
    if logged.empty:
        return table
    ids = table["ask_id"].astype("str")
    log_ids = logged["ask_id"].astype("str")
    in_both = is_in(log_ids, ids).to_numpy()
    if not in_both.any():
        return pd.concat([table, logged], ignore_index=True)
    ours = table.set_index(ids).loc[log_ids[in_both].to_numpy()]
    theirs = logged[in_both].set_index(log_ids[in_both].to_numpy())
    for name in FIXED_ASK_FIELDS:
        differ = (ours[name].astype("object") != theirs[name].astype("object")).to_numpy()
        if differ.any():
            ask_id = str(ours.index[differ][0])
            raise DataContractError(
                "asks",
                [
                    f"ask_id {ask_id!r}: {name} is {ours[name].iloc[differ.argmax()]} in the asks table but "
                    f"{theirs[name].iloc[differ.argmax()]} in the ask log (an ask's {', '.join(FIXED_ASK_FIELDS)} "
                    f"are fixed; only its answer may change) ({int(differ.sum())} such asks)"
                ],
            )
    table_later = table_answer_later(ours["responded_at"], theirs["responded_at"])
    beaten = set(ours.index[~table_later])  # the log's version replaces the table's
    stale = set(theirs.index[table_later])  # the table's answer is the later one
    keep_log = ~log_ids.isin(stale).to_numpy()
    return pd.concat([table[~ids.isin(beaten).to_numpy()], logged[keep_log]], ignore_index=True)


def unreadable(name: str, path: Path, err: Exception) -> DataContractError:
    """The error for a table file that is there but cannot be read (truncated, not Parquet, not text)."""
    return DataContractError(name, [f"cannot read {path.name}: {err}"])


def check_required_rows(name: str, rows: int) -> None:
    """A required table (`REQUIRED_TABLES`) with no rows is an error, as a missing one is.

    With no customers there is nothing to score; with no usage every customer would be a cold start
    and no period observed: far more often an export that failed than a business with no usage.
    """
    if name in REQUIRED_TABLES and rows == 0:
        raise DataContractError(name, ["rule 'at least one row' failed: the table is empty (a required table)"])


def world_from_tables(raw: Mapping[str, pd.DataFrame]) -> World:
    """Validate in-memory raw tables into a `World` (missing optional tables are empty)."""
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        if name in raw:
            tables[name] = validate_table(name, raw[name])
            check_required_rows(name, len(tables[name]))
        elif name in REQUIRED_TABLES:
            raise DataContractError(name, ["required table is missing"])
        else:
            tables[name] = empty_table(name)
    check_foreign_keys(tables)
    links = ask_plan_links(raw["asks"]) if "asks" in raw else empty_plan_links()
    deals = validate_opportunities(raw[DEALS]) if DEALS in raw else empty_opportunities()
    deal_links = ask_deal_links(raw["asks"]) if "asks" in raw else empty_deal_links()
    check_deal_keys(deals, deal_links, tables["customers"])
    return World(**tables, plan_links=links, opportunities=deals, deal_links=deal_links)


def table_files(data_dir: Path, names: tuple[str, ...] = TABLES) -> dict[str, Path]:
    """The file of each table present in `data_dir`, `NAME.parquet` or `NAME.csv`; a
    `DataContractError` if a required table has neither, if a table has both (one would be silently
    ignored), or if a table's file is there but cannot be read (a broken link, a folder, a name in
    other letter case): never silently taken as absent. Every reader (`read_world`, the batch job)
    finds its files here; `names` are the tables looked for (the deals too, for `read_world`)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    entries = {entry.name: entry for entry in data_dir.iterdir()}
    found: dict[str, Path] = {}
    for name in names:
        both = [f"{name}{suffix}" for suffix in (".parquet", ".csv") if f"{name}{suffix}" in entries]
        if len(both) > 1:
            raise DataContractError(name, [f"rule 'one file per table' failed: found both {both[0]} and {both[1]}"])
        for suffix in (".parquet", ".csv"):
            path = entries.get(f"{name}{suffix}")
            if path is not None:
                if not path.is_file():
                    what = "a folder" if path.is_dir() else "a link to nothing readable"
                    raise DataContractError(name, [f"cannot read {path.name}: it is {what}, not a file"])
                found[name] = path
                break
        else:
            misspelt = sorted(e for e in entries if e.lower() in (f"{name}.parquet", f"{name}.csv"))
            if misspelt:
                raise DataContractError(
                    name, [f"found {misspelt[0]}: table files are named {name}.parquet or {name}.csv"]
                )
    for name in REQUIRED_TABLES:
        if name not in found:
            raise DataContractError(name, ["required table is missing"])
    return found


def _read_raw(path: Path, name: str) -> pd.DataFrame:
    contract = CONTRACTS[name]
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        # Ids and text stay text: "007" must not become 7.
        text_cols = {c: "str" for c in (*contract.strings, *OPTIONAL_IDS.get(name, ()))}
        return pd.read_csv(path, dtype=text_cols, keep_default_na=True)
    except (OSError, ValueError) as err:
        raise unreadable(name, path, err) from None


def _read_columns(path: Path, name: str, columns: list[str]) -> pd.DataFrame | None:
    """Only `columns` of table `name`'s file at `path` (a CSV's as text); None when it lacks one."""
    try:
        if path.suffix == ".parquet":
            found = pq.read_schema(path).names
            return pd.read_parquet(path, columns=columns) if set(columns) <= set(found) else None
        found = pd.read_csv(path, nrows=0).columns
        wanted = dict.fromkeys(columns, "str")
        return pd.read_csv(path, usecols=columns, dtype=wanted) if set(columns) <= set(found) else None
    except (OSError, ValueError) as err:
        raise unreadable(name, path, err) from None


def read_ask_links(path: Path | None, column: str) -> pd.DataFrame:
    """`ask_links` of the asks table file at `path` (None: no asks table) for the optional id
    `column` (`plan_id`, `opportunity_id`), reading only it and `ask_id`: for a reader that splits
    the table without them (the batch job)."""
    raw = None if path is None else _read_columns(path, "asks", ["ask_id", column])
    return ask_links(pd.DataFrame({"ask_id": []}) if raw is None else raw, column)


def read_deals(files: Mapping[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `opportunities` table of `files` (`table_files`' answer; none: no deals), validated, and
    the asks' (`ask_id`, `opportunity_id`) links, checked against each other and the customers
    (`check_deal_keys`) as `read_world` checks them. Of the asks and the customers only the columns
    that takes are read: for the batch job, which splits those tables by customer without them."""
    path = files.get(DEALS)
    deals = validate_opportunities(_read_raw(path, DEALS)) if path is not None else empty_opportunities()
    links = read_ask_links(files.get("asks"), "opportunity_id")
    customers = pd.DataFrame({"customer_id": pd.Series([], dtype="str")})
    if deals[REFERRED_BY].notna().any():  # only a referrer is looked up among the customers
        ids = _read_columns(files["customers"], "customers", ["customer_id"])
        if ids is None:
            raise DataContractError("customers", ["column 'customer_id': rule 'required column' failed (missing)"])
        check_required_rows("customers", len(ids))  # no customers is that error, not every referrer unknown
        customers = ids.astype("str")
    check_deal_keys(deals, links, customers)
    return deals, links


def read_world(data_dir: Path | str) -> World:
    """Read and validate every table in `data_dir`; raise `DataContractError` on bad input."""
    raw = {name: _read_raw(path, name) for name, path in table_files(Path(data_dir), (*TABLES, DEALS)).items()}
    return world_from_tables(raw)
