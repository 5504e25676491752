"""The program report's deals section (spec section 9): influenced pipeline, win rate and days to
close with a delivered reference and without, the effect of a reference on winning, what it added
in won revenue and returned on the program's cost, and the referral pipeline.

- The deals are those created at or after the report's `since` (all without it), as
  `features.deals.deal_frame` gives them: what each showed when it was created, and whether a
  reference asked for it was delivered before it closed (`referenced`; an open deal: before now).
- Influenced pipeline: the deals with a delivered reference, open ones included (count, amount).
  Win rates and mean days to close, with and without, count closed deals only: an open deal is
  reported, never estimated.
- The effect: the plain difference of win rates (with its 90% Wald interval) beside the adjusted
  effect on the treated deals (`models.deal_effect`: doubly robust, 90% bootstrap interval, DoWhy's
  refutations). With too few deals there is no adjusted figure, only the reason why.
- Incremental won revenue: the adjusted effect times the amounts of the closed deals that had a
  delivered reference, its interval the effect's times the same amounts. The return on the
  program's cost is (incremental won revenue - cost) / cost; none without a cost or an estimate.
- Referral pipeline: the deals with a `referred_by`, by month of `created_at`, by the referrer's
  tier, and the referrers who brought the most (by `customer_id` only: names stay out of logs).
  The referrer's tier is the 100-point rule's (`features.baseline`) on the referrer's point-in-time
  features as of the deal's `created_at`. The report already judges customers by that rule
  (`models.program.versus_points_rule`); it needs no model, and the report is made where none may be
  loaded; and it says what the referrer looked like when they referred, where a model's tier would
  be today's champion judging the past with what it learned since.

The adjusted estimate refits its learner once per bootstrap resample and refutation simulation:
`KeptEstimate` lets a caller that remakes the report often (the service) reuse the last one while
the deals it was made from, and the settings, are unchanged (`estimate_key`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.baseline import BASELINE_TIERS, NO_TIER, score_baseline
from features.deals import DEAL_CATEGORIES, REFERRED_BY, deal_frame
from features.io import World
from features.pointintime import build_features
from models import deal_effect
from models.deal_effect import REFUTATION_SIMULATIONS, RESAMPLES, DealEffect, Refutation, estimate_effect

# `advocacy report --out`'s deals.csv (spec 9), one row; the estimate's cells empty unless estimated.
DEALS_CSV_COLUMNS: tuple[str, ...] = (
    "status",
    "effect_on_treated",
    "ci_low",
    "ci_high",
    "plain_difference",
    "treated_deals",
    "other_deals",
    "incremental_won_revenue",
)
ESTIMATED_CELLS: tuple[str, ...] = ("effect_on_treated", "ci_low", "ci_high", "incremental_won_revenue")
ESTIMATE_COLUMNS: tuple[str, ...] = ("estimate", "value", "ci_low", "ci_high", "deals", "note")
PLAIN, ADJUSTED = "plain difference", "adjusted effect on the treated"
WITH, WITHOUT = "delivered reference", "no delivered reference"
BY_REFERENCE_COLUMNS: tuple[str, ...] = (
    "reference",
    "deals",
    "amount",
    "open",
    "closed",
    "won",
    "win_rate",
    "mean_days_to_close",
    "won_amount",
)
REFUTATION_COLUMNS: tuple[str, ...] = ("check", "expected", "estimated_effect", "new_effect", "p_value", "passed")
REVENUE_COLUMNS: tuple[str, ...] = (
    "influenced_deals",
    "influenced_amount",
    "treated_closed_amount",
    "incremental_won_revenue",
    "incremental_low",
    "incremental_high",
    "program_cost",
    "return_on_program_cost",
)
REFERRAL_COUNTS: tuple[str, ...] = ("deals", "amount", "closed", "won", "won_amount")
TIER_ORDER: tuple[str, ...] = (*(name for name, _ in BASELINE_TIERS), NO_TIER)
TOP_REFERRERS = 10
ESTIMATOR_LIBRARIES: tuple[str, ...] = ("econml", "dowhy", "scikit-learn", "scipy", "statsmodels")
PLAIN_NOTE = (
    "won share with a delivered reference minus without: not the effect, as sales asks for references "
    "on the deals it expects to win"
)


@dataclass(frozen=True)
class DealOptions:
    """What the deals section costs and what it sets the revenue against (`storage.settings`)."""

    resamples: int = RESAMPLES
    refutation_simulations: int = REFUTATION_SIMULATIONS
    program_cost: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class KeptEstimate:
    """An adjusted estimate made before, and the key of what it was made from (`estimate_key`)."""

    key: str
    effect: DealEffect

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "effect": asdict(self.effect)}

    @classmethod
    def from_json(cls, kept: Any) -> KeptEstimate | None:
        """The estimate a kept report holds, or None when it holds none (or one this code cannot read)."""
        try:
            effect = dict(kept["effect"])
            plain_ci = effect.get("plain_ci")
            effect["plain_ci"] = None if plain_ci is None else (float(plain_ci[0]), float(plain_ci[1]))
            effect["refutations"] = [Refutation(**check) for check in effect.get("refutations", [])]
            return cls(str(kept["key"]), DealEffect(**effect))
        except (KeyError, TypeError, ValueError, IndexError):
            return None


def estimate_key(deals: pd.DataFrame, options: DealOptions) -> str:
    """A digest of everything the adjusted estimate depends on: the deals' rows as the estimate reads
    them, the settings, and the estimator itself (its module's source and the libraries' versions),
    so that an upgrade never serves an estimate the new code would not make."""
    columns = ["opportunity_id", *DEAL_CATEGORIES, "amount", REFERRED_BY, "outcome", "closed", "referenced"]
    rows = pd.util.hash_pandas_object(deals.loc[:, columns].astype("object"), index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes())
    digest.update(Path(deal_effect.__file__).read_bytes())
    libraries = tuple(version(name) for name in ESTIMATOR_LIBRARIES)
    digest.update(repr((options.resamples, options.refutation_simulations, options.seed, libraries)).encode())
    return digest.hexdigest()


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


@dataclass(frozen=True)
class DealReport:
    """The deals section: the period's deals and what the report says of them."""

    deals: pd.DataFrame  # `deal_frame` rows created in the period (a row per deal: never kept or logged)
    effect: DealEffect
    by_reference: pd.DataFrame  # BY_REFERENCE_COLUMNS: with a delivered reference, and without
    referrals_by_month: pd.DataFrame  # month + REFERRAL_COUNTS
    referrals_by_tier: pd.DataFrame  # referrer_tier + REFERRAL_COUNTS
    top_referrers: pd.DataFrame  # customer_id + REFERRAL_COUNTS, the most deals first
    program_cost: float | None
    estimate_key: str

    @property
    def influenced(self) -> tuple[int, float]:
        """Deals with a delivered reference, open ones included: (count, amount)."""
        rows = self.deals[self.deals["referenced"].to_numpy(dtype=bool)]
        return len(rows), float(rows["amount"].sum())

    @property
    def incremental_interval(self) -> tuple[float, float] | None:
        """The incremental won revenue at the ends of the effect's 90% interval."""
        low, high = self.effect.ci_low, self.effect.ci_high
        if low is None or high is None:
            return None
        return low * self.effect.treated_amount, high * self.effect.treated_amount

    @property
    def return_on_cost(self) -> float | None:
        """(Incremental won revenue - program cost) / program cost; None without either."""
        gained = self.effect.incremental_won_revenue
        if gained is None or self.program_cost is None:
            return None
        return (gained - self.program_cost) / self.program_cost

    def deals_csv(self) -> pd.DataFrame:
        """`deals.csv`'s one row (DEALS_CSV_COLUMNS)."""
        effect = self.effect
        row = {
            "status": effect.status,
            "effect_on_treated": _nan(effect.effect_on_treated),
            "ci_low": _nan(effect.ci_low),
            "ci_high": _nan(effect.ci_high),
            "plain_difference": _nan(effect.plain_difference),
            "treated_deals": effect.treated_deals,
            "other_deals": effect.other_deals,
            "incremental_won_revenue": _nan(effect.incremental_won_revenue),
        }
        out = pd.DataFrame([row], columns=list(DEALS_CSV_COLUMNS))
        if not effect.estimated:  # never a number beside a status that says there is none
            out.loc[:, list(ESTIMATED_CELLS)] = np.nan
        return out.astype(
            {c: "float64" for c in DEALS_CSV_COLUMNS if c not in ("status", "treated_deals", "other_deals")}
        )

    def estimates(self) -> pd.DataFrame:
        """The plain difference and the adjusted effect, each with its 90% interval (ESTIMATE_COLUMNS)."""
        effect = self.effect
        plain_low, plain_high = effect.plain_ci if effect.plain_ci is not None else (None, None)
        adjusted = (
            (effect.effect_on_treated, effect.ci_low, effect.ci_high, effect.method)
            if effect.estimated
            else (None, None, None, f"not estimated: {effect.status}")
        )
        rows = [
            (
                PLAIN,
                effect.plain_difference,
                plain_low,
                plain_high,
                effect.treated_deals + effect.other_deals,
                PLAIN_NOTE,
            ),
            (ADJUSTED, adjusted[0], adjusted[1], adjusted[2], effect.treated_deals, adjusted[3]),
        ]
        out = pd.DataFrame(rows, columns=list(ESTIMATE_COLUMNS))
        return out.astype({"value": "float64", "ci_low": "float64", "ci_high": "float64", "deals": "int64"})

    def refutations(self) -> pd.DataFrame:
        """DoWhy's checks of the adjusted estimate (REFUTATION_COLUMNS): none when it was not made."""
        rows = [
            (r.name, r.expected, r.estimated_effect, r.new_effect, _nan(r.p_value), bool(r.passed))
            for r in self.effect.refutations
        ]
        out = pd.DataFrame(rows, columns=list(REFUTATION_COLUMNS))
        return out.astype({"estimated_effect": "float64", "new_effect": "float64", "p_value": "float64"})

    def revenue(self) -> pd.DataFrame:
        """Influenced pipeline, incremental won revenue (with its interval) and the return on the
        program's cost, one row (REVENUE_COLUMNS); NaN where there is no figure."""
        count, amount = self.influenced
        low, high = self.incremental_interval or (None, None)
        row = {
            "influenced_deals": count,
            "influenced_amount": amount,
            "treated_closed_amount": self.effect.treated_amount,
            "incremental_won_revenue": _nan(self.effect.incremental_won_revenue),
            "incremental_low": _nan(low),
            "incremental_high": _nan(high),
            "program_cost": _nan(self.program_cost),
            "return_on_program_cost": _nan(self.return_on_cost),
        }
        return pd.DataFrame([row], columns=list(REVENUE_COLUMNS))

    def notes(self) -> list[str]:
        """What a reader must know beside the figures: why a figure is missing, what is not estimated."""
        effect = self.effect
        notes = []
        if not effect.estimated:
            notes.append(f"No adjusted estimate: {effect.status}.")
        elif not effect.refutations:
            notes.append("DoWhy's refutations were not run (deal_refutation_simulations is 0).")
        if effect.estimated and self.program_cost is None:
            notes.append("No program cost is set (ADVOCACY_PROGRAM_COST): no return on it.")
        elif self.program_cost is not None and not effect.estimated:
            notes.append("No return on the program cost: there is no adjusted estimate.")
        still_open = int((~self.deals["closed"].to_numpy(dtype=bool)).sum())
        if still_open:
            notes.append(f"{still_open:,} deals still open are counted in the pipeline, not in the estimates.")
        return notes

    def tables(self) -> dict[str, pd.DataFrame]:
        """The section's tables by name, as written (`deals` is `deals.csv`) and kept for the page."""
        return {
            "deals": self.deals_csv(),
            "deal_estimates": self.estimates(),
            "deals_by_reference": self.by_reference,
            "deal_refutations": self.refutations(),
            "deal_revenue": self.revenue(),
            "referrals_by_month": self.referrals_by_month,
            "referrals_by_tier": self.referrals_by_tier,
            "top_referrers": self.top_referrers,
        }

    def metrics(self) -> dict[str, float]:
        """Headline figures (MLflow metrics), NaN where there is no figure."""
        groups = self.by_reference.set_index("reference")
        count, amount = self.influenced
        effect = self.effect
        low, high = (effect.ci_low, effect.ci_high) if effect.estimated else (None, None)
        referred = self.referrals_by_month
        return {
            "deals": float(len(self.deals)),
            "influenced_deals": float(count),
            "influenced_amount": amount,
            "closed_with_reference": float(groups.loc[WITH, "closed"]),
            "closed_without_reference": float(groups.loc[WITHOUT, "closed"]),
            "win_rate_with_reference": float(groups.loc[WITH, "win_rate"]),
            "win_rate_without_reference": float(groups.loc[WITHOUT, "win_rate"]),
            "days_to_close_with_reference": float(groups.loc[WITH, "mean_days_to_close"]),
            "days_to_close_without_reference": float(groups.loc[WITHOUT, "mean_days_to_close"]),
            "plain_difference": _nan(effect.plain_difference),
            "effect_on_treated": _nan(effect.effect_on_treated),
            "effect_ci_low": _nan(low),
            "effect_ci_high": _nan(high),
            "incremental_won_revenue": _nan(effect.incremental_won_revenue),
            "program_cost": _nan(self.program_cost),
            "return_on_program_cost": _nan(self.return_on_cost),
            "referred_deals": float(referred["deals"].sum()),
            "referred_amount": float(referred["amount"].sum()),
            "referred_won": float(referred["won"].sum()),
        }


