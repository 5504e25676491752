"""The ask planner (spec section 5): "to get N yeses of each type, whom do I ask?"

Given needs per ask type and a confidence, the plan is, for each type, the shortest list of
customers whose chance of giving at least N yeses (the Poisson-binomial of their calibrated
acceptance) reaches the confidence; one ask per customer across the whole plan, no guardrail
broken, optional filters on the customer's segment, industry, region and use case.

The allocation is joint across types: a mixed-integer programme (`scipy.optimize.milp`, HiGHS)
chooses the fewest asks such that each type's expected yeses reach a target, with every customer
asked at most once. The target is then moved until each type's exact Poisson-binomial chance of
reaching its need is at the confidence (the expected yeses a type needs depend on how uncertain
its customers are), and each list is trimmed to its shortest prefix that still reaches it.
The chance counts what the model does not know: each type's calibrated level is only known to
within a standard error (`models.calibration`), an error all of that type's customers share, so
the chance is the Poisson-binomial averaged over that shared log-odds shift (Gauss-Hermite
quadrature), not the Poisson-binomial at the point estimate. A type calibrated on few answers
gets a longer list for the same promise.
A type whose eligible customers cannot reach the confidence even with every one of them asked is
"not met": its list holds every eligible customer the met types left, and says how many yeses are
likely. Ties go to the customer asked least recently (never asked first).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss
from scipy import sparse, special
from scipy.optimize import Bounds, LinearConstraint, milp

from features.catalog import ASK_TYPE_NAMES
from features.spec import FEATURE_NAMES
from models.bundle import Bundle, ask_rows_matrix
from models.reasons import reason, top_indices
from models.references import check_segment, fold, folded

FILTERS: tuple[str, ...] = ("segment", "industry", "region", "use_case")
DEFAULT_CONFIDENCE = 0.9
MAX_NEED = 10_000  # yeses of one type in one plan: beyond this it is not a plan but a campaign
POOL_FACTOR = 3  # candidates kept per type: this many times the list it would need alone, plus POOL_EXTRA
POOL_EXTRA = 50
TARGET_ROUNDS = 12  # adjustments of the expected-yes targets before the best plan found is taken
# The solver stops at a plan within 1% of the fewest asks, or after MILP_NODES branch-and-bound nodes
# with the best it has: many customers of near-equal acceptance make proving the last fraction slow
# (a 70k base hit a 10 s limit on 816 variables) while the plan it already holds is as good for the
# need. A node limit, not a wall-clock one, so that the same request on the same base gives the same
# plan however loaded the machine is (a 0.5 s limit gave the page and the API different plans under
# CI load). MILP_SECONDS only guards against a pathological solve.
MILP_GAP = 0.01
MILP_NODES = 200
MILP_SECONDS = 30.0
SHARE_STEPS = 6  # bisection steps for the share of the targets a base too thin for all of them can give
LEVEL_NODES = 9  # quadrature nodes over a type's shared level error
_NODES, _WEIGHTS = hermegauss(LEVEL_NODES)  # for weight exp(-x^2 / 2): a standard normal once normalised
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


@dataclass(frozen=True)
class PlanRequest:
    """What the advocacy manager asks for; every field is checked, and an error names it."""

    need: Mapping[str, int]
    confidence: float = DEFAULT_CONFIDENCE
    filters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.need:
            raise ValueError("need: name at least one ask type and how many yeses, e.g. review=120")
        for ask_type, count in self.need.items():
            if ask_type not in ASK_TYPE_NAMES:
                raise ValueError(f"need: unknown ask type {ask_type!r} (one of {', '.join(ASK_TYPE_NAMES)})")
            if isinstance(count, bool) or not isinstance(count, int | np.integer) or not 1 <= count <= MAX_NEED:
                raise ValueError(f"need.{ask_type}: must be a whole number from 1 to {MAX_NEED:,}, got {count!r}")
        conf = self.confidence
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 < float(conf) < 1.0:
            raise ValueError(f"confidence: must be between 0 and 1 (exclusive), got {conf!r}")
        for name, value in self.filters.items():
            if name not in FILTERS:
                raise ValueError(f"{name}: not a filter (filters are {', '.join(FILTERS)})")
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
            if name == "segment":
                check_segment(value)

    @classmethod
    def from_options(
        cls,
        need: Mapping[str, int],
        confidence: float,
        segment: str | None = None,
        industry: str | None = None,
        region: str | None = None,
        use_case: str | None = None,
    ) -> PlanRequest:
        """The request from the command line's or the API's options; a filter not given is no filter."""
        given = {"segment": segment, "industry": industry, "region": region, "use_case": use_case}
        return cls(need, confidence, {k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class Candidates:
    """The scored base a plan is made from, one row per customer.

    `acceptance` and `blocked` are (customers x catalog ask types); `attributes` holds the filter
    columns and `name`; `last_asked_at` is NaT for a customer never asked. `level_sd`, per catalog
    ask type, is the standard error of that type's acceptance level in log-odds
    (`acceptance_level_sd`); None: the acceptance is taken as exact.
    """

    customer_id: np.ndarray
    acceptance: np.ndarray
    blocked: np.ndarray
    last_asked_at: pd.DatetimeIndex
    attributes: pd.DataFrame
    level_sd: np.ndarray | None = None

    def sd(self, t: int) -> float:
        return 0.0 if self.level_sd is None else float(self.level_sd[t])

    def eligible(self, request: PlanRequest) -> np.ndarray:
        """(customers x ask types): not blocked, within the filters, with a known acceptance."""
        ok = ~self.blocked & np.isfinite(self.acceptance) & (self.acceptance > 0)
        for name, value in request.filters.items():
            column = folded(self.attributes[name])
            within = (column == fold(value)).to_numpy(dtype=bool)
            if len(column) and not within.any():  # a misspelling, not a plan no one can meet
                known = column.value_counts().index[:12].tolist()
                raise ValueError(f"{name}: no customer has {value!r} (case aside); there are {', '.join(known)}")
            ok &= within[:, None]
        return ok


@dataclass
class Plan:
    """A plan: one row per planned ask (spec section 7 columns), and a summary per ask type."""

    plan_id: str
    as_of: pd.Timestamp
    confidence: float
    asks: pd.DataFrame
    summary: dict[str, dict[str, Any]]
    filters: dict[str, str] = field(default_factory=dict)


def acceptance_level_sd(bundle: Bundle) -> np.ndarray | None:
    """Per catalog ask type, the standard error of the acceptance model's calibrated level (log-odds);
    None for a model saved before it was kept."""
    se = bundle.acceptance.calibrator.level_se
    return np.asarray(se, dtype=float) if len(se) == len(ASK_TYPE_NAMES) else None


def at_least(p: np.ndarray, n: int, level_sd: float = 0.0, stop_at: float | None = None) -> np.ndarray:
    """For each prefix of `p` (Bernoulli chances, in order), P(at least n successes).

    With `level_sd` > 0 the chances share an unknown shift of their log-odds, normal with that
    standard deviation: the successes are independent given the shift, and the chance is averaged
    over it. With `stop_at`, only the prefixes up to the first whose chance reaches it (the chance
    only grows with the prefix: no later one is needed to find the shortest).
    """
    p = np.asarray(p, dtype=float)
    if level_sd > 0.0:
        weights = _WEIGHTS
        z = special.logit(np.clip(p, 1e-9, 1.0 - 1e-9))
        q_all = special.expit(z[None, :] + level_sd * _NODES[:, None])
    else:
        weights, q_all = np.ones(1), p[None, :]
    dist = np.zeros((weights.size, n + 1))  # P(k successes) for k < n; dist[:, n] holds "n or more"
    dist[:, 0] = 1.0
    out = np.empty(p.size)
    for i in range(p.size):
        q = q_all[:, i]
        top = dist[:, n] + dist[:, n - 1] * q
        dist[:, 1:n] = dist[:, 1:n] * (1.0 - q)[:, None] + dist[:, : n - 1] * q[:, None]
        dist[:, 0] *= 1.0 - q
        dist[:, n] = top
        out[i] = weights @ top
        if stop_at is not None and out[i] >= stop_at:
            return out[: i + 1]
    return out


def shortest_prefix(p: np.ndarray, n: int, confidence: float, level_sd: float = 0.0) -> int | None:
    """Length of the shortest prefix of `p` whose chance of n or more successes reaches `confidence`."""
    if p.size < n:
        return None
    reached = np.flatnonzero(at_least(p, n, level_sd, stop_at=confidence) >= confidence)
    return int(reached[0]) + 1 if reached.size else None


def _order(cands: Candidates, t: int, rows: np.ndarray) -> np.ndarray:
    """`rows` by acceptance of type t, highest first; ties to the customer asked least recently."""
    last = cands.last_asked_at[rows].asi8.astype(np.float64)
    last[cands.last_asked_at[rows].isna()] = -np.inf  # never asked: first among equals
    return rows[np.lexsort((cands.customer_id[rows].astype(str), last, -cands.acceptance[rows, t]))]


def _pools(cands: Candidates, request: PlanRequest, eligible: np.ndarray) -> dict[int, tuple[np.ndarray, bool]]:
    """Per needed type: its candidate rows, best first, and whether they could meet the need alone."""
    pools = {}
    for name, n in request.need.items():
        t = ASK_TYPE_NAMES.index(name)
        rows = _order(cands, t, np.flatnonzero(eligible[:, t]))
        alone = shortest_prefix(cands.acceptance[rows, t], n, request.confidence, cands.sd(t))
        pools[t] = (rows if alone is None else rows[: POOL_FACTOR * alone + POOL_EXTRA], alone is not None)
    return pools


def _solve(
    cands: Candidates, pools: dict[int, tuple[np.ndarray, bool]], targets: dict[int, float]
) -> dict[int, np.ndarray]:
    """The fewest asks whose expected yeses reach `targets` per type, one ask per customer.

    Among as few asks, the solver prefers higher acceptance (a small reward per expected yes).
    Types without a target take every candidate the others leave (asked last, in `_allocate`).
    """
    pairs = [(t, pools[t][0]) for t in pools if t in targets]
    if not pairs:
        return {}
    types = np.concatenate([np.full(rows.size, t) for t, rows in pairs])
    rows = np.concatenate([r for _, r in pairs])
    p = cands.acceptance[rows, types]
    customers, col = np.unique(rows, return_inverse=True)
    n_var = rows.size
    per_type = np.array([t for t, _ in pairs])
    type_index = {t: i for i, t in enumerate(per_type)}
    yes = sparse.csr_array((p, ([type_index[t] for t in types], np.arange(n_var))), shape=(len(pairs), n_var))
    once = sparse.csr_array((np.ones(n_var), (col, np.arange(n_var))), shape=(customers.size, n_var))
    lower = np.array([targets[t] for t in per_type])
    result = milp(
        c=1.0 - 1e-3 * p,
        integrality=np.ones(n_var),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(yes, lb=lower, ub=np.inf), LinearConstraint(once, lb=0, ub=1)],
        options={"node_limit": MILP_NODES, "time_limit": MILP_SECONDS, "mip_rel_gap": MILP_GAP},
    )
    if result.x is None:
        return {}
    chosen = result.x > 0.5
    return {t: rows[chosen & (types == t)] for t, _ in pairs}


def _largest_share(
    cands: Candidates, pools: dict[int, tuple[np.ndarray, bool]], targets: dict[int, float]
) -> dict[int, np.ndarray]:
    """When no plan gives every type its target together, the plan for the largest common share of
    the targets that one does (bisection): each type then falls short alike, instead of one type
    taking the base and the others none."""
    low, high, best = 0.0, 1.0, {}
    for _ in range(SHARE_STEPS):
        share = (low + high) / 2.0
        attempt = _solve(cands, pools, {t: share * v for t, v in targets.items()})
        if attempt:
            low, best = share, attempt
        else:
            high = share
    return best


def _allocate(cands: Candidates, request: PlanRequest) -> tuple[dict[int, np.ndarray], set[int]]:
    """Rows per needed type, best first, and the types that cannot be met."""
    eligible = cands.eligible(request)
    pools = _pools(cands, request, eligible)
    need = {ASK_TYPE_NAMES.index(name): n for name, n in request.need.items()}
    met = {t for t, (_, can) in pools.items() if can}
    # Start each target at the expected yeses of the list that would meet the need alone.
    targets: dict[int, float] = {}
    for t in met:
        rows = pools[t][0]
        k = shortest_prefix(cands.acceptance[rows, t], need[t], request.confidence, cands.sd(t)) or rows.size
        targets[t] = float(cands.acceptance[rows[:k], t].sum())
    solved: dict[int, np.ndarray] = {}
    for _ in range(TARGET_ROUNDS):
        attempt = _solve(cands, pools, targets)
        if not attempt:  # the targets outgrew what the pools can give together: keep the best plan found
            solved = solved or _largest_share(cands, pools, targets)
            break
        solved = attempt
        short = [t for t in met if _chance(cands, t, solved.get(t), need[t]) < request.confidence]
        if not short:
            break
        for t in short:  # a type short of its confidence needs more expected yeses
            targets[t] += max(0.5, 0.1 * need[t] ** 0.5)
    taken = np.zeros(cands.customer_id.size, dtype=bool)
    for rows in solved.values():
        taken[rows] = True
    out = {}
    for t, rows in solved.items():
        # As many asks as the solver gave the type, from the top of its best-first pool among the
        # customers no other type has: never a lower acceptance, and ties go as they should.
        taken[rows] = False
        pool = pools[t][0]
        out[t] = _trim(cands, t, pool[~taken[pool]][: rows.size], need[t], request.confidence)
        taken[out[t]] = True
    for t in sorted(need):  # a type that cannot be met asks every eligible customer the others left
        if t not in out:
            left = pools[t][0][~taken[pools[t][0]]]
            out[t] = left
            taken[left] = True
    return out, set(need) - met


def _chance(cands: Candidates, t: int, rows: np.ndarray | None, n: int) -> float:
    """P(at least n yeses of type t) when asking `rows`."""
    if rows is None or rows.size < n:
        return 0.0
    return float(at_least(cands.acceptance[rows, t], n, cands.sd(t))[-1])


def _trim(cands: Candidates, t: int, rows: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """The shortest best-first prefix of `rows` that still reaches the confidence."""
    k = shortest_prefix(cands.acceptance[rows, t], n, confidence, cands.sd(t))
    return rows if k is None else rows[:k]


def make_plan(cands: Candidates, request: PlanRequest, as_of: pd.Timestamp, plan_id: str | None = None) -> Plan:
    """The plan for `request` from the scored base `cands` (see the module docstring)."""
    allocation, unmet = _allocate(cands, request)
    frames, summary = [], {}
    for name, n in request.need.items():
        t = ASK_TYPE_NAMES.index(name)
        rows = allocation[t]
        p = cands.acceptance[rows, t]
        chance = at_least(p, n, cands.sd(t)) if rows.size else np.zeros(0)
        frames.append(
            pd.DataFrame(
                {
                    "ask_type": name,
                    "rank": np.arange(1, rows.size + 1),
                    "customer_id": cands.customer_id[rows],
                    "name": cands.attributes["name"].to_numpy()[rows],
                    "acceptance": p,
                    "expected_yes": np.cumsum(p),
                    "p_at_least_needed": chance,
                    "last_asked_at": cands.last_asked_at[rows],
                    "row": rows,
                }
            )
        )
        summary[name] = {
            "need": n,
            "asked": int(rows.size),
            "expected_yes": float(p.sum()),
            "p_at_least_needed": float(chance[-1]) if rows.size else 0.0,
            "met": t not in unmet and bool(rows.size) and float(chance[-1]) >= request.confidence,
            "acceptance_level_sd": cands.sd(t),
        }
    asks = pd.concat(frames, ignore_index=True)
    return Plan(plan_id or uuid.uuid4().hex, as_of, float(request.confidence), asks, summary, dict(request.filters))


def plannable(cold_start: np.ndarray, committed: np.ndarray) -> np.ndarray:
    """Who a plan may ask: customers the model speaks for (not cold start) who are not committed
    pipeline (an accepted ask not delivered yet: they are not asked for more)."""
    return ~np.asarray(cold_start, dtype=bool) & ~np.asarray(committed, dtype=bool)


def acceptance_reasons(bundle: Bundle, plan: Plan, picked: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """`reason_1` .. `reason_k` per planned ask: the acceptance model's strongest SHAP contributions
    for that customer and that ask type, in a CSM's words. `picked` holds the feature row of each
    planned ask, in the plan's order."""
    picked = picked.reset_index(drop=True)
    if picked.empty:  # nobody planned (a need no customer can meet, or filters that match no one)
        return pd.DataFrame({f"reason_{i + 1}": pd.Series(dtype=object) for i in range(k)})
    x = ask_rows_matrix(bundle.encoder.transform(picked), list(plan.asks["ask_type"]))
    contributions = bundle.acceptance.contributions(x)[:, : len(FEATURE_NAMES)]  # the customer's features
    out: dict[str, list[str | None]] = {f"reason_{i + 1}": [] for i in range(k)}
    for i, top in enumerate(top_indices(contributions, k)):
        row = picked.iloc[i]
        for j in range(k):
            c = int(top[j]) if j < len(top) else -1
            keep = c >= 0 and contributions[i, c] != 0
            name = FEATURE_NAMES[c] if keep else ""
            out[f"reason_{j + 1}"].append(
                reason(name, row[name], contributions[i, c], row, plan.as_of)["text"] if keep else None
            )
    return pd.DataFrame(out)


