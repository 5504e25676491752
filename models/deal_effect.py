"""What a delivered reference added to the deals that got one (spec section 9).

Sales asks for references on the deals it expects to win, so the plain difference of win rates,
with a reference against without, overstates the effect. The adjusted estimate is the average
effect on the treated deals (ATT) of a doubly robust learner: EconML's `LinearDRLearner`, with a
propensity model (which deals got a delivered reference) and an outcome model (which deals were
won), each a logistic regression on what the deal showed when it was created, cross-fitted so that
no deal's own row fits the models that correct it. It stays right when either model is right.

EconML because it is the kept library whose DR learner fits this question directly and whose
estimators DoWhy wraps: DoWhy's refutation checks (a placebo treatment, a random common cause) run
on the same learner through `LinearDRLearner.dowhy`. The 90% interval is a percentile bootstrap over
deals (`scipy.stats.bootstrap`), each resample refitting the whole estimator, nuisance models
included. What it claims: the effect on the treated deals if nothing that drove both the request
and the outcome is missing from the deal's features; it cannot see what sales knew and did not
record.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.deals import DEAL_CATEGORIES, REFERRED_BY

MIN_TREATED = 30  # closed deals with a delivered reference, and as many without, before an estimate
MIN_OTHERS = 30
MIN_PER_OUTCOME = 5  # won and lost deals in each group: a model of winning needs both
CONFIDENCE = 0.9
RESAMPLES = 100
REFUTATION_SIMULATIONS = 10
FOLDS = 5  # cross-fitting folds: fewer leave the estimate swinging with the split
STATUS_ESTIMATED = "estimated"


@dataclass(frozen=True)
class Refutation:
    """One of DoWhy's checks of the estimate: what it did, the effect it found, and whether the
    estimate passed (the placebo's effect near zero; a random common cause leaving it in place; near:
    within the estimate's own interval half-width)."""

    name: str
    expected: str
    estimated_effect: float
    new_effect: float
    p_value: float | None
    passed: bool


@dataclass(frozen=True)
class DealEffect:
    """The effect of a delivered reference on winning, among closed deals."""

    status: str  # STATUS_ESTIMATED, or why there is no estimate
    treated_deals: int
    other_deals: int
    win_rate_treated: float | None
    win_rate_other: float | None
    plain_difference: float | None
    plain_ci: tuple[float, float] | None
    effect_on_treated: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    treated_amount: float = 0.0
    refutations: list[Refutation] = field(default_factory=list)
    method: str = "EconML LinearDRLearner (ATT), percentile bootstrap, DoWhy refutations"

    @property
    def estimated(self) -> bool:
        return self.status == STATUS_ESTIMATED

    @property
    def incremental_won_revenue(self) -> float | None:
        """The effect times the treated deals' amounts: the won revenue the references added."""
        return None if self.effect_on_treated is None else self.effect_on_treated * self.treated_amount


def design(deals: pd.DataFrame) -> pd.DataFrame:
    """What each deal showed when it was created, as numbers: its categories one-hot, its log
    amount, and whether a customer referred it."""
    cats = deals.loc[:, list(DEAL_CATEGORIES)].astype("str").fillna("unknown")
    x = pd.get_dummies(cats, prefix=list(DEAL_CATEGORIES), dtype=float)
    x["log_amount"] = np.log1p(deals["amount"].to_numpy(dtype=float))
    x["referred"] = deals[REFERRED_BY].notna().to_numpy(dtype=float)
    x.columns = [str(c).replace(" ", "_") for c in x.columns]
    return x.reset_index(drop=True)


def _learner(seed: int) -> Any:
    from econml.dr import LinearDRLearner

    return LinearDRLearner(**_learner_params(seed))


def _learner_params(seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logistic() -> Any:
        # Scaled, the solver converges in a few steps; the raw log amount beside one-hot columns slows it many times.
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    return {
        "model_propensity": logistic(),
        "model_regression": logistic(),
        "discrete_outcome": True,
        "cv": FOLDS,
        "random_state": seed,
    }


def _att(y: np.ndarray, t: np.ndarray, x: np.ndarray, seed: int) -> float:
    learner = _learner(seed)
    learner.fit(y, t, X=x)
    return float(np.ravel(learner.ate(x[t == 1]))[0])


def _why_not(t: np.ndarray, y: np.ndarray) -> str | None:
    treated, others = int(t.sum()), int((1 - t).sum())
    if treated < MIN_TREATED:
        return f"too few treated deals ({treated} closed with a delivered reference; {MIN_TREATED} needed)"
    if others < MIN_OTHERS:
        return f"too few other deals ({others} closed without a delivered reference; {MIN_OTHERS} needed)"
    for group, name in ((t == 1, "treated"), (t == 0, "other")):
        won = int(y[group].sum())
        if min(won, int(group.sum()) - won) < MIN_PER_OUTCOME:
            total = int(group.sum())
            return f"too few won or lost {name} deals ({won} won of {total}; {MIN_PER_OUTCOME} of each needed)"
    return None


def estimate_effect(
    deals: pd.DataFrame,
    *,
    resamples: int = RESAMPLES,
    refutation_simulations: int = REFUTATION_SIMULATIONS,
    seed: int = 0,
) -> DealEffect:
    """The plain and the adjusted effect of a delivered reference on the closed deals of `deals`
    (`features.deals.deal_frame`); no estimate, and the reason in `status`, when there are too few.
    `refutation_simulations=0` leaves DoWhy's checks out (a benchmark over many worlds)."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    closed = deals[deals["closed"].to_numpy(dtype=bool)].reset_index(drop=True)
    t = closed["referenced"].to_numpy(dtype=int)
    y = closed["won"].to_numpy(dtype=float)
    treated, others = int(t.sum()), int((1 - t).sum())
    rate_t = float(y[t == 1].mean()) if treated else None
    rate_o = float(y[t == 0].mean()) if others else None
    plain = None if rate_t is None or rate_o is None else rate_t - rate_o
    plain_ci = None
    if treated and others:
        low, high = confint_proportions_2indep(
            int(y[t == 1].sum()), treated, int(y[t == 0].sum()), others, method="wald", alpha=1 - CONFIDENCE
        )
        plain_ci = (float(low), float(high))
    amount = float(closed.loc[t == 1, "amount"].sum())
    base = DealEffect("", treated, others, rate_t, rate_o, plain, plain_ci, treated_amount=amount)
    why = _why_not(t, y)
    if why is not None:
        return DealEffect(**{**base.__dict__, "status": why})
    x = design(closed).to_numpy()
    with _quiet():
        effect = _att(y, t, x, seed)
        low, high = _bootstrap(y, t, x, resamples, seed)
        checks = []
        if refutation_simulations:
            checks = _refute(y, t, design(closed), seed, refutation_simulations, (high - low) / 2)
    return DealEffect(
        **{
            **base.__dict__,
            "status": STATUS_ESTIMATED,
            "effect_on_treated": effect,
            "ci_low": low,
            "ci_high": high,
            "refutations": checks,
        }
    )


def _bootstrap(y: np.ndarray, t: np.ndarray, x: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The percentile interval of the ATT over resampled deals, each resample refit whole. A resample
    the learner cannot fit (no treated deal won in it, say) counts as no resample at all."""
    from scipy.stats import bootstrap

    def att(rows: np.ndarray) -> float:
        rows = rows.astype(int)
        if len(np.unique(t[rows])) < 2 or len(np.unique(y[rows[t[rows] == 0]])) < 2:
            return float("nan")
        try:
            return _att(y[rows], t[rows], x[rows], seed)
        except ValueError:
            return float("nan")

    result = bootstrap(
        (np.arange(len(y), dtype=float),),
        att,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _refute(
    y: np.ndarray, t: np.ndarray, x: pd.DataFrame, seed: int, simulations: int, tolerance: float
) -> list[Refutation]:
    """DoWhy's placebo treatment and random common cause on the same learner and target (the treated
    deals), the deal's features as both common causes and effect modifiers. A check passes when what
    it found lies within `tolerance` (the estimate's own interval half-width) of what it should find:
    zero for the placebo, the estimate for the random common cause. A fixed share of the estimate
    would fail checks on few deals for noise alone, and pass them on many deals whatever they found."""
    from dowhy import CausalModel

    data = x.assign(referenced=t.astype(bool), won=y)
    model = CausalModel(
        data=data,
        treatment="referenced",
        outcome="won",
        common_causes=list(x.columns),
        effect_modifiers=list(x.columns),
    )
    # The default search for a backdoor set tries subsets of the features (minutes for twenty of them);
    # every feature is a pre-treatment cause here, so the maximal set is the one.
    estimand = model.identify_effect(method_name="maximal-adjustment", proceed_when_unidentifiable=True)
    estimate = model.estimate_effect(
        estimand,
        method_name="backdoor.econml.dr.LinearDRLearner",
        # DoWhy 0.12 reads the string "att" as every unit for EconML's learners: name the treated rows.
        target_units=lambda frame: frame["referenced"],
        method_params={"init_params": _learner_params(seed), "fit_params": {}},
    )
    estimated = float(np.ravel(estimate.value)[0])
    out = []
    for method, name, expected, extra in (
        ("placebo_treatment_refuter", "placebo treatment", "near zero", {"placebo_type": "permute"}),
        ("random_common_cause", "random common cause", "unchanged", {}),
    ):
        result = model.refute_estimate(
            estimand, estimate, method_name=method, num_simulations=simulations, random_state=seed, **extra
        )
        new = float(np.ravel(result.new_effect)[0])
        p = result.refutation_result.get("p_value") if isinstance(result.refutation_result, dict) else None
        p_value = None if p is None else float(np.ravel(p)[0])
        passed = abs(new - (0.0 if expected == "near zero" else estimated)) <= tolerance
        out.append(Refutation(name, expected, estimated, new, p_value, passed))
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """EconML and DoWhy warn and log on every fit (co-linear one-hot columns, future defaults); a
    report fits hundreds of times. Silence them for the estimate only."""
    level = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)
