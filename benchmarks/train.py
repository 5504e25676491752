"""Model validity on generated worlds: the held-out figures against the generator's truth, and
train time without tuning (issue 17; the time figures from the training issue).

For each world (drifting, the default, and the stationary one), size and seed, trains through
the whole `advocacy train` pipeline into a throw-away local MLflow store and prints, on the
held-out window:

- propensity: model ROC AUC / the truth's, the share of the points-rule-to-truth gap closed,
  ECE on the realised labels and against the true probabilities;
- acceptance over every live customer x ask type at each month start (asked or not): expected
  AUC / the truth's, ECE against the truth overall and the worst ask type's, and the mean bias
  for customers never asked before (the selection the company's asking makes).

    uv run python benchmarks/train.py [--sizes 10000] [--seeds 0 1 2] [--worlds drifting stationary] [--no-refit]

Every run's metrics are also written to benchmarks/out/train-<world>-<customers>-s<seed>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

from rich.console import Console
from rich.table import Table

from benchmarks.features import OUT, world_dir
from features.catalog import ASK_TYPE_NAMES
from storage.settings import Settings
from training.fit import TrainConfig
from training.pipeline import train

COLUMNS = (
    "world",
    "customers",
    "seed",
    "total s",
    "prop. AUC",
    "points AUC",
    "AUC / truth",
    "gap closed",
    "ECE labels / truth",
    "acc. exp. AUC / truth",
    "acc. ECE / truth",
    "worst type ECE",
    "never-asked bias",
)


def row(world: str, n: int, seed: int, total: float, m: dict[str, float]) -> list[str]:
    per_type = {t: m.get(f"acceptance_everyone_ece_vs_truth_type_{t}", float("nan")) for t in ASK_TYPE_NAMES}
    worst = max(per_type, key=lambda t: per_type[t])
    nan = float("nan")
    return [
        world,
        f"{n:,}",
        str(seed),
        f"{total:.0f}",
        f"{m['propensity_roc_auc']:.3f}",
        f"{m['baseline_roc_auc']:.3f}",
        f"{m.get('propensity_auc_vs_truth', nan):.3f}",
        f"{m.get('propensity_gap_closed', nan):.0%}",
        f"{m['propensity_ece']:.3f} / {m.get('propensity_ece_vs_truth', nan):.3f}",
        f"{m.get('acceptance_everyone_auc_vs_truth', nan):.3f}",
        f"{m.get('acceptance_everyone_ece_vs_truth', nan):.3f}",
        f"{per_type[worst]:.3f} ({worst})",
        f"{m.get('acceptance_everyone_bias_never_asked', nan):+.3f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worlds", nargs="+", default=["drifting", "stationary"], choices=["drifting", "stationary"])
    parser.add_argument(
        "--no-refit", dest="refit", action="store_false", help="no refit on train + validation (the product refits)"
    )
    args = parser.parse_args()
    table = Table(title="advocacy train, no tuning (2 cores), held-out window against the truth")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    console = Console(width=240)
    for world in args.worlds:
        for n in args.sizes:
            for seed in args.seeds:
                data = world_dir(n, seed=seed, drift=world == "drifting")
                # MLflow exports MLFLOW_TRACKING_URI when a store is chosen; Settings would pick the last one up.
                os.environ.pop("MLFLOW_TRACKING_URI", None)
                with tempfile.TemporaryDirectory() as home:
                    steps: list[tuple[str, float]] = []
                    start = time.perf_counter()
                    result = train(
                        Settings(home=Path(home), data_dir=data),
                        config=replace(TrainConfig(), refit=args.refit),
                        progress=lambda step: steps.append((step, time.perf_counter())),  # noqa: B023
                    )
                    total = time.perf_counter() - start
                parts = [f"{a}: {t1 - t0:.1f}s" for (a, t0), (_, t1) in pairwise(steps)]
                console.print(f"{world} {n:,} seed {seed}: " + "; ".join(parts))
                cells = row(world, n, seed, total, result.metrics)
                figures = OUT / f"train-{world}-{n}-s{seed}{'' if args.refit else '-no-refit'}.json"
                figures.write_text(json.dumps(result.metrics, indent=1, sort_keys=True))
                console.print(" | ".join(f"{c}: {v}" for c, v in zip(COLUMNS, cells, strict=True)))
                table.add_row(*cells)
    console.print(table)


if __name__ == "__main__":
    main()
