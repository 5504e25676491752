"""Campaigns in waves replayed with answers drawn from the generator's truth (issue 30).

On generated worlds (stationary and drifting) at each date: both models trained on the world as it
was then, then the campaign (default: 40 reference calls, 120 reviews, 15 case studies at 0.9,
3 waves 14 days apart) run `--replications` times. Each wave is planned by the product's own code
(`models.planner.make_plan` with the wave's `models.campaign` outlooks, from the answers back by
the wave's date); every ask is answered by a draw from the truth's acceptance for that customer and
type, after a delay drawn from how long the world's settled asks took to be answered (some never).
A replication draws every customer's answers once (`Replies`), and each policy replayed in it meets
the same ones.
Per type it prints: the realised share of campaigns reaching the need by the deadline, the true
chance (the yeses before the last wave plus the Poisson-binomial of the last wave's true chance of
a yes in time), mean asks and mean yeses beyond the need (the true chance and the yeses beyond
with their standard errors over the replications); beside them today's one-shot plan (asks,
true chance), the fewest asks reaching 0.9 on the truth (one-shot, the scarcer type first), the
same waves on the truth (the campaign's own policy planning from the true acceptance, known
exactly: what its wave schedule costs when the model is not wrong), and the points rule asking in
the same waves with the campaign's wave sizes (share reaching the need, and its difference from
the campaign's, paired over the replications).
Then per type and wave: the chance promised, and the yeses that wave's own list brings in time by
the campaign's posterior and by the truth, which shows where a missed promise comes from.

    uv run python benchmarks/campaign.py [--customers 3000] [--seeds 21 22 23] [--replications 200] [--worlds ...]
        [--dates ...] [--first-wave X] [--calibrated]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy import special

from benchmarks.plan import true_acceptance
from features.baseline import rule_points
from features.catalog import ASK_TYPE_NAMES
from features.io import world_from_tables
from features.synthetic import DRIFTING, STATIONARY, generate_world
from models.allocation import draw_keys
from models.calibration import Calibrator
from models.campaign import Answers, AnswerTimes, Outlook, SoFar, outlook, wave_target
from models.planner import Candidates, PlanRequest, Wave, make_plan, shortest_prefix
from training.datasets import build_training_data
from training.evaluate import truth_chance
from training.fit import TrainConfig, fit_bundle
from usecases import base_from_world, leave_out_future, plan_candidates

NEED = {"reference_call": 40, "review": 120, "case_study": 15}
DATES = ("2026-10-01", "2026-07-01")
WAVES, WAVE_DAYS = 3, 14


def fewest_by_truth(cands: Candidates, p_true: np.ndarray, confidence: float = 0.9) -> dict[str, int]:
    """Per type, the asks of the one-shot list by truth: customers in the truth's order until the
    true chance of the need reaches `confidence`, the scarcer type first (the larger need against
    the expected yeses its eligible customers hold), one ask per customer."""
    p = np.nan_to_num(p_true)
    scarce = {
        n: k / max(p[~cands.blocked[:, ASK_TYPE_NAMES.index(n)], ASK_TYPE_NAMES.index(n)].sum(), 1e-9)
        for n, k in NEED.items()
    }
    taken = np.zeros(p.shape[0], dtype=bool)
    out = {}
    for name in sorted(NEED, key=lambda n: -scarce[n]):
        j = ASK_TYPE_NAMES.index(name)
        order = np.argsort(-p[:, j], kind="stable")
        order = order[~taken[order] & ~cands.blocked[order, j]]
        k = shortest_prefix(p[order, j], NEED[name], confidence) or order.size
        taken[order[:k]] = True
        out[name] = int(k)
    return out


@dataclass(frozen=True)
class Replies:
    """One replication's answers, fixed before any policy asks: per customer and type, whether they
    would say yes (a uniform against the truth's acceptance) and, once asked, after how long (a
    uniform into the world's settled delays; a share of noes never come). Every policy replayed in
    a replication (the campaign, the points rule in its waves, a variant under test) meets the same
    answer from the same customer: common random numbers, so that their difference is the
    policies' and not the draws'."""

    yes_u: np.ndarray
    delay_u: np.ndarray
    silent_u: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int]) -> Replies:
        return cls(rng.random(shape), rng.random(shape), rng.random(shape))

    def answer(self, rows: np.ndarray, t: int, p_true: np.ndarray, times: AnswerTimes) -> tuple[np.ndarray, np.ndarray]:
        """Yes or not, and the days from the ask to the answer (inf: never)."""
        yes = self.yes_u[rows, t] < np.nan_to_num(p_true[rows, t])
        out = np.full(rows.size, np.inf)
        pick = self.delay_u[rows, t]
        yes_days, no_days = times.yes_days[t], times.no_days[t]
        if yes_days.size:
            out[yes] = yes_days[(pick[yes] * yes_days.size).astype(np.int64)]
        declines = ~yes & (self.silent_u[rows, t] >= times.silent_share[t])
        if no_days.size:
            out[declines] = no_days[(pick[declines] * no_days.size).astype(np.int64)]
        return yes, out


def run_campaign(
    cands: Candidates,
    p_true: np.ndarray,
    times: AnswerTimes,
    as_of: pd.Timestamp,
    replies: Replies,
    draw: str,
    order: dict[int, np.ndarray] | None = None,
    sizes: dict[int, list[int]] | None = None,
    first_wave: float | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[int, list[int]], dict[int, np.ndarray]]:
    """One campaign, answers drawn from the truth; `draw` salts the random draw of the ungated types'
    invitees (each replication is a campaign of its own). `order` (per type, customers best first)
    and `sizes` (per type, asks per wave) replay another picker in the same waves, e.g. the points
    rule. `first_wave`: the chance wave 1 aims at, later waves rising evenly to 0.9 (None: the
    product's `wave_target`). Also returns each type's asked rows; per type, `waves` holds
    `promise_against_truth` per wave."""
    request = PlanRequest(NEED, 0.9)
    days_left = WAVES * WAVE_DAYS
    asked = np.zeros(cands.customer_id.size, dtype=bool)
    log: dict[int, list[tuple[np.ndarray, float, np.ndarray, np.ndarray]]] = {ASK_TYPE_NAMES.index(n): [] for n in NEED}
    made: dict[int, list[int]] = {t: [] for t in log}
    waves: dict[str, list[dict[str, float]]] = {name: [] for name in NEED}
    for wave in range(1, WAVES + 1):
        day = (wave - 1) * WAVE_DAYS
        if order is None:
            outlooks = {}
            for name, n in NEED.items():
                t = ASK_TYPE_NAMES.index(name)
                rows = [(r, d, y, w) for r, d, y, w in log[t]]
                p = np.concatenate([cands.acceptance[r, t] for r, _, _, _ in rows]) if rows else np.zeros(0)
                at = np.concatenate([np.full(r.size, d) for r, d, _, _ in rows]) if rows else np.zeros(0)
                yes = np.concatenate([y for _, _, y, _ in rows]) if rows else np.zeros(0, bool)
                when = np.concatenate([w for _, _, _, w in rows]) if rows else np.zeros(0)
                wv = np.concatenate([np.full(r.size, k + 1) for k, (r, _, _, _) in enumerate(rows)]) if rows else at
                back = at + when <= day
                answers = Answers(
                    p[yes & back],
                    p[~yes & back],
                    p[~back],
                    day - at[~back],
                    (wv[yes & back], wv[~yes & back], wv[~back]),
                )
                sd = cands.sd(t)
                so_far = SoFar(n, int((yes & back).sum()), answers, sd, not cands.is_ungated(t))
                outlooks[t] = outlook(so_far, times, t, days_left - day)
            if first_wave is None or wave >= WAVES:
                target = wave_target(0.9, wave, WAVES)
            else:
                target = first_wave + (0.9 - first_wave) * (wave - 1) / (WAVES - 1)
            wave_plan = Wave(outlooks, target, asked.copy())
            plan = make_plan(cands, request, as_of, wave=wave_plan, draw=draw)
            picked = {
                ASK_TYPE_NAMES.index(n): plan.asks.loc[plan.asks["ask_type"] == n, "row"].to_numpy() for n in NEED
            }
            for name in NEED:
                t = ASK_TYPE_NAMES.index(name)
                waves[name].append(promise_against_truth(outlooks[t], cands, p_true, picked[t], t))
        else:
            picked = {}
            for t in log:
                free = order[t][~asked[order[t]] & ~cands.blocked[order[t], t]]
                picked[t] = free[: sizes[t][wave - 1]] if sizes else free[:0]
                asked[picked[t]] = True
        for t, rows in picked.items():
            asked[rows] = True
            yes, delay = replies.answer(rows, t, p_true, times)
            log[t].append((rows, float(day), yes, delay))
            made[t].append(int(rows.size))
    out = {}
    for name, n in NEED.items():
        t = ASK_TYPE_NAMES.index(name)
        total = sum(int((y & (d + w <= days_left)).sum()) for _, d, y, w in log[t])
        before_last = sum(int((y & (d + w <= days_left)).sum()) for _, d, y, w in log[t][:-1])
        last_rows = log[t][-1][0]
        in_time = float(times.yes_within(t, WAVE_DAYS))
        left = n - before_last
        chance = truth_chance(np.nan_to_num(p_true[last_rows, t]) * in_time, left) if left > 0 else 1.0
        out[name] = {
            "reached": float(total >= n),
            "true_chance": chance,
            "asks": float(sum(r.size for r, _, _, _ in log[t])),
            "overshoot": float(max(total - n, 0)),
            "waves": waves[name],
        }
    asked_rows = {t: np.concatenate([r for r, _, _, _ in log[t]]) for t in log}
    return out, made, asked_rows


def best_calibration(cands: Candidates, p_true: np.ndarray) -> Candidates:
    """The model's ranking with the best calibration to the truth there is, taken as exact: per type,
    a logistic map of the model's log-odds fitted to the true acceptance over the eligible base. A
    campaign's answers can teach it a type's level and slope, never its ranking; this is the most
    that learning could buy."""
    acc = cands.acceptance.copy()
    for t in range(acc.shape[1]):
        ok = np.isfinite(acc[:, t]) & (acc[:, t] > 0) & ~cands.blocked[:, t] & np.isfinite(p_true[:, t])
        if ok.sum() < 2:
            continue
        z = special.logit(np.clip(acc[:, t], 1e-6, 1 - 1e-6))
        # The product's own Platt map, fitted with each customer once as a yes weighted by the true
        # acceptance and once as a no: the likelihood of the true probabilities, not of one draw.
        y = np.r_[np.ones(ok.sum()), np.zeros(ok.sum())]
        platt = Calibrator.fit(np.r_[z[ok], z[ok]], y, "platt", weight=np.r_[p_true[ok, t], 1 - p_true[ok, t]])
        acc[:, t] = platt(z)
    return known_exactly(cands, acc)


def known_exactly(cands: Candidates, acceptance: np.ndarray) -> Candidates:
    """The base planned from `acceptance` (where the model has one), taken as exact: no level error."""
    return replace(cands, acceptance=np.where(np.isfinite(cands.acceptance), acceptance, np.nan), level_sd=None)


def outcome_cells(runs: list[dict[str, dict[str, Any]]], name: str) -> tuple[str, str, str]:
    """One type's true chance, mean asks and overshoot over a policy's replications."""
    return (
        mean_se([r[name]["true_chance"] for r in runs], 3),
        f"{np.mean([r[name]['asks'] for r in runs]):.1f}",
        mean_se([r[name]["overshoot"] for r in runs], 1),
    )


def promise_against_truth(
    seen: Outlook, cands: Candidates, p_true: np.ndarray, rows: np.ndarray, t: int
) -> dict[str, float]:
    """One wave of one type: its asks, the chance the campaign promised with them, and the yeses in
    time its list should bring by the campaign's posterior and by the truth."""
    p = cands.acceptance[rows, t]
    by_model = seen.expected_yes(p) - seen.expected_yes(np.zeros(0))
    return {
        "asks": float(rows.size),
        "promised": float(seen.chance(p)[-1]),
        "by_posterior": by_model,
        "by_truth": float(np.nan_to_num(p_true[rows, t]).sum()) * seen.yes_in_time,
        "shift": seen.posterior.mean_shift(),
        "slope": seen.posterior.mean_slope(),
    }


def wave_lines(label: str, runs: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Per type and wave, averaged over the replications: asks, promised chance, and the yeses the
    wave's own list brings in time by the campaign's posterior against the truth."""
    lines = []
    for name in NEED:
        cells = []
        for k in range(WAVES):
            w = [r[name]["waves"][k] for r in runs]
            mean = {key: float(np.mean([x[key] for x in w])) for key in w[0]}
            cells.append(
                f"wave {k + 1}: {mean['asks']:.1f} asks, promised {mean['promised']:.3f}, list's yeses"
                f" {mean['by_posterior']:.2f} by posterior / {mean['by_truth']:.2f} by truth,"
                f" shift {mean['shift']:+.2f}, slope {mean['slope']:.2f}"
            )
        lines.append(f"{label} {name}: " + "; ".join(cells))
    return lines


def mean_se(values: list[float], digits: int) -> str:
    """The mean over the replications, and its standard error: a cell's figure is an estimate, and
    a bar is judged with its noise."""
    x = np.asarray(values, dtype=float)
    se = x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else float("nan")
    return f"{x.mean():.{digits}f} ± {se:.{digits}f}"


def nps_gap(features: pd.DataFrame, cands: Candidates, invited: np.ndarray) -> tuple[float, float, float]:
    """Review invitees' mean latest NPS, the fatigue-eligible base's, and the gap in the base's
    standard errors for that many invitees (customers with an NPS response)."""
    nps = features["nps_last"].to_numpy(dtype=float)
    t = ASK_TYPE_NAMES.index("review")
    base = nps[~cands.blocked[:, t] & np.isfinite(nps)]
    mine = nps[invited][np.isfinite(nps[invited])]
    se = base.std(ddof=1) / np.sqrt(max(mine.size, 1))
    return float(mine.mean()), float(base.mean()), float((mine.mean() - base.mean()) / se)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[21, 22, 23])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--worlds", nargs="+", default=["stationary", "drifting"], choices=["drifting", "stationary"])
    parser.add_argument("--dates", nargs="+", default=list(DATES))
    parser.add_argument(
        "--first-wave", type=float, default=None, help="wave 1 aims at this chance, later waves rising evenly to 0.9"
    )
    parser.add_argument(
        "--calibrated",
        action="store_true",
        help="also the campaign on the model's ranking with the best calibration to the truth, taken as exact",
    )
    args = parser.parse_args()
    if args.first_wave is not None and not 0.0 < args.first_wave < 0.9:
        parser.error(f"--first-wave must be a chance between 0 and the last wave's 0.9, not {args.first_wave}")
    table = Table(title=f"Campaigns of {WAVES} waves {WAVE_DAYS} days apart, answers from the truth: {NEED} at 0.9")
    cols: tuple[str, ...] = ("world", "seed", "as of", "type", "reached", "true chance", "asks", "overshoot")
    cols += ("one-shot asks", "one-shot true", "on truth: chance", "asks", "overshoot")
    if args.calibrated:
        cols += ("calibrated: chance", "asks", "overshoot")
    cols += ("points rule reached", "points rule - campaign")
    for col in cols:
        table.add_column(col, justify="right")
    fewest_lines: list[str] = []
    nps_lines: list[str] = []
    detail_lines: list[str] = []
    for world_name in args.worlds:
        for seed in args.seeds:
            drift = DRIFTING if world_name == "drifting" else STATIONARY
            generated = generate_world(n_customers=args.customers, months=30, seed=seed, drift=drift)
            world = world_from_tables(generated.tables)
            for date in args.dates:
                as_of = pd.Timestamp(date, tz="UTC")
                then, _ = leave_out_future(world, as_of)
                bundle, _ = fit_bundle(then, build_training_data(then), TrainConfig())
                cands, features = plan_candidates(bundle, base_from_world(bundle, then, as_of))
                p_true = true_acceptance(generated.truth["acceptance_by_type"], cands, as_of)
                times = AnswerTimes.learn(then.asks, as_of)
                one_shot = make_plan(cands, PlanRequest(NEED, 0.9), as_of)
                # The same policy planning from the truth, known exactly (no level error to learn):
                # what remains of a miss there is the wave schedule's, not the model's.
                on_truth = known_exactly(cands, np.nan_to_num(p_true))
                calibrated = best_calibration(cands, p_true) if args.calibrated else None
                points_order = np.argsort(-rule_points(features).sum(axis=1), kind="stable")
                rng = np.random.default_rng(seed)
                started = time.perf_counter()
                runs, truth_runs, calibrated_runs, rule_runs, gaps = [], [], [], [], []
                for rep in range(args.replications):
                    draw = f"{as_of.isoformat()}|{rep}"
                    replies = Replies.draw(rng, cands.acceptance.shape)
                    result, sizes, rows = run_campaign(
                        cands, p_true, times, as_of, replies, draw, first_wave=args.first_wave
                    )
                    runs.append(result)
                    truth_runs.append(
                        run_campaign(on_truth, p_true, times, as_of, replies, draw, first_wave=args.first_wave)[0]
                    )
                    if calibrated is not None:
                        calibrated_runs.append(
                            run_campaign(calibrated, p_true, times, as_of, replies, draw, first_wave=args.first_wave)[0]
                        )
                    gaps.append(nps_gap(features, cands, rows[ASK_TYPE_NAMES.index("review")]))
                    # The points rule may not gate reviews either: it asks the same random draw.
                    orders = {
                        t: np.argsort(draw_keys(cands.customer_id, f"{draw}|{ASK_TYPE_NAMES[t]}"), kind="stable")
                        if cands.is_ungated(t)
                        else points_order
                        for t in rows
                    }
                    rule_runs.append(run_campaign(cands, p_true, times, as_of, replies, draw, orders, sizes)[0])
                seconds = time.perf_counter() - started
                z = np.array([g[2] for g in gaps])
                nps_lines.append(
                    f"{world_name} seed {seed} {date}: review invitees' latest NPS {np.mean([g[0] for g in gaps]):.2f}"
                    f" against the fatigue-eligible base's {gaps[0][1]:.2f}: gap {z.mean():+.2f} standard errors on"
                    f" average, beyond 2 in {np.mean(np.abs(z) > 2):.1%} of campaigns"
                )
                for name, n in NEED.items():
                    mine = (one_shot.asks["ask_type"] == name).to_numpy()
                    rows = one_shot.asks.loc[mine, "row"].to_numpy()
                    t = ASK_TYPE_NAMES.index(name)
                    bound = outcome_cells(calibrated_runs, name) if calibrated_runs else ()
                    table.add_row(
                        world_name,
                        str(seed),
                        date,
                        name,
                        f"{np.mean([r[name]['reached'] for r in runs]):.3f}",
                        *outcome_cells(runs, name),
                        str(int(mine.sum())),
                        f"{truth_chance(np.nan_to_num(p_true[rows, t]), n):.3f}",
                        *outcome_cells(truth_runs, name),
                        *bound,
                        f"{np.mean([r[name]['reached'] for r in rule_runs]):.3f}",
                        # Paired: both met the same replies, so the difference is the pickers'.
                        mean_se(
                            [q[name]["reached"] - r[name]["reached"] for q, r in zip(rule_runs, runs, strict=True)], 3
                        ),
                    )
                detail_lines += wave_lines(f"{world_name} seed {seed} {date}", runs)
                campaign_rc = np.mean([r["reference_call"]["asks"] + r["case_study"]["asks"] for r in runs])
                fewest = fewest_by_truth(cands, p_true)
                truth_rc = fewest["reference_call"] + fewest["case_study"]
                fewest_lines.append(
                    f"{world_name} seed {seed} {date}: reference calls + case studies: campaign {campaign_rc:.1f} asks,"
                    f" one-shot by truth {truth_rc} ({campaign_rc / truth_rc:.2f} x); per type {fewest};"
                    f" {args.replications} replications in {seconds:.0f} s"
                )
    console = Console(width=220)
    console.print(table)
    for line in fewest_lines + nps_lines + detail_lines:
        console.print(line)


if __name__ == "__main__":
    main()
