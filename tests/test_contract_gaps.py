"""Contract gaps the third red team found (issue 33, items 1 and 6), each closed at the rule's one home:
the API reads times by the tables' rule; integers, ids, churn dates, activities and table files are
checked by the contract, wherever the data comes in (a command, the batch job, the service)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import batch
from advocacy.cli import app
from batch.tables import file_logged_asks, split_tables
from features.contracts import (
    CONTRACTS,
    MAX_ID_LENGTH,
    DataContractError,
    read_timestamp,
)
from features.io import read_world, table_files, world_from_tables
from features.keys import activity_ask_failures, check_activity_asks
from features.spec import FEATURE_NAMES
from models.registry import load_champion
from serving.schemas import AsksRequest, Id, ScoreFeaturesRequest
from storage.asklog import AskLog
from storage.files import write_tables
from tests.conftest import SAMPLE, TrainedHome
from tests.worldkit import raw_tables, utc
from usecases import Sources, describe_left_out, make_report
from usecases.asks import asks_frame
from usecases.plans import base_from_sources

# ---- item 1: the API reads a time as the tables do, never a number as an epoch time -----------------

NUMBERS = [0, 86400, "86400", 1700000000, "1700000000", 1700000000000, "1700000000000", 1.5, True, "0"]
ASK = {"ask_id": "x1", "customer_id": "c1", "ask_type": "review", "asked_at": "2025-03-01T00:00:00Z"}


@pytest.mark.parametrize("value", NUMBERS, ids=[repr(v) for v in NUMBERS])
def test_the_contract_reads_no_number_as_a_time(value: object) -> None:
    with pytest.raises(ValueError, match=r"column 'asked_at': rule 'ISO 8601 timestamp"):
        read_timestamp("asked_at", value)


def test_the_contract_reads_iso_text_naive_as_utc_and_keeps_its_years() -> None:
    assert read_timestamp("asked_at", "2025-03-01") == utc("2025-03-01")
    assert read_timestamp("asked_at", "2025-03-01T10:00:00+02:00") == utc("2025-03-01 08:00")
    assert read_timestamp("asked_at", pd.Timestamp("2025-03-01 10:00")) == utc("2025-03-01 10:00")
    for bad, rule in (("2300-01-01", "year 1900 to 2199"), ("", "not null"), (None, "not null"), ([1], "ISO")):
        with pytest.raises(ValueError, match=rf"column 'asked_at': rule '{rule}"):
            read_timestamp("asked_at", bad)


@pytest.mark.parametrize("field", ["asked_at", "responded_at"])
@pytest.mark.parametrize("value", NUMBERS, ids=[repr(v) for v in NUMBERS])
def test_post_asks_refuses_numbers_as_times_naming_the_field(field: str, value: object) -> None:
    ask = {**ASK, "outcome": "accepted", "responded_at": ASK["asked_at"], field: value}
    with pytest.raises(ValidationError) as caught:
        AsksRequest.model_validate({"asks": [ask]})
    [error] = caught.value.errors()
    assert error["loc"] == ("asks", 0, field) and "ISO 8601 timestamp" in error["msg"]
    with pytest.raises(ValidationError):  # JSON numbers too, as the service parses them
        AsksRequest.model_validate_json(json.dumps({"asks": [ask]}))


def test_post_asks_reads_iso_text_and_the_rows_still_make_an_asks_frame() -> None:
    body = AsksRequest.model_validate(
        {"asks": [ASK, {**ASK, "ask_id": "x2", "asked_at": "2025-03-01T10:00:00+02:00", "responded_at": None}]}
    )
    frame = asks_frame([a.model_dump() for a in body.asks])
    assert list(frame["asked_at"]) == [utc("2025-03-01"), utc("2025-03-01 08:00")]
    assert frame["responded_at"].isna().all()
    with pytest.raises(ValidationError, match=r"years? 1900 to 2199"):
        AsksRequest.model_validate({"asks": [{**ASK, "asked_at": "2300-01-01"}]})


@pytest.mark.parametrize("field", ["as_of", "last_urgent_ticket_at"])
@pytest.mark.parametrize("value", [0, "86400", 1700000000000, False])
def test_score_features_refuses_numbers_as_times_naming_the_field(field: str, value: object) -> None:
    record: dict[str, Any] = dict.fromkeys(FEATURE_NAMES) | {field: value}
    with pytest.raises(ValidationError) as caught:
        ScoreFeaturesRequest.model_validate({"records": [record]})
    [error] = caught.value.errors()
    assert error["loc"] == ("records", 0, field) and "ISO 8601 timestamp" in error["msg"]
    ok = ScoreFeaturesRequest.model_validate({"records": [{**record, field: "2025-03-01"}]})
    assert getattr(ok.records[0], field) == utc("2025-03-01")


# ---- item 6a: one file per table ----------------------------------------------------------------


def test_a_table_in_both_parquet_and_csv_is_refused_naming_both(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tables(world_from_tables(raw_tables()).as_dict(), data, "parquet")
    write_tables({"nps": raw_tables()["nps"]}, data, "csv")
    for read in (read_world, table_files):
        with pytest.raises(DataContractError, match=r"nps\.parquet and nps\.csv") as caught:
            read(data)
        assert caught.value.table == "nps" and "one file per table" in str(caught.value)
    assert batch.table_files is table_files  # the batch job finds its files the same way


# ---- item 6b: integers are whole numbers -----------------------------------------------------------


def _with(table: str, column: str, values: list[object]) -> dict[str, pd.DataFrame]:
    raw = raw_tables()
    raw[table] = raw[table].astype(object).assign(**{column: values})
    return raw


INTEGERS = [
    ("nps", "score", [7.5, 9], "integer, not a fraction", "row 0 (7.5)"),
    ("nps", "score", [True, 9], "integer, not a boolean", "row 0 (True)"),
    ("nps", "score", ["7.5", "9"], "integer, not a fraction", "row 0 ('7.5')"),
    ("usage", "logins", [1, 2, 3.25, 4, 5], "integer, not a fraction", "row 2 (3.25)"),
    ("usage", "licensed_seats", [10, 10, 10, False, 5], "integer, not a boolean", "row 3 (False)"),
    ("tickets", "csat", [4.5, None], "integer, not a fraction", "row 0 (4.5)"),
]


@pytest.mark.parametrize(("table", "column", "values", "rule", "rows"), INTEGERS)
def test_integer_columns_refuse_fractions_and_booleans(
    table: str, column: str, values: list[object], rule: str, rows: str
) -> None:
    with pytest.raises(DataContractError) as caught:
        world_from_tables(_with(table, column, values))
    assert caught.value.table == table
    assert f"column '{column}': rule '{rule}' failed for 1 rows, e.g. {rows}" in str(caught.value)


def test_every_integer_column_is_checked() -> None:
    found = {(name, c) for name, contract in CONTRACTS.items() for c in contract.integers}
    assert found == {
        ("usage", "licensed_seats"),
        ("usage", "active_users"),
        ("usage", "logins"),
        ("nps", "score"),
        ("tickets", "csat"),
    }
    assert world_from_tables(_with("nps", "score", [7.0, 9.0])).nps["score"].tolist() == [7, 9]  # whole floats


def test_booleans_in_a_parquet_integer_column_are_refused(tmp_path: Path) -> None:
    raw = world_from_tables(raw_tables()).as_dict()
    raw["nps"] = raw["nps"].assign(score=[True, False])  # a bool column, as Parquet keeps it
    write_tables(raw, tmp_path, "parquet")
    with pytest.raises(DataContractError, match=r"column 'score': rule 'integer, not a boolean' failed for 2 rows"):
        read_world(tmp_path)


def test_a_timestamp_column_of_booleans_or_blank_text_is_refused_not_a_crash_or_a_null() -> None:
    for values, rule in (([True, False], "ISO 8601 timestamp, not a number"), (["2025-01-10", " "], "not null")):
        raw = raw_tables()
        raw["nps"] = raw["nps"].assign(responded_at=values)
        with pytest.raises(DataContractError, match=rf"column 'responded_at': rule '{rule}' failed"):
            world_from_tables(raw)


def _split(data: Path, work: Path, logged: pd.DataFrame | None = None) -> None:
    """The batch job's stage 1 (`batch.job._split`): the tables split by customer, then the ask log's asks."""
    split = split_tables(table_files(data), work, chunk_size=1)
    file_logged_asks(CONTRACTS["asks"].empty() if logged is None else logged, work, split.n_chunks)


def _split_error(data: Path, work: Path) -> str:
    with pytest.raises(DataContractError) as caught:
        _split(data, work)
    return str(caught.value)


def test_the_batch_job_refuses_a_fraction_with_the_same_words(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tables(_with("nps", "score", [9, 7.5]), data, "csv")  # a CSV reader gives floats: 9.0, 7.5
    with pytest.raises(DataContractError) as caught:
        read_world(data)
    assert "column 'score': rule 'integer, not a fraction' failed for 1 rows, e.g. row 1 (7.5)" in str(caught.value)
    assert _split_error(data, tmp_path / "work") == str(caught.value)


# ---- item 6c: an activity delivers its own customer's ask, made before it ------------------------

BAD_ACTIVITIES = [
    (
        "unknown-ask",
        {"ask_id": "a9"},
        "column 'ask_id': rule 'an ask of the same customer' failed for 1 rows, e.g. row 0 ('a9')",
    ),
    (
        "another-customer's-ask",
        {"customer_id": "c2", "occurred_at": "2025-07-01"},
        "column 'ask_id': rule 'an ask of the same customer' failed for 1 rows, e.g. row 0 ('a3')",
    ),
    (
        "before-its-ask",
        {"occurred_at": "2025-03-30"},
        "column 'occurred_at': rule 'not before its ask's asked_at' failed for 1 rows, e.g. row 0",
    ),
]


def _activities(raw: dict[str, pd.DataFrame], change: dict[str, object]) -> dict[str, pd.DataFrame]:
    raw["activities"] = raw["activities"].assign(**change)
    return raw


@pytest.mark.parametrize(("case", "change", "words"), BAD_ACTIVITIES, ids=[c for c, _, _ in BAD_ACTIVITIES])
def test_an_activity_must_deliver_its_own_customers_earlier_ask(
    case: str, change: dict[str, object], words: str
) -> None:
    world = world_from_tables(_activities(raw_tables(), change))
    with pytest.raises(DataContractError) as caught:
        check_activity_asks(world.activities, world.asks)
    assert caught.value.table == "activities" and words in str(caught.value)
    good = world_from_tables(raw_tables())
    check_activity_asks(good.activities, good.asks)
    unsolicited = world_from_tables(_activities(raw_tables(), {**change, "ask_id": None}))
    assert activity_ask_failures(unsolicited.activities, unsolicited.asks) == []


def _sources(tmp_path: Path, raw: dict[str, pd.DataFrame]) -> Sources:
    data = tmp_path / "data"
    write_tables(raw, data, "csv")
    return Sources(data, tmp_path / "asks.sqlite", tmp_path / "plans")


@pytest.mark.parametrize(("case", "change", "words"), BAD_ACTIVITIES, ids=[c for c, _, _ in BAD_ACTIVITIES])
def test_every_reader_refuses_such_an_activity_with_the_same_words(
    tmp_path: Path, case: str, change: dict[str, object], words: str
) -> None:
    sources = _sources(tmp_path, _activities(raw_tables(), change))
    with pytest.raises(DataContractError) as caught:
        sources.read()
    assert caught.value.table == "activities" and words in str(caught.value)
    assert _split_error(sources.data_dir, tmp_path / "work") == str(caught.value)  # the batch job's split


def test_an_activity_may_deliver_an_ask_recorded_only_in_the_ask_log(tmp_path: Path) -> None:
    raw = raw_tables()
    raw["asks"] = raw["asks"][raw["asks"]["ask_id"] != "a3"]  # a3 was recorded through POST /asks
    sources = _sources(tmp_path, raw)
    with pytest.raises(DataContractError, match="rule 'an ask of the same customer'"):
        sources.read()
    a3 = raw_tables()["asks"].iloc[[2]].to_dict("records")
    AskLog(sources.ask_log_path, CONTRACTS["asks"]).record(asks_frame([{**a3[0], "plan_id": None}]))
    assert "a3" in set(sources.read().world.asks["ask_id"])
    _split(sources.data_dir, tmp_path / "work", sources.logged_asks())  # the batch job counts the log's too


def _sample_with(tmp_path: Path, table: str, change: Any) -> Path:
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("truth"))
    frame = pd.read_parquet(data / f"{table}.parquet")
    change(frame).to_parquet(data / f"{table}.parquet", index=False)
    return data


def _invoke(home: TrainedHome, tmp_path: Path, *args: str) -> Any:
    """`advocacy ARGS` with the trained champion; nothing it might write lands in the shared home."""
    env = home.env(ADVOCACY_FEATURE_STORE=str(tmp_path / "store"), COLUMNS="300")
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.slow
def test_score_and_plan_exit_2_in_one_line_on_an_activity_of_another_customers_ask(
    trained_home: TrainedHome, tmp_path: Path
) -> None:
    def steal(activities: pd.DataFrame) -> pd.DataFrame:
        solicited = activities[activities["ask_id"].notna()]
        first = solicited.index[0]
        other = solicited.loc[solicited["customer_id"] != solicited.loc[first, "customer_id"], "ask_id"].iloc[0]
        return activities.assign(ask_id=activities["ask_id"].where(activities.index != first, other))

    data = _sample_with(tmp_path, "activities", steal)
    out = tmp_path / "out" / "scores.parquet"
    commands = [
        ["score", "--data", str(data), "--out", str(out), "--as-of", "2026-10-01"],
        ["plan", "--data", str(data), "--need", "review=3"],
    ]
    for command in commands:
        result = _invoke(trained_home, tmp_path, *command)
        assert result.exit_code == 2, result.output
        line = " ".join(result.stderr.split())
        assert line.startswith("error: table 'activities': column 'ask_id': rule 'an ask of the same customer'")
        assert len(result.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "store").exists()


# ---- item 6d: churned before the contract started -------------------------------------------------


def test_churned_before_the_contract_started_is_refused() -> None:
    raw = raw_tables()
    raw["customers"] = raw["customers"].assign(churned_at=["2023-12-31", None])
    with pytest.raises(DataContractError) as caught:
        world_from_tables(raw)
    assert caught.value.table == "customers"
    assert "column 'churned_at': rule 'not before contract_start' failed for 1 rows, e.g. row 0" in str(caught.value)
    raw["customers"] = raw["customers"].assign(churned_at=["2024-01-15", None])  # the same day: a short contract
    assert world_from_tables(raw).customers["churned_at"].notna().sum() == 1


# ---- item 6e: ids the API can ask for ------------------------------------------------------------

ID_COLUMNS = [
    ("customers", "customer_id", 0),
    ("usage", "customer_id", 4),
    ("asks", "ask_id", 1),
    ("activities", "activity_id", 0),
    ("activities", "ask_id", 0),
]


@pytest.mark.parametrize(("table", "column", "row"), ID_COLUMNS)
@pytest.mark.parametrize(
    ("value", "rule"),
    [(" c1", "no surrounding spaces"), ("c1 ", "no surrounding spaces"), ("x" * 201, "at most 200 characters")],
    ids=["leading-space", "trailing-space", "too-long"],
)
def test_ids_with_spaces_around_or_longer_than_the_api_takes_are_refused(
    table: str, column: str, row: int, value: str, rule: str
) -> None:
    raw = raw_tables()
    frame = raw[table].copy()
    frame.loc[row, column] = value
    raw[table] = frame
    with pytest.raises(DataContractError) as caught:
        world_from_tables(raw)
    assert caught.value.table == table
    assert f"column '{column}': rule '{rule}' failed for 1 rows, e.g. row {row}" in str(caught.value)


def test_the_api_and_the_tables_share_one_id_limit() -> None:
    assert MAX_ID_LENGTH == 200
    assert [m.max_length for m in Id.__metadata__ if hasattr(m, "max_length")] == [MAX_ID_LENGTH]
    longest = "x" * MAX_ID_LENGTH
    raw = raw_tables()
    raw["asks"] = raw["asks"].assign(ask_id=[longest, "a2", "a3"])
    assert longest in set(world_from_tables(raw).asks["ask_id"])
    AsksRequest.model_validate({"asks": [{**ASK, "ask_id": longest}]})
    with pytest.raises(ValidationError):
        AsksRequest.model_validate({"asks": [{**ASK, "ask_id": longest + "x"}]})


# ---- item 6f: a row dated in 2150 moves no command's "as of" ------------------------------------


def _nps_in_2150(frame: pd.DataFrame) -> pd.DataFrame:
    late = frame.iloc[[0]].assign(responded_at=pd.Timestamp("2150-01-01", tz="UTC"))
    return pd.concat([frame, late], ignore_index=True)


def _as_of_line(output: str) -> str:
    return next(line for line in output.splitlines() if " as of " in line)


@pytest.mark.slow
def test_one_response_dated_2150_moves_no_default_as_of_and_is_left_out(
    trained_home: TrainedHome, tmp_path: Path
) -> None:
    data = _sample_with(tmp_path, "nps", _nps_in_2150)
    sources = Sources(data, tmp_path / "asks.sqlite", tmp_path / "plans")
    read = sources.read()
    assert read.left_out == {"left_out.nps.dated_in_the_future": 1}
    assert describe_left_out(read.left_out) == ["nps: 1 rows dated in the future"]
    assert read.data_end == Sources(SAMPLE, tmp_path / "asks.sqlite", tmp_path / "plans").read().data_end
    bundle = load_champion(trained_home.settings)[1]
    assert base_from_sources(bundle, sources, None).as_of == read.data_end  # `advocacy plan`'s default
    report = make_report(sources).report  # `advocacy report`'s period, and what it says it left out
    assert report.until == read.data_end and report.left_out == {"nps rows dated in the future": 1}
    for command in (["explain", "C0000001"], ["baseline"]):
        shown = []
        for folder in (SAMPLE, data):
            result = _invoke(trained_home, tmp_path, *command, "--data", str(folder))
            assert result.exit_code == 0, result.output
            shown.append(_as_of_line(result.stdout))
        assert shown[0] == shown[1] and f"as of {read.data_end:%Y-%m-%d}" in shown[0]
    for command in (
        ["explain", "C0000001"],
        ["plan", "--need", "review=5"],
        ["baseline"],
    ):  # and say what they left out
        result = _invoke(trained_home, tmp_path, *command, "--data", str(data))
        assert result.exit_code == 0 and "Left out: 1 nps rows dated in the future" in result.stdout, result.output


def test_an_activity_delivering_an_ask_left_out_for_its_future_date_is_left_out_with_it(tmp_path: Path) -> None:
    """An ask answered in 2099 cannot have happened yet and is left out; the activity that names it
    would then name an ask the data does not have, so it goes too, counted, not a contract error."""
    activities = pd.read_parquet(SAMPLE / "activities.parquet")
    ask_id = activities["ask_id"].dropna().iloc[0]

    def answered_in_2099(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[frame["ask_id"] == ask_id, "responded_at"] = pd.Timestamp("2099-01-01", tz="UTC")
        return frame

    data = _sample_with(tmp_path, "asks", answered_in_2099)
    read = Sources(data, tmp_path / "asks.sqlite", tmp_path / "plans").read()
    named = (activities["ask_id"] == ask_id).sum()
    assert read.left_out == {
        "left_out.asks.dated_in_the_future": 1,
        "left_out.activities.delivering_an_ask_left_out": int(named),
    }
    assert ask_id not in set(read.world.activities["ask_id"].dropna())
