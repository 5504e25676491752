"""The scoring API against real `bentoml serve` processes on 127.0.0.1 (spec section 7; issue 4's "done when").

Three servers start side by side from the session's trained champion and a snapshot written here:
an open one, one with an API token, and one whose home has no model at all (it must stay not
ready). Each server gets its own feature store and ask log so no other test module sees its asks.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from features.catalog import ASK_TYPE_NAMES
from features.context import Snapshot, build_snapshot
from features.contracts import CONTRACTS
from features.io import read_world
from features.labels import observed_until
from features.spec import FEATURE_NAMES
from storage.asklog import AskLog
from storage.settings import Settings
from storage.snapshots import read_snapshot
from tests.conftest import ROOT, TrainedHome
from tests.serverkit import Server, free_port, service_env

pytestmark = [pytest.mark.slow, pytest.mark.server]

TOKEN = "test-token-4f1c"
RESULT_FIELDS = {
    "customer_id",
    "propensity",
    "tier",
    "committed",
    "percentile",
    "acceptance",
    "next_best_ask",
    "re_engage",
    "reasons",
    "baseline",
    "disagreement",
    "model_version",
    "rules_version",
    "features_as_of",
}


@dataclass
class Servers:
    open: Server
    secured: Server
    empty: Server
    settings: Settings  # what the open server reads (its store and ask log)
    snapshot: Snapshot
    version: str


@pytest.fixture(scope="module")
def servers(trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("service")
    world = read_world(trained_home.settings.resolved_data_dir())
    snapshot = build_snapshot(world, observed_until(world))

    def env(name: str, **extra: str) -> dict[str, str]:
        return service_env(trained_home, base / name, snapshot, **extra)

    empty_home = base / "empty-home"
    empty_home.mkdir()
    group = Servers(
        open=Server(env("open"), base / "open.log"),
        secured=Server(env("secured", ADVOCACY_API_TOKEN=TOKEN), base / "secured.log"),
        empty=Server({**env("empty"), "ADVOCACY_HOME": str(empty_home), "MLFLOW_TRACKING_URI": ""}, base / "empty.log"),
        settings=Settings(
            home=trained_home.settings.home,
            feature_store=base / "open" / "store",
            ask_log=base / "open" / "asks.sqlite",
        ),
        snapshot=Snapshot.from_tables(*read_snapshot(base / "open" / "store")),
        version=trained_home.version,
    )
    everyone = (group.open, group.secured, group.empty)
    try:
        for s in everyone:
            s.launch()
        group.open.wait()
        group.secured.wait()
        group.empty.wait("/livez")
        yield group
    finally:
        for s in everyone:
            s.stop()


@pytest.fixture(scope="module")
def server(servers: Servers) -> Server:
    return servers.open


def snapshot_ids(servers: Servers, n: int) -> list[str]:
    return servers.snapshot.features["customer_id"].astype(str).head(n).tolist()


def unblocked_customer(server: Server, candidates: list[str]) -> str:
    """A customer no guardrail blocks right now (so a new ask visibly changes that)."""
    results = server.post("/score", {"customer_ids": candidates}).json()["results"]
    free = [r["customer_id"] for r in results if not r["next_best_ask"]["blocked"]]
    assert free, "every candidate is blocked; pick more candidates"
    return free[0]


def detail_names(response: httpx.Response, name: str) -> bool:
    """The 400 body names the field (pydantic's loc, or the message for contract errors)."""
    body = response.json()
    locs = [".".join(str(p) for p in d.get("loc", ())) for d in body.get("detail", []) if isinstance(d, dict)]
    return name in locs or any(loc.endswith(name) for loc in locs) or name in json.dumps(body)


# ---- health, metrics, the page -------------------------------------------------------------------------


def test_health_and_metrics_are_bentomls_own(server: Server) -> None:
    assert httpx.get(server.url + "/livez").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.status_code == 200
    assert "bentoml_service_request" in metrics.text


def test_the_page_is_served_at_root(server: Server) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "CSM page" in page.text


# ---- /score -------------------------------------------------------------------------------------------


def test_score_returns_one_section_7_result_per_id(servers: Servers) -> None:
    ids = snapshot_ids(servers, 3)
    response = servers.open.post("/score", {"customer_ids": [ids[2], ids[0], ids[2]]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["customer_id"] for r in results] == [ids[2], ids[0], ids[2]]
    as_of = pd.Timestamp(servers.snapshot.meta["as_of"])
    for r in results:
        assert set(r) >= RESULT_FIELDS
        assert r["model_version"] == servers.version
        assert pd.Timestamp(r["features_as_of"]) == as_of
        assert set(r["acceptance"]) == set(ASK_TYPE_NAMES)
        assert all(0 <= p <= 1 for p in r["acceptance"].values())
        assert r["cold_start"] or 0 <= r["propensity"] <= 1
        assert r["tier"] in ("committed", "champion", "advocate", "supporter", "none")
        assert 1 <= len(r["reasons"]) <= 3
        assert all(x["direction"] in ("raises", "lowers") and x["text"] for x in r["reasons"])
        assert len(r["baseline"]["breakdown"]) == 6
        assert r["baseline"]["points"] == sum(b["points"] for b in r["baseline"]["breakdown"])


def test_committed_pipeline_is_named_and_left_out_of_disagreements_and_plans(servers: Servers) -> None:
    features = servers.snapshot.features
    pending = features[features["accepted_not_delivered"] >= 1]
    assert len(pending) >= 5, "the sample has accepted asks not yet delivered"
    ids = pending["customer_id"].astype(str).tolist()
    results = servers.open.post("/score", {"customer_ids": ids[:20]}).json()["results"]
    for r, (_, row) in zip(results, pending.head(20).iterrows(), strict=True):
        assert r["tier"] == "committed" and r["disagreement"] is None
        assert r["committed"]["ask_id"] == row["committed_ask_id"]
        assert r["committed"]["ask_type"] == row["committed_ask_type"]
        assert pd.Timestamp(r["committed"]["accepted_at"]) == row["committed_accepted_at"]
    others = features.loc[features["accepted_not_delivered"] < 1, "customer_id"].astype(str).head(5).tolist()
    assert all(r["committed"] is None for r in servers.open.post("/score", {"customer_ids": others}).json()["results"])
    listed = servers.open.post("/disagreements", {"limit": 200}).json()["customers"]
    assert listed and not {c["customer_id"] for c in listed} & set(ids)
    plan = servers.open.post("/plan", {"need": {"review": 20, "social_share": 20}}).json()
    assert not {a["customer_id"] for a in plan["asks"]} & set(ids)


def test_the_worklist_lists_deliveries_due_oldest_promise_first_and_advocates_going_cold(servers: Servers) -> None:
    features = servers.snapshot.features
    worklist = servers.open.post("/worklist", {"limit": 200}).json()
    pending = features[features["accepted_not_delivered"] >= 1].sort_values("committed_accepted_at", kind="stable")
    assert [d["customer_id"] for d in worklist["deliveries_due"]] == pending["customer_id"].astype(str).tolist()[:200]
    first = worklist["deliveries_due"][0]
    assert pd.Timestamp(first["lapses_at"]) - pd.Timestamp(first["accepted_at"]) == pd.Timedelta(days=90)
    cold = worklist["going_cold"]
    assert cold, "the sample has past advocates gone quiet"
    results = servers.open.post("/score", {"customer_ids": [c["customer_id"] for c in cold]}).json()["results"]
    assert all(r["re_engage"] and r["tier"] != "committed" for r in results)
    shown = [-1.0 if c["propensity"] is None else c["propensity"] for c in cold]
    assert shown == sorted(shown, reverse=True)
    assert worklist["need"] == {"reference_call": 10, "review": 30, "case_study": 3}
    bad = servers.open.post("/worklist", {"limit": 0})
    assert bad.status_code == 400 and detail_names(bad, "limit")


def test_score_answers_alike_on_its_fast_path_and_through_bentoml(server: Server, servers: Servers) -> None:
    """`application/json` bodies are answered by `ScoreFastPath`; with a charset they go through
    BentoML's own API path. Good, unknown and invalid requests must get the same status and the
    same body either way."""

    def both(body: Any) -> tuple[httpx.Response, httpx.Response]:
        raw = json.dumps(body).encode()
        fast, framework = (
            httpx.post(server.url + "/score", content=raw, headers={"Content-Type": kind}, timeout=30)
            for kind in ("application/json", "application/json; charset=utf-8")
        )
        # BentoML's path stamps its own Server header: the two requests really took different paths.
        assert "BentoML" in framework.headers.get("server", "") and "BentoML" not in fast.headers.get("server", "")
        assert fast.status_code == framework.status_code, (fast.text, framework.text)
        return fast, framework

    ids = snapshot_ids(servers, 12)  # more than the ids answered on the event loop (INLINE_IDS)
    for chosen in (ids[:1], ids):
        fast, framework = both({"customer_ids": chosen})
        assert fast.status_code == 200
        assert fast.json() == framework.json()
    fast, framework = both({"customer_ids": [ids[0], "NO-SUCH-7"]})
    assert fast.status_code == 404 and fast.json() == framework.json()
    for body, name in [({"customer_ids": []}, "customer_ids"), ({"customer_ids": [7]}, "customer_ids.0"), ({}, "")]:
        fast, framework = both(body)
        assert fast.status_code == 400 and detail_names(fast, name or "customer_ids"), fast.text
        assert fast.json()["detail"] == framework.json()["detail"]


def test_unknown_customer_is_a_404_that_names_it(server: Server, servers: Servers) -> None:
    known = snapshot_ids(servers, 1)[0]
    response = server.post("/score", {"customer_ids": [known, "NO-SUCH-1", "NO-SUCH-2"]})
    assert response.status_code == 404
    assert "NO-SUCH-1" in response.json()["error"] and "NO-SUCH-2" in response.json()["error"]
    assert response.json()["customer_ids"] == ["NO-SUCH-1", "NO-SUCH-2"]
    explain = server.post("/explain", {"customer_id": "NO-SUCH-3"})
    assert explain.status_code == 404 and "NO-SUCH-3" in explain.text


def _record(servers: Servers, customer_id: str) -> dict[str, Any]:
    """A snapshot row as JSON: what a caller computing its own features would send."""
    row = servers.snapshot.features.set_index("customer_id").loc[customer_id]
    record: dict[str, Any] = {"customer_id": customer_id, "as_of": pd.Timestamp(row["as_of"]).isoformat()}
    for name in FEATURE_NAMES:
        value = row[name]
        record[name] = None if pd.isna(value) else (value if isinstance(value, str) else float(value))
    return record


VALID_ASK = {"ask_id": "x", "customer_id": "C0000001", "ask_type": "review", "asked_at": "2026-11-01T00:00:00Z"}


def _invalid_bodies() -> list[Any]:
    """(route, body, field the 400 must name)."""
    return [
        pytest.param("/score", {"customer_ids": "C0000001"}, "customer_ids", id="score-ids-not-a-list"),
        pytest.param("/score", {"customer_ids": [1, 2]}, "customer_ids.0", id="score-id-not-a-string"),
        pytest.param("/score", {"customer_ids": []}, "customer_ids", id="score-empty-list"),
        pytest.param("/score", {"customer_ids": ["C1"] * 1001}, "customer_ids", id="score-1001-ids"),
        pytest.param("/score", {"customer_ids": ["C1"] * 10_001}, "customer_ids", id="score-10001-ids"),
        pytest.param("/score", {}, "customer_ids", id="score-missing-field"),
        pytest.param("/score", {"customer_id": ["C1"]}, "customer_id", id="score-misspelt-field"),
        pytest.param("/score_features", {"records": []}, "records", id="features-empty-list"),
        pytest.param("/score_features", {"records": "x"}, "records", id="features-not-a-list"),
        pytest.param("/explain", {}, "customer_id", id="explain-missing-field"),
        pytest.param("/explain", {"customer_id": 7}, "customer_id", id="explain-wrong-type"),
        pytest.param(
            "/references", {"industry": "software", "segment": "huge", "use_case": "x"}, "segment", id="refs-segment"
        ),
        pytest.param(
            "/references", {"industry": "software", "segment": "smb", "use_case": "x", "k": 0}, "k", id="refs-k-zero"
        ),
        pytest.param(
            "/references", {"industry": "software", "segment": "smb", "use_case": "x", "k": "3"}, "k", id="refs-k-str"
        ),
        pytest.param("/references", {"segment": "smb", "use_case": "x"}, "industry", id="refs-missing-industry"),
        pytest.param("/references", {"k": 3}, "opportunity_id", id="refs-neither-deal-nor-prospect"),
        pytest.param("/references", {"opportunity_id": 7}, "opportunity_id", id="refs-deal-not-text"),
        pytest.param(
            "/asks", {"asks": [{**VALID_ASK, "opportunity_id": 7}]}, "asks.0.opportunity_id", id="asks-deal-not-text"
        ),
        pytest.param("/asks", {"asks": []}, "asks", id="asks-empty"),
        pytest.param("/asks", {"asks": [{**VALID_ASK, "ask_type": "bribe"}]}, "asks.0.ask_type", id="asks-bad-type"),
        pytest.param("/asks", {"asks": [{**VALID_ASK, "asked_at": "soon"}]}, "asks.0.asked_at", id="asks-bad-time"),
        pytest.param(
            "/asks", {"asks": [{k: v for k, v in VALID_ASK.items() if k != "ask_id"}]}, "asks.0.ask_id", id="asks-no-id"
        ),
        pytest.param(
            "/asks",
            {"asks": [{**VALID_ASK, "outcome": "declined", "responded_at": "2026-10-01T00:00:00Z"}]},
            "responded_at",
            id="asks-answer-before-ask",
        ),
        pytest.param("/asks", {"asks": [VALID_ASK, VALID_ASK]}, "ask_id", id="asks-duplicate-id-in-one-request"),
        pytest.param("/plan", {"need": {"reviews": 3}}, "reviews", id="plan-unknown-type"),
        pytest.param("/plan", {"need": {"review": 0}}, "need.review", id="plan-need-zero"),
        pytest.param("/plan", {"need": {"review": -2}}, "need.review", id="plan-need-negative"),
        pytest.param("/plan", {"need": {"review": "3"}}, "need.review", id="plan-need-text"),
        pytest.param("/plan", {"need": {}}, "need", id="plan-no-need"),
        pytest.param("/plan", {"need": {"review": 3}, "confidence": 1.0}, "confidence", id="plan-confidence-one"),
        pytest.param("/plan", {"need": {"review": 3}, "confidence": 0}, "confidence", id="plan-confidence-zero"),
        pytest.param("/plan", {"need": {"review": 3}, "plan_size": 3}, "plan_size", id="plan-unknown-field"),
    ]


@pytest.mark.parametrize(("route", "body", "name"), _invalid_bodies())
def test_invalid_bodies_are_a_400_naming_the_field(server: Server, route: str, body: Any, name: str) -> None:
    response = server.post(route, body)
    assert response.status_code == 400, response.text
    assert detail_names(response, name), response.text


@pytest.mark.parametrize(
    ("change", "name"),
    [
        pytest.param({"nps_last": 11.0}, "records.0.nps_last", id="nps-11"),
        pytest.param({"adoption": -0.1}, "records.0.adoption", id="adoption-negative"),
        pytest.param({"nps_last": "high"}, "records.0.nps_last", id="nps-wrong-type"),
        pytest.param({"segment": "galactic"}, "records.0.segment", id="segment-unknown"),
        pytest.param({"tenure_months": "NaN"}, "records.0.tenure_months", id="nan-string"),
    ],
)
def test_invalid_feature_records_are_a_400_naming_the_field(
    servers: Servers, change: dict[str, Any], name: str
) -> None:
    record = {**_record(servers, snapshot_ids(servers, 1)[0]), **change}
    response = servers.open.post("/score_features", {"records": [record]})
    assert response.status_code == 400, response.text
    assert detail_names(response, name), response.text


def test_a_record_missing_a_feature_is_a_400_naming_it(servers: Servers) -> None:
    record = _record(servers, snapshot_ids(servers, 1)[0])
    del record["adoption"]
    response = servers.open.post("/score_features", {"records": [record]})
    assert response.status_code == 400
    assert detail_names(response, "records.0.adoption"), response.text


def test_malformed_json_is_a_400(server: Server) -> None:
    response = httpx.post(
        server.url + "/score", content=b'{"customer_ids": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


# ---- one customer, three ways: the same numbers ----------------------------------------------------------


def _numbers(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "propensity": result["propensity"],
        "tier": result["tier"],
        "percentile": result["percentile"],
        "acceptance": result["acceptance"],
        "reasons": [(r["feature"], r["contribution"], r["text"]) for r in result["reasons"]],
        "baseline": result["baseline"],
        "re_engage": result["re_engage"],
        "features_as_of": pd.Timestamp(result["features_as_of"]),
    }


def test_score_score_features_and_the_bundle_agree(servers: Servers) -> None:
    import mlflow

    from models.registry import load_champion
    from models.scoring import score

    ids = snapshot_ids(servers, 5)
    stored = servers.open.post("/score", {"customer_ids": ids}).json()["results"]
    sent = servers.open.post("/score_features", {"records": [_record(servers, c) for c in ids]})
    assert sent.status_code == 200, sent.text
    for a, b in zip(stored, sent.json()["results"], strict=True):
        assert a["customer_id"] == b["customer_id"]
        assert _numbers(a) == _numbers(b)
        assert a["next_best_ask"] == b["next_best_ask"]  # same customer, same guardrails

    # In-process: the registered bundle's score() and the MLflow pyfunc's predict() on the same rows.
    frame = servers.snapshot.features.set_index("customer_id").loc[ids].reset_index()
    ref, bundle = load_champion(servers.settings)
    assert ref.version == servers.version
    local = score(bundle, frame).results()
    for a, b in zip(stored, local, strict=True):
        assert _numbers(a) == _numbers(b)
    predicted = mlflow.pyfunc.load_model(ref.uri).predict(frame)
    assert np.allclose(
        predicted["propensity"].to_numpy(float),
        [np.nan if a["propensity"] is None else a["propensity"] for a in stored],
        rtol=0,
        atol=1e-12,
        equal_nan=True,
    )
    assert predicted["tier"].tolist() == [a["tier"] for a in stored]


def test_score_features_without_an_id_uses_only_the_records_own_signals(servers: Servers) -> None:
    record = {**_record(servers, snapshot_ids(servers, 1)[0]), "health_score": 20.0}
    del record["customer_id"]
    response = servers.open.post("/score_features", {"records": [record]})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["customer_id"] is None
    rails = {b["guardrail"] for b in result["next_best_ask"]["blocked"]}
    assert rails == {"low_health"} and result["next_best_ask"]["ask_type"] is None


# ---- /explain and /references ----------------------------------------------------------------------------


def test_explain_has_every_contribution_the_base_value_and_history(servers: Servers) -> None:
    history = servers.snapshot.history
    customer = str(history["customer_id"].value_counts().index[0])
    response = servers.open.post("/explain", {"customer_id": customer})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= RESULT_FIELDS
    assert sorted(c["feature"] for c in body["contributions"]) == sorted(FEATURE_NAMES)
    total = body["base_value"] + sum(c["contribution"] for c in body["contributions"])
    assert math.isclose(total, body["raw_score"], abs_tol=1e-9)
    sizes = [abs(c["contribution"]) for c in body["contributions"]]
    assert sizes == sorted(sizes, reverse=True)
    assert len(body["baseline"]["breakdown"]) == 6
    expected = history[history["customer_id"] == customer]
    from_snapshot = [e for e in body["history"] if "recorded through the API" not in e["detail"]]
    assert len(from_snapshot) == len(expected) > 0
    assert [e["at"] for e in body["history"]] == sorted((e["at"] for e in body["history"]), reverse=True)


def test_references_are_ranked_and_never_guardrail_blocked(server: Server) -> None:
    body = {"industry": "Software", "segment": "enterprise", "use_case": "analytics", "k": 5}
    response = server.post("/references", body)
    assert response.status_code == 200, response.text
    candidates = response.json()["candidates"]
    assert 1 <= len(candidates) <= 5
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True)
    for c in candidates:
        assert {"customer_id", "name", "acceptance", "similarity", "score"} <= set(c)
        assert 0 < c["similarity"] <= 1
    results = server.post("/score", {"customer_ids": [c["customer_id"] for c in candidates]}).json()["results"]
    for r in results:
        assert "reference_call" not in {b["ask_type"] for b in r["next_best_ask"]["blocked"]}


def _a_deal(servers: Servers) -> dict[str, Any]:
    """A deal of the served snapshot whose industry, segment and use case are all known."""
    deals = servers.snapshot.opportunities.dropna(subset=["industry", "segment", "use_case"])
    return {k: str(v) for k, v in deals.iloc[0].items() if k in ("opportunity_id", "industry", "segment", "use_case")}


def test_references_for_a_deal_are_the_prospect_forms_for_its_attributes(servers: Servers) -> None:
    deal = _a_deal(servers)
    by_deal = servers.open.post("/references", {"opportunity_id": deal["opportunity_id"], "k": 8})
    form = {name: deal[name] for name in ("industry", "segment", "use_case")}
    by_form = servers.open.post("/references", {**form, "k": 8})
    assert by_deal.status_code == 200, by_deal.text
    assert by_form.status_code == 200, by_form.text
    assert by_deal.json()["candidates"] and by_deal.json() == by_form.json()


def test_references_name_one_known_deal_or_one_prospect(servers: Servers) -> None:
    unknown = servers.open.post("/references", {"opportunity_id": "O-no-such-deal"})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["opportunity_id"] == "O-no-such-deal" and "O-no-such-deal" in unknown.json()["error"]
    both = {"opportunity_id": _a_deal(servers)["opportunity_id"], "industry": "software", "segment": "smb"}
    for body in ({**both, "use_case": "analytics"}, {"k": 5}):
        response = servers.open.post("/references", body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert all(name in error for name in ("opportunity_id", "industry", "segment", "use_case")), error


# ---- /asks: the loop closes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asked(servers: Servers) -> dict[str, Any]:
    """An ask just posted for a customer no guardrail blocked: (customer, ask row)."""
    customer = unblocked_customer(servers.open, snapshot_ids(servers, 60))
    now = datetime.now(UTC).replace(microsecond=0)
    ask = {
        "ask_id": f"test-{uuid.uuid4().hex[:8]}",
        "customer_id": customer,
        "ask_type": "review",
        "asked_at": now.isoformat(),
        "outcome": "no_response",
    }
    response = servers.open.post("/asks", {"asks": [ask]})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1}
    return ask


def _assert_cooling_down(result: dict[str, Any], ask: dict[str, Any]) -> None:
    blocked = {b["ask_type"]: b for b in result["next_best_ask"]["blocked"]}
    assert set(blocked) == set(ASK_TYPE_NAMES)
    assert result["next_best_ask"]["ask_type"] is None
    lifts = datetime.fromisoformat(ask["asked_at"]) + timedelta(days=30)
    for b in blocked.values():
        assert b["guardrail"] == "ask_cooldown"
        assert datetime.fromisoformat(b["until"].replace("Z", "+00:00")) == lifts


def test_a_posted_ask_blocks_the_next_ask_at_once(server: Server, asked: dict[str, Any]) -> None:
    result = server.post("/score", {"customer_ids": [asked["customer_id"]]}).json()["results"][0]
    _assert_cooling_down(result, asked)


def test_re_posting_an_ask_updates_it_and_never_duplicates(servers: Servers, asked: dict[str, Any]) -> None:
    log = AskLog(servers.settings.ask_log_path(), CONTRACTS["asks"])
    before = len(log)
    answered = {**asked, "outcome": "accepted", "responded_at": datetime.now(UTC).isoformat()}
    for _ in range(2):
        assert servers.open.post("/asks", {"asks": [answered]}).json() == {"stored": 1}
    assert len(log) == before
    mine = log.read([asked["customer_id"]])
    assert mine["ask_id"].tolist().count(asked["ask_id"]) == 1
    assert mine.set_index("ask_id").loc[asked["ask_id"], "outcome"] == "accepted"
    events = servers.open.post("/explain", {"customer_id": asked["customer_id"]}).json()["history"]
    assert sum("recorded through the API" in e["detail"] for e in events) == 1


def test_re_sending_an_ask_for_another_customer_is_a_409_and_changes_nothing(
    servers: Servers, asked: dict[str, Any]
) -> None:
    """An ask_id names one ask for good: posting it again for another customer would rewrite someone
    else's ask (and orphan its activity), whether the ask came with the snapshot or through the API."""
    log = AskLog(servers.settings.ask_log_path(), CONTRACTS["asks"])
    before = log.read()
    other = next(c for c in snapshot_ids(servers, 5) if c != asked["customer_id"])
    in_snapshot = servers.snapshot.asks.iloc[0]
    snapshot_ask = {
        "ask_id": in_snapshot["ask_id"],
        "customer_id": next(c for c in snapshot_ids(servers, 5) if c != in_snapshot["customer_id"]),
        "ask_type": in_snapshot["ask_type"],
        "asked_at": in_snapshot["asked_at"].isoformat(),
        "outcome": "accepted",
        "responded_at": in_snapshot["asked_at"].isoformat(),
    }
    for moved in ({**asked, "customer_id": other}, snapshot_ask):
        response = servers.open.post("/asks", {"asks": [moved]})
        assert response.status_code == 409, response.text
        assert response.json()["ask_id"] == moved["ask_id"] and "customer_id" in response.json()["error"]
    pd.testing.assert_frame_equal(log.read(), before)


def test_asks_for_unknown_customers_are_refused_and_nothing_is_stored(servers: Servers) -> None:
    log = AskLog(servers.settings.ask_log_path(), CONTRACTS["asks"])
    before = len(log)
    rows = [
        {**VALID_ASK, "ask_id": f"ok-{uuid.uuid4().hex[:6]}", "customer_id": snapshot_ids(servers, 1)[0]},
        {**VALID_ASK, "ask_id": f"bad-{uuid.uuid4().hex[:6]}", "customer_id": "NOBODY-9"},
    ]
    response = servers.open.post("/asks", {"asks": rows})
    assert response.status_code == 404 and "NOBODY-9" in response.text
    assert len(log) == before


def test_an_ask_for_a_deal_is_stored_with_it_and_its_deal_is_fixed(servers: Servers) -> None:
    """Spec 7 and 9: an ask names the deal it was made for; an unknown deal is a 400 naming it
    (nothing stored); re-sent without it the ask keeps it, with another deal it is a 409 naming the
    field, for an ask of the log and for one the asks table made for a deal."""
    log = AskLog(servers.settings.ask_log_path(), CONTRACTS["asks"])
    deals = servers.snapshot.opportunities["opportunity_id"].astype(str).tolist()
    customer = snapshot_ids(servers, 200)[-1]  # not among the customers the other tests ask
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    ask = {"ask_id": f"deal-{uuid.uuid4().hex[:8]}", "customer_id": customer, "ask_type": "reference_call"}
    ask |= {"asked_at": now, "opportunity_id": deals[0]}
    unknown = servers.open.post("/asks", {"asks": [{**ask, "opportunity_id": "O-no-such-deal"}]})
    assert unknown.status_code == 400 and detail_names(unknown, "opportunity_id"), unknown.text
    assert "O-no-such-deal" in unknown.text and ask["ask_id"] not in set(log.read()["ask_id"])

    assert servers.open.post("/asks", {"asks": [ask]}).json() == {"stored": 1}
    answered = {k: v for k, v in ask.items() if k != "opportunity_id"} | {"outcome": "accepted", "responded_at": now}
    assert servers.open.post("/asks", {"asks": [answered]}).json() == {"stored": 1}
    assert log.deal_links().set_index("ask_id").loc[ask["ask_id"], "opportunity_id"] == deals[0]

    table = servers.snapshot.asks.merge(servers.snapshot.deal_links, on="ask_id").iloc[0]
    from_table = {k: table[k] for k in ("ask_id", "customer_id", "ask_type")} | {
        "asked_at": table["asked_at"].isoformat()
    }
    other = next(d for d in deals if d != table["opportunity_id"])
    before = log.read()
    for moved in ({**ask, "opportunity_id": deals[1]}, {**from_table, "opportunity_id": other}):
        response = servers.open.post("/asks", {"asks": [moved]})
        assert response.status_code == 409, response.text
        assert response.json()["field"] == "opportunity_id" and "opportunity_id" in response.json()["error"]
    pd.testing.assert_frame_equal(log.read(), before)


# ---- auth, binding, readiness ----------------------------------------------------------------------------


def test_data_routes_need_the_token_when_one_is_set(servers: Servers) -> None:
    secured = servers.secured
    body = {"customer_ids": snapshot_ids(servers, 1)}
    assert secured.post("/score", body).status_code == 401
    assert secured.post("/score", body, token="wrong").status_code == 401
    assert secured.post("/asks", {"asks": [VALID_ASK]}).status_code == 401
    assert secured.post("/explain", {"customer_id": body["customer_ids"][0]}).status_code == 401
    assert secured.post("/worklist", {}).status_code == 401
    assert secured.post("/report", {}).status_code == 401
    assert secured.post("/plan", {"need": {"review": 3}}).status_code == 401
    assert secured.post("/score", body, token=TOKEN).status_code == 200
    for path in ("/livez", "/readyz", "/metrics", "/"):
        assert httpx.get(secured.url + path).status_code == 200, path


def test_refuses_to_listen_beyond_loopback_without_a_token(trained_home: TrainedHome) -> None:
    env = trained_home.env()
    env.pop("ADVOCACY_API_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "advocacy", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "ADVOCACY_API_TOKEN" in done.stderr and "0.0.0.0" in done.stderr


def test_without_a_champion_it_stays_not_ready_and_says_why(servers: Servers) -> None:
    empty = servers.empty
    assert httpx.get(empty.url + "/livez").status_code == 200
    assert httpx.get(empty.url + "/readyz").status_code == 503
    response = empty.post("/score", {"customer_ids": ["C0000001"]})
    assert response.status_code == 503 and "not ready" in response.json()["error"]
    assert "NOT READY" in empty.log.read_text() and "advocacy train" in empty.log.read_text()


# ---- last: a restart keeps the asks ---------------------------------------------------------------------


# ---- /plan ----------------------------------------------------------------------------------------------


def test_plan_meets_each_need_with_one_ask_per_customer_and_no_blocked_ask(servers: Servers) -> None:
    need = {"review": 20, "reference_call": 5}
    response = servers.open.post("/plan", {"need": need, "confidence": 0.9, "segment": "enterprise"})
    assert response.status_code == 200, response.text
    body = response.json()
    asks = pd.DataFrame(body["asks"])
    assert asks["customer_id"].is_unique and (asks["plan_id"] == body["plan_id"]).all()
    for ask_type, n in need.items():
        mine = asks[asks["ask_type"] == ask_type]
        summary = body["summary"][ask_type]
        assert summary["met"] and summary["asked"] == len(mine) and summary["need"] == n
        assert mine["p_at_least_needed"].iloc[-1] == pytest.approx(summary["p_at_least_needed"])
        assert summary["p_at_least_needed"] >= 0.9 and mine["reason_1"].notna().all()
    segments = servers.snapshot.features.set_index("customer_id")["segment"].astype(str)
    assert set(segments[asks["customer_id"]]) == {"enterprise"}
    # No planned ask is one a guardrail blocks now (the same book /score reads).
    results = servers.open.post("/score", {"customer_ids": asks["customer_id"].tolist()}).json()["results"]
    blocked = {(r["customer_id"], b["ask_type"]) for r in results for b in r["next_best_ask"]["blocked"]}
    assert not blocked & set(zip(asks["customer_id"], asks["ask_type"], strict=True))
    # The plan is stored under its id, as `advocacy plan` stores its own.
    from storage.plans import PlanStore

    stored, meta = PlanStore(servers.settings.plans_path()).load(body["plan_id"])
    assert stored["customer_id"].tolist() == asks["customer_id"].tolist()
    assert meta["filters"] == {"segment": "enterprise"} and meta["model_version"] == servers.version

    # The asks made from it name the plan; a plan never made is a 400 naming plan_id, nothing stored.
    first = asks.iloc[0]
    ask = {
        "ask_id": f"plan-{uuid.uuid4().hex[:12]}",
        "customer_id": first["customer_id"],
        "ask_type": first["ask_type"],
        "asked_at": datetime.now(UTC).isoformat(),
    }
    made_up = servers.open.post("/asks", {"asks": [{**ask, "plan_id": "f" * 32}]})
    assert made_up.status_code == 400 and detail_names(made_up, "plan_id"), made_up.text
    assert servers.open.post("/asks", {"asks": [{**ask, "plan_id": body["plan_id"]}]}).status_code == 200
    links = AskLog(servers.settings.ask_log_path(), CONTRACTS["asks"]).plan_links()
    assert links.set_index("ask_id").loc[ask["ask_id"], "plan_id"] == body["plan_id"]


def test_asks_survive_a_restart(servers: Servers, asked: dict[str, Any]) -> None:
    servers.open.stop()
    restarted = Server(servers.open.env, servers.open.log, cli=True)
    restarted.launch()
    try:
        restarted.wait()
        result = restarted.post("/score", {"customer_ids": [asked["customer_id"]]}).json()["results"][0]
        _assert_cooling_down(result, asked)
        events = restarted.post("/explain", {"customer_id": asked["customer_id"]}).json()["history"]
        assert sum("recorded through the API" in e["detail"] for e in events) == 1
    finally:
        restarted.stop()
