"""Probability calibration fitted on rows the booster did not see, stored as plain numbers.

A calibrator maps a booster's raw score (log-odds) to a probability. For the acceptance model it
also carries, per ask type, an offset and a change of slope (in log-odds, on top of the pooled
map): a plan's promise per type is only as good as the calibration of that type, at the top of
its list as much as on average. Both are shrunk towards the pooled map as if `PRIOR_ROWS` asks of
that type had been answered at the pooled rate, so a type with few asks keeps the pooled map.

Each type's level is only known to within its standard error (`level_se`, log-odds): an error
every customer of that type shares, which no number of asks in a plan averages out. The planner
counts it in a plan's promise.

Rows may carry weights (`advocacy recalibrate` weighs campaign answers above the asks the company
chose itself: `campaign_weights`). A weighted row counts that many times in the fit, but it is
still one answer: the level's standard error is that of a weighted mean (its variance grows by
sum(w^2) / sum(w) over what the weighted curvature alone says), so weighing answers up never makes
a promise look surer than the answers behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

Method = Literal["platt", "isotonic"]
PRIOR_ROWS = 100.0  # pseudo-rows at the pooled calibration that each group's offset is shrunk with


@dataclass(frozen=True)
class Calibrator:
    """Raw score -> calibrated probability; monotone non-decreasing in the raw score within a group."""

    method: Method
    params: tuple[float, ...]  # platt: (a, b); isotonic: x knots then y knots
    offsets: tuple[float, ...] = ()  # log-odds offset per group code (empty: no groups)
    slopes: tuple[float, ...] = ()  # change of the log-odds slope per group code (empty: pooled slope)
    centre: float = 0.0  # the pooled log-odds the group slopes turn around
    level_se: tuple[float, ...] = ()  # standard error of each group's log-odds level (empty: not known)

    @classmethod
    def fit(
        cls,
        raw_score: np.ndarray,
        y: np.ndarray,
        method: Method = "platt",
        groups: np.ndarray | None = None,
        n_groups: int = 0,
        prior_rows: float = PRIOR_ROWS,
        weight: np.ndarray | None = None,
    ) -> Calibrator:
        """The pooled map from `raw_score` to `y`; with `groups` (codes 0..n_groups-1), one shrunk offset each.

        `weight`: how many rows each row counts for (None: one each), e.g. `campaign_weights`.
        """
        raw_score = np.asarray(raw_score, dtype=float)
        w = None if weight is None else np.asarray(weight, dtype=float)
        if method == "platt":
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw_score.reshape(-1, 1), y, sample_weight=w)
            pooled = cls("platt", (float(lr.coef_[0, 0]), float(lr.intercept_[0])))
        else:
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw_score, y, sample_weight=w)
            x, v = iso.X_thresholds_, iso.y_thresholds_
            pooled = cls("isotonic", tuple(np.concatenate([x, v]).tolist()))
        if groups is None or n_groups == 0:
            return pooled
        z = pooled._logit(raw_score)
        centre = float(np.mean(z) if w is None else np.average(z, weights=w))
        y = np.asarray(y, dtype=float)
        offsets, slopes, se = _shrunk_offsets(z, centre, y, groups, n_groups, prior_rows, w)
        return cls(
            pooled.method, pooled.params, tuple(offsets.tolist()), tuple(slopes.tolist()), centre, tuple(se.tolist())
        )

    def _logit(self, raw_score: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            a, b = self.params
            # A negative slope would invert the ranking: never let calibration do that.
            return max(a, 1e-6) * raw_score + b
        half = len(self.params) // 2
        x, v = np.asarray(self.params[:half]), np.asarray(self.params[half:])
        return np.asarray(logit(np.clip(np.interp(raw_score, x, v), 1e-6, 1.0 - 1e-6)))

    def __call__(self, raw_score: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        raw_score = np.asarray(raw_score, dtype=float)
        z = self._logit(raw_score)
        if self.offsets and groups is not None:
            g = np.asarray(groups, dtype=np.int64)
            slope = 1.0 + np.asarray(self.slopes)[g] if self.slopes else 1.0
            z = self.centre + (z - self.centre) * np.maximum(slope, 0.05) + np.asarray(self.offsets)[g]
        elif self.method == "isotonic":
            half = len(self.params) // 2
            return np.interp(raw_score, np.asarray(self.params[:half]), np.asarray(self.params[half:]))
        return np.asarray(expit(z))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": list(self.params),
            "offsets": list(self.offsets),
            "slopes": list(self.slopes),
            "centre": self.centre,
            "level_se": list(self.level_se),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(
            data["method"],
            tuple(data["params"]),
            tuple(data["offsets"]),
            tuple(data["slopes"]),
            float(data["centre"]),
            tuple(data["level_se"]),
        )


def campaign_weights(
    groups: np.ndarray, on_plan: np.ndarray, y: np.ndarray, n_groups: int, habit_bias: float
) -> np.ndarray:
    """Per group, the weight each of its campaign answers carries in calibration, an off-plan ask's being 1.

    An off-plan ask was chosen by the company's habits (whom an account team gets on with, who
    seems keen), which no table records: its answers show the level of the customers those habits
    pick, lifted by a bias no feature explains. A campaign answer (spec 5a) was asked because a
    plan chose it from the features alone, so it shows the level a plan will meet, unbiased. Say
    the habits lift the level by about `habit_bias` (log-odds). Then a group's n_off off-plan asks,
    at rate r (information v = r(1 - r) per answer), know its level to a squared error of
    1 / (n_off v) + habit_bias^2, and its n_on campaign answers to 1 / (n_on v). The mix of the two
    with the least squared error is the weighted fit in which each campaign answer counts
    1 + n_off * habit_bias^2 * v times an off-plan ask.

    A weight that is the same for every group would let a type's off-plan asks drown its campaign
    answers once they are many: at this weight, however many there are, the off-plan asks say as
    much about the level as 1 / (habit_bias^2 v) campaign answers at most (about 75 at 0.25 and a
    rate of 0.3), so the campaign answers decide it once they outnumber that. Without campaign
    answers nothing changes, and each one moves the level by its share of the weight; `habit_bias`
    0 weighs every answer alike.

    The pooled map is fitted with the same weights: habits that lift one type's off-plan asks (whom
    an account team gets on with says yes to more) lift the others' too, so the campaign answers of
    some types move the map every type is shrunk towards, and a type's own asks keep it as far from
    there as their number allows.
    """
    g = np.asarray(groups, dtype=np.int64)
    off = ~np.asarray(on_plan, dtype=bool)
    n_off = np.bincount(g[off], minlength=n_groups).astype(float)
    yes_off = np.bincount(g[off], np.asarray(y, dtype=float)[off], minlength=n_groups)
    rate = np.clip(yes_off / np.maximum(n_off, 1.0), 1e-3, 1 - 1e-3)
    return np.asarray(1.0 + n_off * habit_bias**2 * rate * (1.0 - rate))


def _shrunk_offsets(
    z: np.ndarray,
    centre: float,
    y: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    prior_rows: float,
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group log-odds offsets and slope changes on top of the pooled log-odds `z`, by penalised
    maximum likelihood: the group's log-odds are centre + (1 + slope) * (z - centre) + offset.

    The penalties are the curvature of `prior_rows` answers at the pooled rate r: 0.5 * prior_rows
    * r(1 - r) * offset^2, and the same times var(z) for the slope, so a group with n rows moves
    about n / (n + prior_rows) of the way to its own fit.

    Also each group's level error, in log-odds: the offset's standard error from the curvature of
    the penalised likelihood at the fit (its 2 x 2 block, offset and slope), the pooled level's (one
    over the curvature of all rows), and what the shrinkage took away from the offset (offset x
    penalty / the rows' own curvature), which is a bias, not noise: a small type that really
    differs from the pool is known less well than its curvature alone says.

    With `weight`, each row counts that many times in the likelihood and the curvature; the two
    variances then grow by sum(w^2 v) / sum(w v) (v = p(1 - p)), the variance of a weighted mean
    over what its curvature says, so that weighing rows up adds no certainty (1 when unweighted).
    """
    g = np.asarray(groups, dtype=np.int64)
    u = np.ones_like(y) if weight is None else weight
    rate = float(np.clip(y.mean() if weight is None else np.average(y, weights=u), 1e-3, 1 - 1e-3))
    lam = prior_rows * rate * (1.0 - rate)
    zc = z - centre
    spread = np.var(zc) if weight is None else np.average(zc * zc, weights=u)
    lam_slope = lam * max(float(spread), 1e-6)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        d, b = params[:n_groups], params[n_groups:]
        s = centre + zc * (1.0 + b[g]) + d[g]
        resid = u * (expit(s) - y)
        nll = float(np.sum(u * (np.logaddexp(0.0, s) - y * s)))
        grad_d = np.bincount(g, resid, n_groups) + lam * d
        grad_b = np.bincount(g, resid * zc, n_groups) + lam_slope * b
        penalty = 0.5 * lam * float(d @ d) + 0.5 * lam_slope * float(b @ b)
        return nll + penalty, np.concatenate([grad_d, grad_b])

    x = np.asarray(minimize(loss, np.zeros(2 * n_groups), jac=True, method="L-BFGS-B").x)
    d, b = x[:n_groups], x[n_groups:]
    p = expit(centre + zc * (1.0 + b[g]) + d[g])
    v = p * (1.0 - p)
    w = u * v
    h_dd = np.bincount(g, w, n_groups) + lam
    h_db = np.bincount(g, w * zc, n_groups)
    h_bb = np.bincount(g, w * zc * zc, n_groups) + lam_slope
    var_offset = h_bb / (h_dd * h_bb - h_db * h_db)  # the offset's entry of the block's inverse
    var_pooled = 1.0 / max(float(w.sum()), 1e-12)
    if weight is not None:
        var_offset = var_offset * np.bincount(g, u * w, n_groups) / np.maximum(np.bincount(g, w, n_groups), 1e-12)
        var_pooled = var_pooled * float((u * w).sum()) / max(float(w.sum()), 1e-12)
    shrunk_by = d * lam / np.maximum(h_dd - lam, 1e-12)
    return d, b, np.sqrt(var_offset + var_pooled + shrunk_by**2)