PLAN_COLUMNS: tuple[str, ...] = (
    "plan_id",
    "ask_type",
    "rank",
    "customer_id",
    "name",
    "acceptance",
    "expected_yes",
    "p_at_least_needed",
    "reason_1",
    "reason_2",
    "reason_3",
    "last_asked_at",
)


def plan_table(plan: Plan, reasons: pd.DataFrame) -> pd.DataFrame:
    """One row per planned ask in the spec's columns (`advocacy plan --out`, `POST /plan`)."""
    table = pd.concat([plan.asks.reset_index(drop=True), reasons.reset_index(drop=True)], axis=1)
    table.insert(0, "plan_id", plan.plan_id)
    return table.loc[:, list(PLAN_COLUMNS)]


def plan_record(plan: Plan, request: PlanRequest, model_version: str) -> dict[str, Any]:
    """What is stored beside a plan's asks (`storage.plans.PlanStore`): the request, the summary, the model."""
    return {
        "as_of": plan.as_of.isoformat(),
        "confidence": plan.confidence,
        "filters": plan.filters,
        "need": dict(request.need),
        "summary": plan.summary,
        "model_version": model_version,
    }


def parse_need(items: list[str]) -> dict[str, int]:
    """`TYPE=N` items (the command line's `--need`) as a need; an error names the item."""
    need: dict[str, int] = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not count.strip().lstrip("-").isdigit():
            raise ValueError(f"--need {item}: expected TYPE=N, e.g. review=120")
        need[name.strip()] = need.get(name.strip(), 0) + int(count)
    return need


__all__ = [
    "FILTERS",
    "PLAN_COLUMNS",
    "Candidates",
    "Plan",
    "PlanRequest",
    "acceptance_reasons",
    "at_least",
    "make_plan",
    "parse_need",
    "plan_record",
    "plan_table",
    "plannable",
    "shortest_prefix",
]
