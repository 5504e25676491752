"""One customer's explanation from the sources (`advocacy explain`): the recipe, with reasons."""

from __future__ import annotations

from typing import Any

import pandas as pd

from models.bundle import Bundle
from usecases.recipe import score_world
from usecases.sources import Sources, left_out_words


def explain_customer(
    bundle: Bundle, sources: Sources, customer_id: str, as_of: pd.Timestamp | None = None
) -> tuple[pd.Timestamp, dict[str, Any], dict[str, int]]:
    """The moment explained (default: the end of the data), the customer's result there, as
    `POST /score` gives it (reasons, points, disagreement, next best ask and blocked asks), and the
    rows the reader left out (in words -> rows)."""
    read = sources.read()
    if customer_id not in set(read.world.customers["customer_id"].astype("str")):
        raise KeyError(f"unknown customer_id: {customer_id}")
    when = as_of if as_of is not None else read.data_end
    scored = score_world(bundle, read.world, when, [customer_id], explain=True)
    return when, scored.scores.result(0), left_out_words(read.left_out)
