"""How much of the truth any model of the product's features can reach (issue 17's bars).

The generator knows each customer's true probabilities; part of what decides them (a hidden
affinity and satisfaction, and in the drifting world a rapport no table records) is never in
the tables. This fits *teachers*: LightGBM on the generator's true probabilities themselves
(cross-entropy on p_true, no label noise), from exactly the features the product's models read,
and judges them as `benchmarks/train.py` judges the product, on the same held-out window:

- propensity: ROC AUC on the realised labels / the truth's;
- acceptance over every live customer x ask type at each held-out month start: expected AUC /
  the truth's, and ECE against the truth.

Two teachers per target:
- **past**: trained on the truth of the months before the held-out window, as a model must be
  (so it carries the drift's lag): the best a model of these features could do with perfect
  labels of the past;
- **in-window**: trained on the held-out window's own truth, two folds by customer (each customer
  scored by the teacher of the other half): the information ceiling of these features, with no
  lag and no label noise. No model trained on the past can beat it, except by chance.

With `--month`, each teacher is also fitted with the calendar month as one more input, to show
what the seasons, which the tables do record, are worth.

And one *student* for acceptance, **random asks**: the product's own acceptance fit (booster,
early stopping, per-type calibration, the same configuration) on as many asks as the product
learns from, but drawn uniformly from every live customer x ask type x month before the window,
answered by the truth (a yes with the true probability). It is what an unbiased experiment of the
company's size would teach; the gap from it to the product is what the company's choice of whom
to ask costs, and the gap from the past teacher to it is what the number of answers costs.

    uv run python benchmarks/ceiling.py [--customers 10000] [--seeds 0 1 2] [--worlds drifting stationary]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

import lightgbm as lgb
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from benchmarks.features import world_dir
from features.catalog import ASK_TYPE_NAMES
from features.io import World, read_world
from features.labels import observed_until
from features.pointintime import build_features, snapshot_points
from models.bundle import ACCEPTANCE_CATEGORICAL_INDEX, TargetModel, acceptance_matrix
from models.encoding import FeatureEncoder
from training.datasets import TrainingData, build_training_data
from training.evaluate import ece_vs_truth, expected_auc
from training.fit import FitInputs, TrainConfig, acceptance_monotone, fit_calibrated, fit_encoder

PARAMS = {
    "objective": "cross_entropy",  # labels in [0, 1]: the true probabilities themselves
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "verbosity": -1,
    "num_threads": 2,
}


@dataclass
class Rows:
    """Teacher inputs: a matrix, the true probability, the month, the customer and categoricals."""

    x: np.ndarray
    p_true: np.ndarray
    as_of: np.ndarray
    customer: np.ndarray
    categorical: list[int]

    def take(self, mask: np.ndarray) -> Rows:
        return Rows(self.x[mask], self.p_true[mask], self.as_of[mask], self.customer[mask], self.categorical)

    def with_month(self) -> Rows:
        month = pd.DatetimeIndex(self.as_of).month.to_numpy(dtype=float).reshape(-1, 1)
        return Rows(
            np.hstack([self.x, month]), self.p_true, self.as_of, self.customer, [*self.categorical, self.x.shape[1]]
        )


def naive(times: pd.Series) -> np.ndarray:
    """UTC times as plain datetime64 (a tz-aware column's to_numpy gives objects)."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(None).to_numpy()


def fit_teacher(train: Rows, seed: int = 0) -> lgb.Booster:
    """Early-stopped on a tenth of the training customers."""
    rng = np.random.default_rng(seed)
    customers = np.unique(train.customer)
    stop = np.isin(train.customer, rng.choice(customers, max(len(customers) // 10, 1), replace=False))
    fit, valid = train.take(~stop), train.take(stop)
    dfit = lgb.Dataset(fit.x, fit.p_true, categorical_feature=train.categorical, free_raw_data=False)
    dvalid = lgb.Dataset(valid.x, valid.p_true, reference=dfit)
    return lgb.train(PARAMS, dfit, 4000, valid_sets=[dvalid], callbacks=[lgb.early_stopping(100, verbose=False)])


def past_teacher(rows: Rows, test: np.ndarray) -> np.ndarray:
    return fit_teacher(rows.take(~test)).predict(rows.take(test).x)


def in_window_teacher(rows: Rows, test: np.ndarray) -> np.ndarray:
    held = rows.take(test)
    customers = np.unique(held.customer)
    half = np.isin(held.customer, np.random.default_rng(1).permutation(customers)[: len(customers) // 2])
    out = np.empty(len(held.p_true))
    for fold in (half, ~half):
        out[fold] = fit_teacher(held.take(~fold)).predict(held.take(fold).x)
    return out


def random_asks_student(rows: Rows, test: np.ndarray, n_train: int, n_valid: int, seed: int = 0) -> np.ndarray:
    """The product's acceptance fit on `n_train` + `n_valid` past rows drawn at random and answered
    by the truth; the newest `n_valid` of them validate and calibrate, as the newest asks do."""
    rng = np.random.default_rng(seed)
    past = np.flatnonzero(~test)
    pick = rng.choice(past, n_train + n_valid, replace=False)
    pick = pick[np.argsort(rows.as_of[pick], kind="stable")]
    y = (rng.random(pick.size) < rows.p_true[pick]).astype(float)
    fit, valid = slice(0, n_train), slice(n_train, None)
    config = TrainConfig()
    inputs = FitInputs(
        rows.x[pick][fit], y[fit], rows.x[pick][valid], y[valid], rows.categorical, acceptance_monotone()
    )
    booster, calibrator = fit_calibrated(
        inputs, config.acceptance, config.calibration, group_column=ACCEPTANCE_CATEGORICAL_INDEX
    )
    return TargetModel(booster, calibrator, ACCEPTANCE_CATEGORICAL_INDEX).proba(rows.take(test).x, num_threads=2)


@dataclass
class Source:
    """A generated world read once: its tables, training sets as `advocacy train` builds them, and
    the product's encoder."""

    data_dir: Path
    world: World
    data: TrainingData
    encoder: FeatureEncoder

    @classmethod
    def read(cls, data_dir: Path) -> Source:
        world = read_world(data_dir)
        data = build_training_data(world)
        return cls(data_dir, world, data, fit_encoder(data))


def propensity_rows(source: Source) -> tuple[Rows, np.ndarray, np.ndarray]:
    """Propensity snapshots as `advocacy train` builds them, with the truth; the test mask and labels."""
    data_dir, data, encoder = source.data_dir, source.data, source.encoder
    frame = data.propensity[data.propensity["split"].isin(["train", "valid", "test"])].reset_index(drop=True)
    truth = pd.read_parquet(data_dir / "truth" / "propensity.parquet")
    truth["as_of"] = pd.to_datetime(truth["as_of"], utc=True).astype(frame["as_of"].dtype)
    frame = frame.merge(truth[["customer_id", "as_of", "p_true"]], on=["customer_id", "as_of"], how="inner")
    rows = Rows(
        encoder.transform(frame),
        frame["p_true"].to_numpy(float),
        naive(frame["as_of"]),
        frame["customer_id"].to_numpy(),
        list(encoder.categorical_indices),
    )
    return rows, (frame["split"] == "test").to_numpy(), frame["label"].to_numpy()


def acceptance_rows(source: Source) -> tuple[Rows, np.ndarray, tuple[int, int]]:
    """Every live customer x ask type at every month start the truth covers; the held-out mask
    (the months `advocacy train`'s evaluation judges: from the acceptance test start)."""
    data_dir, world, data, encoder = source.data_dir, source.world, source.data, source.encoder
    since = pd.Timestamp(data.fingerprint["acceptance_test_start"])
    truth = pd.read_parquet(data_dir / "truth" / "acceptance_by_type.parquet")
    truth["as_of"] = pd.to_datetime(truth["as_of"], utc=True)
    truth = truth[truth["as_of"] < observed_until(world)]
    months = sorted(truth["as_of"].unique())[6:]  # the burn-in the product's snapshots skip
    feats = build_features(world, snapshot_points(world, [pd.Timestamp(t) for t in months]), data.lapse_days)
    n_types = len(ASK_TYPE_NAMES)
    keys = pd.DataFrame(
        {
            "customer_id": np.repeat(feats["customer_id"].to_numpy(), n_types),
            "as_of": np.repeat(pd.to_datetime(feats["as_of"], utc=True).to_numpy(), n_types),
            "ask_type": np.tile(np.asarray(ASK_TYPE_NAMES), len(feats)),
        }
    )
    keys["as_of"] = pd.to_datetime(keys["as_of"], utc=True)
    p_true = keys.merge(truth.astype({"ask_type": "str"}), on=["customer_id", "as_of", "ask_type"], how="left")[
        "p_true"
    ]
    known = p_true.notna().to_numpy()
    x = acceptance_matrix(encoder.transform(feats))
    rows = Rows(
        x[known],
        p_true.to_numpy(float)[known],
        naive(keys["as_of"])[known],
        keys["customer_id"].to_numpy()[known],
        [*encoder.categorical_indices, ACCEPTANCE_CATEGORICAL_INDEX],
    )
    split = data.acceptance["split"]
    sizes = (int((split == "train").sum()), int((split == "valid").sum()))
    return rows, rows.as_of >= since.tz_convert(None).to_datetime64(), sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--worlds", nargs="+", default=["drifting"], choices=["drifting", "stationary"])
    parser.add_argument("--teachers", nargs="*", default=["past", "in-window"], choices=["past", "in-window"])
    parser.add_argument("--month", action="store_true", help="each teacher also with the calendar month")
    parser.add_argument("--no-student", dest="student", action="store_false", help="no random-asks student")
    args = parser.parse_args()
    table = Table(title="Teachers fitted on the truth itself, from the product's features: held-out window")
    for col in ("world", "seed", "fit", "prop. AUC / truth", "acc. exp. AUC / truth", "acc. ECE vs truth"):
        table.add_column(col, justify="right")
    console = Console(width=200)
    teachers = {"past": past_teacher, "in-window": in_window_teacher}
    for world_name in args.worlds:
        for seed in args.seeds:
            data_dir = world_dir(args.customers, seed=seed, drift=world_name == "drifting")
            source = Source.read(data_dir)
            prop, prop_test, y = propensity_rows(source)
            acc, acc_test, sizes = acceptance_rows(source)
            y_test, truth_auc = y[prop_test], roc_auc_score(y[prop_test], prop.p_true[prop_test])
            acc_true = acc.p_true[acc_test]
            truth_exp = expected_auc(acc_true, acc_true)

            def report(
                name: str, p: np.ndarray | None, a: np.ndarray, where: tuple[str, int] = (world_name, seed)
            ) -> None:
                cells = [
                    where[0],
                    str(where[1]),
                    name,
                    "" if p is None else f"{roc_auc_score(y_test, p) / truth_auc:.4f}",  # noqa: B023
                    f"{expected_auc(acc_true, a) / truth_exp:.4f}",  # noqa: B023
                    f"{ece_vs_truth(a, acc_true):.4f}",  # noqa: B023
                ]
                console.print(" | ".join(cells))
                table.add_row(*cells)

            for name in args.teachers:
                for month in (False, True) if args.month else (False,):
                    p_rows, a_rows = (prop.with_month(), acc.with_month()) if month else (prop, acc)
                    label = f"{name} teacher" + (" +month" if month else "")
                    report(label, teachers[name](p_rows, prop_test), teachers[name](a_rows, acc_test))
            if args.student:
                label = f"random asks ({sizes[0]:,} + {sizes[1]:,})"
                report(label, None, random_asks_student(acc, acc_test, *sizes, seed=seed))
    console.print(table)


if __name__ == "__main__":
    main()