def _pipeline_row(name: str, rows: pd.DataFrame) -> dict[str, object]:
    closed = rows["closed"].to_numpy(dtype=bool)
    won = (rows["outcome"] == "won").to_numpy(dtype=bool)
    amount = rows["amount"].to_numpy(dtype="float64")
    return {
        "reference": name,
        "deals": len(rows),
        "amount": float(amount.sum()),
        "open": int((~closed).sum()),
        "closed": int(closed.sum()),
        "won": int(won.sum()),
        "win_rate": won.sum() / closed.sum() if closed.any() else np.nan,
        "mean_days_to_close": float(rows.loc[closed, "days_to_close"].mean()) if closed.any() else np.nan,
        "won_amount": float(amount[won].sum()),
    }


def by_reference(deals: pd.DataFrame) -> pd.DataFrame:
    """With a delivered reference and without (BY_REFERENCE_COLUMNS): every deal in the counts and
    amounts, the closed ones only in the win rate and the mean days to close."""
    treated = deals["referenced"].to_numpy(dtype=bool)
    rows = [_pipeline_row(WITH, deals[treated]), _pipeline_row(WITHOUT, deals[~treated])]
    out = pd.DataFrame(rows, columns=list(BY_REFERENCE_COLUMNS))
    return out.astype({"win_rate": "float64", "mean_days_to_close": "float64"})


