"""Labels for both targets and time-based splits (spec section 3).

- Advocacy propensity: 1 if the customer does at least one activity in (as_of, as_of + 90 days].
  Rows are monthly snapshots of customers alive at the snapshot.
- Ask acceptance: 1 if the ask's outcome is `accepted`; features as of `asked_at`.

Splits are by time only: the newest window is the test set, the one before it validation,
and older rows train. Propensity labels look 90 days ahead, so a snapshot is usable only if its
whole horizon is observed, and train rows whose horizon reaches into the next split are purged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.commitments import COMMITMENT_LAPSE_DAYS
from features.contracts import TIMESTAMP
from features.io import World
from features.pointintime import (
    acceptance_features,
    build_features,
    count_events,
    snapshot_points,
)

HORIZON_DAYS = 90
HORIZON = pd.Timedelta(days=HORIZON_DAYS)
_NO_HORIZON = pd.Timedelta(0)
# An ask is given this long to be answered (spec section 3): a newer one that is still unanswered
# may only mean "not yet", so no ask newer than this (at the data's end) is an acceptance label.
ANSWER_HORIZON = pd.Timedelta(days=30)


def observed_until(world: World) -> pd.Timestamp:
    """The end of the observed period: the latest moment any data table speaks of. Asks recorded
    through the API since the export do not move it: a world they were merged into carries the
    end its data tables gave (`World.data_end`)."""
    if world.data_end is not None:
        return world.data_end
    moments = [
        world.usage["month"].max() + pd.offsets.MonthBegin(1) if len(world.usage) else pd.NaT,
        world.nps["responded_at"].max(),
        world.tickets["opened_at"].max(),
        world.social["mentioned_at"].max(),
        world.asks["asked_at"].max(),
        world.asks["responded_at"].max(),
        world.activities["occurred_at"].max(),
    ]
    known = [m for m in moments if not pd.isna(m)]
    if not known:
        raise ValueError("the data holds no events: cannot tell which period it covers")
    return pd.Timestamp(max(known))


def month_starts(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """First days of months in [start, end]."""
    first = (start.tz_convert("UTC") + pd.offsets.MonthBegin(0)).normalize()
    return pd.date_range(first, end.tz_convert("UTC"), freq="MS")


def propensity_labels(world: World, points: pd.DataFrame) -> np.ndarray:
    """1 where the customer has an activity in (as_of, as_of + 90 days], else 0."""
    counts = count_events(world.activities, "occurred_at", world, points, pd.Timedelta(0), HORIZON)
    return (counts > 0).astype(np.int8)


def observed_from(world: World) -> pd.Timestamp:
    """The start of the observed period: the first month of usage data."""
    if world.usage.empty:
        raise ValueError("table 'usage' is empty: no observed period to build snapshots from")
    return pd.Timestamp(world.usage["month"].min())


def propensity_dataset(
    world: World,
    until: pd.Timestamp | None = None,
    burn_in_months: int = 6,
    lapse_days: int = COMMITMENT_LAPSE_DAYS,
) -> pd.DataFrame:
    """Monthly snapshots with features and the 90-day label, for snapshots whose horizon is observed.

    Snapshots start `burn_in_months` after the data does, so that windowed history (12-month
    counts, the last asks) describes customers as it will at scoring time, not an empty past.
    """
    until = until or observed_until(world)
    first = observed_from(world) + pd.DateOffset(months=burn_in_months)
    dates = [t for t in month_starts(first, until) if t + HORIZON <= until]
    points = snapshot_points(world, dates)
    frame = build_features(world, points, lapse_days)
    frame["label"] = propensity_labels(world, points)
    return frame


def immature_asks(world: World, horizon: pd.Timedelta = ANSWER_HORIZON) -> pd.Series:
    """Asks made less than `horizon` before the data's end: whether they will be accepted is not known yet.

    Every one of them is left out, answered or not: keeping the early answers alone would keep the
    quick yeses and drop the slow ones, a label that depends on the outcome.
    """
    if world.asks.empty:
        return pd.Series(False, index=world.asks.index)
    return world.asks["asked_at"] > observed_until(world) - horizon


def acceptance_dataset(
    world: World, horizon: pd.Timedelta = ANSWER_HORIZON, lapse_days: int = COMMITMENT_LAPSE_DAYS
) -> pd.DataFrame:
    """One row per past ask old enough to be answered (`immature_asks`): features as of
    `asked_at`, the ask's type, and the accepted label."""
    mature = world.asks[~immature_asks(world, horizon).to_numpy()]
    asks = mature.sort_values(["asked_at", "ask_id"], kind="stable").reset_index(drop=True)
    frame = acceptance_features(world, asks, lapse_days)
    frame.insert(2, "ask_id", asks["ask_id"].to_numpy())
    frame["label"] = (asks["outcome"] == "accepted").astype(np.int8).to_numpy()
    return frame


