"""The generator's parameters: its own vocabularies and the constants of the hidden model.

Ask types, segments, priorities and outcomes come from `features.catalog`; indices into the
arrays below follow `catalog.ASK_TYPE_NAMES` and `catalog.SEGMENTS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES, PRIORITIES

# Vocabularies that exist only in the generator (ask types, segments, priorities, outcomes and
# the table columns come from features.catalog and features.contracts).
INDUSTRIES: tuple[str, ...] = (
    "software",
    "fintech",
    "healthcare",
    "retail",
    "manufacturing",
    "education",
    "media",
    "logistics",
)
REGIONS: tuple[str, ...] = ("north_america", "emea", "apac", "latam")
USE_CASES: tuple[str, ...] = (
    "analytics",
    "automation",
    "collaboration",
    "customer_support",
    "security",
    "marketing",
)
PLANS: tuple[str, ...] = ("starter", "growth", "enterprise")
CHANNELS: tuple[str, ...] = ("linkedin", "twitter", "g2", "reddit", "blog", "community")

# --------------------------------------------------------------------------------------
# Model constants. Indices follow catalog.ASK_TYPE_NAMES / catalog.SEGMENTS.
# --------------------------------------------------------------------------------------
DEFAULT_END = pd.Timestamp("2026-11-01", tz="UTC")
K_FUTURES = 32  # futures per snapshot for the propensity truth
ROWS_PER_CHUNK = 1 << 17  # customers x futures simulated at once (bounds memory, cache-friendly)
HORIZON_DAYS = 90.0
MONTH_DAYS = 30.4375  # tenure in months = days / this
EPS = 2.0 / 86400.0  # keep event times strictly inside their interval after rounding to seconds
N_ASK_MEMORY = 4  # asks remembered per customer (enough for "asks in the last 90 days")

REF = ASK_TYPE_NAMES.index("reference_call")
URGENT = PRIORITIES.index("urgent")

# Acceptance: effort lowers acceptance (type main effect), segments prefer different asks.
TYPE_EFFECT = np.array([0.85, 0.6, 0.25, 0.15, 0.0, -0.2, -0.75, -0.85, -1.45])
SEG_TYPE_EFFECT = np.array(
    [
        [0.55, 0.5, 0.1, 0.2, 0.0, -0.6, -0.3, -0.8, -0.4],  # smb: quick public asks
        [0.0, 0.1, 0.1, 0.3, 0.3, 0.1, 0.1, 0.0, 0.0],  # mid_market: referrals, beta
        [-0.55, -0.45, 0.0, -0.2, 0.2, 0.75, 0.35, 0.85, 0.3],  # enterprise: peer-level asks
    ]
)
# How often the company picks each ask type, by segment (it only half knows what works).
TYPE_FREQ = np.array(
    [
        [0.24, 0.24, 0.12, 0.12, 0.09, 0.07, 0.05, 0.03, 0.04],
        [0.16, 0.18, 0.12, 0.13, 0.11, 0.12, 0.08, 0.05, 0.05],
        [0.09, 0.12, 0.1, 0.1, 0.1, 0.2, 0.11, 0.11, 0.07],
    ]
)
TYPE_FREQ_NOREF = TYPE_FREQ.copy()
TYPE_FREQ_NOREF[:, REF] = 0.0
TYPE_FREQ_NOREF /= TYPE_FREQ_NOREF.sum(axis=1, keepdims=True)
# Probability that an accepted ask's activity happens in the same month as the response
# (otherwise the next month): big asks take longer to deliver.
SAME_MONTH = np.array([0.65, 0.6, 0.5, 0.5, 0.5, 0.45, 0.25, 0.3, 0.15])
# Unsolicited advocacy is mostly low-effort.
ORGANIC_FREQ = np.array([0.34, 0.26, 0.1, 0.16, 0.06, 0.03, 0.02, 0.01, 0.02])

SEG_P = np.array([0.5, 0.33, 0.17])
SEG_SEATS = np.array([[2.4, 0.6], [4.7, 0.6], [6.6, 0.7]])  # lognormal (mu, sigma) of seats
SEG_TICKETS = np.array([0.25, 0.6, 1.4])  # tickets per month at average satisfaction
SEG_ORGANIC = np.array([0.1, 0.0, -0.2])
PLAN_BY_SEG = np.array([[0.62, 0.33, 0.05], [0.2, 0.6, 0.2], [0.03, 0.32, 0.65]])
PLAN_PRICE = np.array([300.0, 550.0, 850.0])  # ARR per seat
INDUSTRY_P = np.array([0.22, 0.12, 0.12, 0.13, 0.12, 0.09, 0.08, 0.12])
INDUSTRY_AFFINITY = np.array([0.25, 0.05, -0.15, 0.1, -0.25, 0.1, 0.2, -0.2])
REGION_P = np.array([0.45, 0.3, 0.17, 0.08])
USE_CASE_P = np.array([0.22, 0.2, 0.18, 0.15, 0.12, 0.13])
CHANNEL_P = np.array([0.35, 0.2, 0.15, 0.1, 0.08, 0.12])
PRIORITY_OTHER_P = np.array([0.33, 0.47, 0.2])  # low, normal, high (urgent drawn separately)

NAME_HEADS = np.array(
    [
        "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent",
        "Tyrell", "Cyberdyne", "Wonka", "Oscorp", "Aperture", "Massive", "Nimbus", "Vertex",
        "Quantum", "Blue Harbor", "Silverline", "Northwind", "Contoso", "Fabrikam", "Tailspin",
        "Litware", "Proseware", "Adatum", "Lucerne", "Woodgrove", "Bluebird", "Redwood", "Summit",
        "Pinnacle", "Horizon", "Evergreen", "Ironclad", "Brightpath", "Keystone", "Lighthouse",
        "Riverbend",
    ]
)  # fmt: skip
NAME_TAILS = np.array(
    [
        "Labs", "Systems", "Group", "Holdings", "Analytics", "Logistics", "Health", "Retail",
        "Industries", "Software", "Partners", "Media", "Financial", "Works", "Technologies",
    ]
)  # fmt: skip


@dataclass(frozen=True)
class Drift:
    """How the world changes over time, and what the company's tables never record.

    `DRIFTING` is the default world; `STATIONARY` (every effect off) draws the very same random
    numbers as the generator did before drift existed, so its worlds are unchanged.
    """

    acceptance_per_year: float = 0.0  # logit change of every ask's acceptance per year since the origin
    organic_per_year: float = 0.0  # logit change of unsolicited advocacy per year
    season: tuple[float, ...] = (0.0,) * 12  # logit shift of acceptance and organic advocacy by calendar month
    slow_answers: bool = False  # answers take days to weeks (longer for bigger asks), not hours to days
    never_delivered: tuple[float, ...] = (0.0,) * len(ASK_TYPE_NAMES)  # P(an accepted ask is never done)
    rapport: float = 0.0  # a hidden rapport raises both the chance of being asked and of accepting

    @property
    def on(self) -> bool:
        return self != STATIONARY


STATIONARY = Drift()
DRIFTING = Drift(
    acceptance_per_year=-0.35,  # willingness fades as the base is asked more and the product ages
    organic_per_year=0.25,  # while the community around it grows
    # An end-of-year slump (December, early January) and a summer lull (August).
    season=(-0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.35, 0.0, 0.0, -0.15, -0.7),
    slow_answers=True,
    never_delivered=(0.04, 0.05, 0.08, 0.1, 0.12, 0.12, 0.2, 0.15, 0.25),
    rapport=0.6,
)
# Days from ask to answer when answers are slow: exponential with this mean by ask type, capped.
ANSWER_MEAN_DAYS = np.array([2.5, 3.5, 5.0, 5.0, 6.0, 7.0, 10.0, 9.0, 12.0])
ANSWER_MAX_DAYS = 28.0
