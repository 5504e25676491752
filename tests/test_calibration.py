"""Calibration (models/calibration.py): a probability shown is a promise, per ask type too."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from models.calibration import PRIOR_ROWS, Calibrator, campaign_weights

ROWS = 20_000


def _answers(rng: np.random.Generator, offsets: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Raw scores and answers where group g's true log-odds are 0.8 * raw - 1 + offsets[g]."""
    groups = np.repeat(np.arange(sizes.size), sizes)
    raw = rng.normal(0.0, 1.2, groups.size)
    y = (rng.random(groups.size) < expit(0.8 * raw - 1.0 + offsets[groups])).astype(int)
    return raw, y, groups


def test_each_group_gets_its_own_rate_when_it_has_the_rows() -> None:
    rng = np.random.default_rng(0)
    offsets = np.array([0.0, 0.8, -0.6])
    raw, y, groups = _answers(rng, offsets, np.array([ROWS, ROWS, ROWS]))
    pooled = Calibrator.fit(raw, y)
    typed = Calibrator.fit(raw, y, groups=groups, n_groups=3)
    for g in range(3):
        mask = groups == g
        # Per group, the mean promised probability matches the observed rate; the pooled map misses.
        assert abs(typed(raw[mask], groups[mask]).mean() - y[mask].mean()) < 0.01
    assert abs(pooled(raw[groups == 1]).mean() - y[groups == 1].mean()) > 0.05
    assert np.diff(typed.offsets).tolist() == pytest.approx(np.diff(offsets).tolist(), abs=0.1)


def test_a_group_with_few_rows_is_shrunk_towards_the_pooled_map() -> None:
    rng = np.random.default_rng(1)
    raw, y, groups = _answers(rng, np.array([0.0, 1.5]), np.array([ROWS, 40]))
    typed = Calibrator.fit(raw, y, groups=groups, n_groups=2)
    alone = Calibrator.fit(raw, y, groups=groups, n_groups=2, prior_rows=1e-6)  # no shrinkage
    # With 40 rows and PRIOR_ROWS pseudo-rows, the offset moves well under half of the way.
    assert PRIOR_ROWS >= 40
    assert 0 < typed.offsets[1] < 0.5 * alone.offsets[1]
    # A group never seen keeps the pooled map exactly.
    unseen = Calibrator.fit(raw[groups == 0], y[groups == 0], groups=groups[groups == 0], n_groups=3)
    assert unseen.offsets[2] == pytest.approx(0.0, abs=1e-6)


def test_calibration_never_reorders_within_a_group_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    raw, y, groups = _answers(rng, np.array([0.0, 0.5]), np.array([5000, 5000]))
    for method in ("platt", "isotonic"):
        cal = Calibrator.fit(raw, y, method, groups, 2)
        grid = np.linspace(-4, 4, 200)
        for g in (0, 1):
            p = cal(grid, np.full(grid.size, g))
            assert (np.diff(p) >= -1e-12).all() and ((p >= 0) & (p <= 1)).all()
        again = Calibrator.from_dict(cal.to_dict())
        assert np.array_equal(again(raw, groups), cal(raw, groups))
    # Without groups the map is the pooled one, and it round-trips as such.
    pooled = Calibrator.from_dict(Calibrator("platt", (0.8, -1.0)).to_dict())
    assert np.allclose(pooled(raw), expit(0.8 * raw - 1.0))
    assert np.allclose(pooled(raw, groups), expit(0.8 * raw - 1.0))


def test_a_group_whose_scores_are_overconfident_gets_a_flatter_slope() -> None:
    # Group 1's true log-odds move half as fast as the raw score: its top is promised too much by
    # the pooled map, which is what a plan picking the top of that type would pay for.
    rng = np.random.default_rng(3)
    n = ROWS
    groups = np.repeat([0, 1], n)
    raw = rng.normal(0.0, 1.5, 2 * n)
    true = np.where(groups == 0, 0.8 * raw - 1.0, 0.4 * raw - 1.0)
    y = (rng.random(2 * n) < expit(true)).astype(int)
    pooled = Calibrator.fit(raw, y)
    typed = Calibrator.fit(raw, y, groups=groups, n_groups=2)
    top = (groups == 1) & (raw > np.quantile(raw[groups == 1], 0.9))
    truth_top = expit(true[top]).mean()
    assert abs(typed(raw[top], groups[top]).mean() - truth_top) < 0.02
    assert pooled(raw[top]).mean() - truth_top > 0.05
    assert typed.slopes[1] < -0.2 < typed.slopes[0]


