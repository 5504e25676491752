"""The look-back engine under the point-in-time features: grouped aggregates of each customer's
events before each point's `as_of`, in DuckDB.

Each event table is joined to the points of the same customer whose `as_of` is later than the
event, and one grouped pass per table aggregates, per point, the counts and sums of every window
(`since`: `FILTER (WHERE t >= window start)`) and the last event's values (`latest`: `arg_max_null`
by time, ties by table order). An event at or after `as_of` is never joined, so it can change no
feature. Cost: one hash join and one hash aggregation per table, in DuckDB's threads, with no
Python loop over customers, chunks or dates.

Times inside are int64 microseconds since the epoch (UTC): window arithmetic is exact integer
arithmetic, with no time zone or daylight-saving rule to get wrong. Every aggregate is exact
(counts, integer sums, `exact` decimal sums, `arg_max` over unique keys), so the features are the
same bytes whatever the number of threads. The join holds, per table, one row per point and
earlier event of its customer: for monthly snapshots, about months x events, which is small beside
the events themselves for any customer history this product is meant for. What the features are is
`features.pointintime`'s; this module only knows how to look back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import numpy as np
import pandas as pd

from features.io import World

DAY_US = 86_400_000_000
# Values per point, by name, in the points' order.
Columns = dict[str, np.ndarray]


def micros(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Microseconds since the epoch (UTC) as int64; NaT becomes numpy's NaT integer."""
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("us").asi8)


class LookBack:
    """Grouped look-backs of event tables for one fixed set of points, in one DuckDB connection.

    The points are the relation `points`: `_i` (the caller's row order), `_c` (the customer's row in
    `world.customers`), `_t` (as_of) and one column per window start of `times` (microseconds).
    An event table has `_c`, `t` (microseconds), `_seq` (its row order) and its values.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, world: World, codes: np.ndarray, times: dict[str, np.ndarray]):
        self.con = con
        self.t = times["_t"]
        self.points = pd.DataFrame({"_i": np.arange(len(codes)), "_c": codes.astype(np.int64), **times})
        con.register("points", self.points)
        ids = world.customers["customer_id"]
        con.register("customers", pd.DataFrame({"customer_id": ids, "_c": np.arange(len(ids), dtype=np.int64)}))

    def table(self, name: str, frame: pd.DataFrame, on: str, values: dict[str, str], widen: str | None = None) -> None:
        """Event table `name`: the rows of `frame` (a raw table) of known customers, with `t` from the
        time column `on` (or SQL over `frame`'s columns) and `values` (name -> SQL over them).

        `widen` (SQL over `{rows}`; `{window}` defines `w`, each customer's rows in time order, ties
        in table order) may add columns over each customer's history, row for row."""
        self.con.register(f"{name}_raw", frame.assign(_seq=np.arange(len(frame))))
        time = on if on not in frame.columns else f"epoch_us(r.{on})"
        picked = ", ".join(["c._c", f"{time} AS t", "r._seq", *(f"{expr} AS {col}" for col, expr in values.items())])
        rows = f"(SELECT {picked} FROM {name}_raw r JOIN customers c ON c.customer_id = r.customer_id)"
        if widen is None:
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {rows}")
            return
        window = "WINDOW w AS (PARTITION BY _c ORDER BY t, _seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {widen.format(rows=rows, window=window)}")

    def aggregate(self, table: str, columns: dict[str, str], known_at_as_of: bool = False) -> Columns:
        """Per point, each of `columns` (SQL aggregates over `e`, the point's customer's events with `t`
        before as_of, or at it if `known_at_as_of`) as float64, NaN where the aggregate is null."""
        op = "<=" if known_at_as_of else "<"
        picked = ", ".join(f"coalesce(({expr})::DOUBLE, 'NaN'::DOUBLE) AS {name}" for name, expr in columns.items())
        found = self.con.execute(
            f"""SELECT {picked} FROM points p LEFT JOIN {table} e ON e._c = p._c AND e.t {op} p._t
            GROUP BY p._i ORDER BY p._i"""
        ).fetchnumpy()
        return {name: np.asarray(found[name], dtype=float) for name in columns}

    def days_since(self, moment: np.ndarray) -> np.ndarray:
        return (self.t.astype(float) - moment) / DAY_US


# SQL for `LookBack.aggregate`: the last event's value (by time, ties by table order), and windows.
_ORDER = "e.t::HUGEINT * 4294967296 + e._seq"


def latest(column: str) -> str:
    """The last event's value, null when that event's value is null (not an earlier event's)."""
    return f"arg_max_null(e.{column}, {_ORDER})"


def exact(value: str) -> str:
    """A fractional value that will be summed, as a decimal: decimal sums are exact, so a feature does
    not depend on the order in which DuckDB's threads add up the events (floating-point sums do)."""
    return f"({value})::DECIMAL(18, 12)"


def since(aggregate: str, start: str, known_at_as_of: bool = False) -> str:
    """`aggregate` over the events of the window that starts at the points' column `start`: from it
    on (an event exactly `window` before as_of is in it), or after it for rows known at as_of."""
    op = ">" if known_at_as_of else ">="
    return f"{aggregate} FILTER (WHERE e.t {op} p.{start})"


@contextmanager
def open_lookback(
    world: World, codes: np.ndarray, times: dict[str, np.ndarray], threads: int | None = None
) -> Iterator[LookBack]:
    """A `LookBack` over `world` for the points (`codes`: rows of `world.customers`, `times`: `_t`,
    as_of, and the window starts, microseconds); `threads`: DuckDB's (default: every core)."""
    con = duckdb.connect(config={"threads": threads} if threads else {})
    try:
        # Calendar arithmetic on times (a usage month's next month) in UTC, whatever the machine's zone.
        con.execute("SET TimeZone = 'UTC'")
        yield LookBack(con, world, codes, times)
    finally:
        con.close()
