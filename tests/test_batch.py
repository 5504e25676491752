"""The batch job (`advocacy score`): same answers as the API, chunking changes nothing, engines agree,
a killed run resumes to the same bytes, bad input writes nothing, and fast reasons equal exact ones."""

from __future__ import annotations

import filecmp
import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import batch
from batch.tables import frame_digest
from features.catalog import ASK_TYPE_NAMES
from features.context import Snapshot, build_snapshot, guardrail_signals
from features.contracts import DataContractError
from features.io import read_world
from features.pointintime import active_points, build_features
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES
from models.drift import drift_counts, drift_from_counts
from models.explain_fast import PatternTreeShap
from models.guardrails import GuardrailConfig, blocked_asks
from models.reasons import reason_text, signed_top, signed_tops, top_indices, worded_by_value
from models.registry import load_champion
from models.scoring import Blocked, score
from storage.files import write_tables
from storage.settings import Settings
from storage.snapshots import read_snapshot
from tests.conftest import SAMPLE, TrainedHome
from usecases import Sources

AS_OF = pd.Timestamp("2026-10-01", tz="UTC")
CHUNK = 250  # 12 chunks on the 3,000-customer sample


def _settings(home: TrainedHome, store: Path) -> Settings:
    return home.settings.model_copy(update={"feature_store": store})


def _run(home: TrainedHome, tmp: Path, name: str, **kwargs: Any) -> batch.BatchResult:
    kwargs.setdefault("chunk_size", CHUNK)
    kwargs.setdefault("track", False)
    return batch.run_batch(_settings(home, tmp / "store"), SAMPLE, tmp / name, as_of=AS_OF, **kwargs)


@pytest.fixture(scope="module")
def world() -> Any:
    return read_world(SAMPLE)


@pytest.fixture(scope="module")
def clean(trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory) -> batch.BatchResult:
    """One uninterrupted local run on the sample, with reasons, snapshot and MLflow tracking; two
    worker processes score the chunks side by side."""
    tmp = tmp_path_factory.mktemp("batch")
    return _run(trained_home, tmp, "scores.parquet", track=True, workers=2)


@pytest.fixture(scope="module")
def bundle(trained_home: TrainedHome) -> Any:
    return load_champion(trained_home.settings)[1]


# ---- the output ------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_row_per_active_customer_with_the_spec_columns(clean: batch.BatchResult, world: Any) -> None:
    out = pd.read_parquet(clean.out)
    active = active_points(world, AS_OF)
    assert len(out) == len(active) == clean.rows
    assert out["customer_id"].is_unique
    assert set(out["customer_id"]) == set(active["customer_id"])
    spec_columns = ["customer_id", "propensity", "tier", "percentile"]
    spec_columns += [f"acceptance_{t}" for t in ASK_TYPE_NAMES]
    spec_columns += ["next_best_ask", "next_best_ask_probability", "blocked_asks", "re_engage"]
    spec_columns += ["reason_1", "reason_2", "reason_3", "baseline_points", "baseline_qualified", "baseline_tier"]
    spec_columns += ["disagreement", "committed", "committed_ask_id", "model_version", "rules_version"]
    spec_columns += ["features_as_of"]
    assert set(spec_columns) <= set(out.columns)
    # Committed pipeline: tier `committed`, its open ask named, and no disagreement to report.
    committed = out["committed"].to_numpy(dtype=bool)
    assert committed.any() and (out.loc[committed, "tier"] == "committed").all()
    assert out.loc[committed, "committed_ask_id"].notna().all() and out.loc[committed, "disagreement"].isna().all()
    assert out.loc[~committed, "committed_ask_id"].isna().all() and (out.loc[~committed, "tier"] != "committed").all()
    assert out["reason_1"].notna().all()
    assert (out["features_as_of"] == AS_OF).all()
    # Everything temporary is gone: only the output and its drift report remain.
    assert sorted(p.name for p in clean.out.parent.iterdir()) == ["scores.drift.csv", "scores.parquet", "store"]
    assert clean.mlflow_run_id


@pytest.mark.slow
def test_drift_report_beside_the_output(clean: batch.BatchResult, bundle: Any) -> None:
    drift = pd.read_csv(batch.drift_path(clean.out))
    assert list(drift.columns) == ["name", "psi", "drifted"]
    assert set(drift["name"]) == set(bundle.drift_reference)
    assert (drift["drifted"] == (drift["psi"] > 0.25)).all()