def referrer_tiers(world: World, referred: pd.DataFrame) -> np.ndarray:
    """Per referred deal: the points rule's tier of its referrer on their point-in-time features as of
    the deal's `created_at`."""
    if referred.empty:
        return np.zeros(0, dtype=object)
    points = pd.DataFrame({"customer_id": referred[REFERRED_BY].astype("str"), "as_of": referred["created_at"]})
    return np.asarray(score_baseline(build_features(world, points.reset_index(drop=True)))["tier"], dtype=object)


def referral_rollup(referred: pd.DataFrame, key: pd.Series, name: str) -> pd.DataFrame:
    """REFERRAL_COUNTS of the referred deals summed by `key` (one value per deal), in a column `name`."""
    won = (referred["outcome"] == "won").to_numpy(dtype=bool)
    amount = referred["amount"].to_numpy(dtype="float64")
    parts = pd.DataFrame(
        {
            name: key.to_numpy(),
            "deals": 1,
            "amount": amount,
            "closed": referred["closed"].to_numpy(dtype=np.int64),
            "won": won.astype(np.int64),
            "won_amount": np.where(won, amount, 0.0),
        }
    )
    out = parts.groupby(name, sort=True).sum().reset_index()
    return out.astype({"deals": np.int64, "closed": np.int64, "won": np.int64}).loc[:, [name, *REFERRAL_COUNTS]]


