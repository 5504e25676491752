"""The ask planner (spec section 5): "to get N yeses of each type, whom do I ask?"

Given needs per ask type and a confidence, the plan is, for each type, the shortest list of
customers whose chance of giving at least N yeses (the Poisson-binomial of their calibrated
acceptance) reaches the confidence; one ask per customer across the whole plan, no guardrail
broken, optional filters on the customer's segment, industry, region and use case.

Who is asked for what is `models.allocation`'s: a greedy floor every plan is at least as good as,
a joint mixed-integer programme within a time budget, and the types that cannot be met sharing the
customers left in proportion to their needs. The chance counts what the model does not know: each
type's calibrated level is only known to within a standard error (`models.calibration`), an error
all of that type's customers share, so the chance is the Poisson-binomial averaged over that
shared log-odds shift, not the Poisson-binomial at the point estimate. A type calibrated on few
answers gets a longer list for the same promise. A type that cannot be met says how many yeses are
likely.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from features.spec import FEATURE_NAMES
from models.allocation import Problem, allocate, at_least, draw_keys, shortest_prefix
from models.bundle import Bundle, ask_rows_matrix
from models.campaign import Outlook
from models.reasons import reason, top_indices
from models.references import check_segment, fold, folded

FILTERS: tuple[str, ...] = ("segment", "industry", "region", "use_case")
DEFAULT_CONFIDENCE = 0.9
MAX_NEED = 10_000  # yeses of one type in one plan: beyond this it is not a plan but a campaign


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
    # Per catalog ask type, invited without gating (`GuardrailConfig.ungated`): drawn at random.
    ungated: np.ndarray | None = None

    def sd(self, t: int) -> float:
        return 0.0 if self.level_sd is None else float(self.level_sd[t])

    def is_ungated(self, t: int) -> bool:
        return self.ungated is not None and bool(self.ungated[t])

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


@dataclass(frozen=True)
class Wave:
    """A campaign's wave as the planner needs it: per needed type (catalog column) what the campaign
    already has (`models.campaign.Outlook`), the chance each list must reach by the deadline
    (`models.campaign.wave_target`), and the customers it may not ask (already in the campaign)."""

    outlooks: Mapping[int, Outlook]
    target: float
    exclude: np.ndarray


@dataclass
class Plan:
    """A plan: one row per planned ask (spec section 7 columns), and a summary per ask type."""

    plan_id: str
    as_of: pd.Timestamp
    confidence: float
    asks: pd.DataFrame
    summary: dict[str, dict[str, Any]]
    filters: dict[str, str] = field(default_factory=dict)
    wave: int = 1  # which wave of its campaign (a one-shot plan is a campaign of one wave)
    # A campaign's calendar (`waves`, `wave_days`, `deadline`, `wave`); None for a one-shot plan.
    campaign: dict[str, Any] | None = None


def acceptance_level_sd(bundle: Bundle) -> np.ndarray | None:
    """Per catalog ask type, the standard error of the acceptance model's calibrated level (log-odds);
    None for a model saved before it was kept."""
    se = bundle.acceptance.calibrator.level_se
    return np.asarray(se, dtype=float) if len(se) == len(ASK_TYPE_NAMES) else None


def make_plan(
    cands: Candidates,
    request: PlanRequest,
    as_of: pd.Timestamp,
    plan_id: str | None = None,
    wave: Wave | None = None,
    draw: str | None = None,
) -> Plan:
    """The plan for `request` from the scored base `cands` (see the module docstring); with `wave`,
    one wave of a campaign: each type's list reaches the wave's target by the deadline, counting
    what the campaign already has (`models.campaign.Outlook`).

    An ungated type's invitees are drawn at random (`models.allocation.draw_keys`) with the salt
    `draw` and the type's name: by default the plan's `as_of`, and a campaign's later waves pass its
    first wave's date, so that they go on down the same draw."""
    need = {ASK_TYPE_NAMES.index(name): n for name, n in request.need.items()}
    salt = draw if draw is not None else pd.Timestamp(as_of).isoformat()
    draws = {t: draw_keys(cands.customer_id, f"{salt}|{ASK_TYPE_NAMES[t]}") for t in need if cands.is_ungated(t)}
    level_sd = cands.level_sd if cands.level_sd is not None else np.zeros(len(ASK_TYPE_NAMES))
    problem = Problem(
        cands.customer_id,
        cands.acceptance,
        cands.eligible(request) & (True if wave is None else ~wave.exclude[:, None]),
        cands.last_asked_at,
        level_sd,
        need,
        request.confidence if wave is None else wave.target,
        None if wave is None else wave.outlooks,
        draws,
        request.confidence,
    )
    allocated = allocate(problem)
    allocation, unmet = allocated.rows, set(need) - allocated.met
    frames, summary = [], {}
    for name, n in request.need.items():
        t = ASK_TYPE_NAMES.index(name)
        rows = allocation[t]
        p = cands.acceptance[rows, t]
        if wave is not None:  # by the deadline, counting what is out, this wave down to the row
            chance = wave.outlooks[t].chance(p) if rows.size else np.zeros(0)
        else:
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
            "invited_at_random": t in draws,
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
    "wave",
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


INVITED_AT_RANDOM = (
    "Invited at random among customers no fatigue guardrail blocks: public reviews are not gated on"
    " how happy a customer seems"
)


def drawn_types(plan: Plan) -> list[str]:
    """The plan's ask types whose invitees were drawn at random (ungated)."""
    return [name for name, s in plan.summary.items() if s.get("invited_at_random")]


def plan_table(plan: Plan, reasons: pd.DataFrame) -> pd.DataFrame:
    """One row per planned ask in the spec's columns (`advocacy plan --out`, `POST /plan`). A random
    invitee's reason is the draw: the model's reasons would read as why they were chosen."""
    table = pd.concat([plan.asks.reset_index(drop=True), reasons.reset_index(drop=True)], axis=1)
    table.insert(0, "plan_id", plan.plan_id)
    table["wave"] = plan.wave
    drawn = table["ask_type"].isin(drawn_types(plan)).to_numpy()
    if drawn.any():
        table["reason_1"] = table["reason_1"].astype(object)
        table.loc[drawn, "reason_1"] = INVITED_AT_RANDOM
        table.loc[drawn, ["reason_2", "reason_3"]] = None
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
    "INVITED_AT_RANDOM",
    "PLAN_COLUMNS",
    "Candidates",
    "Plan",
    "PlanRequest",
    "Wave",
    "acceptance_reasons",
    "at_least",
    "drawn_types",
    "make_plan",
    "parse_need",
    "plan_record",
    "plan_table",
    "plannable",
    "shortest_prefix",
]
