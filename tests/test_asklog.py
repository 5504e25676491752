"""The durable ask log: exact round trip, idempotent upserts, all-or-nothing writes, crash safety, syncs."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy import cli
from features.contracts import CONTRACTS, DataContractError, empty_table, validate_table
from storage.asklog import AskLog, ConflictingAskError
from storage.settings import get_settings
from tests import synckit

ROOT = Path(__file__).resolve().parents[1]


def asks(*rows: tuple[str, str, str, str, str, str | None]) -> pd.DataFrame:
    """Raw asks rows (ask_id, customer_id, ask_type, asked_at, outcome, responded_at), as an API would send."""
    return pd.DataFrame(rows, columns=["ask_id", "customer_id", "ask_type", "asked_at", "outcome", "responded_at"])


FIRST = asks(
    ("a2", "c1", "review", "2026-01-01T00:00:00.123456", "no_response", None),
    ("a1", "c2", "reference_call", "2025-12-01", "accepted", "2025-12-03T10:00:00+02:00"),
)


@pytest.fixture
def log(tmp_path: Path) -> AskLog:
    return AskLog(tmp_path / "nested" / "dir" / "asks.sqlite", CONTRACTS["asks"])


def test_creates_the_file_with_parents_in_wal_mode(log: AskLog) -> None:
    assert log.path.exists()
    assert len(log) == 0
    with sqlite3.connect(log.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_read_returns_exactly_what_was_recorded(log: AskLog) -> None:
    assert log.record(FIRST) == 2
    expected = validate_table("asks", FIRST).sort_values(["asked_at", "ask_id"]).reset_index(drop=True)
    got = log.read()
    pd.testing.assert_frame_equal(got, expected)
    assert got.dtypes.equals(empty_table("asks").dtypes)
    assert got.loc[1, "asked_at"].microsecond == 123456


def test_empty_log_reads_as_the_empty_canonical_table(log: AskLog) -> None:
    pd.testing.assert_frame_equal(log.read(), empty_table("asks"))
    assert log.record(FIRST.iloc[:0]) == 0


@pytest.mark.parametrize("column", ["asked_at", "responded_at"])
@pytest.mark.parametrize("when", ["2100-01-01", "2199-12-31T23:00:00-12:00", "+10min"])
def test_an_ask_dated_after_now_is_refused_and_nothing_is_stored(log: AskLog, column: str, when: str) -> None:
    # Issue 15, defect 5: an ask in 2100 was stored and broke every later training.
    if when == "+10min":  # past the clock skew allowed between machines
        when = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=10)).isoformat()
    bad = FIRST.copy()
    bad.loc[1, column] = when
    with pytest.raises(
        DataContractError,
        match=rf"column '{column}': rule '(not in the future|year 1900 to 2199).*1 rows, e\.g\. row 1",
    ):
        log.record(bad)
    assert len(log) == 0
    ahead = FIRST.copy()
    ahead.loc[1, ["asked_at", "responded_at"]] = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=2)).isoformat()
    assert log.record(ahead) == 2  # two minutes ahead: another machine's clock, within the skew


def test_re_sending_an_ask_is_idempotent(log: AskLog) -> None:
    log.record(FIRST)
    log.record(FIRST)
    assert len(log) == 2


def test_a_later_outcome_updates_the_ask(log: AskLog) -> None:
    log.record(FIRST)
    log.record(asks(("a2", "c1", "review", "2026-01-01T00:00:00.123456", "accepted", "2026-01-05T09:30:00")))
    assert len(log) == 2
    row = log.read().set_index("ask_id").loc["a2"]
    assert row["outcome"] == "accepted"
    assert row["responded_at"] == pd.Timestamp("2026-01-05T09:30:00", tz="UTC")


@pytest.mark.parametrize(
    ("field", "row"),
    [
        ("customer_id", ("a2", "c9", "review", "2026-01-01T00:00:00.123456", "accepted", "2026-01-05")),
        ("ask_type", ("a2", "c1", "case_study", "2026-01-01T00:00:00.123456", "accepted", "2026-01-05")),
        ("asked_at", ("a2", "c1", "review", "2026-01-02", "accepted", "2026-01-05")),
    ],
)
def test_re_sending_an_ask_with_another_identity_is_refused_and_nothing_is_stored(
    log: AskLog, field: str, row: tuple[str, ...]
) -> None:
    log.record(FIRST)
    before = log.read()
    batch = asks(("a3", "c1", "review", "2026-02-01", "no_response", None), row)
    with pytest.raises(ConflictingAskError, match=f"ask_id 'a2' is already recorded with {field}"):
        log.record(batch)
    pd.testing.assert_frame_equal(log.read(), before)


def test_a_bad_row_stores_nothing(log: AskLog) -> None:
    log.record(FIRST)
    batch = asks(
        ("a2", "c1", "review", "2026-01-01", "accepted", "2026-01-02"),  # a valid update...
        ("a3", "c1", "review", "2026-02-01", "maybe", None),  # ...next to a bad outcome
    )
    with pytest.raises(DataContractError, match="outcome"):
        log.record(batch)
    assert len(log) == 2
    assert log.read().set_index("ask_id").loc["a2", "outcome"] == "no_response"


def test_a_batch_with_a_duplicate_ask_id_is_rejected(log: AskLog) -> None:
    batch = asks(
        ("a1", "c1", "review", "2026-01-01", "accepted", None), ("a1", "c1", "review", "2026-01-02", "accepted", None)
    )
    with pytest.raises(DataContractError, match="ask_id"):
        log.record(batch)
    assert len(log) == 0


LINKS = pytest.mark.parametrize(("column", "value"), [("plan_id", "p" * 32), ("opportunity_id", "O000001")])


def _links(log: AskLog, column: str) -> pd.DataFrame:
    return log.plan_links() if column == "plan_id" else log.deal_links()


@LINKS
def test_an_ask_made_from_a_plan_or_for_a_deal_keeps_it(log: AskLog, column: str, value: str) -> None:
    planned = FIRST.assign(**{column: [value, None]})
    assert log.record(planned) == 2
    assert _links(log, column).to_dict(orient="records") == [{"ask_id": "a2", column: value}]
    assert list(log.read().columns) == list(CONTRACTS["asks"].columns)  # the asks table stays the contract's
    # The answer arrives later, sent without the link: the ask is updated, its link is kept.
    answered = FIRST.iloc[[0]].assign(outcome="accepted", responded_at=pd.Timestamp("2026-01-03", tz="UTC"))
    log.record(answered)
    assert log.read().set_index("ask_id").loc["a2", "outcome"] == "accepted"
    assert _links(log, column)[column].tolist() == [value]
    # A batch the contract refuses stores no link either.
    bad = FIRST.assign(**{column: "q" * 32}, ask_id=["a3", "a3"])
    with pytest.raises(DataContractError):
        log.record(bad)
    assert _links(log, column)["ask_id"].tolist() == ["a2"]


@LINKS
def test_an_asks_plan_and_deal_are_fixed_once_recorded(log: AskLog, column: str, value: str) -> None:
    """Re-sent without its plan (deal) an ask keeps it; naming another, or one for an ask recorded
    without one, is a conflict naming the column, and nothing of the batch is stored."""
    log.record(FIRST.assign(**{column: [value, None]}))
    before = log.read()
    for values in (["q" * 32, None], [None, "q" * 32]):
        with pytest.raises(ConflictingAskError, match=column) as caught:
            log.record(FIRST.assign(**{column: values}, outcome="accepted", responded_at="2026-01-03"))
        assert caught.value.field == column
        pd.testing.assert_frame_equal(log.read(), before)
    assert _links(log, column).values.tolist() == [["a2", value]]


def test_a_log_written_before_deals_were_linked_gains_their_table(tmp_path: Path) -> None:
    """A log of an older release (asks and plan links only) opens as it is and keeps deal links from then on."""
    path = tmp_path / "asks.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE asks (ask_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, ask_type TEXT NOT NULL, "
            "asked_at INTEGER NOT NULL, outcome TEXT NOT NULL, responded_at INTEGER, recorded_at INTEGER NOT NULL, "
            "seq INTEGER); CREATE TABLE plan_asks (ask_id TEXT PRIMARY KEY, plan_id TEXT NOT NULL);"
        )
    log = AskLog(path, CONTRACTS["asks"])
    assert log.deal_links().empty
    log.record(FIRST.assign(opportunity_id=["O000001", None]))
    assert log.deal_links().values.tolist() == [["a2", "O000001"]] and len(log) == 2


def test_missing_column_is_named(log: AskLog) -> None:
    with pytest.raises(DataContractError, match="asked_at"):
        log.record(FIRST.drop(columns="asked_at"))


def test_survives_reopening(log: AskLog) -> None:
    log.record(FIRST)
    reopened = AskLog(log.path, CONTRACTS["asks"])
    assert len(reopened) == 2
    pd.testing.assert_frame_equal(reopened.read(), log.read())


def test_read_filters_by_customer(log: AskLog) -> None:
    log.record(FIRST)
    assert log.read(["c2"])["ask_id"].tolist() == ["a1"]
    assert log.read(["c1", "c2", "nobody"])["ask_id"].tolist() == ["a1", "a2"]
    assert log.read([]).empty
    assert log.read([f"x{i}" for i in range(50_000)]).empty  # more ids than SQLite has placeholders


def test_concurrent_writers_from_threads(log: AskLog) -> None:
    def write(thread: int) -> None:
        for i in range(5):
            log.record(asks((f"t{thread}-{i}", f"c{thread}", "review", "2026-01-01", "no_response", None)))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 30


def test_an_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    # A killed process leaves its written pages in the OS page cache, which still reaches the disk:
    # this passes even with syncing off. The sync tests below guard the power-cut half of the promise.
    path = tmp_path / "asks.sqlite"
    child = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        import pandas as pd
        from features.contracts import CONTRACTS
        from storage.asklog import AskLog, ConflictingAskError

        log = AskLog(Path({str(path)!r}), CONTRACTS["asks"])
        log.record(pd.DataFrame({{
            "ask_id": ["k1"], "customer_id": ["c1"], "ask_type": ["review"],
            "asked_at": ["2026-01-01"], "outcome": ["no_response"], "responded_at": [None],
        }}))
        print("recorded", flush=True)
        time.sleep(120)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", child], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "recorded", proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    assert AskLog(path, CONTRACTS["asks"]).read()["ask_id"].tolist() == ["k1"]


def test_a_backup_taken_while_asks_arrive_is_whole_and_self_contained(log: AskLog, tmp_path: Path) -> None:
    done = threading.Event()
    acknowledged: list[int] = []

    def keep_writing() -> None:
        i = 0
        while not done.is_set():
            i += 1
            log.record(asks((f"w{i}", "c1", "review", "2026-01-01", "no_response", None)))
            acknowledged.append(i)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while len(acknowledged) < 20:
            time.sleep(0.001)
        before = len(acknowledged)
        rows = AskLog(log.path, CONTRACTS["asks"]).backup(tmp_path / "backups" / "asks.sqlite")
    finally:
        done.set()
        writer.join()
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == ["asks.sqlite"]  # one file, no -wal, no tmp
    ids = AskLog(tmp_path / "backups" / "asks.sqlite", CONTRACTS["asks"]).read()["ask_id"].tolist()
    assert len(ids) == rows >= before  # everything acknowledged before the backup began is in it
    assert set(ids) == {f"w{i}" for i in range(1, rows + 1)}  # and no gap: whole transactions only


def test_the_backup_command_copies_the_configured_log(log: AskLog, tmp_path: Path) -> None:
    log.record(FIRST)
    env = {"ADVOCACY_ASK_LOG": str(log.path), "ADVOCACY_HOME": str(tmp_path)}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["backup-asks", str(tmp_path / "copy.sqlite")], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "Backed up 2 asks" in result.output
    assert AskLog(tmp_path / "copy.sqlite", CONTRACTS["asks"]).read().equals(log.read())
    refused = CliRunner().invoke(cli.app, ["backup-asks", str(log.path)], env=env)
    get_settings.cache_clear()
    assert refused.exit_code == 2 and "somewhere else" in refused.output


def test_a_full_disk_under_the_backup_is_one_line_that_blames_the_disk(log: AskLog, tmp_path: Path) -> None:
    """SQLite reports a refused write as its own error ("disk I/O error"), not as an OSError: the
    command says the disk refused (exit 1), not that the tool is at fault, and leaves no copy."""
    n = 3000
    many = asks(*[(f"a{i}", "c1", "review", "2026-01-01", "no_response", None) for i in range(n)])
    log.record(many)
    out = tmp_path / "copy.sqlite"
    env = {**os.environ, "ADVOCACY_ASK_LOG": str(log.path), "ADVOCACY_HOME": str(tmp_path / "home")}

    def cramped() -> None:  # in the child: no file may grow past 64 KiB (the log is several times that)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    args = [sys.executable, "-m", "advocacy", "backup-asks", str(out)]
    failed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, preexec_fn=cramped)
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not write" in lines[0] and "fault of the tool" not in lines[0], lines
    assert list(tmp_path.glob("copy.sqlite*")) == [] and not out.exists()


def test_read_changes_returns_each_write_once_whoever_made_it(log: AskLog) -> None:
    everything, seen = log.read_changes()
    assert everything.empty and seen == 0
    log.record(FIRST)
    changes, seen = log.read_changes(seen)
    assert sorted(changes["ask_id"]) == ["a1", "a2"]
    assert log.read_changes(seen)[0].empty  # nothing new
    other = AskLog(log.path, CONTRACTS["asks"])  # another writer (another worker process would look the same)
    other.record(asks(("a2", "c1", "review", "2026-01-01T00:00:00.123456", "accepted", "2026-01-02")))
    other.record(asks(("a3", "c3", "review", "2026-02-01", "no_response", None)))
    changes, seen = log.read_changes(seen)
    assert changes["ask_id"].tolist() == ["a2", "a3"]
    assert changes.set_index("ask_id").loc["a2", "outcome"] == "accepted"  # the updated version
    assert log.read_changes(0)[0]["ask_id"].tolist() == log.read()["ask_id"].tolist()


def test_a_log_written_before_sequence_numbers_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the layout of earlier versions
        conn.execute(
            "CREATE TABLE asks (ask_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, ask_type TEXT NOT NULL, "
            "asked_at INTEGER NOT NULL, outcome TEXT NOT NULL, responded_at INTEGER, recorded_at INTEGER NOT NULL)"
        )
        conn.execute("INSERT INTO asks VALUES ('old', 'c1', 'review', 1767225600000000, 'no_response', NULL, 0)")
    log = AskLog(path, CONTRACTS["asks"])
    assert log.read()["ask_id"].tolist() == ["old"]
    _, seen = log.read_changes()
    log.record(asks(("new", "c1", "review", "2026-03-01", "no_response", None)))
    assert log.read_changes(seen)[0]["ask_id"].tolist() == ["new"]


# Surviving a power cut needs SQLite to sync at every commit: in WAL mode, synchronous=FULL (or
# EXTRA) syncs the WAL at each commit; NORMAL syncs only at checkpoints, OFF never. No kill test can
# tell them apart (see above), so these check the sync itself: the setting on every connection the
# log writes through, and, below the setting, that a commit makes SQLite ask the OS for a sync.
_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def syncing_at(level: str) -> type[AskLog]:
    """An AskLog whose connections sync at `level` ("OFF", "NORMAL"), to show the checks catch it."""

    class Unsynced(AskLog):
        @contextmanager
        def _connect(self) -> Iterator[sqlite3.Connection]:
            with super()._connect() as conn:
                conn.execute(f"PRAGMA synchronous={level}")
                yield conn

    return Unsynced


def durability_of_a_write(log_class: type[AskLog], path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """(synchronous, journal_mode) of the connection before each statement `record` runs, read back on it."""
    seen: list[Any] = []

    class Watched(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if not sql.lstrip().upper().startswith("PRAGMA"):
                self._note()
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
            self._note()
            return super().executemany(sql, *args)

        def commit(self) -> None:
            self._note()
            super().commit()

        def _note(self) -> None:
            read = super().execute
            seen.append((read("PRAGMA synchronous").fetchone()[0], read("PRAGMA journal_mode").fetchone()[0]))

    log = log_class(path, CONTRACTS["asks"])
    connect = sqlite3.connect
    with monkeypatch.context() as patch:
        patch.setattr(sqlite3, "connect", lambda *a, **k: connect(*a, **{**k, "factory": Watched}))
        log.record(FIRST)
    assert len(log) == 2
    return seen


def test_every_statement_of_a_write_runs_with_full_sync_in_wal_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = durability_of_a_write(AskLog, tmp_path / "asks.sqlite", monkeypatch)
    assert seen  # the write went through connections the check saw
    assert [s for s in seen if s[0] < _FULL or s[1] != "wal"] == []


@pytest.mark.parametrize("level", ["OFF", "NORMAL"])
def test_the_setting_check_catches_a_log_that_stops_syncing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    seen = durability_of_a_write(syncing_at(level), tmp_path / "asks.sqlite", monkeypatch)
    assert seen and all(s[0] < _FULL for s in seen)


def test_a_commit_makes_sqlite_ask_the_os_to_sync_the_wal(tmp_path: Path) -> None:
    """Counted where SQLite calls for fsync (its VFS), in a process of its own; weakened logs show it sees a stop."""
    if why := synckit.available():
        pytest.skip(why)
    child = textwrap.dedent(
        f"""
        import json
        import sqlite3
        from pathlib import Path
        from tests import synckit

        synckit.install()
        from features.contracts import CONTRACTS
        from storage.asklog import AskLog, ConflictingAskError
        from tests.test_asklog import FIRST, syncing_at

        counted = {{}}
        for name, log_class in [("FULL", AskLog), ("NORMAL", syncing_at("NORMAL")), ("OFF", syncing_at("OFF"))]:
            log = log_class(Path({str(tmp_path)!r}) / f"{{name}}.sqlite", CONTRACTS["asks"])
            # Another reader holds the file open, as the service's other threads and workers do: else
            # closing the last connection checkpoints the WAL, which syncs whatever the setting.
            other = sqlite3.connect(log.path)
            other.execute("SELECT COUNT(*) FROM asks").fetchone()
            log.record(FIRST)  # the first write into a fresh WAL syncs its header, whatever the setting
            synckit.syncs.clear()
            log.record(FIRST)  # a write as most are: the count is the commit's own
            counted[name] = dict(synckit.syncs)
            other.close()
        print(json.dumps(counted))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    counted = json.loads(out.stdout.strip().splitlines()[-1])
    assert counted["FULL"].get("wal", 0) >= 1, counted  # the commit synced the WAL before `record` returned
    assert counted["NORMAL"] == counted["OFF"] == {}, counted  # and a log that stopped syncing is seen
