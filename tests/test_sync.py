"""`advocacy sync` and the service's background sync (spec section 10), against local CRM servers.

The real clients (`hubspot-api-client`, `simple-salesforce`) talk to servers on 127.0.0.1 that answer
as the vendors document (`tests.crmkit`); nothing of the client libraries is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from advocacy.cli import app
from crm.fields import field_names, salesforce_name, text
from crm.hubspot import HubSpotRetry, outcome
from features.context import Snapshot
from features.contracts import CONTRACTS
from storage.asklog import AskLog
from storage.settings import get_settings
from storage.snapshots import write_snapshot
from storage.syncstate import SyncBusyError, SyncState
from tests.conftest import ROOT, SAMPLE, TrainedHome
from tests.crmkit import (
    ACTIVITY_OBJECT,
    HUBSPOT_TOKEN,
    PROFILE_OBJECT,
    SALESFORCE_TOKEN,
    HubSpotServer,
    SalesforceServer,
)
from usecases.profiles import PROFILE_FIELDS
from usecases.sync import record_hash

# ---- fast: the pieces -----------------------------------------------------------------------------


def test_the_state_resumes_from_its_journal_and_ignores_a_torn_line(tmp_path: Path) -> None:
    state = SyncState(tmp_path, "hubspot")
    assert state.load("hubspot http://a") == {}
    state.acknowledge("profiles", {"C1": "h1", "C2": "h2"})
    with open(state.journal, "a") as handle:  # a sync killed while writing its next line
        handle.write('{"kind": "profiles", "records": {"C3"')
    again = SyncState(tmp_path, "hubspot")
    assert again.load("hubspot http://a") == {"profiles": {"C1": "h1", "C2": "h2"}}
    again.save()
    assert not again.journal.exists()
    assert json.loads(again.path.read_text())["records"] == {"profiles": {"C1": "h1", "C2": "h2"}}


def test_a_state_for_another_destination_is_not_used_and_a_dry_look_changes_nothing(tmp_path: Path) -> None:
    state = SyncState(tmp_path, "hubspot")
    state.load("hubspot http://a")
    state.acknowledge("profiles", {"C1": "h1"})
    state.save()
    other = SyncState(tmp_path, "hubspot")
    assert other.load("hubspot http://b") == {}
    other.save()  # nothing acknowledged for b: a's state stays
    assert SyncState(tmp_path, "hubspot").load("hubspot http://a") == {"profiles": {"C1": "h1"}}
    other.acknowledge("profiles", {"C9": "h9"})
    assert SyncState(tmp_path, "hubspot").load("hubspot http://b") == {"profiles": {"C9": "h9"}}


def test_one_sync_at_a_time(tmp_path: Path) -> None:
    first, second = SyncState(tmp_path, "hubspot"), SyncState(tmp_path, "hubspot")
    with first.locked():
        with pytest.raises(SyncBusyError, match="another sync to hubspot"), second.locked():
            pass
        with SyncState(tmp_path, "salesforce").locked():  # another target is another lock
            pass
    with second.locked():
        pass


def test_a_record_hash_ignores_field_order_and_sees_any_change() -> None:
    a = {"customer_id": "C1", "advocacy_score": 73.5, "churned": False}
    assert record_hash(a) == record_hash(dict(reversed(list(a.items()))))
    assert record_hash(a) != record_hash(a | {"advocacy_score": 73.6})


def test_field_names_and_values() -> None:
    assert salesforce_name("customer_id") == "Customer_Id__c"
    names = field_names({"customer_id": "customer_id", "ask_id": "ask_id"}, "customer_id=acct_key", "ADVOCACY_X")
    assert names == {"customer_id": "acct_key", "ask_id": "ask_id"}
    with pytest.raises(ValueError, match="ADVOCACY_X"):
        field_names({"customer_id": "customer_id"}, "nope=x", "ADVOCACY_X")
    with pytest.raises(ValueError, match="written to 'ask_id'"):
        field_names({"customer_id": "customer_id", "ask_id": "ask_id"}, "customer_id=ask_id", "ADVOCACY_X")
    assert [text(v) for v in (None, True, 3.0, 73.5, 12, "x")] == ["", "true", "3", "73.5", "12", "x"]


def test_a_207_maps_back_to_keys_by_trace_id_or_context() -> None:
    answer = {
        "results": [{"id": "1", "objectWriteTraceId": "C1", "properties": {}}],
        "errors": [{"category": "VALIDATION_ERROR", "message": "bad value", "context": {"ids": ["C2"]}}],
    }
    sent = outcome(answer, ["C1", "C2", "C3"], "customer_id")
    assert sent.acknowledged == ["C1"]
    assert sent.failed["C2"] == "VALIDATION_ERROR: bad value"
    assert "no result" in sent.failed["C3"]


def test_the_retry_waits_as_hubspot_headers_say() -> None:
    class Answer:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    retry = HubSpotRetry(total=3)
    assert retry.get_retry_after(Answer({"Retry-After": "2"})) == 2
    assert retry.get_retry_after(Answer({"X-HubSpot-RateLimit-Interval-Milliseconds": "1500"})) == 1.5
    assert retry.get_retry_after(Answer({})) is None
    assert isinstance(retry.new(total=2), HubSpotRetry)  # urllib3 makes each retry's copy with type(self)


def test_import_files_are_spreadsheet_safe_and_named_for_each_crm(tmp_path: Path) -> None:
    from crm.fields import hubspot_names, salesforce_names
    from crm.files import write_import_files
    from usecases.profiles import churned_profile

    record = churned_profile("C1") | {"top_reasons": '=HYPERLINK("http://x")', "features_as_of": "2026-11-01T00:00:00Z"}
    for target, names in (("hubspot", hubspot_names()), ("salesforce", salesforce_names())):
        written = write_import_files(target, {"profiles": [record], "activities": []}, names, tmp_path)
        assert [p.name for p in written] == [f"{target}-profiles.csv", f"{target}-activities.csv"]
    hubspot = pd.read_csv(tmp_path / "hubspot-profiles.csv", dtype=str, keep_default_na=False)
    salesforce = pd.read_csv(tmp_path / "salesforce-profiles.csv", dtype=str, keep_default_na=False)
    assert hubspot.loc[0, "top_reasons"] == salesforce.loc[0, "Top_Reasons__c"] == '\'=HYPERLINK("http://x")'
    assert hubspot.loc[0, "features_as_of"] == "2026-11-01 00:00:00"
    assert salesforce.loc[0, "Features_As_Of__c"] == "2026-11-01T00:00:00Z"
    assert hubspot.loc[0, "churned"] == "true" and hubspot.loc[0, "advocacy_score"] == ""


def test_the_crm_package_keeps_the_layout_promises() -> None:
    """tests/test_architecture.py and tests/test_public_face.py list their packages; crm/ is checked here."""
    from tests.test_architecture import test_modules_and_functions_stay_small
    from tests.test_public_face import private_imports

    for path in sorted((ROOT / "crm").rglob("*.py")):
        test_modules_and_functions_stay_small(path)
        assert not private_imports(path.read_text(), path), path


# ---- slow: the command and the service, on the trained champion -----------------------------------


def _env(home: TrainedHome, folder: Path, **extra: str) -> dict[str, str]:
    return {
        "ADVOCACY_HOME": str(folder),
        "ADVOCACY_MLFLOW_TRACKING_URI": home.settings.tracking_uri(),
        "MLFLOW_TRACKING_URI": home.settings.tracking_uri(),
        "ADVOCACY_FEATURE_STORE": str(folder / "store"),
        "ADVOCACY_ASK_LOG": str(folder / "asks.sqlite"),
        "ADVOCACY_DATA_DIR": str(SAMPLE),
        "COLUMNS": "200",
        **extra,
    }


def _hubspot_env(server: HubSpotServer) -> dict[str, str]:
    return {
        "ADVOCACY_HUBSPOT_URL": server.url,
        "ADVOCACY_HUBSPOT_TOKEN": HUBSPOT_TOKEN,
        "ADVOCACY_HUBSPOT_PROFILE_OBJECT": PROFILE_OBJECT,
        "ADVOCACY_HUBSPOT_ACTIVITY_OBJECT": ACTIVITY_OBJECT,
    }


def _salesforce_env(server: SalesforceServer) -> dict[str, str]:
    return {
        "ADVOCACY_SALESFORCE_URL": server.url,
        "ADVOCACY_SALESFORCE_TOKEN": SALESFORCE_TOKEN,
        "REQUESTS_CA_BUNDLE": str(server.ca_file),  # requests trusts the test's throwaway CA
    }


def _sync(env: dict[str, str], *args: str) -> Result:
    get_settings.cache_clear()  # each run reads its own environment
    result = CliRunner().invoke(app, ["sync", *args], env=env)
    get_settings.cache_clear()
    return result


def _one_line(result: Result) -> str:
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return " ".join(result.stderr.split())


@pytest.fixture
def home(trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path: Path) -> Path:
    """A fresh project home with the served snapshot published and an empty ask log."""
    write_snapshot(served_snapshot.tables(), served_snapshot.meta, tmp_path / "store")
    return tmp_path


@pytest.fixture(scope="module")
def batch_output(trained_home: TrainedHome, served_snapshot: Snapshot) -> pd.DataFrame:
    """What `advocacy score` writes for the served snapshot's customers (the batch recipe's columns)."""
    from features.io import read_world
    from usecases import load_champion, score_world

    _, bundle = load_champion(trained_home.settings)
    scored = score_world(bundle, read_world(SAMPLE), served_snapshot.as_of)
    return scored.scores.columns().set_index("customer_id")


def _ids(snapshot: Snapshot) -> list[str]:
    return sorted(snapshot.features["customer_id"].astype(str))


def _available(hubspot: HubSpotServer) -> str:
    """A customer whose profile says a reference call may be asked now."""
    return next(k for k, p in sorted(hubspot.records().items()) if p["available_for_references"] == "true")


def _record_ask(home: Path, customer_id: str, ask_id: str, plan_id: str | None = None) -> None:
    asked = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
    row = {"ask_id": ask_id, "customer_id": customer_id, "ask_type": "review", "asked_at": asked}
    row |= {"outcome": "declined", "responded_at": asked + pd.Timedelta(minutes=5)}
    frame = pd.DataFrame([row | ({"plan_id": plan_id} if plan_id else {})])
    AskLog(home / "asks.sqlite", CONTRACTS["asks"]).record(frame)


@pytest.mark.slow
def test_a_first_full_sync_leaves_one_profile_per_customer_as_the_batch_scores_it(
    trained_home: TrainedHome, home: Path, batch_output: pd.DataFrame
) -> None:
    with HubSpotServer().running() as hubspot:
        started = time.perf_counter()
        result = _sync(_env(trained_home, home, **_hubspot_env(hubspot)), "hubspot")
        seconds = time.perf_counter() - started
        assert result.exit_code == 0, result.output
        sizes = [len(ids) for kind, ids in hubspot.sent if kind == PROFILE_OBJECT]
        records = hubspot.records()
    print(f"first full sync of {len(records):,} profiles: {seconds:.1f} s in {len(sizes)} batches")
    assert max(sizes) == 100 and sum(sizes) == len(batch_output) == len(records)
    assert Counter(hubspot.sent_ids()).most_common(1)[0][1] == 1
    tiers = pd.Series({k: p["advocacy_tier"] for k, p in records.items()})
    scores = pd.Series({k: p["advocacy_score"] for k, p in records.items()})
    assert (tiers == batch_output["tier"].reindex(tiers.index)).all()
    expected = batch_output["percentile"].reindex(scores.index).map(lambda v: "" if pd.isna(v) else text(float(v)))
    assert (scores == expected).all()
    one = records[_available(hubspot)]
    assert set(PROFILE_FIELDS) <= set(one) and one["churned"] == "false"
    assert len(one["preferred_activities"].split(";")) == 3 and one["top_reasons"]
    assert "sent" in result.output and f"{len(records):,}" in result.output


@pytest.mark.slow
def test_a_second_sync_sends_nothing_and_a_changed_ask_resends_only_its_profile(
    trained_home: TrainedHome, home: Path
) -> None:
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot))
        assert _sync(env, "hubspot").exit_code == 0
        first = len(hubspot.answers)
        again = _sync(env, "hubspot")
        assert again.exit_code == 0, again.output
        assert len(hubspot.answers) == first  # not one request
        customer = _available(hubspot)
        _record_ask(home, customer, "SYNC-ASK-1", plan_id="PLAN-T1")
        changed = _sync(env, "hubspot")
        assert changed.exit_code == 0, changed.output
        assert hubspot.sent[-2:] == [(PROFILE_OBJECT, [customer]), (ACTIVITY_OBJECT, ["SYNC-ASK-1"])]
        profile = hubspot.records()[customer]
        activity = hubspot.records(ACTIVITY_OBJECT)["SYNC-ASK-1"]
        before = len(hubspot.sent_ids())
        full = _sync(env, "hubspot", "--full")
        full_ids = hubspot.sent_ids()[before:]
    assert profile["available_for_references"] == "false"
    assert profile["unavailable_reason"] in ("ask_cooldown", "decline_pause")
    assert profile["unavailable_until"] > pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    assert activity["customer_id"] == customer and activity["plan_id"] == "PLAN-T1"
    assert activity["outcome"] == "declined" and activity["asked_at"].endswith("Z")
    assert full.exit_code == 0 and len(full_ids) == len(hubspot.records())  # --full: everything again


@pytest.mark.slow
def test_a_429_is_waited_out_as_retry_after_says(trained_home: TrainedHome, home: Path) -> None:
    with HubSpotServer().running() as hubspot:
        hubspot.limited, hubspot.retry_after = 2, "1"
        started = time.perf_counter()
        result = _sync(_env(trained_home, home, **_hubspot_env(hubspot)), "hubspot")
        waited = time.perf_counter() - started
        assert result.exit_code == 0, result.output
        assert hubspot.answers[:3] == [429, 429, 200]
        assert len(hubspot.records()) == len(set(hubspot.sent_ids()))
    assert waited >= 2.0


@pytest.mark.slow
def test_a_207_names_the_refused_record_exits_1_and_it_goes_again_next_time(
    trained_home: TrainedHome, home: Path, served_snapshot: Snapshot
) -> None:
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot))
        victim = _ids(served_snapshot)[4]
        hubspot.refuse = {victim: "Property values were not valid: advocacy_score"}
        result = _sync(env, "hubspot")
        assert result.exit_code == 1
        assert f"refused profile {victim}: VALIDATION_ERROR: Property values were not valid" in _one_line(result)
        assert "refused 1 record(s)" in _one_line(result)
        assert 207 in hubspot.answers and victim not in hubspot.records()
        hubspot.refuse = {}
        retried = _sync(env, "hubspot")
        assert retried.exit_code == 0, retried.output
        assert hubspot.sent[-1] == (PROFILE_OBJECT, [victim])


@pytest.mark.slow
def test_an_interrupted_sync_resumes_without_duplicates(trained_home: TrainedHome, home: Path) -> None:
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot))
        hubspot.fail_after = 7  # the eighth batch and every one after: 500
        broken = _sync(env, "hubspot")
        assert broken.exit_code == 1
        assert "HubSpot refused a batch" in _one_line(broken) and "run the same command again" in _one_line(broken)
        assert len(hubspot.sent_ids()) == 700
        hubspot.fail_after = None
        resumed = _sync(env, "hubspot")
        assert resumed.exit_code == 0, resumed.output
        counts = Counter(hubspot.sent_ids())
        records = hubspot.records()
    assert max(counts.values()) == 1  # nothing acknowledged was sent twice
    assert len(records) == len(counts) == len(hubspot.objects[PROFILE_OBJECT].records)


@pytest.mark.slow
def test_a_sync_killed_half_way_resumes_and_ends_with_no_duplicate(trained_home: TrainedHome, home: Path) -> None:
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot))
        hubspot.stall_after = 9  # the tenth batch is written, and its answer never comes
        command = subprocess.Popen(
            [sys.executable, "-m", "advocacy", "sync", "hubspot"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while len(hubspot.sent) < 10 and time.monotonic() < deadline and command.poll() is None:
                time.sleep(0.05)
            assert len(hubspot.sent) == 10, "the sync never reached its tenth batch"
        finally:
            command.kill()
            command.wait()
        hubspot.stall_after = None
        hubspot.release.set()
        resumed = _sync(env, "hubspot")
        assert resumed.exit_code == 0, resumed.output
        counts = Counter(hubspot.sent_ids())
        records = hubspot.objects[PROFILE_OBJECT].records
    again = [key for key, n in counts.items() if n > 1]
    assert len(again) == 100  # only the batch whose answer was lost went twice: the first nine were kept
    assert len(records) == len(counts) == len(hubspot.records())  # one record per customer


@pytest.mark.slow
def test_a_non_unique_id_property_is_refused_in_one_line(trained_home: TrainedHome, home: Path) -> None:
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot), ADVOCACY_HUBSPOT_FIELDS="customer_id=name")
        result = _sync(env, "hubspot")
    assert result.exit_code == 1
    assert "non-unique 2-1001 property name" in _one_line(result) and not hubspot.records()


@pytest.mark.slow
def test_a_churned_customer_is_marked_churned_and_unavailable(
    trained_home: TrainedHome, home: Path, served_snapshot: Snapshot
) -> None:
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot))
        assert _sync(env, "hubspot").exit_code == 0
        gone = _available(hubspot)
        left = Snapshot(
            served_snapshot.features[served_snapshot.features["customer_id"] != gone].reset_index(drop=True),
            served_snapshot.asks,
            served_snapshot.history,
            served_snapshot.meta | {"customers": len(served_snapshot.features) - 1},
        )
        write_snapshot(left.tables(), left.meta, home / "store")
        result = _sync(env, "hubspot")
        assert result.exit_code == 0, result.output
        assert hubspot.sent[-1] == (PROFILE_OBJECT, [gone])
        profile = hubspot.records()[gone]
        asked = len(hubspot.answers)
        assert _sync(env, "hubspot").exit_code == 0 and len(hubspot.answers) == asked  # sent once
    assert profile["churned"] == "true" and profile["advocacy_tier"] == "churned"
    assert profile["available_for_references"] == "false" and profile["unavailable_reason"] == "churned"
    assert profile["advocacy_score"] == profile["top_reasons"] == profile["model_version"] == ""


@pytest.mark.slow
def test_with_data_a_customer_who_left_since_the_snapshot_is_sent_churned(
    trained_home: TrainedHome, home: Path
) -> None:
    data = home / "data"
    data.mkdir()
    for table in SAMPLE.glob("*.parquet"):
        (data / table.name).symlink_to(table)
    customers = pd.read_parquet(SAMPLE / "customers.parquet")
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot))
        assert _sync(env, "hubspot", "--data", str(data)).exit_code == 0  # nobody left since: as without --data
        assert not any(p["churned"] == "true" for p in hubspot.records().values())
        leaver = _available(hubspot)
        yesterday = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=1)
        customers.loc[customers["customer_id"] == leaver, "churned_at"] = yesterday
        (data / "customers.parquet").unlink()
        customers.to_parquet(data / "customers.parquet", index=False)
        result = _sync(env, "hubspot", "--data", str(data))
        assert result.exit_code == 0, result.output
        assert hubspot.sent[-1] == (PROFILE_OBJECT, [leaver])
        profile = hubspot.records()[leaver]
    assert profile["churned"] == "true" and profile["available_for_references"] == "false"


@pytest.mark.slow
def test_salesforce_bulk_jobs_report_a_failed_and_an_unprocessed_record(
    trained_home: TrainedHome, home: Path, served_snapshot: Snapshot
) -> None:
    ids = _ids(served_snapshot)
    first, asker, refused, stopped = ids[0], ids[1], ids[4], ids[-10]
    with SalesforceServer(home).running() as salesforce:
        env = _env(trained_home, home, **_salesforce_env(salesforce))
        _record_ask(home, asker, "SF-ASK-1", plan_id="PLAN-SF")
        salesforce.refuse = {refused: "FIELD_CUSTOM_VALIDATION_EXCEPTION:score out of range:Advocacy_Score__c --"}
        salesforce.stop_at = {stopped}
        result = _sync(env, "salesforce")
        assert result.exit_code == 1
        said = _one_line(result)
        assert f"refused profile {refused}: FIELD_CUSTOM_VALIDATION_EXCEPTION" in said
        assert f"refused profile {stopped}: unprocessed: job" in said and "ended Failed" in said
        jobs = list(salesforce.jobs.values())
        assert [(j.object, j.external, j.state) for j in jobs] == [
            ("Advocate_Profile__c", "Customer_Id__c", "Failed"),
            ("Advocacy_Activity__c", "Ask_Id__c", "JobComplete"),
        ]
        stored = salesforce.records()
        assert refused not in stored and stopped not in stored and first in stored
        assert salesforce.records("Advocacy_Activity__c")["SF-ASK-1"]["Plan_Id__c"] == "PLAN-SF"
        assert stored[first]["Advocacy_Tier__c"]
        missing = {row["Customer_Id__c"] for row in jobs[0].failed + jobs[0].unprocessed}
        salesforce.refuse, salesforce.stop_at = {}, set()
        resumed = _sync(env, "salesforce")
        assert resumed.exit_code == 0, resumed.output
        again = list(salesforce.jobs.values())[2:]
        assert [j.object for j in again] == ["Advocate_Profile__c"]
        assert {row["Customer_Id__c"] for row in again[0].successful} == missing


@pytest.mark.slow
def test_a_dry_run_sends_nothing_and_says_what_it_would(trained_home: TrainedHome, home: Path) -> None:
    with HubSpotServer().running() as hubspot:
        env = _env(trained_home, home, **_hubspot_env(hubspot))
        env.pop("ADVOCACY_HUBSPOT_TOKEN")  # a dry run needs no token
        result = _sync(env, "hubspot", "--dry-run")
        assert result.exit_code == 0, result.output
        assert hubspot.answers == []
    assert "dry run, nothing sent" in result.output and "would send" in result.output
    assert "profiles to send: C" in " ".join(result.output.split())
    assert not (home / ".advocacy" / "sync" / "hubspot.json").exists()


@pytest.mark.slow
def test_to_csv_writes_each_crms_import_files(trained_home: TrainedHome, home: Path) -> None:
    env = _env(trained_home, home)  # no CRM settings needed
    for target in ("hubspot", "salesforce"):
        result = _sync(env, target, "--to-csv", str(home / "out"))
        assert result.exit_code == 0, result.output
    hubspot = pd.read_csv(home / "out" / "hubspot-profiles.csv", dtype=str, keep_default_na=False)
    salesforce = pd.read_csv(home / "out" / "salesforce-profiles.csv", dtype=str, keep_default_na=False)
    assert list(hubspot.columns) == list(PROFILE_FIELDS)
    assert list(salesforce.columns)[:2] == ["Customer_Id__c", "Advocacy_Tier__c"]
    assert len(hubspot) == len(salesforce) > 1000
    assert (hubspot["customer_id"] == salesforce["Customer_Id__c"]).all()
    assert hubspot["features_as_of"].str.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$").all()
    assert salesforce["Features_As_Of__c"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()
    for name in ("hubspot-activities.csv", "salesforce-activities.csv"):
        assert (home / "out" / name).read_text().count("\n") == 1  # the header: no campaign asks yet


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "unset", "named"),
    [
        (["pipedrive"], None, "unknown CRM 'pipedrive': sync to hubspot or salesforce"),
        (["hubspot"], "ADVOCACY_HUBSPOT_TOKEN", "ADVOCACY_HUBSPOT_TOKEN is not set"),
        (["hubspot"], "ADVOCACY_HUBSPOT_PROFILE_OBJECT", "ADVOCACY_HUBSPOT_PROFILE_OBJECT is not set"),
        (["hubspot", "--to-csv", "x", "--dry-run"], None, "--to-csv writes every record to files"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    trained_home: TrainedHome, tmp_path: Path, args: list[str], unset: str | None, named: str
) -> None:
    env: dict[str, Any] = _env(trained_home, tmp_path, **_hubspot_env(HubSpotServer()))
    if unset:
        env[unset] = ""
    result = _sync(env, *args)
    assert result.exit_code == 2, result.output
    assert named in _one_line(result) and len(result.stderr.strip().splitlines()) == 1
    assert HUBSPOT_TOKEN not in result.output


@pytest.mark.slow
@pytest.mark.server
def test_the_service_syncs_a_recorded_ask_to_the_crm_within_the_interval(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path: Path
) -> None:
    from tests.serverkit import Server, service_env

    seconds = 5
    with HubSpotServer().running() as hubspot:
        extra = _hubspot_env(hubspot) | {
            "ADVOCACY_HOME": str(tmp_path),
            "ADVOCACY_MLFLOW_TRACKING_URI": trained_home.settings.tracking_uri(),
            "ADVOCACY_SYNC_TARGET": "hubspot",
            "ADVOCACY_SYNC_SECONDS": str(seconds),
        }
        env = service_env(trained_home, tmp_path / "serve", served_snapshot, **extra)
        customer = _available_in(served_snapshot)
        service = Server(env, tmp_path / "server.log")
        with service.running() as server:
            asked = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
            ask = {"ask_id": "SVC-ASK-1", "customer_id": customer, "ask_type": "review"}
            ask |= {"asked_at": asked.isoformat(), "outcome": "no_response", "responded_at": None}
            started = time.monotonic()
            answer = server.post("/asks", {"asks": [ask]})
            assert answer.status_code == 200, answer.text
            while customer not in hubspot.records() and time.monotonic() - started < seconds + 5:
                time.sleep(0.1)
            reached = time.monotonic() - started
        log = service.output()  # whole: the server is stopped
        profile = hubspot.records().get(customer)
    print(f"a recorded ask reached the CRM in {reached:.2f} s (ADVOCACY_SYNC_SECONDS={seconds})")
    assert profile is not None, log[-3000:]
    assert reached <= seconds
    assert profile["available_for_references"] == "false" and profile["unavailable_reason"] == "ask_cooldown"
    assert hubspot.sent == [(PROFILE_OBJECT, [customer])]  # only the customer whose ask was recorded
    assert HUBSPOT_TOKEN not in log and "CRM sync to hubspot" in log


def _available_in(snapshot: Snapshot) -> str:
    """A customer of the snapshot no guardrail keeps from a reference call now (no ask in 30 days, healthy)."""
    features = snapshot.features
    asked = snapshot.asks.groupby("customer_id")["asked_at"].max()
    quiet = asked.reindex(features["customer_id"]).isna().to_numpy()
    healthy = (features["health_score"] > 60).to_numpy() & features["last_urgent_ticket_at"].isna().to_numpy()
    return str(features.loc[quiet & healthy, "customer_id"].iloc[0])
