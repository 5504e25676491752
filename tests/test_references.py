"""Reference matching: similar, willing, not over-used, and never a customer a guardrail protects;
for a deal, its prospect's attributes (`usecases.references`)."""

from __future__ import annotations

import pandas as pd
import pytest

from features.contracts import TIMESTAMP
from models.guardrails import empty_blocks
from models.references import REFERENCE_COLUMNS, Prospect, rank_references, similarity
from usecases.references import ReferenceRequest, UnknownDealError, prospect_for

PROSPECT = Prospect(industry="Software", segment="enterprise", use_case="billing")


def customers(*rows: tuple[str, str, str, str]) -> pd.DataFrame:
    """Customers from (customer_id, industry, segment, use_case); the name is the id upper-cased."""
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "name": [r[0].upper() for r in rows],
            "industry": [r[1] for r in rows],
            "segment": [r[2] for r in rows],
            "use_case": [r[3] for r in rows],
        }
    )


def blocked_reference(*ids: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "ask_type": ["reference_call"] * len(ids),
            "guardrail": ["reference_call_per_quarter"] * len(ids),
            "reason": ["Already asked"] * len(ids),
            "until": pd.Series(pd.to_datetime(["2026-07-01"] * len(ids), utc=True)).astype(TIMESTAMP),
        }
    )


def rank(
    base: pd.DataFrame,
    acceptance: dict[str, float],
    blocks: pd.DataFrame | None = None,
    recent: dict[str, int] | None = None,
    k: int = 10,
) -> pd.DataFrame:
    return rank_references(
        PROSPECT,
        base,
        pd.Series(acceptance),
        empty_blocks() if blocks is None else blocks,
        pd.Series(recent or {}, dtype="int64"),
        k=k,
    )


def test_similarity_is_a_weighted_case_insensitive_match() -> None:
    base = customers(
        ("a", "software", "Enterprise", " Billing "),
        ("b", "software", "smb", "analytics"),
        ("c", "retail", "enterprise", "billing"),
        ("d", None, None, None),  # type: ignore[arg-type]
        ("e", "hardware", "smb", "analytics"),
    )
    sim, matched = similarity(PROSPECT, base)
    assert sim.tolist() == [1.0, 0.4, 0.6, 0.0, 0.0]
    assert matched.loc[2].tolist() == [False, True, True]


def test_ranks_by_acceptance_times_similarity() -> None:
    base = customers(
        ("a", "software", "enterprise", "billing"),  # 0.5 x 1.0 = 0.5
        ("b", "retail", "enterprise", "billing"),  # 0.9 x 0.6 = 0.54
        ("c", "software", "smb", "other"),  # 0.9 x 0.4 = 0.36
    )
    result = rank(base, {"a": 0.5, "b": 0.9, "c": 0.9})
    assert list(result["customer_id"]) == ["b", "a", "c"]
    assert result["score"].tolist() == pytest.approx([0.54, 0.5, 0.36])
    assert tuple(result.columns) == REFERENCE_COLUMNS
    assert result.loc[0, "name"] == "B"
    assert result.loc[0, "matched"] == ["segment", "use_case"]


def test_blocked_customers_are_skipped() -> None:
    base = customers(("a", "software", "enterprise", "billing"), ("b", "software", "enterprise", "billing"))
    result = rank(base, {"a": 0.9, "b": 0.5}, blocks=blocked_reference("a"))
    assert list(result["customer_id"]) == ["b"]


def test_blocks_of_other_ask_types_do_not_skip() -> None:
    base = customers(("a", "software", "enterprise", "billing"))
    other = blocked_reference("a").assign(ask_type="case_study")
    assert list(rank(base, {"a": 0.9}, blocks=other)["customer_id"]) == ["a"]


