"""The red team's allocation cases on `data/sample` (issue 30): five and nine ask types at 20 yeses
each, at 0.9, met (or the greedy plan returned) within 2 s.

A model is trained on the sample, the base scored at the data's end by the recipe, and
`models.planner.make_plan` timed (the planner alone: the service adds its own lookups), three runs each.

    uv run python benchmarks/allocation.py [--data data/sample] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

from rich.console import Console
from rich.table import Table

from features.catalog import ASK_TYPE_NAMES
from features.io import read_world
from features.labels import observed_until
from models.planner import PlanRequest, make_plan
from training.datasets import build_training_data
from training.fit import TrainConfig, fit_bundle
from usecases import base_from_world, plan_candidates

BAR_SECONDS = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sample"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    world = read_world(args.data)
    as_of = observed_until(world)
    bundle, _ = fit_bundle(world, build_training_data(world), TrainConfig())
    cands, _ = plan_candidates(bundle, base_from_world(bundle, world, as_of))
    table = Table(title=f"Many types at 20 yeses each, at 0.9, on {args.data} ({cands.customer_id.size:,} candidates)")
    for col in ("types", "median s", "max s", "bar s", "met", "asks"):
        table.add_column(col, justify="right")
    for k in (5, 9):
        request = PlanRequest({t: 20 for t in ASK_TYPE_NAMES[:k]}, 0.9)
        seconds = []
        for _ in range(args.runs):
            started = time.perf_counter()
            plan = make_plan(cands, request, as_of)
            seconds.append(time.perf_counter() - started)
        met = sum(bool(s["met"]) for s in plan.summary.values())
        seconds.sort()
        table.add_row(
            str(k), f"{seconds[len(seconds) // 2]:.2f}", f"{seconds[-1]:.2f}", f"{BAR_SECONDS:g}", f"{met}/{k}",
            f"{len(plan.asks):,}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
