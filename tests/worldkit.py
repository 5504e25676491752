"""Tiny hand-made raw tables for unit tests: every value chosen so a person can check the features."""

from __future__ import annotations

import pandas as pd


def raw_tables() -> dict[str, pd.DataFrame]:
    """A valid two-customer world, as raw (string-typed) tables like a CSV reader would give."""
    return {
        "customers": pd.DataFrame(
            {
                "customer_id": ["c1", "c2"],
                "name": ["Acme", "Globex"],
                "industry": ["software", "retail"],
                "segment": ["smb", "enterprise"],
                "region": ["emea", "amer"],
                "use_case": ["analytics", "billing"],
                "plan": ["pro", "enterprise"],
                "contract_start": ["2024-01-15", "2025-06-01"],
                "churned_at": [None, None],
                "arr": [1000.0, 50000.0],
            }
        ),
        "usage": pd.DataFrame(
            {
                "customer_id": ["c1", "c1", "c1", "c1", "c2"],
                "month": ["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01", "2025-06-01"],
                "licensed_seats": [10, 10, 10, 10, 5],
                "active_users": [5, 6, 7, 8, 2],
                "feature_adoption": [0.5, 0.6, 0.7, 0.71, 0.2],
                "logins": [1, 2, 3, 4, 5],
                "health_score": [70.0, 75.0, 81.0, 85.0, 50.0],
            }
        ),
        "nps": pd.DataFrame(
            {"customer_id": ["c1", "c1"], "responded_at": ["2025-01-10", "2025-03-10"], "score": [7, 9]}
        ),
        "tickets": pd.DataFrame(
            {
                "customer_id": ["c1", "c1"],
                "opened_at": ["2025-03-01T10:00:00", "2025-04-01T09:00:00"],
                "priority": ["normal", "urgent"],
                "sentiment": [0.5, -0.5],
                "csat": [4, None],
            }
        ),
        "social": pd.DataFrame(
            {
                "customer_id": ["c1", "c1"],
                "mentioned_at": ["2024-12-01", "2025-02-01"],
                "sentiment": [0.4, -0.2],
                "channel": ["linkedin", "x"],
            }
        ),
        "asks": pd.DataFrame(
            {
                "ask_id": ["a1", "a2", "a3"],
                "customer_id": ["c1", "c1", "c1"],
                "ask_type": ["review", "reference_call", "review"],
                "asked_at": ["2025-01-05", "2025-02-05", "2025-04-02"],
                "outcome": ["declined", "declined", "accepted"],
                "responded_at": ["2025-01-06", "2025-02-06", "2025-04-20"],
            }
        ),
        "activities": pd.DataFrame(
            {
                "activity_id": ["v1"],
                "customer_id": ["c1"],
                "activity_type": ["review"],
                "occurred_at": ["2025-04-25"],
                "ask_id": ["a3"],
            }
        ),
    }


def utc(value: str) -> pd.Timestamp:
    return pd.Timestamp(value, tz="UTC")
