"""`POST /plan` latency on a 100k-customer snapshot (issue 16: at most 2 s).

Builds the service's own state in this process (`serving.state.ServingState`: the feature store,
the guardrail book over the snapshot's asks and an empty ask log) for a feature snapshot of a
generated world, with a model trained on a 10k world (the same features), then times
`ServingState.plan` (scoring is done when the store loads, as in the service) for the default
need and for a filtered one. Load time is printed too.

    uv run python benchmarks/plan_latency.py [--customers 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

import numpy as np
from rich.console import Console

from benchmarks.features import world_dir
from features.context import build_snapshot
from features.contracts import CONTRACTS
from features.io import read_world
from features.labels import observed_until
from models.guardrails import GuardrailConfig
from models.planner import PlanRequest
from models.registry import ChampionRef
from serving.guardrail_book import GuardrailBook
from serving.state import ServingState
from serving.store import FeatureStore
from storage.asklog import AskLog
from training.datasets import build_training_data
from training.fit import TrainConfig, fit_bundle

NEEDS = {
    "40 reference calls, 120 reviews, 15 case studies": ({"reference_call": 40, "review": 120, "case_study": 15}, {}),
    "the same, enterprise only": ({"reference_call": 40, "review": 120, "case_study": 15}, {"segment": "enterprise"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    console = Console(width=160)
    small = read_world(world_dir(10_000))
    bundle, _ = fit_bundle(small, build_training_data(small), TrainConfig())
    world = read_world(world_dir(args.customers))
    as_of = observed_until(world)
    start = time.perf_counter()
    snapshot = build_snapshot(world, as_of)
    built = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = FeatureStore(snapshot, bundle)
        log = AskLog(Path(tmp) / "asks.sqlite", CONTRACTS["asks"])
        book = GuardrailBook(store, snapshot.asks, log, GuardrailConfig.from_saved(bundle.guardrails), as_of)
        state = ServingState(ChampionRef("bench", "1", "models:/bench/1", "benchmark"), bundle, store, book, Path(tmp))
        loaded = time.perf_counter() - start
        console.print(
            f"{len(store):,} active customers as of {as_of:%Y-%m-%d}: snapshot built in {built:.1f} s, "
            f"store and guardrail book loaded in {loaded:.1f} s (acceptance of every type scored then)"
        )
        for label, (need, filters) in NEEDS.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                plan = state.plan(PlanRequest(need, 0.9, filters))
                times.append(time.perf_counter() - start)
            met = ", ".join(f"{t} {s['asked']} asks (met: {s['met']})" for t, s in plan["summary"].items())
            console.print(
                f"POST /plan, {label}: median {np.median(times):.2f} s, max {max(times):.2f} s "
                f"over {args.repeats} runs; {met}"
            )
        state.close()


if __name__ == "__main__":
    main()
