"""Who is asked for what: the planner's allocation of customers to ask types, one ask per customer.

For each needed type the list must be the shortest whose chance of at least N yeses (the
Poisson-binomial of the calibrated acceptance, averaged over the type's shared level error) reaches
the confidence. Three steps, each bounded:

1. **The greedy floor.** Each type in turn takes the shortest best-first list of the customers the
   earlier types left. Three orders are tried (the scarcest type first, the largest need first,
   the request's order) and the best kept: more types met, then fewer asks. Every plan returned is
   at least this good.
2. **The joint programme.** A mixed-integer programme (`scipy.optimize.milp`, HiGHS) chooses the
   fewest asks such that each type's expected yeses reach a target, every customer asked at most
   once; the targets start at the greedy plan's (so the first solve is feasible) and move until
   each type's exact chance is at the confidence; each list is then trimmed to its shortest
   best-first prefix that still reaches it. Each solve is limited in branch-and-bound nodes and the
   targets in rounds, so the same request on the same base gives the same plan however loaded the
   machine is; a wall-clock guard only stops a pathological solve. It replaces the greedy plan only
   when it is better.
3. **The types that cannot be met** share every eligible customer the met types left, the type
   furthest behind in expected yeses as a share of its need taking the next customer (in a
   campaign's wave, counting the yeses and pending asks its earlier waves hold): together beyond
   the base, the types fall short alike, and no eligible customer is left unasked. Each ranked
   type takes first the customers it is likeliest to win against the others, so that the split
   gives each the most expected yeses for what it leaves them.

Ties go to the customer asked least recently (never asked first), then by id.

An ungated type (public reviews, spec 5a) is not ordered by acceptance: its customers come in a
random order drawn for the plan (`Problem.draws`), and it takes its list before any other type is
allocated, so that their picks cannot tilt the draw. The model only says how far down the random
order the list must go to reach the need.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss
from scipy import sparse, special
from scipy.optimize import Bounds, LinearConstraint, milp

from models.campaign import Outlook

POOL_FACTOR = 3  # joint candidates kept per type: this many times the list it would need alone, plus POOL_EXTRA
POOL_EXTRA = 50
TARGET_ROUNDS = 12  # adjustments of the expected-yes targets before the best plan found is taken
# Each solve stops at a plan within 1% of the fewest asks, or after MILP_NODES branch-and-bound nodes
# with the best it has: many customers of near-equal acceptance make proving the last fraction slow,
# while the plan it already holds is as good for the need. A campaign's later wave over a 100k base
# spent most of its 2 s in three solves at 200 nodes (`benchmarks/plan_latency.py`).
MILP_GAP = 0.01
MILP_NODES = 50
# A guard against a pathological solve only: past it the best plan so far stands. Solves are bounded
# by nodes and rounds, which give the same plan whatever the load; a tight clock did not (under CI load
# the page and the API got different plans for one request). The red team's nine types take 0.2 s.
JOINT_SECONDS = 10.0
LEVEL_NODES = 9  # quadrature nodes over a type's shared level error
_NODES, _WEIGHTS = hermegauss(LEVEL_NODES)  # for weight exp(-x^2 / 2): a standard normal once normalised
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


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


@dataclass(frozen=True)
class Problem:
    """One allocation: `acceptance` and `eligible` are (customers x catalog types); `need` maps a
    catalog type's column to its yeses; `level_sd` per catalog type (zeros: acceptance taken as exact)."""

    customer_id: np.ndarray
    acceptance: np.ndarray
    eligible: np.ndarray
    last_asked_at: pd.DatetimeIndex
    level_sd: np.ndarray
    need: Mapping[int, int]
    confidence: float
    # A campaign's wave (`models.campaign`): per type, the yeses so far, the pending asks and the
    # deadline, under which a list's chance is reckoned; None: a one-shot plan.
    outlooks: Mapping[int, Outlook] | None = None
    # Per ungated type, each customer's place in the plan's random draw (`draw_keys`): that type's
    # customers are invited in this order, not by acceptance.
    draws: Mapping[int, np.ndarray] = field(default_factory=dict)
    # The campaign's own confidence when `confidence` is a wave's lower target (None: the same). An
    # ungated type's draw is held from the other types down to where it would reach it.
    final_confidence: float | None = None

    def order(self, t: int) -> np.ndarray:
        """Type t's eligible rows by acceptance, highest first; ties to the customer asked least
        recently. An ungated type's rows in the order of its random draw."""
        rows = np.flatnonzero(self.eligible[:, t])
        if t in self.draws:
            return rows[np.argsort(self.draws[t][rows], kind="stable")]
        last = self.last_asked_at[rows].asi8.astype(np.float64)
        last[self.last_asked_at[rows].isna()] = -np.inf  # never asked: first among equals
        return rows[np.lexsort((self.customer_id[rows].astype(str), last, -self.acceptance[rows, t]))]

    def shortest(self, t: int, rows: np.ndarray) -> int | None:
        """The shortest prefix of `rows` whose chance of type t's need reaches the confidence; None if none does."""
        if self.outlooks is None:
            return shortest_prefix(self.acceptance[rows, t], self.need[t], self.confidence, float(self.level_sd[t]))
        seen = self.outlooks[t]
        if seen.chance(np.zeros(0))[0] >= self.confidence:
            return 0  # what is already out is enough
        reached = np.flatnonzero(seen.chance(self.acceptance[rows, t], stop_at=self.confidence) >= self.confidence)
        return int(reached[0]) + 1 if reached.size else None

    def chance(self, t: int, rows: np.ndarray | None) -> float:
        """P(at least the need of type t) when asking `rows` (by the deadline, in a campaign)."""
        if self.outlooks is not None:
            return float(self.outlooks[t].chance(self.acceptance[rows, t] if rows is not None else np.zeros(0))[-1])
        if rows is None or rows.size < self.need[t]:
            return 0.0
        return float(at_least(self.acceptance[rows, t], self.need[t], float(self.level_sd[t]))[-1])


