"""Reference matching (spec sections 5 and 9): whom to ask for a reference call with a prospect, or for a deal.

One road for `advocacy references` and `POST /references`. A request names a deal (its
`opportunity_id`) or a prospect's industry, segment and use case, exactly one of the two
(`ReferenceRequest`); a deal stands for the prospect it is with, by its industry, segment and use
case (`prospect_for`), and `models.references.rank_references` ranks the customers of a pool by
acceptance of a reference call x similarity, skipping those a guardrail blocks. The command line's
pool is every active customer, scored by the recipe from the sources at the end of the data
(`references_from_sources`); the service's is the snapshot it serves, its guardrails and recent
reference calls kept current by the ask log.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from models.bundle import Bundle
from models.references import CUSTOMER_COLUMNS, Prospect, check_segment, rank_references
from usecases.recipe import score_world
from usecases.sources import Sources, left_out_words

PROSPECT_FIELDS: tuple[str, ...] = ("industry", "segment", "use_case")
_REFERENCE_CALL = ASK_TYPE_NAMES.index("reference_call")


class UnknownDealError(KeyError):
    """An `opportunity_id` that no deal of the opportunities table has (the service's 404)."""

    def __init__(self, opportunity_id: str) -> None:
        super().__init__(f"unknown opportunity_id: {opportunity_id} (no such deal in the opportunities table)")
        self.opportunity_id = opportunity_id

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ReferenceRequest:
    """What a door asks for: a deal's `opportunity_id` or a prospect's industry, segment and use
    case, exactly one of the two (both, or neither, is a `ValueError` naming the fields), and how
    many candidates (`k`, checked by `rank_references`)."""

    opportunity_id: str | None = None
    industry: str | None = None
    segment: str | None = None
    use_case: str | None = None
    k: int = 10

    def __post_init__(self) -> None:
        given = [name for name in PROSPECT_FIELDS if getattr(self, name) is not None]
        if self.opportunity_id is not None and given:
            raise ValueError(
                f"opportunity_id and {', '.join(given)}: name a deal (opportunity_id) or a prospect (industry, "
                "segment and use_case), not both"
            )
        if self.opportunity_id is None and not given:
            raise ValueError("opportunity_id or industry, segment and use_case: name a deal or a prospect")
        missing = [name for name in PROSPECT_FIELDS if name not in given]
        if self.opportunity_id is None and missing:
            raise ValueError(
                f"{', '.join(missing)}: a prospect needs industry, segment and use_case (or name a deal by its "
                "opportunity_id instead)"
            )
        if self.segment is not None:
            check_segment(self.segment)  # a misspelt one would match nobody: refused before any work


def prospect_for(request: ReferenceRequest, opportunities: pd.DataFrame) -> Prospect:
    """The prospect of the request: the one it describes, or the deal's (`UnknownDealError` when
    `opportunities` has no such deal)."""
    if request.opportunity_id is None:
        return Prospect(request.industry, str(request.segment), request.use_case)
    deal = opportunities.loc[opportunities["opportunity_id"].astype("str") == request.opportunity_id]
    if deal.empty:
        raise UnknownDealError(request.opportunity_id)
    row = deal.iloc[0]
    industry, segment, use_case = (None if pd.isna(row[name]) else str(row[name]) for name in PROSPECT_FIELDS)
    return Prospect(industry, str(segment), use_case)


@dataclass(frozen=True)
class ReferencePool:
    """The customers a prospect's references are ranked from: their `CUSTOMER_COLUMNS`, acceptance
    of a reference call and reference calls in the last 90 days (each by customer_id), and the ids
    of those a guardrail keeps from a reference call now."""

    customers: pd.DataFrame
    acceptance: pd.Series
    recent: pd.Series
    blocked: Collection[str]


@dataclass(frozen=True)
class FoundReferences:
    """The prospect matched, its candidates best first (`models.references.REFERENCE_COLUMNS`), and,
    from the sources, the moment they were ranked at and the rows the reader left out (in words)."""

    prospect: Prospect
    candidates: pd.DataFrame
    as_of: pd.Timestamp | None = None
    left_out: dict[str, int] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """The candidates as `POST /references` gives them: Python numbers, a missing value None."""
        frame = self.candidates.astype(object)
        return frame.where(frame.notna(), None).to_dict(orient="records")


def find_references(
    request: ReferenceRequest, opportunities: pd.DataFrame, pool_for: Callable[[Prospect], ReferencePool]
) -> FoundReferences:
    """The request's candidates among `pool_for(prospect)`: the pool is asked for once the prospect
    is known, so an unknown deal costs no scoring."""
    prospect = prospect_for(request, opportunities)
    pool = pool_for(prospect)
    blocks = pd.DataFrame({"customer_id": pd.Series(sorted(pool.blocked), dtype="str"), "ask_type": "reference_call"})
    top = rank_references(prospect, pool.customers, pool.acceptance, blocks, pool.recent, request.k)
    return FoundReferences(prospect, top)


def references_from_sources(bundle: Bundle, sources: Sources, request: ReferenceRequest) -> FoundReferences:
    """`advocacy references`: the candidates among every customer active at the end of the data,
    scored by the recipe from the sources (the ask log's asks included), guardrails then."""
    read = sources.read()
    when = read.data_end

    def scored_pool(_: Prospect) -> ReferencePool:
        scored = score_world(bundle, read.world, when)
        features = scored.features
        ids = features["customer_id"].astype("str")
        index = pd.Index(ids)
        blocked = scored.blocked.matrix(ids.tolist())[:, _REFERENCE_CALL]
        return ReferencePool(
            customers=features.loc[:, list(CUSTOMER_COLUMNS)].assign(customer_id=ids),
            acceptance=pd.Series(scored.scores.acceptance[:, _REFERENCE_CALL], index=index),
            recent=pd.Series(features["recent_reference_calls"].to_numpy(), index=index),
            blocked=frozenset(ids[blocked]),
        )

    found = find_references(request, read.world.opportunities, scored_pool)
    return replace(found, as_of=when, left_out=left_out_words(read.left_out))
