"""The program report (`models.program`, `advocacy report`) checked against the ask log by hand-counting.

A five-customer world made by hand: two the points rule always qualifies (q1, q2: NPS 10, adoption
90%, health 90, customers since 2023: 80 points), two it never does (n1, n2: at most 25), and one it
qualifies only from its NPS 10 of 2025-11-20 on (r1: 55 points before, 80 after). Asks come from
the data directory and from the ask log (through `AskLog`, some naming a plan stored through
`PlanStore`); every expected figure is counted here from those lists with plain Python.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy.cli import app
from features.contracts import CONTRACTS
from features.io import World, world_from_tables
from models.planner import PLAN_COLUMNS
from models.program import ProgramReport
from models.program_plots import FIGURES, calibration_chart, figure_png, report_figures
from storage.asklog import AskLog
from storage.files import write_tables
from storage.plans import PlanStore
from storage.settings import Settings
from usecases import Sources, make_report

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