@pytest.mark.slow
def test_drift_from_chunk_counts_equals_drift_of_the_whole(world: Any, bundle: Any) -> None:
    frame = build_features(world, active_points(world, AS_OF))
    scores = bundle.propensity.proba(bundle.encoder.transform(frame))
    reference = bundle.drift_reference
    halves = [frame.iloc[:1000], frame.iloc[1000:]]
    counts: dict[str, np.ndarray] = {}
    for part, s in zip(halves, [scores[:1000], scores[1000:]], strict=True):
        for name, c in drift_counts(reference, part, s).items():
            counts[name] = counts.get(name, 0) + np.asarray(c)
    mine = drift_from_counts(reference, {k: v.tolist() for k, v in counts.items()}, len(frame))
    theirs = drift_from_counts(reference, drift_counts(reference, frame, scores), len(frame))
    pd.testing.assert_frame_equal(
        mine.sort_values("name").reset_index(drop=True), theirs.sort_values("name").reset_index(drop=True)
    )


@pytest.mark.slow
def test_chunking_changes_no_feature(clean: batch.BatchResult, world: Any) -> None:
    """The snapshot written from chunks holds what `build_snapshot` gives on the whole world."""
    assert clean.snapshot_dir is not None
    snap = Snapshot.from_tables(*read_snapshot(clean.snapshot_dir.parent))
    whole = build_snapshot(world, AS_OF)
    assert snap.meta["customers"] == len(whole.features) == clean.rows
    for part, keys in (
        ("features", ["customer_id"]),
        ("asks", ["ask_id"]),
        ("history", ["customer_id", "at", "kind", "detail"]),
    ):
        mine = getattr(snap, part).sort_values(keys, kind="stable").reset_index(drop=True)
        theirs = getattr(whole, part).sort_values(keys, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)


@pytest.mark.slow
def test_a_disagreement_is_explained_by_reasons_pushing_its_way(clean: batch.BatchResult) -> None:
    """ "Rated higher than the points rule, mainly because: ..." names only reasons that raise the
    likelihood, at most three, and "lower" only reasons that lower it."""
    said = pd.read_parquet(clean.out)["disagreement"].dropna()
    assert len(said) >= 20
    for direction, push, other in (("higher", "raises", "lowers"), ("lower", "lowers", "raises")):
        texts = said[said.str.startswith(f"The model rates this customer {direction}")]
        explained = texts[texts.str.contains(", mainly because: ", regex=False)]
        assert len(explained), direction
        assert (texts.str.count(f"\\({other} likelihood\\)") == 0).all(), direction
        assert explained.str.count(f"\\({push} likelihood\\)").between(1, 3).all(), direction


def test_drivers_are_the_strongest_pushes_in_each_rows_own_direction() -> None:
    contributions = np.array([[0.5, -0.2, 0.1, -0.9], [0.5, -0.2, 0.1, -0.9], [0.0, 0.3, 0.3, 0.2]])
    picked, pushes = signed_tops(contributions, 3, np.array([1, -1, 1]))
    assert [p[k].tolist() for p, k in zip(picked, pushes, strict=True)] == [[0, 2], [3, 1], [1, 2, 3]]
    assert signed_top(contributions[1], 3, -1) == [3, 1]


@pytest.mark.slow
def test_rows_with_nothing_to_explain_get_no_reasons_and_the_same_answer_as_the_api(world: Any, bundle: Any) -> None:
    """A batch where no feature moves the score (every SHAP contribution zero) still writes its rows:
    no reason text, a disagreement without "mainly because", as the API says for each row."""
    values = build_features(world, active_points(world, AS_OF)).head(200)
    scores = score(bundle, values)
    flat = replace(scores, contributions=np.zeros_like(scores.contributions))
    out = flat.columns()
    assert len(out) == 200
    assert out[[f"reason_{r}" for r in (1, 2, 3)]].isna().all().all()
    said = out["disagreement"].dropna()
    assert len(said) and not said.str.contains("because").any()
    for i in range(len(flat)):
        result = flat.result(i)
        assert result["reasons"] == []
        text = out["disagreement"][i]
        assert (result["disagreement"] or {}).get("text") == (None if pd.isna(text) else text)


