"""Campaigns in waves (spec 5a): what a campaign knows between waves, and the chance it reaches its
need by the deadline.

A campaign asks in waves; between them its own answers teach it two things the model could not
know when it planned wave 1:

- **How long answers take** (`AnswerTimes`), per ask type, from the data's settled asks: the days
  from asking to a yes, to a no, and the share of asks never answered. Yeses and noes need not come
  back equally fast, so an ask still unanswered after some days is evidence in itself.
- **Where the type's acceptance level really is** (`LevelPosterior`): the model's calibrated level
  is known to within a standard error shared by all of the type's customers (`models.calibration`);
  the campaign's asks, chosen by the plan and not by anyone's rapport, measure it. The posterior is
  on a grid of shifts of the log-odds: the prior is the calibrated level with its standard error,
  mixed with a small share of a broad shift (`BROAD_SHARE`); each answered ask multiplies in its
  chance of that answer, each pending one its chance of no answer yet (a censored likelihood).
  The grid also holds a slope of the log-odds about the campaign's asks so far (`SLOPE_SD`): each
  wave reaches further down the ranking than the answers that measured the level, and a model
  taught by asks a rapport chose can be off by more there than at the top. A ranked type's level
  is then re-learnt from its newest wave's answers, and its next wave reckoned a step beyond them
  (`STEP_SD`); a random draw's waves all measure the same customers, and take no step.

`Outlook` turns both into the chance of at least the need by the deadline: the yeses so far, each
pending ask's chance of still answering yes in time, and each new ask's chance of answering yes
before the deadline, mixed over the posterior's shifts (`at_least_mixed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from features.catalog import ASK_TYPE_NAMES
from features.contracts import answer_known_at

SETTLE_DAYS = 90  # an ask this old with no answer is taken as never answered (for learning answer times)
MIN_ANSWERS = 20  # fewer yeses (or noes) of a type than this: its answer times are learnt from all types
GRID = 81  # shifts of the level over which the posterior is kept
GRID_SDS = 6.0  # the grid spans the prior's mean plus and minus this many standard deviations, at least BROAD_SDS broad
# The calibrated level's standard error counts the calibration window's sampling error only. By the
# time of a campaign the level may have moved further: the world drifts, and the asks it was
# calibrated on were chosen by the company's habits (a rapport no table records), which a campaign's
# asks are free of. A share of the prior on a broad shift lets the campaign's own answers move the
# level as far as they say; answers near the calibrated level leave it there.
BROAD_SHARE = 0.2
BROAD_SD = 1.0
BROAD_SDS = 3.0
# The slope of the true log-odds on the model's, about the mean of the campaign's asks: a prior
# centred on 1 (the model's ranking is right) whose spread lets the later waves, asked further down
# the ranking, carry the margin their distance from the answered asks calls for.
SLOPE_SD = 0.2
SLOPES = 7
SLOPE_GRID = 41  # shifts per slope on a grid with slopes (the two-way grid costs SLOPES times more)
CHANCE_HEAD = 256  # new asks whose chances `Outlook.chance` makes first when it may stop early
# A ranked type's next wave asks customers no answer has measured: further down its ranking, or those
# the other types left. The model's error there need not be its error at the customers asked so far
# (where a rapport no table records shaped the data, it grows down the ranking; where the top was
# flattered by the model, it shrinks). So a ranked type's level is re-learnt from its newest wave's
# answers, with the level from all answers as the prior, widened by this step; and what is not
# answered yet (the newest asks still out, and the next wave) is reckoned a step further on, whichever
# way: a margin that comes only where waves reach new ground.
STEP_SD = 0.3
MAX_WAVES = 12
MAX_WAVE_DAYS = 90


def _sorted_days(delta: pd.Series) -> np.ndarray:
    return np.sort(delta.dt.total_seconds().to_numpy(dtype=float) / 86_400.0)


@dataclass(frozen=True)
class AnswerTimes:
    """Per catalog ask type (column index): sorted days from asking to a yes and to a no, and the
    share of settled asks that were never answered."""

    yes_days: Mapping[int, np.ndarray]
    no_days: Mapping[int, np.ndarray]
    silent_share: Mapping[int, float]

    @classmethod
    def learn(cls, asks: pd.DataFrame, now: pd.Timestamp, settle_days: int = SETTLE_DAYS) -> AnswerTimes:
        """From the asks made at least `settle_days` before `now` (their answers are in), answers
        known before `now` only."""
        settled = asks[asks["asked_at"] < now - pd.Timedelta(days=settle_days)]
        known = answer_known_at(settled)
        answered = known.notna() & (known < now) & settled["outcome"].isin(["accepted", "declined"])
        delay = known - settled["asked_at"]
        kinds = settled["ask_type"].astype("str")
        pooled_yes = _sorted_days(delay[answered & (settled["outcome"] == "accepted")])
        pooled_no = _sorted_days(delay[answered & (settled["outcome"] == "declined")])
        pooled_silent = float((~answered).mean()) if len(settled) else 0.0
        yes, no, silent = {}, {}, {}
        for t, name in enumerate(ASK_TYPE_NAMES):
            mine = (kinds == name).to_numpy()
            y = _sorted_days(delay[answered & mine & (settled["outcome"] == "accepted")])
            n = _sorted_days(delay[answered & mine & (settled["outcome"] == "declined")])
            yes[t] = y if y.size >= MIN_ANSWERS else pooled_yes
            no[t] = n if n.size >= MIN_ANSWERS else pooled_no
            silent[t] = float((~answered[mine]).mean()) if mine.sum() >= MIN_ANSWERS else pooled_silent
        return cls(yes, no, silent)

    def yes_within(self, t: int, days: np.ndarray | float) -> np.ndarray:
        """P(a yes arrives within `days` of the ask | the answer is yes)."""
        d = self.yes_days[t]
        days = np.asarray(days, dtype=float)
        if not d.size:
            return np.ones_like(days)
        return np.searchsorted(d, days, side="right") / d.size

    def no_after(self, t: int, days: np.ndarray | float) -> np.ndarray:
        """P(no answer yet `days` after the ask | the answer is not yes): a decline to come, or never one."""
        d = self.no_days[t]
        days = np.asarray(days, dtype=float)
        silent = self.silent_share[t]
        later = 1.0 - np.searchsorted(d, days, side="right") / d.size if d.size else np.zeros_like(days)
        # The settled asks that are not yeses: declines (a share 1 - silent of them, by delay) and silent ones.
        return silent + (1.0 - silent) * later


@dataclass(frozen=True)
class LevelPosterior:
    """A type's shift of its calibrated log-odds level, and slope about `pivot`, on a grid of
    (shift, slope) points with posterior weights: a customer of model log-odds z has log-odds
    `pivot + slope * (z - pivot) + shift`."""

    shifts: np.ndarray
    weights: np.ndarray
    slopes: np.ndarray | None = None  # None: 1 at every point
    pivot: float = 0.0

    @classmethod
    def prior(cls, level_sd: float, pivot: float | None = None) -> LevelPosterior:
        """The calibrated level with standard error `level_sd`; with a `pivot` (the mean log-odds of
        the campaign's asks so far), a slope about it too."""
        if level_sd <= 0.0:
            return cls(np.zeros(1), np.ones(1))
        span = max(GRID_SDS * level_sd, BROAD_SDS * BROAD_SD)
        shifts = np.linspace(-span, span, GRID if pivot is None else SLOPE_GRID)
        near = stats.norm.pdf(shifts, scale=level_sd)
        broad = stats.norm.pdf(shifts, scale=BROAD_SD)
        w = (1.0 - BROAD_SHARE) * near / near.sum() + BROAD_SHARE * broad / broad.sum()
        if pivot is None:
            return cls(shifts, w / w.sum())
        slopes = 1.0 + SLOPE_SD * np.linspace(-2.5, 2.5, SLOPES)
        ws = stats.norm.pdf(slopes, loc=1.0, scale=SLOPE_SD)
        both = np.outer(w / w.sum(), ws / ws.sum()).ravel()
        return cls(np.repeat(shifts, SLOPES), both / both.sum(), np.tile(slopes, shifts.size), float(pivot))

    def shifted(self, p: np.ndarray) -> np.ndarray:
        """(grid points x asks): each acceptance under each point's shift and slope."""
        z = special.logit(np.clip(np.asarray(p, dtype=float), 1e-9, 1.0 - 1e-9))
        if self.slopes is None:
            return special.expit(z[None, :] + self.shifts[:, None])
        return special.expit(self.pivot + self.slopes[:, None] * (z[None, :] - self.pivot) + self.shifts[:, None])

    def at(self, point: int, p: np.ndarray) -> np.ndarray:
        """Each acceptance `p` at one grid point (`shifted`'s row `point`, made alone)."""
        z = special.logit(np.clip(np.asarray(p, dtype=float), 1e-9, 1.0 - 1e-9))
        slope = 1.0 if self.slopes is None else float(self.slopes[point])
        return special.expit(self.pivot + slope * (z - self.pivot) + self.shifts[point])

    def update(self, times: AnswerTimes, t: int, answers: Answers) -> LevelPosterior:
        """After the campaign's asks of type t: yeses and noes (their chance of that answer), and the
        pending ones (their chance of no answer after the days elapsed)."""
        if self.shifts.size == 1:
            return self
        log_w = np.log(self.weights)
        if answers.yes.size:
            log_w += np.log(self.shifted(answers.yes)).sum(axis=1)
        if answers.no.size:
            log_w += np.log1p(-self.shifted(answers.no)).sum(axis=1)
        if answers.pending.size:
            q = self.shifted(answers.pending)
            wait = (
                q * (1.0 - times.yes_within(t, answers.elapsed))[None, :]
                + (1.0 - q) * times.no_after(t, answers.elapsed)[None, :]
            )
            log_w += np.log(np.clip(wait, 1e-300, None)).sum(axis=1)
        w = np.exp(log_w - log_w.max())
        return LevelPosterior(self.shifts, w / w.sum(), self.slopes, self.pivot)

    def mean_shift(self) -> float:
        return float(self.weights @ self.shifts)

    def mean_slope(self) -> float:
        return 1.0 if self.slopes is None else float(self.weights @ self.slopes)

    def sd_shift(self) -> float:
        return float(np.sqrt(max(self.weights @ self.shifts**2 - self.mean_shift() ** 2, 0.0)))

    def stepped(self, step_sd: float = STEP_SD) -> LevelPosterior:
        """The level of customers a step beyond those measured (`STEP_SD`): a normal shift with this
        posterior's mean, its spread widened by the step; no slope."""
        mean, sd = self.mean_shift(), float(np.hypot(self.sd_shift(), step_sd))
        shifts = mean + np.linspace(-GRID_SDS * sd, GRID_SDS * sd, GRID)
        w = stats.norm.pdf(shifts, loc=mean, scale=sd)
        return LevelPosterior(shifts, w / w.sum())


@dataclass(frozen=True)
class Answers:
    """One type's campaign asks so far, by their model acceptance: answered yes, answered no, and
    pending (with the days elapsed since asked)."""

    yes: np.ndarray
    no: np.ndarray
    pending: np.ndarray
    elapsed: np.ndarray
    # Each ask's wave, for yes, no and pending in turn (None: not known, taken as one wave).
    waves: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def none(cls) -> Answers:
        empty = np.zeros(0)
        return cls(empty, empty, empty, empty)

    def latest(self) -> Answers | None:
        """The asks of the newest wave alone; None when every ask is of one wave (or not known)."""
        if self.waves is None:
            return None
        every = np.concatenate(self.waves)
        if not every.size or every.min() == every.max():
            return None
        top = every.max()
        y, n, w = (x == top for x in self.waves)
        return Answers(self.yes[y], self.no[n], self.pending[w], self.elapsed[w])

    def pivot(self) -> float | None:
        """The mean model log-odds of the asks so far (None: no asks yet, nothing to pivot on)."""
        p = np.concatenate([self.yes, self.no, self.pending])
        return float(special.logit(np.clip(p, 1e-9, 1.0 - 1e-9)).mean()) if p.size else None


def at_least_mixed(
    q: np.ndarray, weights: np.ndarray, n: int, start: int = 0, stop_at: float | None = None
) -> np.ndarray:
    """`q` (shifts x asks): each ask's chance of a success under each shift. For each prefix of the
    asks that ends at or after `start`, P(at least n successes in the prefix), averaged over the
    shifts with `weights`; with `stop_at`, only up to the first prefix that reaches it. With
    `start` = the number of asks, one value: the chance of all of them. n <= 0: certain."""
    m = q.shape[1]
    if n <= 0:
        return np.ones(max(m - start, 1))
    dist = np.zeros((weights.size, n + 1))  # P(k successes) for k < n; dist[:, n] holds "n or more"
    dist[:, 0] = 1.0
    out = np.empty(max(m - start, 0))
    for i in range(m):
        qi = q[:, i]
        top = dist[:, n] + dist[:, n - 1] * qi
        dist[:, 1:n] = dist[:, 1:n] * (1.0 - qi)[:, None] + dist[:, : n - 1] * qi[:, None]
        dist[:, 0] *= 1.0 - qi
        dist[:, n] = top
        if i >= start:
            out[i - start] = weights @ top
            if stop_at is not None and out[i - start] >= stop_at:
                return out[: i - start + 1]
    if start == m:  # no new asks: the chance of what is already out
        return np.array([weights @ dist[:, n]])
    return out


@dataclass(frozen=True)
class Outlook:
    """One type at one wave: what counts toward its need by the deadline before this wave's asks."""

    need: int
    yeses: int
    posterior: LevelPosterior
    pending_q: np.ndarray  # (shifts x pending asks): each pending ask's chance of a yes still in time
    yes_in_time: float  # P(a yes to an ask made at this wave arrives before the deadline | yes)

    @property
    def left(self) -> int:
        return max(self.need - self.yeses, 0)

    def chance(self, p: np.ndarray, stop_at: float | None = None) -> np.ndarray:
        """For each prefix of new asks with acceptance `p` (in order), P(the need by the deadline);
        one value (the chance without new asks) when `p` is empty. With `stop_at`, only up to the
        first prefix that reaches it: the asks' shifted chances are then made for a growing head of
        `p` only (a wave needs far fewer than the thousands of customers a type may have left)."""
        p = np.asarray(p, dtype=float)
        head = p.size if stop_at is None else min(p.size, max(CHANCE_HEAD, 4 * self.left))
        while True:
            new = self.posterior.shifted(p[:head]) * self.yes_in_time
            q = np.concatenate([self.pending_q, new], axis=1)
            start = self.pending_q.shape[1]
            out = at_least_mixed(q, self.posterior.weights, self.left, start if p.size else q.shape[1], stop_at)
            if head >= p.size or (stop_at is not None and out.size and out[-1] >= stop_at):
                return out
            head = min(p.size, 4 * head)

    def expected_yes(self, p: np.ndarray) -> float:
        """Expected yeses by the deadline: so far, pending in time, and from new asks `p`."""
        w = self.posterior.weights
        new = float(w @ self.posterior.shifted(p).sum(axis=1)) * self.yes_in_time if p.size else 0.0
        return self.yeses + float(w @ self.pending_q.sum(axis=1)) + new


@dataclass(frozen=True)
class SoFar:
    """One type of a campaign at a wave: its need, the yeses back, its asks' answers (`Answers`), the
    standard error of its calibrated level (the prior's), and whether its customers are asked best
    first (False: a random draw, whose waves all measure the same customers; see `STEP_SD`)."""

    need: int
    yeses: int
    answers: Answers
    level_sd: float
    ranked: bool = True


def outlook(so_far: SoFar, times: AnswerTimes, t: int, days_to_deadline: float, slope: bool = True) -> Outlook:
    """The type's outlook at a wave `days_to_deadline` before the deadline (see `Outlook`); with
    `slope` False, the level's shift alone (`LevelPosterior`)."""
    need, yeses, answers, level_sd = so_far.need, so_far.yeses, so_far.answers, so_far.level_sd
    pivot = answers.pivot()
    posterior = LevelPosterior.prior(level_sd, pivot if slope else None).update(times, t, answers)
    if so_far.ranked and pivot is not None and posterior.shifts.size > 1:  # size 1: taken as exact
        latest = answers.latest()
        if latest is not None:  # the newest wave's own level, with the level of all answers as its prior
            posterior = posterior.stepped().update(times, t, latest)
        posterior = posterior.stepped()  # the next wave's customers, a step further on
    q = posterior.shifted(answers.pending)
    if answers.pending.size:
        e = answers.elapsed
        yes_left = times.yes_within(t, e + days_to_deadline) - times.yes_within(t, e)  # a yes still to come, in time
        waiting = q * (1.0 - times.yes_within(t, e))[None, :] + (1.0 - q) * times.no_after(t, e)[None, :]
        pending_q = q * yes_left[None, :] / np.clip(waiting, 1e-300, None)
    else:
        pending_q = np.zeros((posterior.shifts.size, 0))
    in_time = float(times.yes_within(t, days_to_deadline))
    return Outlook(need, yeses, posterior, pending_q, in_time)


def wave_target(confidence: float, wave: int, waves: int) -> float:
    """The chance a wave's list aims at, counting what is out and this wave only: the confidence at
    the last wave, less before it (rising from 0.5 in equal steps), so that early waves do not
    carry the whole margin: later waves top up once the campaign's own answers have shown where
    the level is."""
    if wave >= waves:
        return confidence
    return 0.5 + (confidence - 0.5) * wave / waves


@dataclass(frozen=True)
class Forecast:
    """One type's campaign under its policy, by simulation: the chance of the need by the deadline,
    the asks in all waves, and the yeses beyond the need, on average."""

    chance: float
    asks: float
    overshoot: float


@dataclass(frozen=True)
class Pace:
    """The campaign's calendar from this wave: its number, how many waves, the days between them."""

    wave: int
    waves: int
    wave_days: float

    @property
    def days_left(self) -> float:
        return (self.waves - self.wave + 1) * self.wave_days


def forecast(
    so_far: SoFar,
    times: AnswerTimes,
    t: int,
    pace: Pace,
    confidence: float,
    this_wave: np.ndarray,
    later: np.ndarray,
    draws: int = 100,
    seed: int = 0,
) -> Forecast:
    """Simulate the rest of the campaign for one type: the level drawn from the posterior; every ask
    out (pending, and this wave's with acceptance `this_wave`) answered at a drawn time; each later
    wave sized by the policy (`wave_target`) from the answers back by its date, through `outlook`
    as the real wave would be, from the type's next customers (`later`, best first). A forecast per
    type: the other types' later waves are not simulated. The simulated waves' outlooks learn the
    level's shift alone: the slope's grid costs `SLOPES` times more, and a forecast plans its
    later waves `draws` times over."""
    rng = np.random.default_rng(seed)
    need, yeses, answers = so_far.need, so_far.yeses, so_far.answers
    now = outlook(so_far, times, t, pace.days_left)
    level = now.posterior
    reached = asks = over = 0.0
    for _ in range(draws):
        point = int(rng.choice(level.shifts.size, p=level.weights))
        p = np.concatenate([answers.pending, this_wave])
        day = np.concatenate([-answers.elapsed, np.zeros(this_wave.size)])
        waited = np.concatenate([answers.elapsed, np.zeros(this_wave.size)])
        yes, delay = _outcomes(rng, level.at(point, p), times, t, waited)
        taken = 0
        for v in range(pace.wave + 1, pace.waves + 1):
            at = (v - pace.wave) * pace.wave_days
            back = day + delay <= at
            seen = Answers(
                np.concatenate([answers.yes, p[yes & back]]),
                np.concatenate([answers.no, p[~yes & back]]),
                p[~back],
                (at - day)[~back],
            )
            back_yes = yeses + int((yes & back).sum())
            look = outlook(
                SoFar(need, back_yes, seen, so_far.level_sd, so_far.ranked), times, t, pace.days_left - at, slope=False
            )
            target = wave_target(confidence, v, pace.waves)
            pool = later[taken:]
            if look.chance(np.zeros(0))[0] >= target:
                n_new = 0
            else:
                hit = np.flatnonzero(look.chance(pool, stop_at=target) >= target)
                n_new = int(hit[0]) + 1 if hit.size else pool.size
            new = pool[:n_new]
            taken += n_new
            more_yes, more_delay = _outcomes(rng, level.at(point, new), times, t, np.zeros(new.size))
            p, day = np.concatenate([p, new]), np.concatenate([day, np.full(new.size, at)])
            yes, delay = np.concatenate([yes, more_yes]), np.concatenate([delay, more_delay])
        total = yeses + int((yes & (day + delay <= pace.days_left)).sum())
        reached += total >= need
        asks += this_wave.size + taken
        over += max(total - need, 0)
    return Forecast(reached / draws, asks / draws, over / draws)


def _outcomes(
    rng: np.random.Generator, q: np.ndarray, times: AnswerTimes, t: int, waited: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drawn answers to asks of acceptance `q` (at the drawn level) that have had no answer for
    `waited` days: yes or not, and the days from the ask to the answer (inf: never)."""
    wait_yes = 1.0 - times.yes_within(t, waited)
    wait_no = times.no_after(t, waited)
    chance = q * wait_yes / np.clip(q * wait_yes + (1 - q) * wait_no, 1e-300, None)
    yes = rng.random(q.size) < chance
    delay = np.full(q.size, np.inf)
    silent = times.silent_share[t]
    for pool, mine, is_no in ((times.yes_days[t], yes, False), (times.no_days[t], ~yes, True)):
        at = np.flatnonzero(mine)
        if not at.size or not pool.size:
            continue
        # The pool's delays longer than the wait so far (it is sorted): one of them, drawn evenly.
        start = np.searchsorted(pool, waited[at], side="right")
        later = pool.size - start
        comes = later > 0
        if is_no:  # a no not come yet: silent for good, or a decline still to come
            still = (1 - silent) * later / pool.size
            comes &= rng.random(at.size) * (silent + still) >= silent
        pick = start + np.floor(rng.random(at.size) * np.maximum(later, 1)).astype(np.int64)
        delay[at[comes]] = pool[np.minimum(pick[comes], pool.size - 1)]
    return yes, delay


@dataclass(frozen=True)
class Schedule:
    """How a campaign asks: `waves` rounds `wave_days` apart (1 wave: a one-shot plan)."""

    waves: int = 1
    wave_days: int = 14

    def __post_init__(self) -> None:
        for name, value, top in (("waves", self.waves, MAX_WAVES), ("wave_days", self.wave_days, MAX_WAVE_DAYS)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"{name}: must be a whole number from 1 to {top}, got {value!r}")