@dataclass(frozen=True)
class Allocation:
    """Rows per type, best first; `met`: the types whose list reaches the confidence."""

    rows: dict[int, np.ndarray]
    met: frozenset[int]

    def key(self) -> tuple[int, int]:
        """Better is larger: more types met, then fewer asks for them."""
        return len(self.met), -sum(self.rows[t].size for t in self.met)


def allocate(problem: Problem, budget_seconds: float = JOINT_SECONDS) -> Allocation:
    """Rows per needed type, best first (see the module docstring), and the types met."""
    ordered = {t: problem.order(t) for t in problem.need}
    drawn = _greedy(problem, ordered, [t for t in problem.need if t in problem.draws])
    taken = np.zeros(problem.customer_id.size, dtype=bool)
    for rows in drawn.rows.values():
        taken[rows] = True
    # A campaign's later waves go on down the same draw: the customers it will likely reach there are
    # held from the other types now, or their picks (the likeliest, often the happiest) would tilt it.
    final = replace(problem, confidence=problem.final_confidence or problem.confidence)
    for t in drawn.rows:
        held = final.shortest(t, ordered[t])
        if held is not None:
            taken[ordered[t][:held]] = True
    rest = replace(
        problem,
        eligible=problem.eligible & ~taken[:, None],
        need={t: n for t, n in problem.need.items() if t not in problem.draws},
    )
    best = Allocation({}, frozenset())
    if rest.need:
        chosen = {t: rest.order(t) for t in rest.need}
        best = max((_greedy(rest, chosen, order) for order in _orders(rest, chosen)), key=Allocation.key)
        if len(rest.need) > 1:
            joint = _joint(rest, chosen, best, time.monotonic() + budget_seconds)
            if joint is not None and joint.key() > best.key():
                best = joint
    both = Allocation({**drawn.rows, **best.rows}, drawn.met | best.met)
    return _share_the_rest(problem, ordered, both)


def draw_keys(customer_id: np.ndarray, salt: str) -> np.ndarray:
    """Each customer's place in a random draw, fixed by `salt` (a keyed SipHash of the id).

    A customer's place depends on nothing but their id and the salt: not on who else is eligible,
    so a campaign's later waves go on down the same draw, and every door draws the same invitees
    for the same request.
    """
    key = hashlib.blake2b(salt.encode(), digest_size=8).hexdigest()
    ids = pd.Series(customer_id, dtype="str")
    return pd.util.hash_pandas_object(ids, index=False, hash_key=key).to_numpy()