@pytest.mark.slow
def test_batch_equals_the_api(clean: batch.BatchResult, bundle: Any) -> None:
    """Field by field, the batch row equals what the API computes from the snapshot (same as_of)."""
    assert clean.snapshot_dir is not None
    snap = Snapshot.from_tables(*read_snapshot(clean.snapshot_dir.parent))
    frame = snap.features
    # As `serving.store.FeatureStore` holds the snapshot: one array per column, an encoded matrix.
    values: dict[str, Any] = {
        "customer_id": frame["customer_id"].to_numpy(dtype=object),
        "as_of": frame["as_of"].to_numpy(),
    }
    for name in FEATURE_NAMES:
        values[name] = (
            frame[name].to_numpy(dtype=object) if name in CATEGORICAL_FEATURES else frame[name].to_numpy(float)
        )
    blocks = blocked_asks(snap.asks, guardrail_signals(frame), AS_OF, GuardrailConfig.from_saved(bundle.guardrails))
    api = score(bundle, values, matrix=bundle.encoder.transform(frame), blocked=Blocked.from_frame(blocks))
    out = pd.read_parquet(clean.out).set_index("customer_id")
    assert len(out) == len(api)
    for i in range(len(api)):
        r = api.result(i)
        row = out.loc[r["customer_id"]]
        assert _same(row["propensity"], r["propensity"])
        assert row["tier"] == r["tier"]
        assert _same(row["percentile"], r["percentile"])
        for t in ASK_TYPE_NAMES:
            assert row[f"acceptance_{t}"] == r["acceptance"][t]
        assert _same(row["next_best_ask"], r["next_best_ask"]["ask_type"])
        assert _same(row["next_best_ask_probability"], r["next_best_ask"]["probability"])
        blocked = {
            f"{b['ask_type']}: {b['guardrail']} until {b['until'] or 'cleared'}" for b in r["next_best_ask"]["blocked"]
        }
        assert {part for part in row["blocked_asks"].split("; ") if part} == blocked
        assert [row[f"reason_{k}"] for k in (1, 2, 3)] == [x["text"] for x in r["reasons"]] + [None] * (
            3 - len(r["reasons"])
        )
        assert row["baseline_points"] == r["baseline"]["points"]
        assert row["baseline_qualified"] == r["baseline"]["qualified"]
        assert row["baseline_tier"] == r["baseline"]["tier"]
        assert _same(row["disagreement"], (r["disagreement"] or {}).get("text"))
        assert row["re_engage"] == r["re_engage"]
        assert row["model_version"] == r["model_version"]
        assert row["features_as_of"].isoformat() == r["features_as_of"]


def _same(a: Any, b: Any) -> bool:
    missing_a = a is None or (isinstance(a, float) and np.isnan(a))
    missing_b = b is None or (isinstance(b, float) and np.isnan(b))
    return (missing_a and missing_b) or a == b


# ---- engines, resuming, formats ----------------------------------------------------------------


@pytest.mark.slow
def test_one_worker_gives_the_same_bytes_as_two(
    clean: batch.BatchResult, trained_home: TrainedHome, tmp_path: Path
) -> None:
    result = _run(trained_home, tmp_path, "scores.parquet", workers=1, snapshot=False)
    assert filecmp.cmp(result.out, clean.out, shallow=False)