def test_each_group_level_comes_with_a_standard_error_that_covers_the_truth() -> None:
    """Over many fits, the true level of a group lies within 1.96 standard errors of the fitted one
    about 95% of the time, and the error shrinks as the group's answers grow."""
    rng = np.random.default_rng(3)
    offsets = np.array([0.0, 0.5, -0.4])
    sizes = np.array([3000, 800, 300])
    hits, ses = [], []
    for _ in range(120):
        raw, y, groups = _answers(rng, offsets, sizes)
        fitted = Calibrator.fit(raw, y, groups=groups, n_groups=3)
        true_logit = 0.8 * raw - 1.0 + offsets[groups]
        made = np.log(fitted(raw, groups)) - np.log1p(-fitted(raw, groups))
        error = np.bincount(groups, made - true_logit, 3) / sizes  # each group's mean log-odds error
        hits.append(np.abs(error) <= 1.96 * np.asarray(fitted.level_se))
        ses.append(fitted.level_se)
    coverage = np.mean(hits, axis=0)
    assert np.all((coverage >= 0.88) & (coverage <= 0.995)), coverage
    se = np.mean(ses, axis=0)
    assert se[0] < se[1] < se[2]
    assert Calibrator.from_dict(fitted.to_dict()) == fitted


def _habits(seed: int, lift: float) -> tuple[np.ndarray, ...]:
    """Group 0: 3,000 asks the company chose. Group 1: 1,000 such asks, their acceptance lifted by
    `lift` log-odds that no score shows (whom the company gets on with), and 40 campaign answers
    without the lift. True log-odds otherwise 0.8 * raw - 1."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([0, 1, 1], [3000, 1000, 40])
    on_plan = np.repeat([False, False, True], [3000, 1000, 40])
    raw = rng.normal(0.0, 1.2, groups.size)
    y = (rng.random(groups.size) < expit(0.8 * raw - 1.0 + np.where(on_plan, 0.0, lift))).astype(int)
    return raw, y, groups, on_plan


def test_campaign_answers_weigh_what_the_habits_cost_the_other_asks_and_add_no_certainty() -> None:
    """The promise a plan meets is the level without the habits' lift. Over 30 worlds, in log-odds:
    fitted on every answer alike it keeps the lift (rmse 0.34); on the campaign answers alone it is
    noisy (0.40); weighed by `campaign_weights` (each campaign answer about 38 off-plan asks here) it
    is nearer than either (0.23). Its standard error grows with the weights as the spread of the
    fits does (0.26 against 0.21): counting an answer 38 times does not make it 38 answers."""
    lift = 0.4
    errors: dict[str, list[float]] = {"alike": [], "weighed": [], "campaign only": []}
    level_se = []
    for seed in range(30):
        raw, y, groups, on_plan = _habits(seed, lift)
        per_type = campaign_weights(groups, on_plan, y, 2, habit_bias=lift)
        assert 30 < per_type[1] < 50  # 1 + 1,000 x 0.4^2 x r(1 - r), r about 0.3
        mine = groups == 1
        plan_level = logit(expit(0.8 * raw[mine] - 1.0).mean())
        for name, weight in (
            ("alike", None),
            ("weighed", np.where(on_plan, per_type[groups], 1.0)),
            ("campaign only", np.where(on_plan, 1e4, 1.0)),
        ):
            fitted = Calibrator.fit(raw, y, groups=groups, n_groups=2, weight=weight)
            errors[name].append(float(logit(fitted(raw[mine], groups[mine]).mean()) - plan_level))
            if name == "weighed":
                level_se.append(fitted.level_se[1])
    rmse = {name: float(np.sqrt(np.mean(np.square(e)))) for name, e in errors.items()}
    assert rmse["weighed"] + 0.05 < min(rmse["alike"], rmse["campaign only"]), rmse
    assert np.mean(level_se) >= 0.9 * np.std(errors["weighed"])


def test_weights_of_one_change_nothing_and_no_campaign_answer_weighs_alike() -> None:
    rng = np.random.default_rng(5)
    raw, y, groups = _answers(rng, np.array([0.0, 0.6]), np.array([4000, 500]))
    plain = Calibrator.fit(raw, y, groups=groups, n_groups=2)
    ones = Calibrator.fit(raw, y, groups=groups, n_groups=2, weight=np.ones(raw.size))
    for field in ("params", "offsets", "slopes", "centre", "level_se"):
        assert getattr(ones, field) == pytest.approx(getattr(plain, field), rel=1e-6, abs=1e-9)
    # A habit bias of 0 weighs a campaign answer as any other ask.
    on_plan = rng.random(raw.size) < 0.1
    assert campaign_weights(groups, on_plan, y, 3, habit_bias=0.0).tolist() == [1.0, 1.0, 1.0]
