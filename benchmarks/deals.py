"""Does the adjusted estimate find what a reference added, where the plain difference does not?

One customer base is generated once; its deals are regenerated from many seeds (their own random
stream: the customer tables stay the same). In each world the true effect on the treated deals is
the mean, over the closed deals with a delivered reference, of the generator's chance of winning
with the reference minus without (`truth/deals`). Printed per world and in all: the plain
difference, the adjusted estimate with its 90% interval, and the truth; the share of worlds whose
interval covers the truth, the adjusted estimate's mean absolute error, and how far the plain
difference is off on average.

    uv run python benchmarks/deals.py                 # 100 worlds on a 20,000-customer base
    uv run python benchmarks/deals.py --worlds 10 --customers 5000 --resamples 50
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.catalog import DEALS  # noqa: E402
from features.deals import deal_frame  # noqa: E402
from features.synthetic import DEFAULT_END, generate_world  # noqa: E402
from features.synthetic._deals import with_deals  # noqa: E402
from models.deal_effect import estimate_effect  # noqa: E402

BARS = {"coverage": 0.85, "mae": 0.03, "plain_off": 0.05}
_BASE: dict[str, pd.DataFrame] = {}


def _world(args: tuple[int, int]) -> dict[str, float]:
    seed, resamples = args
    tables, truth = with_deals(_BASE, seed, DEFAULT_END)
    deals = deal_frame(tables[DEALS], tables["asks"], tables["activities"], _links(tables["asks"]))
    truth = truth.set_index("opportunity_id").loc[deals["opportunity_id"]]
    treated = (deals["closed"] & deals["referenced"]).to_numpy(dtype=bool)
    true_att = float((truth["p_win_with"] - truth["p_win_without"]).to_numpy()[treated].mean())
    start = time.perf_counter()
    effect = estimate_effect(deals, resamples=resamples, refutation_simulations=0, seed=seed)
    return {
        "seed": seed,
        "treated": effect.treated_deals,
        "others": effect.other_deals,
        "truth": true_att,
        "plain": effect.plain_difference if effect.plain_difference is not None else np.nan,
        "adjusted": effect.effect_on_treated if effect.effect_on_treated is not None else np.nan,
        "ci_low": effect.ci_low if effect.ci_low is not None else np.nan,
        "ci_high": effect.ci_high if effect.ci_high is not None else np.nan,
        "seconds": time.perf_counter() - start,
    }


def _links(asks: pd.DataFrame) -> pd.DataFrame:
    named = asks.dropna(subset=["opportunity_id"])
    return named.loc[:, ["ask_id", "opportunity_id"]].astype("str").reset_index(drop=True)


def _init(base: dict[str, pd.DataFrame]) -> None:
    _BASE.update(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, default=100)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--resamples", type=int, default=100, help="bootstrap resamples per world")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the per-world rows here (CSV)")
    args = parser.parse_args()

    start = time.perf_counter()
    base = generate_world(args.customers, seed=args.base_seed, acceptance_truth=False).tables
    base = {name: frame for name, frame in base.items() if name != DEALS}
    print(f"base world: {args.customers:,} customers, {time.perf_counter() - start:.1f} s", flush=True)
    jobs = [(1000 + k, args.resamples) for k in range(args.worlds)]
    rows = []
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(base,)) as pool:
        for row in pool.map(_world, jobs):
            rows.append(row)
            print(
                f"seed {row['seed']}: treated {row['treated']}, others {row['others']}, truth {row['truth']:.3f}, "
                f"plain {row['plain']:.3f}, adjusted {row['adjusted']:.3f} "
                f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] ({row['seconds']:.1f} s)",
                flush=True,
            )
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    estimated = table["adjusted"].notna()
    cover = ((table["ci_low"] <= table["truth"]) & (table["truth"] <= table["ci_high"]))[estimated].mean()
    mae = (table["adjusted"] - table["truth"]).abs()[estimated].mean()
    plain_off = (table["plain"] - table["truth"]).abs().mean()
    print()
    print(
        f"worlds {len(table)} (estimated {int(estimated.sum())}), mean treated {table['treated'].mean():.0f}, "
        f"mean others {table['others'].mean():.0f}, mean true effect {table['truth'].mean():.3f}"
    )
    print(f"90% interval covers the truth: {cover:.2f} (bar >= {BARS['coverage']})")
    print(
        f"adjusted mean absolute error: {mae:.4f} (bar <= {BARS['mae']}); mean bias "
        f"{(table['adjusted'] - table['truth'])[estimated].mean():+.4f}; mean interval width "
        f"{(table['ci_high'] - table['ci_low'])[estimated].mean():.3f}"
    )
    print(
        f"plain difference off by: {plain_off:.4f} on average (bar >= {BARS['plain_off']}); mean bias "
        f"{(table['plain'] - table['truth']).mean():+.4f}"
    )
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