@pytest.mark.slow
def test_dask_engine_gives_the_same_bytes(clean: batch.BatchResult, trained_home: TrainedHome, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        result = _run(trained_home, tmp_path, "scores.parquet", engine="dask", client=client, snapshot=False)
    assert filecmp.cmp(result.out, clean.out, shallow=False)


@pytest.mark.slow
def test_resumes_from_finished_chunks(clean: batch.BatchResult, trained_home: TrainedHome, tmp_path: Path) -> None:
    """Chunks a previous run finished are reused, and the output is byte for byte the same."""
    out = tmp_path / "scores.parquet"
    settings = _settings(trained_home, tmp_path / "store")
    champion, bundle = load_champion(settings)
    files = batch.table_files(SAMPLE)
    key = batch.RunKey(
        data=batch.data_fingerprint(files),
        asks_logged=frame_digest(Sources.from_settings(settings, SAMPLE).logged_asks()),  # no log: no asks
        as_of=AS_OF.isoformat(),
        model_name=champion.name,
        model_version=champion.version,
        trained_at=bundle.trained_at,
        explain=True,
        chunk_size=CHUNK,
    )
    work = batch.work_dir(out, key)
    split = batch.split_tables(files, work, CHUNK)
    scorer = batch.Scorer.for_bundle(bundle, explain=True)
    for chunk in (0, 3, 7):  # as if killed after these
        batch.score_chunk(work, chunk, scorer, AS_OF, 1)
    result = batch.run_batch(settings, SAMPLE, out, as_of=AS_OF, chunk_size=CHUNK, snapshot=False, track=False)
    assert result.resumed_chunks == 3
    assert split.n_chunks == result.chunks == 12
    assert filecmp.cmp(out, clean.out, shallow=False)
    assert not work.exists()


@pytest.mark.slow
def test_csv_output_has_the_same_rows(clean: batch.BatchResult, trained_home: TrainedHome, tmp_path: Path) -> None:
    result = _run(trained_home, tmp_path, "scores.csv", explain=False, snapshot=False)
    csv = pd.read_csv(result.out)
    parquet = pd.read_parquet(clean.out)
    assert list(csv["customer_id"]) == list(parquet["customer_id"])
    assert np.allclose(csv["propensity"], parquet["propensity"], equal_nan=True)
    assert csv["reason_1"].isna().all()  # --no-explain


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_bytes(
    clean: batch.BatchResult, trained_home: TrainedHome, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    args = [sys.executable, "-m", "advocacy", "score", "--data", str(SAMPLE), "--out", str(out)]
    args += ["--as-of", AS_OF.isoformat(), "--chunk-size", str(CHUNK), "--no-snapshot"]
    env = trained_home.env(ADVOCACY_FEATURE_STORE=str(tmp_path / "store"))
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    done: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        # Finished chunks only: a chunk being written sits in a ".NNNNN-<uuid>" staging folder, with its
        # stats.json, until it is renamed (counting those made this test flaky).
        done = list(tmp_path.glob(".scores.parquet.work-*/chunks/[0-9]*/stats.json"))
        assert not out.exists()  # never a partial output
        if len(done) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    assert len(done) >= 3, (tmp_path / "killed.log").read_text()
    assert not out.exists()
    # The rerun (in-process: quicker) picks the finished chunks up.
    rerun = batch.run_batch(
        _settings(trained_home, tmp_path / "store"), SAMPLE, out, as_of=AS_OF, chunk_size=CHUNK, snapshot=False
    )
    assert rerun.resumed_chunks >= len(done)
    assert filecmp.cmp(out, clean.out, shallow=False)
    assert not list(tmp_path.glob(".scores.parquet.work-*"))


# ---- bad input -------------------------------------------------------------------------------


@pytest.fixture
def cli(trained_home: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from advocacy import cli as cli_module

    monkeypatch.setattr(cli_module, "current_settings", lambda: _settings(trained_home, tmp_path / "store"))
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli_module.app, ["score", *args], catch_exceptions=False)

    return invoke


def _bad_sample(tmp_path: Path, table: str, change: Any) -> Path:
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("truth"))
    frame = pd.read_parquet(data / f"{table}.parquet")
    (data / f"{table}.parquet").unlink()
    write_tables({table: change(frame)}, data, "csv")
    return data


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("suffix", "output must end in .parquet or .csv"),
        ("as_of", "--as-of: not a date"),
        ("missing_dir", "data directory not found"),
        ("bad_value", "table 'customers': column 'segment': rule 'isin"),
        (
            "unknown_customer",
            "table 'nps': column 'customer_id': rule 'exists in customers' failed for 1 rows, e.g. row 2500",
        ),
        ("duplicate_id", "table 'asks': column 'ask_id': rule 'unique'"),
        ("bad_plan_id", "table 'asks': column 'plan_id': rule 'no surrounding spaces' failed for 1 rows"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, message: str
) -> None:
    monkeypatch.setattr(batch.tables, "READ_BATCH_ROWS", 1000)  # several batches: errors still name the file's rows
    data, out, as_of = SAMPLE, tmp_path / "out" / "scores.parquet", AS_OF.isoformat()
    if case == "suffix":
        out = out.with_suffix(".json")
    elif case == "as_of":
        as_of = "next tuesday"
    elif case == "missing_dir":
        data = tmp_path / "nowhere"
    elif case == "bad_value":
        data = _bad_sample(
            tmp_path, "customers", lambda f: f.assign(segment=f["segment"].where(f.index != 2345, "giant"))
        )
    elif case == "unknown_customer":
        data = _bad_sample(
            tmp_path, "nps", lambda f: f.assign(customer_id=f["customer_id"].where(f.index != 2500, "C9"))
        )
    elif case == "duplicate_id":
        data = _bad_sample(
            tmp_path, "asks", lambda f: f.assign(ask_id=f["ask_id"].where(f.index != 9, f["ask_id"].iloc[4000]))
        )
    elif case == "bad_plan_id":
        data = _bad_sample(tmp_path, "asks", lambda f: f.assign(plan_id=np.where(f.index == 7, " p1", None)))
    result = cli("--data", str(data), "--out", str(out), "--as-of", as_of)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split()), result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_the_asks_tables_plans_and_the_deals_reach_the_snapshot_the_service_reads(
    trained_home: TrainedHome, tmp_path: Path
) -> None:
    """Spec 5a: a campaign's answers may come back in the asks table's `plan_id` column; the batch job
    keeps them in the snapshot, so the service counts them for their campaigns as the CLI does."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("truth"))
    asks = pd.read_parquet(data / "asks.parquet")
    named = asks.index[:: max(1, len(asks) // 5)][:5]
    asks["plan_id"] = pd.Series("p-campaign", index=named).reindex(asks.index)
    asks.to_parquet(data / "asks.parquet", index=False)
    settings = _settings(trained_home, tmp_path / "store")
    batch.run_batch(settings, data, tmp_path / "scores.parquet", as_of=AS_OF, explain=False, track=False, workers=1)
    snapshot = Snapshot.from_tables(*read_snapshot(tmp_path / "store"))
    expected = asks.loc[named, ["ask_id", "plan_id"]].astype("str").reset_index(drop=True)
    assert snapshot.plan_links.to_dict(orient="records") == expected.to_dict(orient="records")
    # The deals too (spec 9), and which deal each ask was made for: the service finds a deal's
    # references and holds an ask's deal fixed from them.
    world = read_world(data)
    assert len(snapshot.opportunities) == len(world.opportunities) > 0
    pd.testing.assert_frame_equal(snapshot.opportunities, world.opportunities, check_dtype=False)
    pd.testing.assert_frame_equal(snapshot.deal_links, world.deal_links, check_dtype=False)


def _refusal_in_one_and_two_workers(trained_home: TrainedHome, tmp_path: Path, data: Path) -> str:
    """The job's refusal of bad `data`, the same in one process as in two; nothing is left behind."""
    messages = []
    for workers in (1, 2):
        out = tmp_path / f"out-{workers}" / "scores.parquet"
        with pytest.raises(DataContractError) as caught:
            batch.run_batch(
                _settings(trained_home, tmp_path / "store"), data, out, as_of=AS_OF, workers=workers, track=False
            )
        messages.append(str(caught.value))
        assert not out.parent.exists()
    assert messages[0] == messages[1]
    return messages[0]