@dataclass(frozen=True)
class TimeSplit:
    """Boundaries of a time split: train < valid_start <= valid < test_start <= test."""

    valid_start: pd.Timestamp
    test_start: pd.Timestamp

    def assign(self, times: pd.Series, horizon: pd.Timedelta = _NO_HORIZON) -> pd.Series:
        """'train' / 'valid' / 'test' per time; rows whose label horizon crosses a boundary get 'purged'."""
        t = pd.to_datetime(times, utc=True).astype(TIMESTAMP)
        split = pd.Series("train", index=times.index, dtype="str")
        split[(t >= self.valid_start) & (t < self.test_start)] = "valid"
        split[t >= self.test_start] = "test"
        purge_train = (split == "train") & (t + horizon > self.valid_start)
        purge_valid = (split == "valid") & (t + horizon > self.test_start)
        split[purge_train | purge_valid] = "purged"
        return split


def time_split(times: pd.Series, test_fraction: float = 0.2, valid_fraction: float = 0.2) -> TimeSplit:
    """Cut points so that roughly the newest `test_fraction` of rows is test and the one before valid.

    Rows that share a time stay on one side of a cut, so many rows at one moment (a batch of asks
    posted together) can make a part bigger than its fraction, never empty: the test window starts
    at the quantile time (or the third distinct time, if the oldest two hold that many rows); the
    validation window at its quantile time, or, if that falls in the test window, at the newest
    `valid_fraction` share of the rows before it.
    """
    t = pd.to_datetime(times, utc=True).sort_values().reset_index(drop=True)
    if len(t) < 10:
        raise ValueError(f"too few rows to split by time: {len(t)}")
    distinct = t.drop_duplicates().reset_index(drop=True)
    if len(distinct) < 3:
        raise ValueError(
            f"the {len(t):,} rows have only {len(distinct)} distinct time(s): need 3 to split into train, "
            "validation and test by time"
        )
    test_start = max(t.iloc[int(len(t) * (1 - test_fraction))], distinct.iloc[2])
    valid_start = t.iloc[int(len(t) * (1 - test_fraction - valid_fraction))]
    if not valid_start < test_start:  # ties at the cut: the newest share of the rows before the test window
        before = t[t < test_start].reset_index(drop=True)
        valid_start = before.iloc[int(len(before) * (1 - valid_fraction / (1 - test_fraction)))]
    valid_start = max(valid_start, distinct.iloc[1])
    return TimeSplit(pd.Timestamp(valid_start), pd.Timestamp(test_start))


def monthly_split(as_of: pd.Series, test_months: int = 3, valid_months: int = 3) -> TimeSplit:
    """Split monthly snapshots: the newest `test_months` are test, `valid_months` before them validation.

    With a purge of the label horizon (see `TimeSplit.assign`), the months just before each
    boundary fall out, so no training label looks into the validation or test period.
    """
    months = pd.DatetimeIndex(sorted(pd.to_datetime(as_of, utc=True).unique()))
    gap = int(np.ceil(HORIZON_DAYS / 30))
    need = test_months + valid_months + 2 * gap + 1
    if len(months) < need:
        raise ValueError(
            f"need at least {need} monthly snapshots with an observed 90-day horizon to split by time, "
            f"got {len(months)}: use a longer history"
        )
    test_start = months[-test_months]
    valid_start = months[-(test_months + gap + valid_months)]
    return TimeSplit(pd.Timestamp(valid_start), pd.Timestamp(test_start))
