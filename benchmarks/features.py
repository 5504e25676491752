"""Feature-build time for 10k and 100k customers x 30 months (issue: foundation).

Generates the worlds under benchmarks/out/ (git-ignored) if missing, then times, in one run:
- the `advocacy features` table: every active customer as of the end of the data;
- the training snapshots: every customer at every month start (what `advocacy train` builds).
Goal: 100k customers in <= 60 s on 2 cores, growing linearly.

    uv run python benchmarks/features.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the
# `features` package: look packages up from the project instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from rich.console import Console
from rich.table import Table

from features.io import read_world
from features.labels import observed_until, propensity_dataset
from features.pointintime import active_points, build_features
from features.synthetic import DRIFTING, STATIONARY, generate_world
from storage.files import write_tables

OUT = Path(__file__).resolve().parent / "out"


def world_dir(n: int, months: int = 30, seed: int = 0, drift: bool = True) -> Path:
    """A generated world, cached under benchmarks/out; the drifting world unless `drift=False`.

    Above 100k customers the acceptance truth per customer x ask type is left out (it would be
    nine rows per customer and month); nothing that runs at that size reads it.
    """
    folder = OUT / f"world-{n}-{months}m-s{seed}-{'drifting' if drift else 'stationary'}"
    if not (folder / "customers.parquet").exists():
        world = generate_world(
            n_customers=n,
            months=months,
            seed=seed,
            drift=DRIFTING if drift else STATIONARY,
            acceptance_truth=n <= 100_000,
        )
        write_tables(world.tables, folder)
        write_tables(world.truth, folder / "truth")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    table = Table(title="Point-in-time feature build (2 cores)")
    for col in (
        "customers",
        "events",
        "one as_of: rows",
        "seconds",
        "rows/s",
        "all snapshots: rows",
        "seconds",
        "rows/s",
    ):
        table.add_column(col, justify="right")
    for n in args.sizes:
        world = read_world(world_dir(n))
        events = sum(len(f) for name, f in world.as_dict().items() if name != "customers")
        start = time.perf_counter()
        single = build_features(world, active_points(world, observed_until(world)))
        t_single = time.perf_counter() - start
        start = time.perf_counter()
        snapshots = propensity_dataset(world, burn_in_months=0)
        t_all = time.perf_counter() - start
        table.add_row(
            f"{n:,}",
            f"{events:,}",
            f"{len(single):,}",
            f"{t_single:.1f}",
            f"{len(single) / t_single:,.0f}",
            f"{len(snapshots):,}",
            f"{t_all:.1f}",
            f"{len(snapshots) / t_all:,.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
