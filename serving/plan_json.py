"""Plans and campaigns as the routes answer them: JSON values, a missing time as null."""

from __future__ import annotations

from typing import Any

import pandas as pd

from serving.store import json_value
from usecases.campaigns import CampaignProgress


def asks_json(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A plan table's rows as JSON values (a missing time as null)."""
    return [{k: None if v is pd.NaT else json_value(v) for k, v in r.items()} for r in table.to_dict(orient="records")]


def campaign_json(c: CampaignProgress) -> dict[str, Any]:
    """A campaign in progress (`POST /campaigns`): per type its need, yeses, pending asks; its waves."""
    return {
        "plan_id": c.plan_id,
        "deadline": c.deadline.isoformat(),
        "waves": c.waves,
        "wave_days": c.wave_days,
        "types": {name: {**vars(t), "met": t.met} for name, t in c.types.items()},
        "planned": [
            {"wave": i, "date": d.isoformat(), "asks": n}
            for i, (d, n) in enumerate(zip(c.wave_dates, c.asks_per_wave, strict=True), start=1)
        ],
        "next_wave": c.next_wave,
        "next_wave_at": None if c.next_wave_at is None else c.next_wave_at.isoformat(),
    }