def test_a_recently_used_customer_ranks_below_an_otherwise_identical_one() -> None:
    base = customers(("a", "software", "enterprise", "billing"), ("b", "software", "enterprise", "billing"))
    result = rank(base, {"a": 0.8, "b": 0.8}, recent={"a": 1})
    assert list(result["customer_id"]) == ["b", "a"]
    assert result["recent_reference_calls"].tolist() == [0, 1]
    assert result.loc[1, "score"] == pytest.approx(0.8 / 2)


def test_ties_are_broken_by_customer_id() -> None:
    base = customers(*[(cid, "software", "enterprise", "billing") for cid in ("c", "a", "b")])
    result = rank(base, dict.fromkeys("abc", 0.5))
    assert list(result["customer_id"]) == ["a", "b", "c"]


def test_no_match_or_unknown_acceptance_is_not_a_candidate() -> None:
    base = customers(("a", "retail", "smb", "other"), ("b", "software", "enterprise", "billing"))
    assert rank(base, {"a": 0.9, "b": 0.9})["customer_id"].tolist() == ["b"]
    assert rank(base, {"a": 0.9})["customer_id"].tolist() == []


def test_returns_at_most_k() -> None:
    base = customers(*[(f"c{i:02d}", "software", "enterprise", "billing") for i in range(30)])
    acceptance = {f"c{i:02d}": i / 100 for i in range(30)}
    result = rank(base, acceptance, k=5)
    assert result["customer_id"].tolist() == ["c29", "c28", "c27", "c26", "c25"]
    assert len(rank(base, acceptance, k=1)) == 1
    assert len(rank(base, acceptance, k=100)) == 30


@pytest.mark.parametrize("k", [0, -1, 101, 2.5, True])
def test_k_out_of_bounds_is_rejected(k: int) -> None:
    base = customers(("a", "software", "enterprise", "billing"))
    with pytest.raises(ValueError, match="k must be"):
        rank(base, {"a": 0.5}, k=k)


def test_prospect_segment_must_be_known() -> None:
    assert Prospect("x", " SMB ", "y").segment == " SMB "
    with pytest.raises(ValueError, match="segment"):
        Prospect("software", "enterprize", "billing")


def test_missing_customer_column_is_named() -> None:
    base = customers(("a", "software", "enterprise", "billing")).drop(columns="use_case")
    with pytest.raises(ValueError, match="use_case"):
        rank(base, {"a": 0.5})


def test_an_attribute_a_deal_leaves_empty_matches_no_customer() -> None:
    """A deal's industry or use case may be empty in the table: unknown, it matches nobody on it."""
    base = customers(("a", "software", "enterprise", "billing"), ("b", "", "smb", ""))
    sim, matched = similarity(Prospect(None, "enterprise", None), base)
    assert sim.tolist() == [0.3, 0.0] and not matched[["industry", "use_case"]].to_numpy().any()


def test_a_request_names_one_deal_or_one_whole_prospect() -> None:
    """The use case's own check, whichever door builds the request: each refusal names the fields."""
    assert ReferenceRequest(opportunity_id="O1").opportunity_id == "O1"
    assert ReferenceRequest(None, "software", "smb", "billing").segment == "smb"
    for fields, named in (
        ({"opportunity_id": "O1", "use_case": "billing"}, "opportunity_id and use_case: name a deal"),
        ({}, "opportunity_id or industry, segment and use_case"),
        ({"industry": "software"}, "segment, use_case: a prospect needs"),
    ):
        with pytest.raises(ValueError, match=named):
            ReferenceRequest(**fields)


def test_a_deal_stands_for_its_prospect_and_an_unknown_one_is_named() -> None:
    deals = pd.DataFrame({"opportunity_id": ["O1"], "industry": ["media"], "segment": ["smb"], "use_case": [None]})
    assert prospect_for(ReferenceRequest(opportunity_id="O1"), deals) == Prospect("media", "smb", None)
    with pytest.raises(UnknownDealError, match="unknown opportunity_id: O2") as caught:
        prospect_for(ReferenceRequest(opportunity_id="O2"), deals)
    assert caught.value.opportunity_id == "O2"