def referral_tables(world: World, deals: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The referral pipeline: by month of `created_at`, by the referrer's tier then (TIER_ORDER), and
    the TOP_REFERRERS referrers with the most deals (then amount)."""
    referred = deals[deals[REFERRED_BY].notna().to_numpy()].reset_index(drop=True)
    month = referred["created_at"].dt.strftime("%Y-%m")
    by_month = referral_rollup(referred, month, "month")
    tiers = pd.Series(referrer_tiers(world, referred), dtype="object")
    by_tier = referral_rollup(referred, tiers, "referrer_tier")
    rank = {tier: i for i, tier in enumerate(TIER_ORDER)}
    by_tier = by_tier.sort_values("referrer_tier", key=lambda s: s.map(rank), kind="stable").reset_index(drop=True)
    top = referral_rollup(referred, referred[REFERRED_BY].astype("str"), "customer_id")
    top = top.sort_values(["deals", "amount", "customer_id"], ascending=[False, False, True], kind="stable")
    return by_month, by_tier, top.head(TOP_REFERRERS).reset_index(drop=True)


def deal_report(
    world: World,
    since: pd.Timestamp | None = None,
    options: DealOptions | None = None,
    kept: KeptEstimate | None = None,
) -> DealReport:
    """The deals section over the deals created at or after `since` (all without it). `kept`: an
    estimate made before, used instead of a new one when its key matches (`estimate_key`)."""
    options = options or DealOptions()
    deals = deal_frame(world.opportunities, world.asks, world.activities, world.deal_links)
    if since is not None:
        deals = deals[(deals["created_at"] >= since).to_numpy()].reset_index(drop=True)
    key = estimate_key(deals, options)
    if kept is not None and kept.key == key:
        effect = kept.effect
    else:
        effect = estimate_effect(
            deals, resamples=options.resamples, refutation_simulations=options.refutation_simulations, seed=options.seed
        )
    by_month, by_tier, top = referral_tables(world, deals)
    return DealReport(
        deals=deals,
        effect=effect,
        by_reference=by_reference(deals),
        referrals_by_month=by_month,
        referrals_by_tier=by_tier,
        top_referrers=top,
        program_cost=options.program_cost,
        estimate_key=key,
    )


__all__ = [
    "ADJUSTED",
    "BY_REFERENCE_COLUMNS",
    "DEALS_CSV_COLUMNS",
    "ESTIMATE_COLUMNS",
    "PLAIN",
    "REFERRAL_COUNTS",
    "REFUTATION_COLUMNS",
    "REVENUE_COLUMNS",
    "TIER_ORDER",
    "WITH",
    "WITHOUT",
    "DealOptions",
    "DealReport",
    "KeptEstimate",
    "by_reference",
    "deal_report",
    "estimate_key",
    "referral_rollup",
    "referral_tables",
    "referrer_tiers",
]