@pytest.mark.slow
def test_tables_checked_in_worker_processes_fail_as_in_one(trained_home: TrainedHome, tmp_path: Path) -> None:
    """With --workers 2 the tables are read and checked side by side in other processes: bad input
    must still stop the run with the same message, and leave nothing behind."""
    data = _bad_sample(
        tmp_path, "asks", lambda f: f.assign(ask_id=f["ask_id"].where(f.index != 9, f["ask_id"].iloc[40]))
    )
    found = _refusal_in_one_and_two_workers(trained_home, tmp_path, data)
    assert "table 'asks': column 'ask_id': rule 'unique'" in found, found


def _sample_in_row_groups(tmp_path: Path, rows: int, change: dict[str, Any] | None = None) -> Path:
    """The sample as Parquet files of `rows`-row row groups (as big exports come), `change`d per table."""
    data = tmp_path / "data"
    data.mkdir()
    for path in SAMPLE.glob("*.parquet"):
        frame = pd.read_parquet(path)
        if change and path.stem in change:
            frame = change[path.stem](frame)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data / path.name, row_group_size=rows)
    return data


@pytest.mark.slow
def test_big_files_split_in_parts_give_the_same_bytes(
    clean: batch.BatchResult, trained_home: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Parquet file is split in parts of whole row groups, side by side: the same output as whole files."""
    data = _sample_in_row_groups(tmp_path, 1000)
    monkeypatch.setattr(batch.tables, "PART_ROWS", 3000)
    parts = batch.tables.table_parts("usage", data / "usage.parquet")
    assert len(parts) == 19 and [p.offset for p in parts[:3]] == [0, 3000, 6000]
    out = tmp_path / "scores.parquet"
    settings = _settings(trained_home, tmp_path / "store")
    result = batch.run_batch(settings, data, out, as_of=AS_OF, chunk_size=CHUNK, workers=2, snapshot=False, track=False)
    assert filecmp.cmp(result.out, clean.out, shallow=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"usage": lambda f: f.assign(health_score=f["health_score"].where(f.index != 45_001, 250.0))},
            "table 'usage': column 'health_score': rule 'in_range(0.0, 100.0)' failed for 1 rows, e.g. row 45001",
        ),
        (
            {"asks": lambda f: f.assign(ask_id=f["ask_id"].where(f.index != 5_500, f["ask_id"].iloc[9]))},
            "table 'asks': column 'ask_id': rule 'unique' failed for 2 rows, e.g. row 9",
        ),
        (
            {"usage": lambda f: pd.concat([f, f.iloc[[7]]], ignore_index=True)},
            "table 'usage': column 'customer_id, month': rule 'unique' failed for 2 rows, e.g. row 7",
        ),
        (  # every part fails: the first one's rows are named, as one process reading in order does
            {"usage": lambda f: f.assign(health_score=f["health_score"] * 10 + 101)},
            "table 'usage': column 'health_score': rule 'in_range(0.0, 100.0)' failed for 3000 rows, e.g. row 0 (",
        ),
        (  # the first table in the contract's order is named, however light its part
            {
                "customers": lambda f: f.assign(segment=f["segment"].where(f.index != 5, "giant")),
                "usage": lambda f: f.assign(health_score=f["health_score"] * 10 + 101),
            },
            "table 'customers': column 'segment': rule 'isin",
        ),
    ],
    ids=[
        "value-in-a-later-part",
        "id-repeated-across-parts",
        "usage-month-repeated-across-parts",
        "value-wrong-in-every-part",
        "two-tables-wrong",
    ],
)
def test_bad_rows_in_parts_are_named_by_their_row_in_the_file(
    trained_home: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Any, message: str
) -> None:
    data = _sample_in_row_groups(tmp_path, 1000, change)
    monkeypatch.setattr(batch.tables, "PART_ROWS", 3000)
    found = _refusal_in_one_and_two_workers(trained_home, tmp_path, data)
    assert message in found, found


# ---- fast reasons ------------------------------------------------------------------------------


def test_words_a_batch_shares_between_equal_values_depend_on_nothing_else(world: Any) -> None:
    """A batch words each distinct value of most features once (`worded_by_value`): those words
    must not change with the rest of the row or with `as_of`, for any value the sample has."""
    as_ofs = (AS_OF - pd.Timedelta(days=400), AS_OF)
    frames = [build_features(world, active_points(world, t)).sample(200, random_state=1) for t in as_ofs]
    contexts = [(row.to_dict(), t) for frame in frames for _, row in frame.iloc[[0, -1]].iterrows() for t in as_ofs]
    for name in filter(worded_by_value, FEATURE_NAMES):
        for value in frames[1][name]:
            words = {reason_text(name, value, 1.0, row, t) for row, t in contexts}
            assert len(words) == 1, (name, value, words)
    # The check can fail: the last NPS answer is dated from as_of, so it is worded row by row.
    assert not worded_by_value("nps_last")
    assert len({reason_text("nps_last", 9.0, 1.0, {"nps_days_since": 10.0}, t) for t in as_ofs}) == 2


@pytest.mark.slow
def test_fast_reasons_equal_exact_treeshap(world: Any, bundle: Any) -> None:
    frame = build_features(world, active_points(world, AS_OF))
    matrix = bundle.encoder.transform(frame)
    booster = bundle.propensity.booster
    explainer = PatternTreeShap(booster)
    exact = np.asarray(booster.predict(matrix, pred_contrib=True))
    first, _ = explainer.fast_contributions(matrix[:1500])
    fast, stats = explainer.contributions(matrix)  # the second half partly from the cache
    assert stats.rows == len(matrix) and stats.computed < stats.patterns
    assert np.max(np.abs(fast - exact)) < 1e-10
    np.testing.assert_array_equal(top_indices(fast[:, :-1], 3), top_indices(exact[:, :-1], 3))
    assert np.max(np.abs(first - exact[:1500])) < 1e-10


def test_cli_help_lists_score() -> None:
    from advocacy import cli as cli_module

    result = CliRunner().invoke(cli_module.app, ["score", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--as-of", "--explain", "--engine", "--scheduler"):
        assert option in result.output


def test_chunks_are_stable() -> None:
    ids = pd.Series([f"C{i:05d}" for i in range(1000)])
    chunks = batch.chunk_of(ids, 7)
    assert chunks.min() == 0 and chunks.max() == 6
    np.testing.assert_array_equal(chunks, batch.chunk_of(ids.to_numpy(dtype=object), 7))
    # Not Python's salted `hash`: the same chunks in every process, on every machine, in every run.
    assert batch.chunk_of(["C00001", "C00002", "xyz", "007"], 7).tolist() == [2, 4, 1, 4]


@pytest.mark.slow
def test_a_full_disk_leaves_no_partial_output_and_the_rerun_completes(
    clean: batch.BatchResult, trained_home: TrainedHome, tmp_path: Path
) -> None:
    """Writes fail part-way (a file-size limit, as a full disk would): a one-line error, no file at the
    output path, and once there is room again the same command finishes with the same bytes."""
    out = tmp_path / "scores.parquet"
    args = [sys.executable, "-m", "advocacy", "score", "--data", str(SAMPLE), "--out", str(out)]
    args += ["--as-of", AS_OF.isoformat(), "--chunk-size", str(CHUNK), "--no-snapshot"]
    env = trained_home.env(ADVOCACY_FEATURE_STORE=str(tmp_path / "store"))

    def cramped() -> None:  # in the child: no file may grow past 96 KiB (EFBIG, like ENOSPC, on the write)
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, resource.RLIM_INFINITY))

    failed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, preexec_fn=cramped)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "could not write" in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
    assert not out.exists()
    left = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".scores.parquet.work-")}
    assert left <= {"store"}, left  # no output, no drift report, no stray temporary file
    # Room again: the same command resumes and gives exactly the clean run's bytes.
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert filecmp.cmp(out, clean.out, shallow=False)


@pytest.mark.slow
def test_a_snapshot_that_would_empty_the_served_base_is_refused_unless_forced(cli: Any, tmp_path: Path) -> None:
    """Issue 15, defect 7: on data where every customer has churned, `advocacy score` exited 0 and
    published a snapshot of 0 customers, which every worker of the service then served (404 for all)."""
    as_of = AS_OF.isoformat()
    first = cli("--data", str(SAMPLE), "--out", str(tmp_path / "good.parquet"), "--as-of", as_of)
    assert first.exit_code == 0, first.stderr
    store = tmp_path / "store"
    served = (store / "CURRENT").read_text()
    churned = _bad_sample(tmp_path, "customers", lambda f: f.assign(churned_at=f["contract_start"]))
    out = tmp_path / "out" / "scores.parquet"
    refused = cli("--data", str(churned), "--out", str(out), "--as-of", as_of)
    assert refused.exit_code == 2
    message = " ".join(refused.stderr.split())
    assert "holds no active customers" in message and "--force-snapshot" in message, message
    assert (store / "CURRENT").read_text() == served  # the served snapshot stays
    assert not out.exists() and not (tmp_path / "out" / "scores.drift.csv").exists()
    # A third of the base is under the default share (ADVOCACY_MIN_SNAPSHOT_SHARE = 0.5).
    third = _bad_sample(
        tmp_path / "third",
        "customers",
        lambda f: f.assign(churned_at=f["contract_start"].where(f.index % 3 != 0, f["churned_at"])),
    )
    shrunk = cli("--data", str(third), "--out", str(out), "--as-of", as_of)
    assert shrunk.exit_code == 2 and "under 50% of the" in " ".join(shrunk.stderr.split())
    assert (store / "CURRENT").read_text() == served
    assert {p.name.split("-")[0] for p in out.parent.iterdir()} == {".scores.parquet.work"}  # kept to resume
    # Forced, it is published, and says so.
    forced = cli("--data", str(third), "--out", str(out), "--as-of", as_of, "--force-snapshot")
    assert forced.exit_code == 0, forced.stderr
    assert (store / "CURRENT").read_text() != served and out.exists()
    meta = json.loads((store / (store / "CURRENT").read_text().strip() / "meta.json").read_text())
    assert meta["forced"] is True and 0 < meta["customers"] < 0.5 * len(pd.read_parquet(tmp_path / "good.parquet"))
    assert {"scores.parquet", "scores.drift.csv"} <= {p.name for p in out.parent.iterdir()}
