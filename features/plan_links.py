"""Which plan each ask was made for: the asks table's optional `plan_id` column (spec 2 and 5a).

A campaign's answers come back as asks carrying its `plan_id`: through `POST /asks` (the ask log
keeps the link beside the ask) or in the asks table's `plan_id` column (a CRM export). Both are
(`ask_id`, `plan_id`) links, joined by `merge_plan_links`; the asks table itself keeps its contract's
columns. A deal's asks (`opportunity_id`, `features.deals`) are links of the same kind, read and
joined by the same code (`ask_links`, `merge_links`).
"""

from __future__ import annotations

import pandas as pd

from features.contracts import MAX_ID_LENGTH, DataContractError, as_text, rule_problem

PLAN_LINK_COLUMNS: tuple[str, ...] = ("ask_id", "plan_id")


def empty_plan_links() -> pd.DataFrame:
    """No (`ask_id`, `plan_id`) links: an asks table without the optional `plan_id` column."""
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in PLAN_LINK_COLUMNS})


def ask_plan_links(raw: pd.DataFrame) -> pd.DataFrame:
    """(`ask_id`, `plan_id`) of the asks table's rows that name a plan in its optional `plan_id`
    column (spec 2: the campaign the ask was made for, e.g. a CRM export), in the table's order
    (`ask_links`)."""
    return ask_links(raw, "plan_id")


def ask_links(raw: pd.DataFrame, column: str) -> pd.DataFrame:
    """(`ask_id`, `column`) of the asks table's rows that name something in the optional id
    `column` (`plan_id`, `opportunity_id`), in the table's order. The value is an id like any other
    (`_ID`'s rules); one that breaks them is a `DataContractError` naming the column and rows. An
    empty cell names nothing."""
    if column not in raw.columns:
        return pd.DataFrame({c: pd.Series([], dtype="str") for c in ("ask_id", column)})
    value = optional_id(raw, "asks", column)
    has = value.notna()
    ids = as_text(raw["ask_id"].reset_index(drop=True))
    return pd.DataFrame({"ask_id": ids[has], column: value[has]}).reset_index(drop=True)


def optional_id(raw: pd.DataFrame, table: str, column: str) -> pd.Series:
    """The optional id `column` of `table`'s raw rows as text (an empty cell: missing), checked by
    the rules every id follows (`_ID`'s); one that breaks them is a `DataContractError` naming the
    table, the column and rows."""
    value = as_text(raw[column].reset_index(drop=True))
    has = value.notna()
    rules = (
        (f"at most {MAX_ID_LENGTH} characters", value.str.len() > MAX_ID_LENGTH),
        ("no surrounding spaces", value != value.str.strip()),
    )
    problems = [rule_problem(column, rule, value, bad & has) for rule, bad in rules if (bad & has).any()]
    if problems:
        raise DataContractError(table, problems)
    return value


def merge_plan_links(table: pd.DataFrame, logged: pd.DataFrame) -> pd.DataFrame:
    """The asks table's (`ask_id`, `plan_id`) links and the ask log's as one (`merge_links`)."""
    return merge_links(table, logged, "plan_id")


def merge_links(table: pd.DataFrame, logged: pd.DataFrame, column: str) -> pd.DataFrame:
    """The asks table's (`ask_id`, `column`) links and the ask log's as one: what an ask was made for
    (its plan, its deal) is fixed (spec 7), so an `ask_id` that names one value in the table and
    another in the log is a `DataContractError` naming it."""
    both = pd.concat([table.loc[:, ["ask_id", column]], logged.loc[:, ["ask_id", column]]], ignore_index=True)
    both = both.drop_duplicates().reset_index(drop=True)
    clash = both["ask_id"].duplicated(keep=False)
    if clash.any():
        ask_id = str(both.loc[clash, "ask_id"].iloc[0])
        values = both.loc[both["ask_id"] == ask_id, column].tolist()
        raise DataContractError(
            "asks",
            [
                f"ask_id {ask_id!r}: {column} is {values[0]} in the asks table but {values[1]} in the ask log (an "
                f"ask's {column} is fixed) ({int(both.loc[clash, 'ask_id'].nunique())} such asks)"
            ],
        )
    return both.astype("str")