def _orders(problem: Problem, ordered: dict[int, np.ndarray]) -> list[list[int]]:
    """The type orders the greedy floor tries: scarcest first (the largest need against the expected
    yeses all its eligible customers hold), largest need first, and the request's order."""
    scarce = {t: problem.need[t] / max(float(problem.acceptance[rows, t].sum()), 1e-9) for t, rows in ordered.items()}
    given = list(problem.need)
    orders = [sorted(given, key=lambda t: -scarce[t]), sorted(given, key=lambda t: -problem.need[t]), given]
    return [list(o) for o in dict.fromkeys(tuple(o) for o in orders)]


def _greedy(problem: Problem, ordered: dict[int, np.ndarray], order: list[int]) -> Allocation:
    """Each type in `order` takes the shortest best-first list among the customers left."""
    taken = np.zeros(problem.customer_id.size, dtype=bool)
    rows: dict[int, np.ndarray] = {}
    for t in order:
        left = ordered[t][~taken[ordered[t]]]
        k = problem.shortest(t, left)
        if k is not None:
            rows[t] = left[:k]
            taken[rows[t]] = True
    return Allocation(rows, frozenset(rows))


def _joint(problem: Problem, ordered: dict[int, np.ndarray], floor: Allocation, deadline: float) -> Allocation | None:
    """The joint programme over the types that could be met alone (see the module docstring); None
    if there is nothing to gain or no solve finished in time."""
    alone = {t: problem.shortest(t, ordered[t]) for t in problem.need}
    types = sorted(t for t, k in alone.items() if k is not None)
    if len(types) < 2 or len(floor.met) == len(problem.need) == 1:
        return None
    if floor.met == frozenset(problem.need) and all(floor.rows[t].size == alone[t] for t in problem.need):
        return None  # every type has its shortest list as if it were alone: no plan asks fewer
    pools, targets = {}, {}
    for t in types:  # each type's best candidates, enough for its list alone several times over, and the floor's
        keep = np.zeros(ordered[t].size, dtype=bool)
        keep[: POOL_FACTOR * int(alone[t] or 0) + POOL_EXTRA] = True
        if t in floor.met:
            keep |= np.isin(ordered[t], floor.rows[t])
        pools[t] = ordered[t][keep]
        # The floor's lists reach their expected yeses, so the first solve is feasible when the floor
        # meets every such type; a type it does not meet starts at its list alone.
        mine = floor.rows[t] if t in floor.met else ordered[t][: alone[t]]
        targets[t] = float(problem.acceptance[mine, t].sum())
    solved: dict[int, np.ndarray] | None = None
    step = {t: max(0.5, 0.1 * problem.need[t] ** 0.5) for t in types}
    for _ in range(TARGET_ROUNDS):
        attempt = _solve(problem, pools, targets, deadline)
        if attempt is None:
            break
        solved = attempt
        short = [t for t in types if problem.chance(t, solved[t]) < problem.confidence]
        if not short:
            break
        for t in short:  # a type short of its confidence needs more expected yeses
            targets[t] += step[t]
    if solved is None:
        return None
    return _trimmed(problem, pools, solved)


def _solve(
    problem: Problem, pools: dict[int, np.ndarray], targets: dict[int, float], deadline: float
) -> dict[int, np.ndarray] | None:
    """The fewest asks whose expected yeses reach `targets` per type, one ask per customer; among
    as few, higher acceptance (a small reward per expected yes). None: infeasible, or out of time."""
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    pairs = list(pools.items())
    types = np.concatenate([np.full(rows.size, t) for t, rows in pairs])
    rows = np.concatenate([r for _, r in pairs])
    if not rows.size:
        return None  # nobody to choose from: nothing to improve on
    p = problem.acceptance[rows, types]
    customers, col = np.unique(rows, return_inverse=True)
    n_var = rows.size
    index = {t: i for i, (t, _) in enumerate(pairs)}
    yes = sparse.csr_array((p, ([index[t] for t in types], np.arange(n_var))), shape=(len(pairs), n_var))
    once = sparse.csr_array((np.ones(n_var), (col, np.arange(n_var))), shape=(customers.size, n_var))
    lower = np.array([targets[t] for t, _ in pairs])
    result = milp(
        c=1.0 - 1e-3 * p,
        integrality=np.ones(n_var),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(yes, lb=lower, ub=np.inf), LinearConstraint(once, lb=0, ub=1)],
        options={"node_limit": MILP_NODES, "time_limit": left, "mip_rel_gap": MILP_GAP},
    )
    if result.x is None:
        return None
    chosen = result.x > 0.5
    return {t: rows[chosen & (types == t)] for t, _ in pairs}


