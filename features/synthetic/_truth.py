"""The propensity truth: P(at least one activity in the next 90 days) from the full hidden state,
estimated over K futures simulated with the realised world's own step function."""

from __future__ import annotations

import numpy as np

from features.synthetic._calendar import Calendar
from features.synthetic._params import K_FUTURES, ROWS_PER_CHUNK, STATIONARY, Drift
from features.synthetic._state import State
from features.synthetic._step import step


def propensity(
    state: State, idx: np.ndarray, j: int, cal: Calendar, rng: np.random.Generator, drift: Drift = STATIONARY
) -> np.ndarray:
    """P(at least one activity in (start_j, start_j + 90 days]) for the rows `idx` of `state`."""
    out = np.empty(idx.size)
    per_chunk = max(1, ROWS_PER_CHUNK // K_FUTURES)
    for c0 in range(0, idx.size, per_chunk):
        chunk = idx[c0 : c0 + per_chunk]
        fut = state.take(np.repeat(chunk, K_FUTURES))
        p_none = np.ones(fut.cust.size)
        for w in range(3):
            factor, _ = step(fut, j + w, cal, rng, record=False, drift=drift)
            p_none *= factor
        out[c0 : c0 + chunk.size] = 1.0 - p_none.reshape(chunk.size, K_FUTURES).mean(axis=1)
    return out
