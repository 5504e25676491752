"""Per-row simulation state (hidden traits and what the company has seen) and draw helpers."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class State:
    """Per-row simulation state; a row is a customer, or a customer in one future."""

    cust: np.ndarray  # customer index
    seg: np.ndarray
    affinity: np.ndarray  # hidden advocacy affinity (static)
    mu: np.ndarray  # hidden long-run satisfaction
    fit: np.ndarray  # hidden product fit (drives adoption)
    rapport: np.ndarray  # hidden rapport with the company (drifting world only; 0 otherwise)
    start_day: np.ndarray  # contract start, days since origin
    alive: np.ndarray
    sat: np.ndarray  # hidden satisfaction, AR(1) around mu
    adoption: np.ndarray  # last observed month
    health: np.ndarray
    has_usage: np.ndarray
    seats: np.ndarray
    last_nps: np.ndarray  # NaN until the first response
    last_pos_social: np.ndarray
    last_urgent: np.ndarray
    accepted_ever: np.ndarray
    ask_t: np.ndarray  # (rows, N_ASK_MEMORY) recent ask times, newest first, -inf if none
    decl_streak: np.ndarray
    last_decl: np.ndarray
    last_ref_q: np.ndarray
    pend: np.ndarray  # an accepted ask whose activity happens next month
    pend_type: np.ndarray
    pend_ask: np.ndarray
    pend_after: np.ndarray  # the pending activity happens after this time (its answer + 1 day)
    last_act: np.ndarray

    def take(self, idx: np.ndarray) -> State:
        return State(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def put(self, idx: np.ndarray, other: State) -> None:
        for f in fields(self):
            getattr(self, f.name)[idx] = getattr(other, f.name)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def tenure_effect(months: np.ndarray) -> np.ndarray:
    """Acceptance by tenure: a dip for the very new, a honeymoon around months 3-9, slow trust."""
    return (
        -0.9 * np.exp(-months / 1.5)
        + 0.6 * np.exp(-0.5 * ((months - 6.0) / 2.0) ** 2)
        + 0.15 * np.clip(months / 36.0, 0.0, 1.0)
    )


def draw_cat(rng: np.random.Generator, probs: np.ndarray, size: int, group: np.ndarray | int = 0) -> np.ndarray:
    """One categorical draw per row, from row `group` of the (groups x categories) `probs`.

    The groups' CDFs are stacked as g + cdf_g, so one searchsorted does all rows at once.
    """
    probs = np.atleast_2d(probs)
    n_cat = probs.shape[1]
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    stacked = (cdf + np.arange(probs.shape[0])[:, None]).ravel()
    g = np.asarray(group)
    idx = np.searchsorted(stacked, rng.random(size) + g, side="right") - g * n_cat
    return np.minimum(idx, n_cat - 1)


def last_time(n: int, rows: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Latest time per row (-inf where a row has none)."""
    out = np.full(n, -np.inf)
    if rows.size:
        np.maximum.at(out, rows, times)
    return out
