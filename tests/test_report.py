"""The program report (`models.program`, `advocacy report`) checked against the ask log by hand-counting.

A five-customer world made by hand: two the points rule always qualifies (q1, q2: NPS 10, adoption
90%, health 90, customers since 2023: 80 points), two it never does (n1, n2: at most 25), and one it
qualifies only from its NPS 10 of 2025-11-20 on (r1: 55 points before, 80 after). Asks come from
the data directory and from the ask log (through `AskLog`, some naming a plan stored through
`PlanStore`); every expected figure is counted here from those lists with plain Python.

The deals section (spec 9) is counted the same way, on eight hand-made deals beside that world (too
few for an adjusted estimate) and on the sample's 450 (enough for one; a handful of resamples).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy.cli import app
from features.baseline import baseline_tier
from features.contracts import CONTRACTS
from features.io import World, read_world, world_from_tables
from models.deal_effect import MIN_TREATED, DealEffect, Refutation
from models.deal_report import (
    ADJUSTED,
    DEALS_CSV_COLUMNS,
    PLAIN,
    WITH,
    WITHOUT,
    DealOptions,
    DealReport,
    KeptEstimate,
    deal_report,
)
from models.planner import PLAN_COLUMNS
from models.program import ProgramReport
from models.program_plots import (
    DEAL_FIGURES,
    FIGURES,
    calibration_chart,
    deal_effect_plot,
    figure_png,
    report_figures,
)
from storage.asklog import AskLog
from storage.files import write_tables
from storage.plans import PlanStore
from storage.reports import ReportStore
from storage.settings import Settings
from tests.conftest import SAMPLE
from usecases import Sources, keep_for_the_page, make_report
from usecases.reports import kept_estimate

P1, P2, P3 = "1" * 32, "2" * 32, "3" * 32  # P3 is named by an ask but was never stored
PLANNED_AT = pd.Timestamp("2025-10-01", tz="UTC")  # every stored plan's as_of: before its asks
PROFILES = {  # customer: (feature_adoption, health_score, [(NPS responded_at, score)])
    "q1": (0.9, 90.0, [("2024-06-15", 10)]),
    "q2": (0.9, 90.0, [("2024-06-15", 10)]),
    "n1": (0.3, 50.0, [("2024-06-15", 5)]),
    "n2": (0.3, 50.0, [("2024-06-15", 5)]),
    "r1": (0.9, 90.0, [("2024-06-15", 3), ("2025-11-20", 10)]),
}
ASK_KEYS = ("ask_id", "customer_id", "ask_type", "asked_at", "outcome", "responded_at")
DATA_ASKS = [
    ("d1", "q1", "review", "2025-03-10", "accepted", "2025-03-12"),
    ("d2", "n1", "review", "2025-03-15", "declined", "2025-03-16"),
    ("d3", "q2", "reference_call", "2025-03-20", "accepted", "2025-03-22"),
    ("d4", "n2", "social_share", "2025-04-02", "no_response", None),
    ("d5", "r1", "review", "2025-06-10", "declined", "2025-06-11"),
    ("d7", "q1", "review", "2025-10-20", "declined", "2025-10-22"),  # the log says accepted
]
LOGGED = [  # rows of the asks table and the plan_id they were recorded with
    ("d7", "q1", "review", "2025-10-20", "accepted", "2025-10-22", P1),  # replaces the data's d7
    ("l2", "q2", "reference_call", "2025-10-25", "declined", "2025-10-26", P1),
    ("r2", "r1", "review", "2025-10-28", "declined", "2025-10-29", None),
    ("l3", "n1", "review", "2025-11-03", "accepted", "2025-11-05", P1),
    ("l4", "n2", "review", "2025-11-10", "declined", "2025-11-11", P1),  # off plan: n2 is not in P1
    ("l5", "q2", "review", "2025-11-12", "accepted", "2025-11-14", P1),  # off plan: P1 has q2 for reference_call
    ("l6", "r1", "case_study", "2025-12-01", "no_response", None, P2),
    ("l7", "q1", "social_share", "2025-12-05", "accepted", "2025-12-06", P3),  # off plan: P3 is not stored
    ("l8", "x9", "review", "2025-12-10", "accepted", "2025-12-11", P1),  # no such customer in the data
    ("l9", "q2", "review", "2026-01-05", "accepted", "2026-01-07", None),
]
ACTIVITIES = [  # activity_id, customer_id, activity_type, occurred_at, ask_id
    ("v1", "q1", "review", "2025-03-25", "d1"),
    ("v2", "q2", "reference_call", "2025-04-01", None),  # unsolicited: does not deliver q2's d3
    ("v3", "q2", "reference_call", "2025-04-05", None),  # unsolicited: delivers nothing either
    ("v4", "n1", "review", "2025-11-20", "l3"),
    ("v5", "q1", "review", "2025-11-01", "d7"),  # d7 is accepted in the log only
]
PLANS = {  # plan_id: [(customer_id, ask_type, acceptance promised, rank)]
    P1: [
        ("q1", "review", 0.80, 1),
        ("r1", "review", 0.55, 2),
        ("n1", "review", 0.31, 3),
        ("q2", "reference_call", 0.35, 1),
    ],
    P2: [("r1", "case_study", 0.42, 1), ("q1", "case_study", 0.90, 2)],
}


def _raw_tables() -> dict[str, pd.DataFrame]:
    months = [f"{y}-{m:02d}-01" for y in (2024, 2025, 2026) for m in range(1, 13)][:26]  # to 2026-02
    usage = [(c, m, 10, 5, a, 10, h) for c, (a, h, _) in PROFILES.items() for m in months]
    return {
        "customers": pd.DataFrame(
            {
                "customer_id": list(PROFILES),
                "name": [f"Customer {c}" for c in PROFILES],
                "industry": "software",
                "segment": "mid_market",
                "region": "emea",
                "use_case": "analytics",
                "plan": "pro",
                "contract_start": "2023-01-01",
                "churned_at": None,
                "arr": 10_000.0,
            }
        ),
        "usage": pd.DataFrame(usage, columns=list(CONTRACTS["usage"].columns)),
        "nps": pd.DataFrame(
            [(c, t, s) for c, (_, _, scores) in PROFILES.items() for t, s in scores],
            columns=["customer_id", "responded_at", "score"],
        ),
        "asks": pd.DataFrame(DATA_ASKS, columns=list(ASK_KEYS)),
        "activities": pd.DataFrame(
            ACTIVITIES, columns=["activity_id", "customer_id", "activity_type", "occurred_at", "ask_id"]
        ),
    }


def _plan_frame(plan_id: str, rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    """A stored plan's rows in the planner's columns (only customer, type, acceptance and rank matter here)."""
    frame = pd.DataFrame(rows, columns=["customer_id", "ask_type", "acceptance", "rank"])
    frame["plan_id"] = plan_id
    frame["wave"] = 1
    frame["name"] = "Customer " + frame["customer_id"]
    frame["expected_yes"] = frame.groupby("ask_type")["acceptance"].cumsum()
    frame["p_at_least_needed"] = 0.9
    for k in (1, 2, 3):
        frame[f"reason_{k}"] = None
    frame["last_asked_at"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    return frame.loc[:, list(PLAN_COLUMNS)]


@dataclass
class Program:
    """The hand-made world, and a project home whose ask log and plan store hold the asks and plans."""

    world: World
    data: Path
    settings: Settings

    def report(self, since: str | None = None) -> ProgramReport:
        """What `advocacy report` makes: the report use case on the data, the ask log and the plans."""
        sources = Sources.from_settings(self.settings, self.data)
        return make_report(sources, None if since is None else pd.Timestamp(since, tz="UTC")).report


@pytest.fixture
def program(tmp_path: Path) -> Program:
    raw = _raw_tables()
    write_tables(raw, tmp_path / "data", "csv")
    settings = Settings(home=tmp_path / "home")
    log = AskLog(settings.ask_log_path(), CONTRACTS["asks"])
    log.record(pd.DataFrame(LOGGED, columns=[*ASK_KEYS, "plan_id"]))
    store = PlanStore(settings.plans_path())
    for plan_id, rows in PLANS.items():
        store.save(plan_id, _plan_frame(plan_id, rows), {"need": {}, "as_of": PLANNED_AT.isoformat()})
    return Program(world_from_tables(raw), tmp_path / "data", settings)


# ---- the hand count: plain Python over the lists above ------------------------------------------


def _ts(value: str | None) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value, tz="UTC")


def _asks_as_reported() -> dict[str, dict]:
    """The data's asks with the log's laid over them (same ask_id: the log's), known customers only."""
    rows = {a[0]: dict(zip(ASK_KEYS, a, strict=True)) for a in DATA_ASKS}
    rows |= {a[0]: dict(zip(ASK_KEYS, a[:6], strict=True)) for a in LOGGED if a[1] in PROFILES}
    for row in rows.values():
        row["asked_at"], row["responded_at"] = _ts(row["asked_at"]), _ts(row["responded_at"])
    return rows


def _in_period(since: str | None) -> list[dict]:
    return [a for a in _asks_as_reported().values() if since is None or a["asked_at"] >= _ts(since)]


def _delivered(ask: dict) -> bool:
    return ask["outcome"] == "accepted" and any(v[4] == ask["ask_id"] for v in ACTIVITIES)


def _counts(asks: list[dict], key: Callable[[dict], object]) -> dict:
    """key(ask) -> (asks, accepted, declined, no_response, delivered)."""
    out: dict = {}
    for a in asks:
        c = out.setdefault(key(a), Counter())
        c["asks"] += 1
        c[a["outcome"]] += 1
        c["delivered"] += _delivered(a)
    return {k: (c["asks"], c["accepted"], c["declined"], c["no_response"], c["delivered"]) for k, c in out.items()}


def _promise(ask_id: str) -> tuple[str, float | None] | None:
    """(plan_id, promised acceptance or None off plan) of a logged ask made from a plan; None if none."""
    for a in LOGGED:
        if a[0] == ask_id and a[6] is not None:
            rows = {(c, t): p for c, t, p, _ in PLANS.get(a[6], [])}
            return a[6], rows.get((a[1], a[2]))
    return None


def _points(customer: str, t: pd.Timestamp) -> int:
    """The 100-point rule for a customer as of `t`, from events strictly before it. Everyone is a
    customer since 2023-01-01 and every ask is from 2025 on: tenure > 12 months, 15 points."""
    adoption, health, scores = PROFILES[customer]
    earlier = [s for when, s in scores if _ts(when) < t]
    willing = any(
        a["customer_id"] == customer and a["outcome"] == "accepted" and a["responded_at"] < t
        for a in _asks_as_reported().values()
    )
    return 25 * (bool(earlier) and earlier[-1] >= 9) + 20 * (adoption > 0.7) + 20 * (health > 80) + 15 + 10 * willing


def _frame_as(frame: pd.DataFrame, keys: list[str], values: list[str]) -> dict:
    return {
        tuple(r[keys]) if len(keys) > 1 else r[keys[0]]: tuple(int(r[v]) for v in values) for _, r in frame.iterrows()
    }


COUNT_COLUMNS = ["asks", "accepted", "declined", "no_response", "delivered"]


# ---- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("since", [None, "2025-10-26"])
def test_asks_acceptance_and_delivery_by_type_and_month_match_the_hand_count(
    program: Program, since: str | None
) -> None:
    made = program.report(since)
    asks = _in_period(since)
    by_month = _counts(asks, lambda a: (a["ask_type"], a["asked_at"].strftime("%Y-%m")))
    assert _frame_as(made.by_month, ["ask_type", "month"], COUNT_COLUMNS) == by_month
    assert _frame_as(made.by_type, ["ask_type"], COUNT_COLUMNS) == _counts(asks, lambda a: a["ask_type"])
    assert _frame_as(made.monthly, ["month"], COUNT_COLUMNS) == _counts(asks, lambda a: a["asked_at"].strftime("%Y-%m"))
    for row in made.by_month.itertuples(index=False):
        n, accepted, _, _, delivered = by_month[(row.ask_type, row.month)]
        assert row.acceptance_rate == pytest.approx(accepted / n)
        assert (row.delivery_rate == pytest.approx(delivered / accepted)) if accepted else pd.isna(row.delivery_rate)
    assert made.metrics()["asks"] == len(asks)
    assert made.left_out == {"logged asks for customers not in the data": 1}  # l8, whose customer x9 is unknown


def test_delivery_is_matched_on_ask_id_never_by_counts(program: Program) -> None:
    made = program.report()
    calls = made.by_type.set_index("ask_type").loc["reference_call"]
    # q2 accepted d3 and did two reference calls, but neither names it: d3 is not delivered.
    assert (calls["accepted"], calls["delivered"]) == (1, 0)
    march = made.by_month.set_index(["ask_type", "month"])
    assert (march.loc[("review", "2025-03"), "delivered"], march.loc[("reference_call", "2025-03"), "delivered"]) == (
        1,
        0,
    )
    assert march.loc[("reference_call", "2025-03"), "delivery_rate"] == 0.0


def test_an_ask_in_the_log_replaces_the_data_dirs_ask_of_the_same_id(program: Program) -> None:
    assert program.world.asks.set_index("ask_id").loc["d7", "outcome"] == "declined"
    made = program.report()
    october = made.by_month.set_index(["ask_type", "month"]).loc[("review", "2025-10")]
    # d7 (accepted in the log, delivered by v5) and r2 (declined): the data's declined d7 is gone.
    assert (october["asks"], october["accepted"], october["declined"], october["delivered"]) == (2, 1, 1, 1)
    d7 = made.planned.set_index("ask_id").loc["d7"]
    assert d7["outcome"] == "accepted" and d7["on_plan"] and d7["promised"] == pytest.approx(0.80)
    assert made.by_type["asks"].sum() == len(DATA_ASKS) + len(LOGGED) - 1 - 1  # d7 once, l8 left out


@pytest.mark.parametrize("since", [None, "2025-10-26"])
def test_planned_asks_promised_against_realised_match_the_hand_count(program: Program, since: str | None) -> None:
    made = program.report(since)
    planned = {a["ask_id"]: (a, promise) for a in _in_period(since) if (promise := _promise(a["ask_id"])) is not None}
    got = made.planned.set_index("ask_id")
    assert set(got.index) == set(planned)
    for ask_id, (ask, (plan_id, promised)) in planned.items():
        assert got.loc[ask_id, "plan_id"] == plan_id
        assert bool(got.loc[ask_id, "on_plan"]) == (promised is not None)
        assert bool(got.loc[ask_id, "plan_stored"]) == (plan_id in PLANS)
        assert bool(got.loc[ask_id, "accepted"]) == (ask["outcome"] == "accepted")
        assert (
            (got.loc[ask_id, "promised"] == pytest.approx(promised))
            if promised is not None
            else pd.isna(got.loc[ask_id, "promised"])
        )

    bins: dict[int, list[tuple[float, bool]]] = {}
    for ask, (_, promised) in planned.values():
        if promised is not None:
            bins.setdefault(min(int(promised * 10), 9), []).append((promised, ask["outcome"] == "accepted"))
    rel = made.reliability
    assert [round(lo * 10) for lo in rel["lower"]] == sorted(bins)
    for row, k in zip(rel.itertuples(index=False), sorted(bins), strict=True):
        assert row.asks == len(bins[k]) and row.yeses == sum(y for _, y in bins[k])
        assert row.mean_promised == pytest.approx(sum(p for p, _ in bins[k]) / len(bins[k]))
        assert row.realised_rate == pytest.approx(row.yeses / row.asks)

    per_plan = made.plans.set_index("plan_id")
    assert set(per_plan.index) == {plan_id for _, (plan_id, _) in planned.values()}
    for plan_id, row in per_plan.iterrows():
        mine = [(a, p) for a, (pid, p) in planned.values() if pid == plan_id]
        on = [(a, p) for a, p in mine if p is not None]
        assert (row["asked"], row["off_plan"]) == (len(on), len(mine) - len(on))
        assert row["promised_yeses"] == pytest.approx(sum(p for _, p in on))
        assert row["yeses"] == sum(a["outcome"] == "accepted" for a, _ in on)
        assert (row["stored"], row["planned"]) == (plan_id in PLANS, len(PLANS.get(plan_id, [])))


def test_asks_off_plan_are_counted_not_dropped(program: Program) -> None:
    made = program.report()
    off = made.planned[~made.planned["on_plan"]].set_index("ask_id")
    assert sorted(off.index) == ["l4", "l5", "l7"]  # n2 not in P1; q2 in P1 for another type; P3 not stored
    assert off.loc["l7", "plan_stored"] == False and off.loc["l4", "plan_stored"] == True  # noqa: E712
    plans = made.plans.set_index("plan_id")
    assert plans.loc[P1, ["planned", "asked", "off_plan", "yeses"]].tolist() == [4, 3, 2, 2]  # d7, l2, l3 on it
    assert plans.loc[P1, "promised_yeses"] == pytest.approx(0.80 + 0.35 + 0.31)
    assert plans.loc[P3, ["stored", "planned", "asked", "off_plan"]].tolist() == [False, 0, 0, 1]
    assert made.metrics()["off_plan_asks"] == 3 and made.metrics()["planned_asks"] == 4
    assert made.reliability["bin"].tolist() == ["0.30-0.40", "0.40-0.50", "0.80-0.90"]  # l3 0.31 and l2 0.35 share one
    assert made.reliability["asks"].tolist() == [2, 1, 1] and made.reliability["yeses"].tolist() == [1, 0, 1]


def test_one_ask_per_planned_pair_counts_and_none_made_before_the_plan(program: Program) -> None:
    """A plan asks each (customer, type) once, from its as_of on: a second ask of the pair, or one made
    before the plan (here one of 2023 carrying its plan_id), is off plan, and neither moves the report."""
    before = program.report()
    extra = [
        ("e1", "q1", "review", "2025-11-20", "accepted", "2025-11-21", P1),  # q1's review again: d7 was first
        ("e2", "r1", "review", "2023-06-01", "accepted", "2023-06-02", P1),  # two years before P1
    ]
    AskLog(program.settings.ask_log_path(), CONTRACTS["asks"]).record(
        pd.DataFrame(extra, columns=[*ASK_KEYS, "plan_id"])
    )
    made = program.report()
    planned = made.planned.set_index("ask_id")
    assert not planned.loc[["e1", "e2"], "on_plan"].any()
    assert planned.loc[["e1", "e2"], "promised"].isna().all()
    mine, theirs = made.plans.set_index("plan_id").loc[P1], before.plans.set_index("plan_id").loc[P1]
    assert mine[["asked", "yeses", "promised_yeses"]].tolist() == theirs[["asked", "yeses", "promised_yeses"]].tolist()
    assert mine["off_plan"] == theirs["off_plan"] + 2
    assert made.compared_from == before.compared_from == _ts("2025-10-20")
    pd.testing.assert_frame_equal(made.reliability, before.reliability)


def test_a_campaigns_promise_is_reported_wave_by_wave(program: Program) -> None:
    """A campaign's rows carry their wave: promised expected yeses against yeses per plan and wave."""
    plan_id = "4" * 32
    rows = _plan_frame(plan_id, [("q1", "testimonial", 0.6, 1), ("n1", "testimonial", 0.2, 1)])
    rows.loc[1, "wave"] = 2
    PlanStore(program.settings.plans_path()).save(plan_id, rows, {"need": {}, "as_of": PLANNED_AT.isoformat()})
    asks = [
        ("c1", "q1", "testimonial", "2025-10-05", "accepted", "2025-10-06", plan_id),
        ("c2", "n1", "testimonial", "2025-10-20", "declined", "2025-10-21", plan_id),
    ]
    AskLog(program.settings.ask_log_path(), CONTRACTS["asks"]).record(
        pd.DataFrame(asks, columns=[*ASK_KEYS, "plan_id"])
    )
    waves = program.report().waves.set_index(["plan_id", "wave"])
    assert waves.loc[(plan_id, 1), ["asked", "yeses"]].tolist() == [1, 1]
    assert waves.loc[(plan_id, 2), ["asked", "yeses"]].tolist() == [1, 0]
    assert waves.loc[(plan_id, 2), "promised_yeses"] == pytest.approx(0.2)
    assert waves.loc[(P1, 1), "asked"] == 3  # a one-shot plan is its own first wave


@pytest.mark.parametrize("since", [None, "2025-10-26"])
def test_yeses_per_ask_planned_against_the_points_rule_match_the_hand_count(
    program: Program, since: str | None
) -> None:
    made = program.report(since)
    asks = _in_period(since)
    on_plan = [a for a in asks if (p := _promise(a["ask_id"])) and p[1] is not None]
    start = min(a["asked_at"] for a in on_plan)
    kinds = {a["ask_type"] for a in on_plan}
    window = [a for a in asks if a["asked_at"] >= start and a["ask_type"] in kinds]
    picks = [a for a in window if _points(a["customer_id"], a["asked_at"]) > 60]
    assert made.compared_from == start
    got = made.versus_rule.set_index(["picked_by", "ask_type"])
    for who, mine in (("plan", on_plan), ("points rule", picks)):
        for kind in [*kinds, "all"]:
            part = [a for a in mine if kind in ("all", a["ask_type"])]
            yeses = sum(a["outcome"] == "accepted" for a in part)
            assert (got.loc[(who, kind), "asks"], got.loc[(who, kind), "yeses"]) == (len(part), yeses), (who, kind)
            if part:
                assert got.loc[(who, kind), "yeses_per_ask"] == pytest.approx(yeses / len(part))
    assert len(got) == 2 * (len(kinds) + 1)


def test_the_points_rule_is_judged_as_of_each_asks_time(program: Program) -> None:
    # r1 has 55 points until its NPS 10 of 2025-11-20, then 80: its review of 2025-10-28 (r2) is not
    # the rule's pick, its case study of 2025-12-01 (l6) is.
    assert (_points("r1", _ts("2025-10-28")), _points("r1", _ts("2025-12-01"))) == (55, 80)
    got = program.report().versus_rule.set_index(["picked_by", "ask_type"])
    # From d7 (2025-10-20) on, review / reference_call / case_study: rule picks d7, l2, l5, l6, l9 (not r2, l3, l4).
    assert got.loc[("points rule", "review"), ["asks", "yeses"]].tolist() == [3, 3]
    assert got.loc[("points rule", "all"), ["asks", "yeses"]].tolist() == [5, 3]
    assert got.loc[("plan", "all"), ["asks", "yeses"]].tolist() == [4, 2]


def test_since_leaves_out_earlier_asks_everywhere(program: Program) -> None:
    made = program.report("2025-10-26")
    assert made.monthly["month"].tolist() == ["2025-10", "2025-11", "2025-12", "2026-01"]
    assert made.monthly.set_index("month").loc["2025-10", "asks"] == 1  # r2 only: d7 and l2 came before
    assert sorted(made.planned["ask_id"]) == ["l3", "l4", "l5", "l6", "l7"]
    assert made.compared_from == _ts("2025-11-03")  # l3, the first on-plan ask since
    assert made.plans.set_index("plan_id").loc[P1, ["asked", "off_plan"]].tolist() == [1, 2]
    assert made.since == _ts("2025-10-26")


def test_the_charts_draw_the_reports_figures(program: Program) -> None:
    made = program.report()
    figures = report_figures(made)
    assert list(figures) == list(FIGURES)
    points = np.asarray(calibration_chart(made.reliability).axes[0].collections[0].get_offsets())
    assert points.tolist() == made.reliability[["mean_promised", "realised_rate"]].to_numpy().tolist()
    for fig in figures.values():
        assert figure_png(fig).startswith(b"\x89PNG\r\n\x1a\n")


def _cli_env(program: Program) -> dict[str, str]:
    return {"ADVOCACY_HOME": str(program.settings.home), "COLUMNS": "200"}


def test_advocacy_report_prints_writes_and_logs_the_report(program: Program, tmp_path: Path) -> None:
    import mlflow

    out = tmp_path / "report"
    args = ["report", "--data", str(program.data), "--out", str(out)]
    result = CliRunner().invoke(app, args, env=_cli_env(program))
    assert result.exit_code == 0, result.output
    assert "By ask type" in result.output and "Left out: 1 logged asks" in result.output
    made = program.report()
    for name, frame in made.tables().items():
        written = pd.read_csv(out / f"{name}.csv")
        assert list(written.columns) == list(frame.columns) and len(written) == len(frame), name
    pd.testing.assert_frame_equal(pd.read_csv(out / "by_type.csv"), made.by_type, check_dtype=False)
    for name in FIGURES:
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind

    run_id = result.output.split("MLflow run ")[1].split()[0]
    client = mlflow.MlflowClient(program.settings.tracking_uri())
    run = client.get_run(run_id)
    assert run.data.tags["kind"] == "program_report" and run.data.metrics["off_plan_asks"] == 3
    assert run.data.metrics["promised_yeses"] == pytest.approx(0.80 + 0.35 + 0.31 + 0.42)
    logged = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "tables")}
    assert set(FIGURES) <= logged and "tables/by_type_and_month.csv" in logged
    # No opportunities table: no deals section anywhere, and nothing breaks for it.
    assert made.deals is None and "Deals" not in result.output and not (out / "deals.csv").exists()
    assert "deal_effect_status" not in run.data.tags and "influenced_deals" not in run.data.metrics
    assert not set(DEAL_FIGURES) & logged
    kept = ReportStore(program.settings.report_path()).load()
    assert kept is not None and "deals" not in kept and "deals" not in kept["tables"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--since", "last tuesday"], "--since: not a date or timestamp: 'last tuesday'"),
        (["--since", "2025-13-45"], "--since: not a date or timestamp"),
    ],
)
def test_a_bad_since_is_one_line_and_writes_nothing(
    program: Program, tmp_path: Path, args: list[str], named: str
) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["report", "--data", str(program.data), "--out", str(out), *args], env=_cli_env(program)
    )
    assert result.exit_code == 2
    assert named in " ".join(result.stderr.split()) and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_an_unknown_data_dir_is_one_line(program: Program, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--data", str(tmp_path / "nowhere")], env=_cli_env(program))
    assert result.exit_code == 2
    assert "data directory not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---- deals (spec 9) ------------------------------------------------------------------------------

OPP_KEYS = ("opportunity_id", "amount", "created_at", "outcome", "closed_at", "referred_by")
DEALS = [  # D1 and D5 got a reference before they closed, D4 while open; D2's came after it closed
    ("D1", 100_000.0, "2025-03-01", "won", "2025-05-15", None),
    ("D2", 50_000.0, "2025-05-01", "lost", "2025-07-01", None),
    ("D3", 30_000.0, "2025-08-01", "won", "2025-10-15", "n2"),
    ("D4", 80_000.0, "2025-10-10", "open", None, None),
    ("D5", 20_000.0, "2025-07-01", "lost", "2025-09-30", None),
    ("D6", 40_000.0, "2025-10-01", "won", "2025-12-20", "r1"),  # r1 before its NPS 10: 55 points
    ("D7", 60_000.0, "2025-12-01", "open", None, "r1"),  # r1 after it: 80 points
    ("D8", 25_000.0, "2025-11-15", "won", "2026-01-20", "q1"),
]
DEAL_ASKS = [  # asks table rows made for a deal: ASK_KEYS + opportunity_id
    ("o1", "q2", "reference_call", "2025-04-10", "accepted", "2025-04-11", "D1"),
    ("o2", "q1", "case_study", "2025-06-01", "accepted", "2025-06-02", "D2"),
    ("o3", "n1", "reference_call", "2025-09-01", "declined", "2025-09-02", "D3"),
    ("o4", "q2", "reference_call", "2025-11-01", "accepted", "2025-11-02", "D4"),
    ("o5", "q1", "reference_call", "2025-08-01", "accepted", "2025-08-02", "D5"),
]
DEAL_ACTIVITIES = [
    ("w1", "q2", "reference_call", "2025-04-20", "o1"),
    ("w2", "q1", "case_study", "2025-07-10", "o2"),  # D2 closed on 2025-07-01
    ("w4", "q2", "reference_call", "2025-11-10", "o4"),
    ("w5", "q1", "reference_call", "2025-08-10", "o5"),
]


@pytest.fixture
def dealt(program: Program) -> Program:
    """The hand-made world with an opportunities table and asks made for its deals, in its data folder."""
    raw = _raw_tables()
    raw["asks"] = pd.concat(
        [raw["asks"].assign(opportunity_id=None), pd.DataFrame(DEAL_ASKS, columns=[*ASK_KEYS, "opportunity_id"])],
        ignore_index=True,
    )
    raw["activities"] = pd.concat(
        [raw["activities"], pd.DataFrame(DEAL_ACTIVITIES, columns=list(raw["activities"].columns))], ignore_index=True
    )
    deals = pd.DataFrame(DEALS, columns=list(OPP_KEYS))
    raw["opportunities"] = deals.assign(
        account="Prospect " + deals["opportunity_id"],
        industry="software",
        segment="mid_market",
        region="emea",
        use_case="analytics",
    )
    write_tables(raw, program.data, "csv")
    return Program(world_from_tables(raw), program.data, program.settings)


def _hand_deals(deals: list[dict], asks: list[dict], activities: list[dict], since: pd.Timestamp | None) -> dict:
    """The deals section counted with plain Python: per group (WITH a reference delivered before the
    deal closed, or at all while open; WITHOUT) its deals, amount, open, closed, won, closed amount and
    days to close; the referred deals by month of creation and by referrer."""
    made_for = {a["ask_id"]: a["opportunity_id"] for a in asks if isinstance(a.get("opportunity_id"), str)}
    first: dict[str, pd.Timestamp] = {}
    for v in activities:
        deal = made_for.get(v["ask_id"]) if isinstance(v["ask_id"], str) else None
        if deal is not None:
            first[deal] = min(first.get(deal, v["occurred_at"]), v["occurred_at"])
    groups: dict[str, Counter] = {WITH: Counter(), WITHOUT: Counter()}
    days: dict[str, list[float]] = {WITH: [], WITHOUT: []}
    months: dict[str, Counter] = {}
    referrers: dict[str, Counter] = {}
    for d in deals:
        if since is not None and d["created_at"] < since:
            continue
        closed = d["outcome"] != "open"
        delivered = first.get(d["opportunity_id"])
        group = WITH if delivered is not None and (not closed or delivered < d["closed_at"]) else WITHOUT
        c = groups[group]
        c["deals"] += 1
        c["amount"] += d["amount"]
        c["open"] += not closed
        c["closed"] += closed
        c["won"] += d["outcome"] == "won"
        c["closed_amount"] += d["amount"] if closed else 0.0
        if closed:
            days[group].append((d["closed_at"] - d["created_at"]).total_seconds() / 86_400)
        if isinstance(d.get("referred_by"), str):
            for key, into in ((d["created_at"].strftime("%Y-%m"), months), (d["referred_by"], referrers)):
                r = into.setdefault(key, Counter())
                r["deals"] += 1
                r["amount"] += d["amount"]
                r["won"] += d["outcome"] == "won"
    return {"groups": groups, "days": days, "months": months, "referrers": referrers}


def _check_against_hand_count(report: DealReport, hand: dict) -> None:
    got = report.by_reference.set_index("reference")
    for group in (WITH, WITHOUT):
        c, row = hand["groups"][group], got.loc[group]
        assert [int(row[k]) for k in ("deals", "open", "closed", "won")] == [
            c[k] for k in ("deals", "open", "closed", "won")
        ]
        assert row["amount"] == pytest.approx(c["amount"])
        if c["closed"]:
            assert row["win_rate"] == pytest.approx(c["won"] / c["closed"])
            assert row["mean_days_to_close"] == pytest.approx(sum(hand["days"][group]) / c["closed"])
        else:
            assert pd.isna(row["win_rate"]) and pd.isna(row["mean_days_to_close"])
    influenced = hand["groups"][WITH]
    assert report.influenced == (influenced["deals"], pytest.approx(influenced["amount"]))
    effect = report.effect
    assert (effect.treated_deals, effect.other_deals) == (influenced["closed"], hand["groups"][WITHOUT]["closed"])
    assert effect.treated_amount == pytest.approx(influenced["closed_amount"])
    by_month = report.referrals_by_month.set_index("month")
    assert {m: (int(r["deals"]), r["amount"], int(r["won"])) for m, r in by_month.iterrows()} == {
        m: (c["deals"], pytest.approx(c["amount"]), c["won"]) for m, c in hand["months"].items()
    }
    assert report.referrals_by_tier["deals"].sum() == sum(c["deals"] for c in hand["referrers"].values())
    ranked = sorted(hand["referrers"].items(), key=lambda kv: (-kv[1]["deals"], -kv[1]["amount"], kv[0]))[:10]
    assert report.top_referrers["customer_id"].tolist() == [customer for customer, _ in ranked]
    assert report.top_referrers["deals"].tolist() == [c["deals"] for _, c in ranked]


def _hand_made_deals() -> tuple[list[dict], list[dict], list[dict]]:
    """DEALS, DEAL_ASKS and DEAL_ACTIVITIES as records for `_hand_deals`."""
    opportunities = [dict(zip(OPP_KEYS, d, strict=True)) for d in DEALS]
    for d in opportunities:
        d["created_at"], d["closed_at"] = _ts(d["created_at"]), _ts(d["closed_at"])
    asks = [dict(zip((*ASK_KEYS, "opportunity_id"), a, strict=True)) for a in DEAL_ASKS]
    activities = [{"ask_id": v[4], "occurred_at": _ts(v[3])} for v in DEAL_ACTIVITIES]
    return opportunities, asks, activities


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


@pytest.fixture(scope="module")
def sample_deals() -> DealReport:
    """The deals section on the sample, once: three resamples and no refutation (tests of the
    estimator's quality are `tests/test_deals.py`'s)."""
    return deal_report(read_world(SAMPLE), None, DealOptions(resamples=3, refutation_simulations=0, program_cost=1e5))


def test_the_deals_section_matches_a_hand_count_of_the_sample(sample_deals: DealReport) -> None:
    tables = {name: pd.read_parquet(SAMPLE / f"{name}.parquet") for name in ("opportunities", "asks", "activities")}
    hand = _hand_deals(*(_records(tables[n]) for n in ("opportunities", "asks", "activities")), since=None)
    _check_against_hand_count(sample_deals, hand)
    with_, without = hand["groups"][WITH], hand["groups"][WITHOUT]
    effect = sample_deals.effect
    assert effect.estimated and with_["closed"] >= MIN_TREATED
    row = sample_deals.deals_csv()
    assert list(row.columns) == list(DEALS_CSV_COLUMNS) and len(row) == 1
    assert row.loc[0, "status"] == "estimated"
    assert row.loc[0, "plain_difference"] == pytest.approx(
        with_["won"] / with_["closed"] - without["won"] / without["closed"]
    )
    assert row.loc[0, "effect_on_treated"] == pytest.approx(effect.effect_on_treated)
    assert row.loc[0, "incremental_won_revenue"] == pytest.approx(effect.effect_on_treated * with_["closed_amount"])
    assert np.isfinite(row.loc[0, ["ci_low", "ci_high"]].to_numpy(dtype=float)).all()
    assert sample_deals.return_on_cost == pytest.approx((row.loc[0, "incremental_won_revenue"] - 1e5) / 1e5)
    metrics = sample_deals.metrics()
    assert metrics["influenced_deals"] == with_["deals"] and metrics["referred_deals"] == sum(
        c["deals"] for c in hand["referrers"].values()
    )
    assert metrics["win_rate_with_reference"] - metrics["win_rate_without_reference"] == pytest.approx(
        metrics["plain_difference"]
    )
    # Both estimates side by side, and on the chart: the plain difference's bar and the adjusted one's.
    estimates = sample_deals.estimates().set_index("estimate")
    assert estimates.loc[PLAIN, "value"] == pytest.approx(effect.plain_difference)
    assert estimates.loc[ADJUSTED, "value"] == pytest.approx(effect.effect_on_treated)
    bars = [p.get_height() for p in deal_effect_plot(sample_deals).axes[0].patches]
    assert bars == pytest.approx([effect.plain_difference * 100, effect.effect_on_treated * 100])


def test_the_deals_section_matches_the_hand_count_and_says_why_there_is_no_estimate(dealt: Program) -> None:
    made = dealt.report()
    deals = made.deals
    assert deals is not None
    _check_against_hand_count(deals, _hand_deals(*_hand_made_deals(), since=None))
    assert deals.influenced == (3, 200_000.0)  # D1, D4 (open), D5; D2's reference came after it closed
    # Two closed deals with a reference: no adjusted figure anywhere, only the reason.
    assert deals.effect.status.startswith("too few treated deals (2 closed")
    row = deals.deals_csv().iloc[0]
    assert row[["effect_on_treated", "ci_low", "ci_high", "incremental_won_revenue"]].isna().all()
    assert row["plain_difference"] == pytest.approx(1 / 2 - 3 / 4)
    assert (row["treated_deals"], row["other_deals"]) == (2, 4)
    assert deals.estimates().set_index("estimate").loc[ADJUSTED, ["value", "ci_low", "ci_high"]].isna().all()
    assert f"No adjusted estimate: {deals.effect.status}." in deals.notes()
    assert "effect_on_treated" not in made.metrics() or np.isnan(made.metrics()["effect_on_treated"])
    chart = deal_effect_plot(deals).axes[0]
    assert [p.get_height() for p in chart.patches] == pytest.approx([-25.0])  # the plain difference only
    assert any(deals.effect.status[:20] in t.get_text().replace("\n", " ") for t in chart.texts)
    assert list(report_figures(made)) == [*FIGURES, *DEAL_FIGURES]
    # The referrer's tier is the points rule's as of the deal's creation.
    referred = {d[0]: (d[5], _ts(d[2])) for d in DEALS if d[5] is not None}
    by_hand = Counter(str(baseline_tier(np.array([_points(c, t)]))[0]) for c, t in referred.values())
    assert by_hand == Counter({"none": 2, "advocate": 1, "champion": 1})  # r1: none on 2025-10-01, advocate later
    assert dict(zip(deals.referrals_by_tier["referrer_tier"], deals.referrals_by_tier["deals"], strict=True)) == by_hand
    assert deals.referrals_by_tier["referrer_tier"].tolist() == ["champion", "advocate", "none"]


def test_since_limits_deals_by_created_at(dealt: Program) -> None:
    since = "2025-10-01"
    deals = dealt.report(since).deals
    assert deals is not None
    _check_against_hand_count(deals, _hand_deals(*_hand_made_deals(), since=_ts(since)))
    assert sorted(deals.deals["opportunity_id"]) == ["D4", "D6", "D7", "D8"]
    assert deals.influenced == (1, 80_000.0) and deals.effect.plain_difference is None


def test_a_remake_reuses_the_kept_estimate_while_the_deals_are_unchanged(dealt: Program, tmp_path: Path) -> None:
    """The service remakes the report on every recorded ask: the estimate is kept with the report and
    reused while its key (the deals as the estimate reads them, and the settings) is the same."""
    store = ReportStore(tmp_path / "kept")
    made = make_report(Sources.from_settings(dealt.settings, dealt.data), None, DealOptions(3, 0))
    keep_for_the_page(made, store)
    kept = kept_estimate(store)
    assert made.report.deals is not None and kept is not None
    assert kept == KeptEstimate(made.report.deals.estimate_key, made.report.deals.effect)
    checks = [Refutation("placebo treatment", "near zero", 0.1, 0.01, 0.4, True)]
    marked = KeptEstimate(kept.key, DealEffect(**{**kept.effect.__dict__, "status": "kept", "refutations": checks}))
    assert KeptEstimate.from_json(json.loads(json.dumps(marked.to_json()))) == marked
    again = deal_report(dealt.world, None, DealOptions(3, 0), marked)
    assert again.effect is marked.effect and again.refutations()["check"].tolist() == ["placebo treatment"]
    other = deal_report(dealt.world, None, DealOptions(4, 0), marked)  # other settings: made anew
    assert other.effect.status.startswith("too few treated deals")


def test_advocacy_report_writes_deals_csv_and_logs_the_deals(dealt: Program, tmp_path: Path) -> None:
    import mlflow

    out = tmp_path / "report"
    env = {**_cli_env(dealt), "ADVOCACY_PROGRAM_COST": "5000"}
    result = CliRunner().invoke(app, ["report", "--data", str(dealt.data), "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "deals.csv")
    assert list(written.columns) == list(DEALS_CSV_COLUMNS) and len(written) == 1
    assert written.loc[0, "status"].startswith("too few treated deals")
    assert written.loc[0, ["effect_on_treated", "ci_low", "ci_high", "incremental_won_revenue"]].isna().all()
    assert written.loc[0, "plain_difference"] == pytest.approx(-0.25)
    assert written.loc[0, ["treated_deals", "other_deals"]].tolist() == [2, 4]
    assert (out / DEAL_FIGURES[0]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    text = " ".join(result.output.split())
    assert "Deals created from the start: 8" in text and "No adjusted estimate: too few treated deals" in text
    assert "No return on the program cost: there is no adjusted estimate." in text

    run = mlflow.MlflowClient(dealt.settings.tracking_uri()).get_run(result.output.split("MLflow run ")[1].split()[0])
    assert run.data.tags["deal_effect_status"].startswith("too few treated deals")
    assert (run.data.metrics["influenced_deals"], run.data.metrics["program_cost"]) == (3, 5000)
    assert "effect_on_treated" not in run.data.metrics
    kept = ReportStore(dealt.settings.report_path()).load()
    assert kept is not None and kept["deals"]["status"] == written.loc[0, "status"]
