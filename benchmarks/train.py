"""Train time without tuning for 10k and 100k customers x 30 months (issue: training).

Times the whole `advocacy train` pipeline (point-in-time training sets, both boosters with early
stopping, calibration, held-out evaluation, MLflow logging and registration) into a throw-away
local MLflow store, and prints its parts and the held-out figures.

    uv run python benchmarks/train.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

from rich.console import Console
from rich.table import Table

from benchmarks.features import world_dir
from storage.settings import Settings
from training.pipeline import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    table = Table(title="advocacy train, no tuning (2 cores)")
    for col in (
        "customers",
        "snapshots",
        "asks",
        "total s",
        "AUC",
        "points AUC",
        "AUC / truth",
        "acc. AUC / truth",
        "ECE",
    ):
        table.add_column(col, justify="right")
    for n in args.sizes:
        data = world_dir(n)
        # MLflow exports MLFLOW_TRACKING_URI when a store is chosen; Settings would pick the last one up.
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        with tempfile.TemporaryDirectory() as home:
            steps: list[tuple[str, float]] = []
            start = time.perf_counter()
            result = train(
                Settings(home=Path(home), data_dir=data),
                progress=lambda step: steps.append((step, time.perf_counter())),  # noqa: B023
            )
            total = time.perf_counter() - start
        m = result.metrics
        parts = [f"{a}: {t1 - t0:.1f}s" for (a, t0), (_, t1) in pairwise(steps)]
        Console().print(f"{n:,} customers: " + "; ".join(parts))
        table.add_row(
            f"{n:,}",
            f"{m['propensity_test_rows']:,.0f} test",
            f"{m['acceptance_test_rows']:,.0f} test",
            f"{total:.0f}",
            f"{m['propensity_roc_auc']:.3f}",
            f"{m['baseline_roc_auc']:.3f}",
            f"{m.get('propensity_auc_vs_truth', float('nan')):.3f}",
            f"{m.get('acceptance_auc_vs_truth', float('nan')):.3f}",
            f"{m['propensity_ece']:.3f} / {m['acceptance_ece']:.3f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
