"""Data contracts: every rule rejects what it should, naming table, column and rule; nothing is written."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy.cli import app
from features.contracts import NAT_MICROS, TIMESTAMP, DataContractError, as_utc, from_micros, to_micros
from features.io import read_world, world_from_tables
from features.pointintime import active_points, build_features
from storage.files import write_tables
from tests.worldkit import raw_tables, utc

Mutation = Callable[[dict[str, pd.DataFrame]], None]


def _set(table: str, column: str, row: int, value: object) -> Mutation:
    def mutate(raw: dict[str, pd.DataFrame]) -> None:
        frame = raw[table].astype(object)
        frame.loc[row, column] = value
        raw[table] = frame

    return mutate


def _duplicate(table: str) -> Mutation:
    def mutate(raw: dict[str, pd.DataFrame]) -> None:
        raw[table] = pd.concat([raw[table], raw[table].iloc[[0]]], ignore_index=True)

    return mutate


def _drop_column(table: str, column: str) -> Mutation:
    def mutate(raw: dict[str, pd.DataFrame]) -> None:
        raw[table] = raw[table].drop(columns=[column])

    return mutate


# (table, column, words the rule's message must contain, mutation)
BROKEN = [
    ("customers", "customer_id", "not_nullable", _set("customers", "customer_id", 0, "")),
    ("customers", "customer_id", "unique", _duplicate("customers")),
    ("customers", "segment", "isin", _set("customers", "segment", 1, "startup")),
    ("customers", "arr", "greater_than_or_equal_to", _set("customers", "arr", 0, -5.0)),
    ("customers", "arr", "finite", _set("customers", "arr", 0, float("inf"))),  # red team defect 14
    ("customers", "contract_start", "ISO 8601 timestamp", _set("customers", "contract_start", 0, "soon")),
    ("customers", "contract_start", "not null", _set("customers", "contract_start", 0, None)),
    ("customers", "segment", "required column", _drop_column("customers", "segment")),
    ("usage", "month", "first_day_of_month", _set("usage", "month", 2, "2025-03-15")),
    ("usage", "licensed_seats", "greater_than_or_equal_to", _set("usage", "licensed_seats", 0, -1)),
    ("usage", "active_users", "coerce_dtype", _set("usage", "active_users", 0, "many")),
    ("usage", "feature_adoption", "in_range", _set("usage", "feature_adoption", 1, 1.2)),
    ("usage", "logins", "greater_than_or_equal_to", _set("usage", "logins", 1, -3)),
    ("usage", "health_score", "in_range", _set("usage", "health_score", 1, 100.5)),
    ("usage", "customer_id", "multiple_fields_uniqueness", _duplicate("usage")),
    ("nps", "score", "in_range", _set("nps", "score", 0, 11)),
    ("nps", "responded_at", "ISO 8601 timestamp", _set("nps", "responded_at", 1, "yesterday-ish")),
    # Red team defects 9, 10, 13, 14: epoch seconds, a day-first date, years outside 1900-2199.
    ("nps", "responded_at", "ISO 8601 timestamp", _set("nps", "responded_at", 1, "1715075390")),
    ("customers", "contract_start", "ISO 8601 timestamp", _set("customers", "contract_start", 0, "13/02/2016")),
    ("nps", "responded_at", "year 1900 to 2199", _set("nps", "responded_at", 1, "2300-01-01")),
    ("customers", "contract_start", "year 1900 to 2199", _set("customers", "contract_start", 0, "1800-01-01")),
    ("tickets", "priority", "isin", _set("tickets", "priority", 0, "critical")),
    ("tickets", "sentiment", "in_range", _set("tickets", "sentiment", 0, 1.5)),
    ("tickets", "csat", "in_range", _set("tickets", "csat", 0, 6)),
    ("social", "sentiment", "in_range", _set("social", "sentiment", 0, -2.0)),
    ("asks", "ask_id", "unique", _duplicate("asks")),
    ("asks", "ask_type", "isin", _set("asks", "ask_type", 0, "podcast")),
    ("asks", "outcome", "isin", _set("asks", "outcome", 0, "maybe")),
    ("asks", "responded_at", "not before asked_at", _set("asks", "responded_at", 0, "2024-01-01")),
    ("activities", "activity_type", "isin", _set("activities", "activity_type", 0, "podcast")),
    ("activities", "activity_id", "unique", _duplicate("activities")),
    ("nps", "customer_id", "exists in customers", _set("nps", "customer_id", 1, "ghost")),
    ("usage", "customer_id", "exists in customers", _set("usage", "customer_id", 0, "ghost")),
]


@pytest.mark.parametrize(("table", "column", "rule", "mutate"), BROKEN, ids=[f"{t}.{c}.{r}" for t, c, r, _ in BROKEN])
def test_each_rule_rejects_bad_rows_naming_table_column_and_rule(
    table: str, column: str, rule: str, mutate: Mutation
) -> None:
    raw = raw_tables()
    mutate(raw)
    with pytest.raises(DataContractError) as caught:
        world_from_tables(raw)
    message = str(caught.value)
    assert caught.value.table == table
    assert f"table '{table}'" in message
    assert f"column '{column}'" in message
    assert rule in message


def test_message_shows_offending_rows() -> None:
    raw = raw_tables()
    raw["nps"] = raw["nps"].assign(score=[11, -1])
    with pytest.raises(DataContractError, match=r"row 0 \(11\), row 1 \(-1\)"):
        world_from_tables(raw)


def test_a_contract_error_crosses_process_boundaries_intact() -> None:
    """Raised in a batch or Dask worker, the error reaches the user with its table and rows."""
    raw = raw_tables()
    raw["nps"] = raw["nps"].assign(score=[11, -1])
    with pytest.raises(DataContractError) as caught:
        world_from_tables(raw)
    back = pickle.loads(pickle.dumps(caught.value))
    assert type(back) is DataContractError
    assert (back.table, back.problems, str(back)) == (caught.value.table, caught.value.problems, str(caught.value))


def test_required_tables_must_exist() -> None:
    raw = raw_tables()
    del raw["usage"]
    with pytest.raises(DataContractError, match="table 'usage': required table is missing"):
        world_from_tables(raw)


def test_optional_tables_may_be_missing_and_mean_no_events() -> None:
    raw = raw_tables()
    for name in ("nps", "tickets", "social", "asks", "activities"):
        del raw[name]
    world = world_from_tables(raw)
    frame = build_features(world, active_points(world, utc("2025-05-01")))
    c1 = frame.set_index("customer_id").loc["c1"]
    assert c1["asks_total"] == 0 and pd.isna(c1["nps_last"]) and c1["tickets_90d"] == 0


def test_time_zones_are_normalised_to_utc_and_extra_columns_ignored() -> None:
    raw = raw_tables()
    raw["nps"] = raw["nps"].assign(responded_at=["2025-01-10T02:00:00+02:00", "2025-03-10"], note=["x", "y"])
    world = world_from_tables(raw)
    assert list(world.nps.columns) == ["customer_id", "responded_at", "score"]
    assert world.nps["responded_at"].iloc[0] == utc("2025-01-10T00:00:00")
    assert str(world.nps["responded_at"].dtype) == "datetime64[us, UTC]"


def test_unknown_categories_are_allowed() -> None:
    raw = raw_tables()
    raw["customers"] = raw["customers"].assign(industry=["space mining", "retail"], plan=["galactic", "pro"])
    world = world_from_tables(raw)
    assert world.customers["industry"].iloc[0] == "space mining"


def test_csv_and_parquet_give_identical_features(tmp_path: Path) -> None:
    world = world_from_tables(raw_tables())
    write_tables(world.as_dict(), tmp_path / "pq", "parquet")
    write_tables(world.as_dict(), tmp_path / "csv", "csv")
    points = active_points(world, utc("2025-05-01"))
    from_parquet = build_features(read_world(tmp_path / "pq"), points)
    from_csv = build_features(read_world(tmp_path / "csv"), points)
    pd.testing.assert_frame_equal(from_parquet, from_csv)


def test_ids_in_csv_keep_leading_zeros(tmp_path: Path) -> None:
    raw = raw_tables()
    raw["customers"] = raw["customers"].assign(customer_id=["007", "c2"])
    for name in ("usage", "nps", "tickets", "social", "asks", "activities"):
        raw[name] = raw[name].assign(customer_id=raw[name]["customer_id"].replace("c1", "007"))
    write_tables(world_from_tables(raw).as_dict(), tmp_path, "csv")
    assert "007" in set(read_world(tmp_path).customers["customer_id"])


def _raw_csv(raw: dict[str, pd.DataFrame], data: Path) -> Path:
    """The raw tables as CSV files, unvalidated (as a user would hand them over)."""
    data.mkdir()
    for name, frame in raw.items():
        frame.to_csv(data / f"{name}.csv", index=False)
    return data


def _features_command(data: Path, out: Path) -> Any:
    return CliRunner().invoke(app, ["features", "--data", str(data), "--as-of", "2025-05-01", "--out", str(out)])


def test_features_command_rejects_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    raw = raw_tables()
    raw["nps"] = raw["nps"].assign(score=[3, 12])
    out = tmp_path / "out" / "features.parquet"
    result = _features_command(_raw_csv(raw, tmp_path / "data"), out)
    assert result.exit_code == 2
    assert "table 'nps'" in result.output and "column 'score'" in result.output
    assert not out.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


def test_features_command_writes_the_table(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tables(world_from_tables(raw_tables()).as_dict(), data, "csv")
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(app, ["features", "--data", str(data), "--as-of", "2025-05-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert sorted(frame["customer_id"]) == ["c1"]  # c2 starts after 2025-05-01


def test_unreadable_timestamp_on_the_command_line_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tables(world_from_tables(raw_tables()).as_dict(), data, "csv")
    result = CliRunner().invoke(
        app, ["features", "--data", str(data), "--as-of", "someday", "--out", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == 2
    assert "--as-of" in result.output


def test_the_one_utc_rule_reads_naive_as_utc_and_converts_aware() -> None:
    assert as_utc("2026-05-15 12:00") == pd.Timestamp("2026-05-15 12:00", tz="UTC")
    assert str(as_utc(pd.Timestamp("2026-05-15 14:00", tz="Europe/Paris")).tz) == "UTC"
    assert as_utc(pd.Timestamp("2026-05-15 14:00", tz="Europe/Paris")) == pd.Timestamp("2026-05-15 12:00", tz="UTC")


def test_micros_round_trip_keeps_nat() -> None:
    times = pd.Series(["2026-05-15T12:00:00.000001", None, "2026-05-15T12:00:00.000000"])  # naive: read as UTC
    micros = to_micros(times)
    assert micros.dtype == np.int64 and micros[1] == NAT_MICROS and micros[0] - micros[2] == 1
    back = from_micros(micros)
    assert str(back.dtype) == TIMESTAMP and pd.isna(back[1])
    assert back[0] == pd.Timestamp("2026-05-15T12:00:00.000001", tz="UTC")


@pytest.mark.parametrize(
    ("column_values", "rule"),
    [
        ([1715075390, 1715075391], "ISO 8601 timestamp, not a number"),  # epoch seconds, read as 1970 before
        (["12/02/2016", "13/02/2016"], "ISO 8601 timestamp"),  # day-first: was guessed row by row
        (["2300-01-01", "2024-05-01"], "year 1900 to 2199"),  # was accepted by features, a crash in train
    ],
)
def test_csv_timestamps_are_read_strictly_or_refused_naming_table_and_column(
    tmp_path: Path, column_values: list[object], rule: str
) -> None:
    raw = raw_tables()
    raw["nps"] = raw["nps"].assign(responded_at=column_values)
    out = tmp_path / "out" / "features.parquet"
    result = _features_command(_raw_csv(raw, tmp_path / "data"), out)
    assert result.exit_code == 2, result.output
    assert "table 'nps'" in result.output and "column 'responded_at'" in result.output and rule in result.output
    assert not out.exists()


def test_iso_timestamps_in_every_form_are_read() -> None:
    raw = raw_tables()
    raw["nps"] = raw["nps"].assign(responded_at=["2025-01-15", "2025-02-15T10:30:00-05:00"])
    nps = world_from_tables(raw).nps
    assert list(nps["responded_at"]) == [utc("2025-01-15"), utc("2025-02-15 15:30")]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("symlink_loop", "not a file"),  # red team defect 11: was read as "no asks"
        ("other_case", "found Asks.parquet"),
        ("folder", "it is a folder"),
    ],
)
def test_a_table_that_is_there_but_unreadable_is_an_error_not_an_absent_table(
    tmp_path: Path, damage: str, words: str
) -> None:
    data = tmp_path / "data"
    write_tables(world_from_tables(raw_tables()).as_dict(), data, "parquet")
    asks = data / "asks.parquet"
    asks.unlink()
    if damage == "symlink_loop":
        asks.symlink_to(asks)
    elif damage == "other_case":
        write_tables({"Asks": raw_tables()["asks"]}, data, "parquet")
    else:
        asks.mkdir()
    with pytest.raises(DataContractError, match=words) as caught:
        read_world(data)
    assert caught.value.table == "asks"
    out = tmp_path / "features.parquet"
    result = _features_command(data, out)
    assert result.exit_code == 2 and "table 'asks'" in result.output and not out.exists()


def test_the_asks_optional_plan_id_is_kept_as_text_and_checked_like_an_id(tmp_path: Path) -> None:
    """Spec 2: an ask may name the campaign it was made for (a CRM export's `plan_id`). Read from CSV
    it stays text ("007" is not 7); an empty cell names no plan; a bad one is refused by name."""
    raw = raw_tables()
    n = len(raw["asks"])
    raw["asks"] = raw["asks"].assign(plan_id=["007", *[""] * (n - 1)])
    data = _raw_csv(raw, tmp_path / "data")
    world = read_world(data)
    assert world.plan_links.to_dict(orient="records") == [{"ask_id": raw["asks"]["ask_id"].iloc[0], "plan_id": "007"}]
    assert list(world.asks.columns) == list(world_from_tables(raw_tables()).asks.columns)  # the table is the same
    for bad, rule in (("x" * 201, "at most 200 characters"), (" p1", "no surrounding spaces")):
        raw["asks"] = raw["asks"].assign(plan_id=[bad, *[None] * (n - 1)])
        named = rf"table 'asks'.*column 'plan_id': rule '{rule}' failed for 1 rows"
        with pytest.raises(DataContractError, match=named):
            world_from_tables(raw)