def _trimmed(problem: Problem, pools: dict[int, np.ndarray], solved: dict[int, np.ndarray]) -> Allocation:
    """As many asks per type as the solver gave it, from the top of its best-first pool among the
    customers no other type has (never a lower acceptance; ties go as they should), then the
    shortest prefix that still reaches the confidence."""
    taken = np.zeros(problem.customer_id.size, dtype=bool)
    for rows in solved.values():
        taken[rows] = True
    out = {}
    for t, rows in solved.items():
        taken[rows] = False
        pool = pools[t]
        mine = pool[~taken[pool]][: rows.size]
        k = problem.shortest(t, mine)
        out[t] = mine if k is None else mine[:k]
        taken[out[t]] = True
    met = frozenset(t for t, rows in out.items() if problem.chance(t, rows) >= problem.confidence)
    return Allocation({t: out[t] for t in met}, met)


def _share_the_rest(problem: Problem, ordered: dict[int, np.ndarray], plan: Allocation) -> Allocation:
    """The met types' lists, and every eligible customer they left shared among the other types:
    each next customer goes to the type furthest behind in expected yeses as a share of its need."""
    taken = np.zeros(problem.customer_id.size, dtype=bool)
    for rows in plan.rows.values():
        taken[rows] = True
    unmet = [t for t in problem.need if t not in plan.met]
    got: dict[int, list[int]] = {t: [] for t in unmet}
    at = dict.fromkeys(unmet, 0)
    # A campaign's later wave counts what its earlier waves already hold (yeses, and pending asks'
    # chance of a yes in time): the type furthest behind over the whole campaign is served first.
    expected = {t: problem.outlooks[t].expected_yes(np.zeros(0)) if problem.outlooks else 0.0 for t in unmet}
    heap = [(expected[t] / problem.need[t], i, t) for i, t in enumerate(unmet)]
    heapq.heapify(heap)
    shared = _by_advantage(problem, ordered, unmet, taken)
    while heap:
        _, i, t = heapq.heappop(heap)
        rows = shared[t]
        while at[t] < rows.size and taken[rows[at[t]]]:
            at[t] += 1
        if at[t] == rows.size:
            continue  # nobody left for this type
        r = int(rows[at[t]])
        taken[r] = True
        got[t].append(r)
        expected[t] += float(problem.acceptance[r, t])
        heapq.heappush(heap, (expected[t] / problem.need[t], i, t))
    out = dict(plan.rows)
    for t in unmet:  # each type's share listed best first, as every list is
        mine = np.zeros(problem.customer_id.size, dtype=bool)
        mine[got[t]] = True
        out[t] = ordered[t][mine[ordered[t]]]
    return Allocation(out, plan.met)


def _by_advantage(
    problem: Problem, ordered: dict[int, np.ndarray], unmet: list[int], taken: np.ndarray
) -> dict[int, np.ndarray]:
    """Each unmet type's customers left, in the order it takes them when all of them are shared out:
    first where its acceptance is highest against the best any other unmet ranked type has there
    (a customer only it may ask comes first), ties in its own order. Taking from the two ends of
    such orders, the types meet at the split that gives each the most expected yeses for what it
    leaves the others, instead of each taking its own best and with them the customers another
    type needs most. An ungated type keeps its random draw's order, and no type is weighed
    against it: a ranked type's picks must not tilt the draw."""
    ranked = [t for t in unmet if t not in problem.draws]
    out = {t: ordered[t] for t in unmet}
    if len(ranked) < 2:
        return out
    p = np.where(problem.eligible[:, ranked] & ~taken[:, None], problem.acceptance[:, ranked], 0.0)
    for j, t in enumerate(ranked):
        rows = ordered[t]
        others = np.delete(p[rows], j, axis=1).max(axis=1)
        advantage = np.log(np.clip(p[rows, j], 1e-12, None)) - np.log(np.clip(others, 1e-12, None))
        out[t] = rows[np.argsort(-advantage, kind="stable")]  # ties stay in the type's own order
    return out
