"""The ask planner's allocation (models/planner.py) on scored bases whose probabilities are known."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from scipy.stats import binom

from features.catalog import ASK_TYPE_NAMES
from models.allocation import Problem, allocate, draw_keys
from models.campaign import Answers, AnswerTimes, SoFar, outlook
from models.guardrails import GuardrailConfig
from models.planner import (
    INVITED_AT_RANDOM,
    Candidates,
    PlanRequest,
    at_least,
    make_plan,
    plan_table,
    shortest_prefix,
)
from storage.plans import PlanStore

T = {name: i for i, name in enumerate(ASK_TYPE_NAMES)}
AS_OF = pd.Timestamp("2026-10-01", tz="UTC")


def _base(acceptance: np.ndarray, blocked: np.ndarray | None = None, seed: int = 0) -> Candidates:
    n = acceptance.shape[0]
    rng = np.random.default_rng(seed)
    last = pd.DatetimeIndex(AS_OF - pd.to_timedelta(rng.integers(40, 400, n), unit="D"))
    return Candidates(
        customer_id=np.array([f"C{i:05d}" for i in range(n)], dtype=object),
        acceptance=acceptance,
        blocked=np.zeros(acceptance.shape, dtype=bool) if blocked is None else blocked,
        last_asked_at=last,
        attributes=pd.DataFrame(
            {
                "name": [f"Customer {i}" for i in range(n)],
                "segment": rng.choice(["smb", "mid_market", "enterprise"], n),
                "industry": "software",
                "region": "emea",
                "use_case": "analytics",
            }
        ),
    )


def _random_base(n: int = 3000, seed: int = 0) -> Candidates:
    rng = np.random.default_rng(seed)
    willing = rng.normal(0, 1, (n, 1))
    logit = -1.6 + 0.9 * willing + 0.5 * rng.normal(0, 1, (n, len(ASK_TYPE_NAMES))) - np.linspace(0, 2, 9)
    return _base(1 / (1 + np.exp(-logit)), seed=seed)


def test_the_chance_of_n_yeses_is_the_poisson_binomial() -> None:
    p = np.full(60, 0.3)
    assert at_least(p, 15) == pytest.approx(binom.sf(14, np.arange(1, 61), 0.3), abs=1e-12)
    rng = np.random.default_rng(0)
    q = rng.random(12)
    draws = rng.random((200_000, 12)) < q
    assert at_least(q, 4)[-1] == pytest.approx((draws.sum(axis=1) >= 4).mean(), abs=0.005)
    assert shortest_prefix(np.full(5, 0.9), 6, 0.5) is None


def test_needs_the_base_cannot_meet_together_meet_what_can_be_met_and_share_the_rest() -> None:
    """300 customers, each as willing for either type: 70 yeses of each at 0.9 need about 160 asks
    each, more than the base holds together. As good as greedy: one type is met with its shortest
    list, the other asks everyone left and says it is not met, with the yeses likely."""
    acceptance = np.full((300, len(ASK_TYPE_NAMES)), 0.5)
    plan = make_plan(_base(acceptance), PlanRequest({"review": 70, "case_study": 70}, 0.9), AS_OF)
    assert plan.asks["customer_id"].is_unique and len(plan.asks) == 300
    met = [name for name in ("review", "case_study") if plan.summary[name]["met"]]
    assert len(met) == 1
    other = plan.summary[({"review", "case_study"} - set(met)).pop()]
    assert plan.summary[met[0]]["asked"] == shortest_prefix(np.full(300, 0.5), 70, 0.9)
    assert other["asked"] == 300 - plan.summary[met[0]]["asked"] and other["p_at_least_needed"] < 0.9
    assert other["expected_yes"] == pytest.approx(0.5 * other["asked"])


def test_needs_each_beyond_the_base_share_it_in_proportion_to_the_needs() -> None:
    """The red team's case: two needs each beyond the base gave one type every eligible customer and
    the other none. Each gets customers in proportion to its need, and the whole base is asked."""
    acceptance = np.full((300, len(ASK_TYPE_NAMES)), 0.5)
    plan = make_plan(_base(acceptance), PlanRequest({"review": 400, "case_study": 200}, 0.9), AS_OF)
    assert plan.asks["customer_id"].is_unique and len(plan.asks) == 300
    review, case = plan.summary["review"], plan.summary["case_study"]
    assert not review["met"] and not case["met"]
    assert review["expected_yes"] / 400 == pytest.approx(case["expected_yes"] / 200, abs=0.01)


def test_types_sharing_a_base_too_small_for_both_each_take_the_customers_they_are_likeliest_to_win() -> None:
    """100 customers would as soon do a reference call as a case study (0.5 each); 100 more would do
    a reference call (0.45) but hardly a case study (0.05). Neither need can be met. Splitting the
    base so that each type takes the customers it is likeliest to win against the other gives
    both about 47 of their 100 yeses expected; each taking its own best first gave both 29."""
    acceptance = np.full((200, len(ASK_TYPE_NAMES)), 0.01)
    acceptance[:, T["reference_call"]] = np.r_[np.full(100, 0.5), np.full(100, 0.45)]
    acceptance[:, T["case_study"]] = np.r_[np.full(100, 0.5), np.full(100, 0.05)]
    plan = make_plan(_base(acceptance), PlanRequest({"reference_call": 100, "case_study": 100}, 0.9), AS_OF)
    assert plan.asks["customer_id"].is_unique and len(plan.asks) == 200
    for name in ("reference_call", "case_study"):
        assert not plan.summary[name]["met"]
        assert plan.summary[name]["expected_yes"] >= 45, plan.summary
    case = plan.asks[plan.asks["ask_type"] == "case_study"]
    assert (case["acceptance"] == 0.5).all()  # no case study is asked of a customer it would hardly win


def test_a_later_wave_beyond_the_base_serves_the_type_furthest_behind_over_the_whole_campaign() -> None:
    """A campaign's last wave, 100 customers left at 0.5 for either type, neither need reachable:
    reviews already hold 150 of their 200 yeses, case studies none of their 60. The customers go
    where the campaign is furthest behind, not in proportion to the needs as if nothing had been
    asked before: case studies take them until they too hold three quarters of their need."""
    n = 100
    acceptance = np.full((n, len(ASK_TYPE_NAMES)), 0.5)
    days = {t: np.ones(10) for t in range(len(ASK_TYPE_NAMES))}
    times = AnswerTimes(days, days, dict.fromkeys(days, 0.0))  # every answer back in a day
    outlooks = {
        T["review"]: outlook(SoFar(200, 150, Answers.none(), 0.0), times, T["review"], 14.0),
        T["case_study"]: outlook(SoFar(60, 0, Answers.none(), 0.0), times, T["case_study"], 14.0),
    }
    problem = Problem(
        np.array([f"C{i:04d}" for i in range(n)], dtype=object),
        acceptance,
        np.ones(acceptance.shape, dtype=bool),
        pd.DatetimeIndex([pd.NaT] * n),
        np.zeros(len(ASK_TYPE_NAMES)),
        {T["review"]: 200, T["case_study"]: 60},
        0.9,
        outlooks=outlooks,
    )
    got = allocate(problem)
    assert not got.met and sum(r.size for r in got.rows.values()) == n
    assert got.rows[T["case_study"]].size >= 90  # 0.75 x 60 yeses at 0.5 each


def test_many_types_are_met_as_greedy_meets_them_within_the_budget() -> None:
    """The red team's case: five and nine types at 20 each came back all unmet (or timed out), where
    letting each type in turn take its best remaining customers meets them all."""
    base = _random_base(n=2000, seed=9)
    for k in (5, 9):
        started = time.perf_counter()
        plan = make_plan(base, PlanRequest({t: 20 for t in ASK_TYPE_NAMES[:k]}, 0.9), AS_OF)
        assert time.perf_counter() - started < 10.0  # bounded (the benchmark measures it)
        assert all(plan.summary[t]["met"] for t in ASK_TYPE_NAMES[:k]), plan.summary
        assert plan.asks["customer_id"].is_unique


def test_a_shared_level_error_is_averaged_over_not_ignored() -> None:
    """With a level error every customer shares, the chance of n yeses is the Poisson-binomial
    averaged over that shift, as a simulation of it gives."""
    rng = np.random.default_rng(1)
    p = rng.uniform(0.1, 0.6, 150)
    shift = rng.normal(0.0, 0.3, (40_000, 1))
    draws = rng.random((40_000, p.size)) < expit(logit(p) + shift)
    assert at_least(p, 45, 0.3)[-1] == pytest.approx((draws.sum(axis=1) >= 45).mean(), abs=0.01)
    assert at_least(p, 45, 0.0) == pytest.approx(at_least(p, 45), abs=1e-15)


def test_a_plan_keeps_its_promise_when_each_types_level_is_only_known_to_within_its_error() -> None:
    """The truth is the model's acceptance shifted, per type, by an error drawn from the level's
    standard error: the plan that counts that error keeps its promise over the draws; the plan at
    the point estimate does not, and is shorter."""
    base = _random_base(n=3000, seed=4)
    sd = np.full(len(ASK_TYPE_NAMES), 0.25)
    careful = Candidates(base.customer_id, base.acceptance, base.blocked, base.last_asked_at, base.attributes, sd)
    request = PlanRequest({"reference_call": 40, "review": 120, "case_study": 15}, 0.9)
    plans = {"point estimate": make_plan(base, request, AS_OF), "with the error": make_plan(careful, request, AS_OF)}
    rng = np.random.default_rng(5)
    for name, n in request.need.items():
        t = T[name]
        kept = {}
        for label, plan in plans.items():
            p = plan.asks.loc[plan.asks["ask_type"] == name, "acceptance"].to_numpy()
            errors = rng.normal(0.0, sd[t], 400)
            kept[label] = np.mean([at_least(expit(logit(p) + e), n)[-1] for e in errors])
        assert kept["with the error"] >= 0.87, (name, kept)
        if n >= 40:  # a small need's chance is mostly each customer's own yes or no, not the shared level
            assert kept["point estimate"] < 0.85, (name, kept)
        assert plans["with the error"].summary[name]["asked"] > plans["point estimate"].summary[name]["asked"]
        assert plans["with the error"].summary[name]["acceptance_level_sd"] == 0.25


@pytest.mark.parametrize(
    ("need", "confidence", "field"),
    [
        ({"reference_calls": 4}, 0.9, "need: unknown ask type 'reference_calls'"),
        ({"review": 0}, 0.9, "need.review"),
        ({"review": -3}, 0.9, "need.review"),
        ({"review": 2.5}, 0.9, "need.review"),
        ({}, 0.9, "need"),
        ({"review": 3}, 1.0, "confidence"),
        ({"review": 3}, 0.0, "confidence"),
        ({"review": 3}, "high", "confidence"),
    ],
)
def test_bad_requests_name_the_field(need: dict, confidence: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PlanRequest(need, confidence)  # type: ignore[arg-type]


def test_every_need_is_met_with_one_ask_per_customer_and_no_blocked_ask() -> None:
    base = _random_base()
    blocked = np.random.default_rng(3).random(base.acceptance.shape) < 0.2
    base = Candidates(base.customer_id, base.acceptance, blocked, base.last_asked_at, base.attributes)
    need = {"reference_call": 40, "review": 120, "case_study": 15}
    plan = make_plan(base, PlanRequest(need, 0.9), AS_OF)
    asks = plan.asks
    assert asks["customer_id"].is_unique  # one ask per customer across the whole plan
    rows, types = asks["row"].to_numpy(), asks["ask_type"].map(T).to_numpy()
    assert not blocked[rows, types].any()
    for name, n in need.items():
        mine = asks[asks["ask_type"] == name]
        s = plan.summary[name]
        assert s["met"] and s["need"] == n and s["asked"] == len(mine)
        # The promise, computed again from the acceptance of the listed customers.
        assert at_least(mine["acceptance"].to_numpy(), n)[-1] == pytest.approx(s["p_at_least_needed"])
        assert s["p_at_least_needed"] >= 0.9
        # The shortest list: without its last customer it would not reach the confidence.
        assert at_least(mine["acceptance"].to_numpy()[:-1], n)[-1] < 0.9
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert (np.diff(mine["acceptance"]) <= 1e-12).all()
        assert mine["expected_yes"].iloc[-1] == pytest.approx(s["expected_yes"])


def test_joint_allocation_beats_first_come_first_served() -> None:
    # Forty customers are good at both reviews and case studies; only they are any good at case
    # studies. Reviews allocated first would take them; the joint plan gives reviews to others.
    n = 400
    acc = np.full((n, len(ASK_TYPE_NAMES)), 0.02)
    acc[:40, T["case_study"]] = 0.6
    acc[:40, T["review"]] = 0.7
    acc[40:, T["review"]] = 0.5
    plan = make_plan(_base(acc), PlanRequest({"review": 60, "case_study": 15}), AS_OF)
    assert plan.summary["review"]["met"] and plan.summary["case_study"]["met"]
    stars = set(_base(acc).customer_id[:40])
    assert set(plan.asks.loc[plan.asks["ask_type"] == "case_study", "customer_id"]) <= stars
    assert plan.asks["customer_id"].is_unique


def test_a_need_that_cannot_be_met_says_so_and_how_many_yeses_are_likely() -> None:
    acc = np.full((30, len(ASK_TYPE_NAMES)), 0.1)
    plan = make_plan(_base(acc), PlanRequest({"speaking": 10}), AS_OF)
    s = plan.summary["speaking"]
    assert not s["met"] and s["asked"] == 30
    assert s["expected_yes"] == pytest.approx(3.0) and s["p_at_least_needed"] < 0.01


def test_filters_and_ties_to_the_customer_asked_least_recently() -> None:
    acc = np.full((200, len(ASK_TYPE_NAMES)), 0.5)
    base = _base(acc)
    plan = make_plan(base, PlanRequest({"review": 5}, 0.9, {"segment": "enterprise"}), AS_OF)
    asks = plan.asks
    assert set(base.attributes.loc[asks["row"], "segment"]) == {"enterprise"}
    enterprise = base.attributes["segment"].to_numpy() == "enterprise"
    oldest = np.sort(base.last_asked_at[enterprise].asi8)[: len(asks)]
    assert sorted(base.last_asked_at[asks["row"]].asi8) == oldest.tolist()
    with pytest.raises(ValueError, match="plan_size"):
        PlanRequest({"review": 5}, 0.9, {"plan_size": "big"})


def test_the_plan_asks_few_more_than_the_fewest_that_reach_the_confidence() -> None:
    base = _random_base(seed=5)
    need = {"reference_call": 40, "review": 120, "case_study": 15}
    plan = make_plan(base, PlanRequest(need, 0.9), AS_OF)
    # Greedy by type on the same probabilities, each type's best customers not yet taken.
    taken: set[int] = set()
    fewest = 0
    for name, n in need.items():
        t = T[name]
        order = [r for r in np.argsort(-base.acceptance[:, t], kind="stable") if r not in taken]
        k = shortest_prefix(base.acceptance[order, t], n, 0.9)
        assert k is not None
        taken |= set(order[:k])
        fewest += k
    assert len(plan.asks) <= 1.15 * fewest


def test_plans_are_stored_whole_and_ids_are_checked(tmp_path: Path) -> None:
    store = PlanStore(tmp_path / "plans")
    plan = make_plan(_random_base(n=300), PlanRequest({"review": 10}), AS_OF)
    store.save(plan.plan_id, plan.asks, {"need": {"review": 10}})
    asks, meta = store.load(plan.plan_id)
    pd.testing.assert_frame_equal(asks, plan.asks)
    assert meta == {"need": {"review": 10}} and store.ids() == [plan.plan_id]
    with pytest.raises(ValueError, match="plan_id"):
        store.load("../../etc/passwd")
    with pytest.raises(KeyError):
        store.load("0" * 32)


def test_filters_match_as_references_do_and_a_value_no_customer_has_is_refused_naming_it() -> None:
    """Case and surrounding spaces do not count ("SMB" is smb); a segment that does not exist, or a
    value no customer has, is a misspelling: refused naming the filter, never an empty plan."""
    base = _base(np.full((200, len(ASK_TYPE_NAMES)), 0.5))
    lower = make_plan(base, PlanRequest({"review": 5}, 0.9, {"segment": "enterprise", "industry": "software"}), AS_OF)
    upper = make_plan(base, PlanRequest({"review": 5}, 0.9, {"segment": " Enterprise", "industry": "SOFTWARE "}), AS_OF)
    assert upper.asks["customer_id"].tolist() == lower.asks["customer_id"].tolist() and len(lower.asks) > 0
    with pytest.raises(ValueError, match="segment must be one of smb, mid_market, enterprise, got 'nobody'"):
        PlanRequest({"social_share": 1}, 0.05, {"segment": "nobody"})
    with pytest.raises(ValueError, match=r"industry: no customer has 'Retail' .*; there are software"):
        make_plan(base, PlanRequest({"review": 5}, 0.9, {"industry": "Retail"}), AS_OF)


def test_filters_that_together_match_no_one_give_an_empty_plan_that_says_so() -> None:
    base = _base(np.full((100, len(ASK_TYPE_NAMES)), 0.5))
    base.attributes.loc[base.attributes["segment"] == "smb", "region"] = "apac"
    request = PlanRequest({"social_share": 1}, 0.05, {"segment": "smb", "region": "emea"})
    plan = make_plan(base, request, AS_OF)
    assert plan.asks.empty
    assert plan.summary["social_share"] == {
        "need": 1,
        "asked": 0,
        "expected_yes": 0.0,
        "p_at_least_needed": 0.0,
        "met": False,
        "acceptance_level_sd": 0.0,
        "invited_at_random": False,
    }


# --- ungated public reviews (spec 5a) -----------------------------------------------------------


def _happy_base(n: int = 4000, seed: int = 3) -> tuple[Candidates, np.ndarray]:
    """A base where acceptance of every type rises with how happy a customer is (their NPS)."""
    rng = np.random.default_rng(seed)
    nps = rng.integers(0, 11, n).astype(float)
    z = -2.0 + 0.35 * (nps[:, None] - 5) + 0.4 * rng.normal(0, 1, (n, len(ASK_TYPE_NAMES)))
    base = _base(expit(z), seed=seed)
    return replace(base, ungated=GuardrailConfig().ungated()), nps


def test_review_invitees_are_a_random_draw_not_the_happiest() -> None:
    """The issue's bar: invitees' NPS within 2 standard errors of the eligible base's. A random draw
    misses it by chance one time in twenty, so the draw is judged over 100 plan dates: its z-scores
    centre on zero and rarely pass 2. Gated, the same request takes the happiest customers, far above."""
    base, nps = _happy_base()
    request = PlanRequest({"review": 60}, 0.9)
    z = []
    for day in range(100):
        plan = make_plan(base, request, AS_OF + pd.Timedelta(days=day))
        rows = plan.asks["row"].to_numpy()
        z.append((nps[rows].mean() - nps.mean()) / (nps.std(ddof=1) / np.sqrt(rows.size)))
        assert plan.summary["review"]["invited_at_random"] and plan.summary["review"]["met"]
    assert abs(np.mean(z)) < 3 / np.sqrt(len(z)) and np.mean(np.abs(z) > 2) <= 0.10
    gated = make_plan(replace(base, ungated=None), request, AS_OF)
    se = nps.std(ddof=1) / np.sqrt(len(gated.asks))
    assert nps[gated.asks["row"].to_numpy()].mean() > nps.mean() + 10 * se
    assert len(gated.asks) < len(plan.asks)  # the honest draw needs more invitations


def test_the_review_draw_is_made_before_other_types_and_is_not_tilted_by_them() -> None:
    base, _ = _happy_base()
    alone = make_plan(base, PlanRequest({"review": 40}, 0.9), AS_OF)
    with_others = make_plan(base, PlanRequest({"reference_call": 30, "review": 40, "case_study": 10}, 0.9), AS_OF)
    drawn = with_others.asks[with_others.asks["ask_type"] == "review"]
    assert drawn["customer_id"].tolist() == alone.asks["customer_id"].tolist()
    assert with_others.asks["customer_id"].is_unique
    assert all(with_others.summary[t]["met"] for t in ("reference_call", "review", "case_study"))


def test_a_review_draw_sharing_a_base_too_small_for_every_need_is_still_not_gated() -> None:
    """Reviews, reference calls and case studies all beyond the base: the types share it, each ranked
    type taking the customers it is likeliest to win against the other. Reviews are not ranked
    against them: their share still follows the draw, not the customers happiest to review."""
    base, nps = _happy_base(n=600)
    acceptance = base.acceptance.copy()
    acceptance[:, T["review"]] = expit(-3.0 + 0.6 * (nps - 5))  # happier customers review far more
    plan = make_plan(
        replace(base, acceptance=acceptance),
        PlanRequest({"reference_call": 400, "review": 400, "case_study": 400}, 0.9),
        AS_OF,
    )
    assert len(plan.asks) == 600 and not any(s["met"] for s in plan.summary.values())
    rows = plan.asks.loc[plan.asks["ask_type"] == "review", "row"].to_numpy()
    se = nps.std(ddof=1) / np.sqrt(rows.size)
    assert abs(nps[rows].mean() - nps.mean()) < 3 * se


def test_the_draw_is_fixed_by_the_plan_and_changes_with_its_date() -> None:
    base, _ = _happy_base()
    request = PlanRequest({"review": 40}, 0.9)
    first = make_plan(base, request, AS_OF).asks
    again = make_plan(base, request, AS_OF).asks
    later = make_plan(base, request, AS_OF + pd.Timedelta(days=1)).asks
    assert first["customer_id"].tolist() == again["customer_id"].tolist()
    assert set(first["customer_id"]) != set(later["customer_id"])
    continued = make_plan(base, request, AS_OF + pd.Timedelta(days=1), draw=AS_OF.isoformat()).asks
    assert continued["customer_id"].tolist() == first["customer_id"].tolist()


def test_a_random_invitees_reason_is_the_draw() -> None:
    base, _ = _happy_base(n=500)
    plan = make_plan(base, PlanRequest({"review": 10, "case_study": 3}, 0.9), AS_OF)
    reasons = pd.DataFrame({"reason_1": "model reason", "reason_2": "two", "reason_3": "three"}, index=plan.asks.index)
    table = plan_table(plan, reasons)
    review = table[table["ask_type"] == "review"]
    assert (review["reason_1"] == INVITED_AT_RANDOM).all() and review["reason_2"].isna().all()
    assert (table.loc[table["ask_type"] == "case_study", "reason_1"] == "model reason").all()


def test_a_waves_review_draw_holds_what_later_waves_will_reach_from_the_other_types() -> None:
    """Wave 1 asks reviewers only to its lower target, but the draw down to the campaign's own
    confidence is held from the other types: their picks would otherwise skim the draw that later
    waves go on down (the likeliest customers are often the happiest)."""
    n = 600
    rng = np.random.default_rng(5)
    acceptance = np.full((n, len(ASK_TYPE_NAMES)), 0.5)
    acceptance[:, T["reference_call"]] = rng.uniform(0.2, 0.8, n)
    customer_id = np.array([f"C{i:04d}" for i in range(n)], dtype=object)
    draws = {T["review"]: draw_keys(customer_id, "wave-1")}
    problem = Problem(
        customer_id,
        acceptance,
        np.ones(acceptance.shape, dtype=bool),
        pd.DatetimeIndex([pd.NaT] * n),
        np.zeros(len(ASK_TYPE_NAMES)),
        {T["reference_call"]: 60, T["review"]: 60},
        0.5,
        draws=draws,
        final_confidence=0.95,
    )
    got = allocate(problem)
    order = np.argsort(draws[T["review"]], kind="stable")
    wave_list = shortest_prefix(np.full(n, 0.5), 60, 0.5)
    held = shortest_prefix(np.full(n, 0.5), 60, 0.95)
    assert wave_list is not None and held is not None and held > wave_list
    assert got.rows[T["review"]].tolist() == order[:wave_list].tolist()
    assert not set(got.rows[T["reference_call"]]) & set(order[:held].tolist())
    assert T["reference_call"] in got.met


def test_a_stored_plans_customers_are_read_again_when_its_table_changes(tmp_path: Path) -> None:
    """Every campaign wave asks which customers each open campaign holds; the store keeps them, but
    a campaign's next wave rewrites its table, and then the new customers count."""
    store = PlanStore(tmp_path / "plans")
    plan_id = "a" * 32
    store.save(plan_id, pd.DataFrame({"customer_id": ["c1", "c2"]}), {"need": {"review": 1}})
    assert store.customers(plan_id) == {"c1", "c2"}
    store.save(plan_id, pd.DataFrame({"customer_id": ["c1", "c2", "c3"]}), {"need": {"review": 1}})
    assert store.customers(plan_id) == {"c1", "c2", "c3"}
    for path in (tmp_path / "plans").glob(f"{plan_id}.*"):
        path.unlink()
    with pytest.raises(KeyError):
        store.customers(plan_id)
