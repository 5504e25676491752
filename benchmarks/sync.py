"""`advocacy sync` of 100k profiles to a local HubSpot server (issue 32: at most 60 s).

A 100k-customer feature snapshot is made by repeating the sample's published snapshot under new
customer ids (the sample's feature distributions, many times over), and a model is fitted on the
sample. Then the sync use case runs as `advocacy sync hubspot` runs it (`usecases.sync.sync` with
the real `crm.HubSpotSink` over `hubspot-api-client`) against the tests' local HubSpot server
(`tests.crmkit`): the first, full sync (score, reasons, 1,000 batches of 100, each acknowledged to
the sync state before the next), then a second one that finds nothing changed. Loading the model
from the registry (a few seconds, once per command) is not in the figure.

The local server is single-threaded Python, so the send figure is an upper bound of the client's
cost; HubSpot itself allows a private app 100-190 requests per 10 s, so 1,000 batches take HubSpot
at least a minute or two of rate limit, which the client waits out (429 and `Retry-After`).

    uv run python benchmarks/sync.py [--customers 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # see benchmarks/features.py

import pandas as pd
from rich.console import Console
from rich.table import Table

from crm import HubSpotSink
from crm.fields import hubspot_names
from features.context import Snapshot, build_snapshot
from features.io import read_world
from features.labels import observed_until
from storage.snapshots import write_snapshot
from storage.syncstate import SyncState
from tests.crmkit import ACTIVITY_OBJECT, HUBSPOT_TOKEN, PROFILE_OBJECT, HubSpotServer
from training.datasets import build_training_data
from training.fit import TrainConfig, fit_bundle
from usecases.profiles import ACTIVITIES, PROFILES
from usecases.sources import Sources
from usecases.sync import SyncJob, build_records, sync

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 60.0


def repeated(snapshot: Snapshot, customers: int) -> Snapshot:
    """The snapshot's customers (with their asks) repeated under new ids until there are `customers`."""
    copies = -(-customers // len(snapshot.features))
    features, asks = [], []
    for k in range(copies):

        def rename(ids: pd.Series, k: int = k) -> pd.Series:
            return ids.astype("str").map(lambda c: f"R{k:03d}-{c}")

        features.append(snapshot.features.assign(customer_id=rename(snapshot.features["customer_id"])))
        asks.append(
            snapshot.asks.assign(
                customer_id=rename(snapshot.asks["customer_id"]), ask_id=rename(snapshot.asks["ask_id"])
            )
        )
    frame = pd.concat(features, ignore_index=True).head(customers)
    kept = set(frame["customer_id"])
    ask_frame = pd.concat(asks, ignore_index=True)
    ask_frame = ask_frame[ask_frame["customer_id"].isin(kept)].reset_index(drop=True)
    history = snapshot.history.head(0)
    return Snapshot(frame, ask_frame, history, snapshot.meta | {"customers": len(frame), "asks": len(ask_frame)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    console = Console(width=160)
    world = read_world(ROOT / "data" / "sample")
    with console.status("Fitting a model on the sample and making the snapshot"):
        bundle, _ = fit_bundle(world, build_training_data(world), TrainConfig())
        snapshot = repeated(build_snapshot(world, observed_until(world), lapse_days=bundle.lapse_days), args.customers)
    table = Table(title=f"advocacy sync hubspot: {len(snapshot.features):,} profiles to a local server (2 cores)")
    for col in ("run", "profiles sent", "batches", "seconds", "limit"):
        table.add_column(col, justify="left" if col == "run" else "right")
    with tempfile.TemporaryDirectory() as tmp, HubSpotServer().running() as server:
        folder = Path(tmp)
        write_snapshot(snapshot.tables(), snapshot.meta, folder / "store")
        job = SyncJob(folder / "store", Sources(folder, folder / "asks.sqlite", folder / "plans"))
        objects = {PROFILES: PROFILE_OBJECT, ACTIVITIES: ACTIVITY_OBJECT}
        sink = HubSpotSink(HUBSPOT_TOKEN, objects, hubspot_names(), url=server.url)
        started = time.perf_counter()
        records = build_records(bundle, job, {})
        built = time.perf_counter() - started
        table.add_row("make the profiles (score, reasons)", f"{len(records[PROFILES]):,}", "", f"{built:.1f}", "")
        for run in ("first sync (everything)", "second sync (nothing changed)"):
            state = SyncState(folder / "sync", "hubspot")
            before = len(server.sent)
            started = time.perf_counter()
            report = sync(bundle, job, sink, state)
            seconds = time.perf_counter() - started
            sent = report.kinds[PROFILES].acknowledged
            limit = f"{LIMIT_S:.0f} s" if run.startswith("first") else ""
            table.add_row(run, f"{sent:,}", f"{len(server.sent) - before:,}", f"{seconds:.1f}", limit)
            if run.startswith("first"):
                assert report.error is None and sent == len(snapshot.features) == len(server.records()), report.error
                assert seconds <= LIMIT_S, f"{seconds:.1f} s over the {LIMIT_S:.0f} s budget"
    console.print(table)


if __name__ == "__main__":
    main()
