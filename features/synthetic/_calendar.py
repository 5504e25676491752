"""The monthly grid: month starts, lengths and the activity band of each month."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic._params import HORIZON_DAYS


@dataclass(frozen=True)
class Calendar:
    """Monthly grid; times are float days since the first simulated month start."""

    origin: np.datetime64  # first month start, datetime64[s]
    start: np.ndarray  # start of step k in days, k = 0..M (start[M] = grid end)
    days: np.ndarray  # length of step k in days
    act_lo: np.ndarray  # activities of step k fall in (start + act_lo, start + act_hi)
    act_hi: np.ndarray
    quarter: np.ndarray  # calendar quarter id of step k (reference-call guardrail)
    month_of_year: np.ndarray  # 0 = January, of step k (the seasons)


def make_calendar(end_month: np.datetime64, months: int) -> Calendar:
    # Month starts for k = -3..M; the three extra months before the grid fix the activity bands.
    grid = end_month - months + np.arange(-3, months + 1)
    day = grid.astype("datetime64[D]")
    d = (day - day[3]).astype(np.float64)
    start = d[3:]
    days = np.diff(start)
    gap2 = d[3 : months + 3] - d[1 : months + 1]  # start_k - start_{k-2}
    gap3 = d[3 : months + 3] - d[0:months]  # start_k - start_{k-3}
    # Activities of step k occur only in the part of the month that lies in the 90-day window of
    # exactly the month starts k-2, k-1 and k. Then (t, t + 90 days] for t = start_j holds
    # exactly the activities of steps j, j+1, j+2, which is what the truth simulates.
    act_hi = np.minimum(days, HORIZON_DAYS - gap2)
    act_lo = np.maximum(0.0, HORIZON_DAYS - gap3)
    quarter = grid[3 : months + 3].astype(np.int64) // 3
    month_of_year = grid[3 : months + 3].astype(np.int64) % 12
    return Calendar(
        origin=day[3].astype("datetime64[s]"),
        start=start,
        days=days,
        act_lo=act_lo,
        act_hi=act_hi,
        quarter=quarter,
        month_of_year=month_of_year,
    )
