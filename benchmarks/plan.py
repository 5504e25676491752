"""The ask planner judged with the generator's truth for every customer x ask type (issue 16).

On a generated world (drifting by default) and at month starts, trains both models on the world
as it was then (events from that moment on left out), plans the need (default: 40 reference calls,
120 reviews, 15 case studies at 0.9) from every active customer, and prints per type the promised
and the true chance of at least N yeses (the Poisson-binomial of the truth's acceptance of the
listed customers), the standard error of the type's calibrated level the promise counts, the
model's and the truth's mean acceptance of them; the plan's asks against
the fewest that reach the confidence on the true probabilities (greedy by truth, type by type,
same guardrails); and the truth's expected yeses of the plan against the points rule asking as
many customers top-down, one ask per customer. Plan time for the whole base is printed too. And
what the model's ranking allows whatever its calibration: the asks its order needs when the truth
says when to stop (at 0.85), and the plan made from its acceptance calibrated onto the truth itself.

    uv run python benchmarks/plan.py [--customers 3000] [--seeds 21] [--worlds drifting stationary] [--recalibrate]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy.stats import rankdata
from sklearn.isotonic import IsotonicRegression

from features.baseline import rule_points
from features.catalog import ASK_TYPE_NAMES
from features.io import world_from_tables
from features.synthetic import DRIFTING, STATIONARY, generate_world
from models.planner import Candidates, Plan, PlanRequest, make_plan, shortest_prefix
from training.datasets import build_training_data
from training.evaluate import truth_chance
from training.fit import TrainConfig, fit_bundle
from training.recalibrate import GROUP_COLUMN, recalibrated
from usecases import base_from_world, leave_out_future, plan_candidates

NEED = {"reference_call": 40, "review": 120, "case_study": 15}
DATES = ("2026-10-01", "2026-07-01")


def true_acceptance(truth: pd.DataFrame, cands: Candidates, as_of: pd.Timestamp) -> np.ndarray:
    """(candidates x ask types) true acceptance at `as_of` (NaN where the truth has no row)."""
    at = truth[truth["as_of"] == as_of].astype({"ask_type": "str"}).set_index(["customer_id", "ask_type"])["p_true"]
    out = np.full(cands.acceptance.shape, np.nan)
    for j, t in enumerate(ASK_TYPE_NAMES):
        keys = pd.MultiIndex.from_arrays([cands.customer_id, np.full(cands.customer_id.size, t)])
        out[:, j] = at.reindex(keys).to_numpy()
    return out


def fewest_by_truth(
    cands: Candidates, p_true: np.ndarray, confidence: float, order_by: np.ndarray | None = None
) -> int:
    """Asks until the true chance of N yeses reaches `confidence`, type by type in `NEED`'s order, one
    ask per customer, customers taken in the truth's order, or in `order_by`'s (e.g. the model's
    acceptance: the fewest asks its ranking allows, were the plan told exactly when to stop)."""
    scores = p_true if order_by is None else order_by
    taken: set[int] = set()
    total = 0
    for name, n in NEED.items():
        j = ASK_TYPE_NAMES.index(name)
        order = [r for r in np.argsort(-np.nan_to_num(scores[:, j]), kind="stable") if r not in taken]
        order = [r for r in order if not cands.blocked[r, j]]
        k = shortest_prefix(np.nan_to_num(p_true[order, j]), n, confidence) or len(order)
        taken |= set(order[:k])
        total += k
    return total


def truth_calibrated(cands: Candidates, p_true: np.ndarray) -> Candidates:
    """The candidates with each type's acceptance mapped onto the truth (isotonic, on every candidate):
    the model's own ranking, perfectly calibrated per type, as no product can be. Within a step of the
    isotonic map the model's order still decides (a nudge of at most 1e-9), not the planner's
    tie-break; a candidate without a true value is left out (NaN)."""
    acceptance = np.full(cands.acceptance.shape, np.nan)
    for j in range(acceptance.shape[1]):
        known = np.isfinite(p_true[:, j]) & np.isfinite(cands.acceptance[:, j])
        if known.any():
            x = cands.acceptance[known, j]
            iso = IsotonicRegression(out_of_bounds="clip").fit(x, p_true[known, j])
            acceptance[known, j] = iso.predict(x) + 1e-9 * rankdata(x) / len(x)
    return replace(cands, acceptance=acceptance, level_sd=None)


def planned_truth(plan: Plan, p_true: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The truth's acceptance of each planned ask, and per type the true chance of N yeses."""
    rows = plan.asks["row"].to_numpy()
    types = plan.asks["ask_type"].map(ASK_TYPE_NAMES.index).to_numpy()
    planned = p_true[rows, types]
    return planned, {n: truth_chance(planned[(plan.asks["ask_type"] == n).to_numpy()], k) for n, k in NEED.items()}


