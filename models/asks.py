"""Re-engagement (spec section 5).

The next best ask itself is chosen by `models.scoring.next_asks`, the one path the API, the batch
job and the CLI share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

REENGAGE_AFTER_DAYS = 180

__all__ = ["REENGAGE_AFTER_DAYS", "re_engage"]


def re_engage(features: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """True where the customer has advocated before and not in the last 180 days (strictly more)."""
    total = np.asarray(features["activities_total"], dtype="float64")
    days = np.asarray(features["days_since_last_activity"], dtype="float64")
    # NaN (no activity, or unknown) compares False.
    return (total > 0) & (days > REENGAGE_AFTER_DAYS)
