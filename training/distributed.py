"""`--engine dask`: fit the boosters with `lightgbm.dask` on a Dask cluster.

LightGBM's Dask interface has no early stopping (lightgbm-org/LightGBM#3712), so the cluster fits
up to `DASK_MAX_ROUNDS` trees and the best iteration is then chosen on the validation window, the
same choice early stopping makes (without its patience cut-off). The result is a plain Booster,
so everything after fitting (calibration, bundle, registry) is the same as with the local engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import log_loss

from training.fit import MONOTONE_METHOD, BoosterParams, FitInputs

DASK_MAX_ROUNDS = 600
Trainer = Callable[..., lgb.Booster]


def best_iteration(booster: lgb.Booster, x_valid: np.ndarray, y_valid: np.ndarray) -> int:
    """The number of trees with the lowest validation log loss."""
    raw = np.zeros(len(y_valid))
    losses = []
    for i in range(booster.num_trees()):
        raw += booster.predict(x_valid, raw_score=True, start_iteration=i, num_iteration=1)
        losses.append(log_loss(y_valid, 1.0 / (1.0 + np.exp(-raw)), labels=[0, 1]))
    return int(np.argmin(losses)) + 1


def dask_trainer(scheduler: str | None, client: Any = None, chunk_rows: int = 50_000) -> Trainer:
    """A trainer with `fit_booster`'s signature that fits on the cluster at `scheduler`."""
    import dask.array as da
    from distributed import Client

    if client is None and not scheduler:
        raise ValueError("--engine dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    dask_client = client or Client(scheduler)

    def fit(
        data: FitInputs, params: BoosterParams, callbacks: list[Any] | None = None, rounds: int | None = None
    ) -> lgb.Booster:
        if callbacks:
            raise ValueError("tuning (--tune) runs on the local engine; drop --engine dask or --tune")
        settings = params.lightgbm()
        settings.pop("metric")
        model = lgb.DaskLGBMClassifier(
            client=dask_client,
            n_estimators=rounds or min(params.max_rounds, DASK_MAX_ROUNDS),
            monotone_constraints=data.monotone,
            monotone_constraints_method=MONOTONE_METHOD,
            **settings,
        )
        dx = da.from_array(data.x_train, chunks=(chunk_rows, data.x_train.shape[1]))
        dy = da.from_array(data.y_train, chunks=(chunk_rows,))
        model.fit(dx, dy, categorical_feature=data.categorical)
        booster = model.to_local().booster_
        if rounds is not None:  # the refit on train + validation: exactly `rounds` trees
            return booster
        best = best_iteration(booster, data.x_valid, data.y_valid)
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))

    return fit
