"""Selection bias of the acceptance model (issue 17): does inverse-propensity weighting of the
asks close the gap for customers never asked?

The company asks the customers it gets on with (a rapport no table records, in the drifting
world), so the asks the model learns from over-represent the willing. This trains the acceptance
model as `advocacy train` does (without the refit), then again with every training and validation
ask weighted by 1 / P(asked in that month | its features) (a LightGBM model of "asked in the month
after a snapshot" on the propensity snapshots; weights normalised to the asked rate, capped at the
99th percentile), and prints acceptance for every live customer x ask type at each held-out month
start against the generator's truth: expected AUC / the truth's, ECE against the truth, and the
mean bias for customers never asked before and asked before.

    uv run python benchmarks/selection_bias.py [--seeds 0 1 2] [--worlds drifting stationary]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

import lightgbm as lgb
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from benchmarks.features import world_dir
from features.io import World, read_world
from models.bundle import ACCEPTANCE_CATEGORICAL_INDEX, Bundle, TargetModel
from models.calibration import Calibrator
from training.datasets import TrainingData, build_training_data
from training.evaluate import acceptance_everyone_metrics
from training.fit import MONOTONE_METHOD, Matrices, TrainConfig, acceptance_monotone, fit_bundle


def asked_next_month(world: World, data: TrainingData) -> np.ndarray:
    """Per propensity snapshot: was the customer asked in the month after it?"""
    prop = data.propensity[["customer_id", "as_of"]].reset_index()
    m = prop.merge(world.asks[["customer_id", "asked_at"]], on="customer_id")
    hit = (m["asked_at"] >= m["as_of"]) & (m["asked_at"] < m["as_of"] + pd.DateOffset(months=1))
    return hit.groupby(m["index"]).any().reindex(prop["index"], fill_value=False).to_numpy()


def ask_weights(world: World, data: TrainingData, bundle: Bundle, acc: Matrices) -> dict[str, np.ndarray]:
    """1 / P(asked that month | the ask's features) for the training and validation asks."""
    asked = asked_next_month(world, data)
    x = bundle.encoder.transform(data.propensity)
    split = data.propensity["split"].to_numpy()
    params = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 100}
    cat = bundle.encoder.categorical_indices
    train = lgb.Dataset(x[split == "train"], asked[split == "train"], categorical_feature=cat)
    valid = lgb.Dataset(x[split == "valid"], asked[split == "valid"], reference=train)
    model = lgb.train(
        params | {"verbosity": -1, "num_threads": 2},
        train,
        1000,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    out = {}
    for part in ("train", "valid"):
        p = model.predict(acc.x[part][:, : len(bundle.encoder.columns)])
        w = asked.mean() / np.clip(p, 1e-3, None)
        out[part] = np.clip(w, 0.0, np.quantile(w, 0.99))
    return out


def weighted_acceptance(
    bundle: Bundle, acc: Matrices, weights: dict[str, np.ndarray], config: TrainConfig
) -> TargetModel:
    """The acceptance booster and its Platt calibration, with every ask weighted."""
    cat = [*bundle.encoder.categorical_indices, ACCEPTANCE_CATEGORICAL_INDEX]
    params = config.acceptance.lightgbm() | {
        "monotone_constraints": acceptance_monotone(),
        "monotone_constraints_method": MONOTONE_METHOD,
    }
    w_train, w_valid = weights["train"], weights["valid"]
    train = lgb.Dataset(acc.x["train"], acc.y["train"], weight=w_train, categorical_feature=cat)
    valid = lgb.Dataset(acc.x["valid"], acc.y["valid"], weight=w_valid, categorical_feature=cat, reference=train)
    booster = lgb.train(
        params,
        train,
        config.acceptance.max_rounds,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(config.acceptance.early_stopping_rounds, verbose=False)],
    )
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    raw = booster.predict(acc.x["valid"], raw_score=True)
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), acc.y["valid"], sample_weight=w_valid)
    return TargetModel(booster, Calibrator("platt", (float(lr.coef_[0, 0]), float(lr.intercept_[0]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--worlds", nargs="+", default=["drifting"], choices=["drifting", "stationary"])
    args = parser.parse_args()
    table = Table(title="Acceptance for everyone vs the truth: asks as they came, and weighted by 1 / P(asked)")
    for col in ("world", "seed", "asks", "exp. AUC / truth", "ECE vs truth", "bias never asked", "bias asked before"):
        table.add_column(col, justify="right")
    config = TrainConfig(refit=False)
    for world_name in args.worlds:
        for seed in args.seeds:
            data_dir = world_dir(args.customers, seed=seed, drift=world_name == "drifting")
            world = read_world(data_dir)
            data = build_training_data(world)
            bundle, mats = fit_bundle(world, data, config)
            since = pd.Timestamp(data.fingerprint["acceptance_test_start"])
            runs = {"as asked": acceptance_everyone_metrics(data_dir, world, bundle, since)}
            weights = ask_weights(world, data, bundle, mats["acceptance"])
            bundle.acceptance = weighted_acceptance(bundle, mats["acceptance"], weights, config)
            runs["1 / P(asked)"] = acceptance_everyone_metrics(data_dir, world, bundle, since)
            for name, m in runs.items():
                table.add_row(
                    world_name,
                    str(seed),
                    name,
                    f"{m['acceptance_everyone_auc_vs_truth']:.3f}",
                    f"{m['acceptance_everyone_ece_vs_truth']:.3f}",
                    f"{m['acceptance_everyone_bias_never_asked']:+.3f}",
                    f"{m['acceptance_everyone_bias_asked_before']:+.3f}",
                )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