def points_rule_yeses(plan: Plan, cands: Candidates, features: pd.DataFrame, p_true: np.ndarray) -> float:
    points = rule_points(features).sum(axis=1)
    used: set[int] = set()
    total = 0.0
    for name in NEED:
        j, k = ASK_TYPE_NAMES.index(name), int((plan.asks["ask_type"] == name).sum())
        order = [r for r in np.argsort(-points, kind="stable") if r not in used and not cands.blocked[r, j]][:k]
        used |= set(order)
        total += float(np.nansum(p_true[order, j]))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[21])
    parser.add_argument("--worlds", nargs="+", default=["drifting", "stationary"], choices=["drifting", "stationary"])
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="plan as after `advocacy train` and `advocacy recalibrate`: calibrators refitted on the newest rows",
    )
    args = parser.parse_args()
    table = Table(title=f"Ask plans against the truth: {NEED}, confidence 0.9")
    cols = (
        "world",
        "seed",
        "as of",
        "ask type",
        "level sd",
        "asks",
        "promised",
        "true chance",
        "model mean",
        "true mean",
    )
    for col in cols:
        table.add_column(col, justify="right")
    lines = []
    for world_name in args.worlds:
        for seed in args.seeds:
            drift = DRIFTING if world_name == "drifting" else STATIONARY
            generated = generate_world(n_customers=args.customers, months=30, seed=seed, drift=drift)
            world = world_from_tables(generated.tables)
            for date in DATES:
                as_of = pd.Timestamp(date, tz="UTC")
                then, _ = leave_out_future(world, as_of)
                bundle, mats = fit_bundle(then, build_training_data(then), TrainConfig())
                if args.recalibrate:
                    for name, column in GROUP_COLUMN.items():
                        _, fitted = recalibrated(getattr(bundle, name), mats[name], column)
                        setattr(bundle, name, fitted)
                start = time.perf_counter()
                cands, features = plan_candidates(bundle, base_from_world(bundle, then, as_of))
                plan = make_plan(cands, PlanRequest(NEED, 0.9), as_of)
                seconds = time.perf_counter() - start
                p_true = true_acceptance(generated.truth["acceptance_by_type"], cands, as_of)
                planned_true, _ = planned_truth(plan, p_true)
                for name, n in NEED.items():
                    mine = (plan.asks["ask_type"] == name).to_numpy()
                    table.add_row(
                        world_name,
                        str(seed),
                        date,
                        name,
                        f"{plan.summary[name]['acceptance_level_sd']:.3f}",
                        str(int(mine.sum())),
                        f"{plan.summary[name]['p_at_least_needed']:.3f}",
                        f"{truth_chance(planned_true[mine], n):.3f}",
                        f"{plan.asks.loc[mine, 'acceptance'].mean():.3f}",
                        f"{np.nanmean(planned_true[mine]):.3f}",
                    )
                fewest = fewest_by_truth(cands, p_true, 0.9)
                rule = points_rule_yeses(plan, cands, features, p_true)
                asks = len(plan.asks)
                lines.append(
                    f"{world_name} seed {seed} {date}: {asks} asks / {fewest} fewest by truth = "
                    f"{asks / fewest:.3f}; points rule {rule:.1f} / plan {np.nansum(planned_true):.1f} true "
                    f"expected yeses = {rule / np.nansum(planned_true):.3f}; scoring and planning {seconds:.1f} s"
                )
                # What the model's ranking allows, whatever its calibration: its order stopped by the
                # truth at 0.85, and a plan from it calibrated onto the truth itself.
                ranked = fewest_by_truth(cands, p_true, 0.85, order_by=cands.acceptance)
                ideal = make_plan(truth_calibrated(cands, p_true), PlanRequest(NEED, 0.9), as_of)
                _, chances = planned_truth(ideal, p_true)
                lines.append(
                    f"  the model's ranking: its order stopped when the truth's chance reaches 0.85, {ranked} asks"
                    f" = {ranked / fewest:.3f} x the fewest (whose chance is 0.9); the plan if calibrated onto the"
                    f" truth, {len(ideal.asks)} asks = {len(ideal.asks) / fewest:.3f} x fewest, true chances "
                    + " / ".join(f"{chances[n]:.3f}" for n in NEED)
                )
    console = Console(width=200)
    console.print(table)
    for line in lines:
        console.print(line)


if __name__ == "__main__":
    main()
