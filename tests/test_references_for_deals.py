"""References for a deal (issue 31, spec sections 5 and 9): the command line ranks a deal's references
as its prospect's, refuses an unknown deal or a request naming both or neither in one line; the
deals reach the service's snapshot (an older one without them loads as knowing no deal); and the asks
made for a deal through the API join the table's, where every job reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from advocacy.cli import app
from features.context import WHOLE_TABLES, Snapshot
from features.contracts import CONTRACTS, DataContractError
from features.deals import deal_frame
from features.io import read_world
from models.registry import load_champion
from serving.state import load_state
from storage.asklog import AskLog
from storage.settings import Settings, get_settings
from storage.snapshots import read_snapshot, write_snapshot
from tests.conftest import SAMPLE, TrainedHome
from usecases import ReferenceRequest, Sources, UnknownDealError

ATTRIBUTES = ["industry", "segment", "use_case"]


def _a_deal() -> pd.Series:
    """The sample's first deal whose industry, segment and use case are all known."""
    return read_world(SAMPLE).opportunities.dropna(subset=ATTRIBUTES).iloc[0]


def _references(home: TrainedHome, tmp_path: Path, *args: str) -> Result:
    env = {
        "ADVOCACY_HOME": str(home.settings.home),
        "MLFLOW_TRACKING_URI": home.settings.tracking_uri(),
        "ADVOCACY_ASK_LOG": str(tmp_path / "asks.sqlite"),  # none: only the sample's asks count
        "COLUMNS": "300",
    }
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["references", "--data", str(SAMPLE), *args], env=env)
    get_settings.cache_clear()
    return result


@pytest.mark.slow
def test_the_command_line_ranks_a_deals_references_as_its_prospects(trained_home: TrainedHome, tmp_path: Path) -> None:
    deal = _a_deal()
    by_deal = _references(trained_home, tmp_path, "--opportunity", deal["opportunity_id"], "--k", "8")
    assert by_deal.exit_code == 0, by_deal.output
    form = [arg for name in ATTRIBUTES for arg in (f"--{name.replace('_', '-')}", str(deal[name]))]
    by_form = _references(trained_home, tmp_path, *form, "--k", "8", "--json")
    assert by_form.exit_code == 0, by_form.output
    candidates = json.loads(by_form.stdout)["candidates"]
    assert 1 <= len(candidates) <= 8 and all(c["similarity"] > 0 for c in candidates)
    text = " ".join(by_deal.stdout.split())
    assert f"deal {deal['opportunity_id']}: {deal['industry']} / {deal['segment']} / {deal['use_case']}" in text
    at = [text.find(f" {c['customer_id']} ") for c in candidates]  # the same customers, in the same order
    assert -1 not in at and at == sorted(at), text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--opportunity", "O-no-such-deal"], "unknown opportunity_id: O-no-such-deal"),
        (["--opportunity", "O000001", "--industry", "software"], "opportunity_id and industry: name a deal"),
        ([], "opportunity_id or industry, segment and use_case: name a deal or a prospect"),
        (["--industry", "software", "--segment", "smb"], "use_case: a prospect needs industry, segment and use_case"),
    ],
    ids=["unknown-deal", "both", "neither", "half-a-prospect"],
)
def test_the_command_line_refuses_an_unknown_deal_and_both_or_neither_in_one_line(
    trained_home: TrainedHome, tmp_path: Path, args: list[str], said: str
) -> None:
    result = _references(trained_home, tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.stderr.split())
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_a_snapshot_keeps_the_deals_and_one_written_before_it_did_loads_knowing_none(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, data_dir=SAMPLE, mlflow_tracking_uri=trained_home.settings.tracking_uri())
    store = settings.feature_store_path()
    write_snapshot(served_snapshot.tables(), served_snapshot.meta, store)
    kept = Snapshot.from_tables(*read_snapshot(store))
    for name in WHOLE_TABLES:
        pd.testing.assert_frame_equal(getattr(kept, name), getattr(served_snapshot, name), check_dtype=False)
    assert len(kept.opportunities) == len(read_world(SAMPLE).opportunities) > 0

    older = {name: frame for name, frame in served_snapshot.tables().items() if name not in WHOLE_TABLES}
    write_snapshot(older, served_snapshot.meta, store)
    state = load_state(settings, *load_champion(settings))
    try:
        deal = _a_deal()
        with pytest.raises(UnknownDealError, match=str(deal["opportunity_id"])):
            state.references(ReferenceRequest(opportunity_id=str(deal["opportunity_id"])))
        assert state.references(ReferenceRequest(None, *(str(deal[name]) for name in ATTRIBUTES)))
        customer = str(served_snapshot.features["customer_id"].iloc[0])
        asked = (served_snapshot.as_of - pd.Timedelta(days=1)).isoformat()
        row = {"ask_id": "for-a-deal", "customer_id": customer, "ask_type": "reference_call", "asked_at": asked}
        row |= {"outcome": "no_response", "responded_at": None}  # as `POST /asks` hands its rows over
        with pytest.raises(ValueError, match=f"opportunity_id: no deal '{deal['opportunity_id']}'"):
            state.record_asks([{**row, "opportunity_id": deal["opportunity_id"]}])
        assert state.record_asks([row]) == 1  # an ask for no deal is recorded as before
    finally:
        state.close()


def test_the_logs_deal_links_join_the_tables_where_every_job_reads_them(tmp_path: Path) -> None:
    """An ask recorded for a deal through the API counts for it in the report's per-deal frame; a
    logged link to a deal the data does not hold is left out and counted; a deal changed between
    the table and the log is a contract error naming the ask."""
    world = read_world(SAMPLE)
    linked = set(world.deal_links["opportunity_id"])
    deal = world.opportunities[~world.opportunities["opportunity_id"].isin(linked)].iloc[0]
    asked = deal["created_at"] + pd.Timedelta(days=1)
    customer = str(world.customers["customer_id"].iloc[0])
    ask = {"customer_id": customer, "ask_type": "reference_call", "asked_at": asked, "outcome": "no_response"}
    log = AskLog(tmp_path / "asks.sqlite", CONTRACTS["asks"])
    log.record(
        pd.DataFrame(
            [
                {**ask, "ask_id": "api-1", "opportunity_id": deal["opportunity_id"], "responded_at": None},
                {**ask, "ask_id": "api-2", "opportunity_id": "O-gone", "responded_at": None},
            ]
        )
    )
    sources = Sources(SAMPLE, log.path, tmp_path / "plans")
    read = sources.read()
    links = read.world.deal_links
    assert len(links) == len(world.deal_links) + 1
    assert links.set_index("ask_id").loc["api-1", "opportunity_id"] == deal["opportunity_id"]
    assert read.left_out["left_out.ask_log.naming_a_deal_not_in_the_data"] == 1
    deals = deal_frame(read.world.opportunities, read.world.asks, read.world.activities, links)
    assert deals.set_index("opportunity_id").loc[deal["opportunity_id"], "requested_at"] == asked

    first = world.deal_links.iloc[0]
    table_ask = world.asks.set_index("ask_id").loc[first["ask_id"]]
    other = next(d for d in world.opportunities["opportunity_id"] if d != first["opportunity_id"])
    moved = {**table_ask.to_dict(), "ask_id": first["ask_id"], "opportunity_id": other}
    log.record(pd.DataFrame([moved]))
    with pytest.raises(DataContractError, match=f"ask_id '{first['ask_id']}': opportunity_id is"):
        sources.read()
