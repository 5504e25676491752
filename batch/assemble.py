"""Stage 3 of the batch job: the output, the totals and the feature snapshot, from the finished chunks.

The output is written in chunk order into a temporary file (renamed by the job at the very end, so
the output path never holds a partial file); the feature snapshot the service reads is streamed from
the chunks and published like every snapshot (`storage.snapshots.publish_snapshot`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from batch.chunk import TOP_DISAGREEMENTS
from batch.scratch import SUFFIX, piece_rows, read_piece, read_schema
from features.context import SNAPSHOT_TABLES, snapshot_meta, whole_tables
from models.explain_fast import ExplainStats
from models.tiers import TIER_ORDER, TIERS_SHOWN
from storage.files import spreadsheet_safe
from storage.snapshots import publish_snapshot


def assemble_output(work: Path, n_chunks: int, out: Path) -> Path:
    """The output, in chunk order, in a temporary file inside the work folder (renamed later)."""
    tmp = work / f"output{out.suffix}"
    tmp.unlink(missing_ok=True)
    paths = [work / "chunks" / f"{k:05d}" / f"result{SUFFIX}" for k in range(n_chunks)]
    try:
        if out.suffix == ".parquet":
            schema = read_schema(paths[0])
            with pq.ParquetWriter(tmp, schema) as writer:
                for path in paths:
                    writer.write_table(read_piece(path).cast(schema))
        else:
            with open(tmp, "w", newline="") as fh:
                for k, path in enumerate(paths):
                    spreadsheet_safe(read_piece(path).to_pandas()).to_csv(fh, header=k == 0, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. the disk filled up: give the space back, keep the finished chunks
        raise
    return tmp


def _stream_parts(paths: Sequence[Path], target: Path) -> int:
    """Concatenate the chunks' pieces into one Parquet file with one schema (the first non-empty
    piece's); return the rows."""
    # One piece in memory at a time: the schema and row counts come from the files' footers.
    counts = [piece_rows(p) for p in paths]
    first = next((p for p, n in zip(paths, counts, strict=True) if n), paths[0])
    schema = read_schema(first)
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        for path, n in zip(paths, counts, strict=True):
            if n:
                table = read_piece(path)
                writer.write_table(table.cast(schema))
                rows += table.num_rows
    return rows


def write_snapshot_from_chunks(
    work: Path,
    n_chunks: int,
    root: Path,
    as_of: pd.Timestamp,
    forced: bool = False,
    whole: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """The feature snapshot the service reads, streamed from the chunks (`features.context.Snapshot`),
    with its small tables written whole (`features.context.WHOLE_TABLES`: those `whole` lacks, empty).

    Published like `storage.snapshots.write_snapshot` (`publish_snapshot`), without holding the
    whole base in memory.
    """

    def fill(staging: Path) -> dict[str, Any]:
        def stream(part: str) -> int:
            paths = [work / "chunks" / f"{k:05d}" / f"{part}{SUFFIX}" for k in range(n_chunks)]
            return _stream_parts(paths, staging / f"{part}.parquet")

        # The tables side by side: Parquet's encoding runs outside the GIL (at 1M, 3.9 s one after another).
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            counts = dict(zip(SNAPSHOT_TABLES, pool.map(stream, SNAPSHOT_TABLES), strict=True))
        for name, frame in whole_tables(whole or {}).items():
            frame.to_parquet(staging / f"{name}.parquet", index=False)
        return snapshot_meta(as_of, customers=counts["features"], asks=counts["asks"], forced=forced)

    return publish_snapshot(root, fill)


def drift_path(out: Path) -> Path:
    """`scores.parquet` -> `scores.drift.csv`."""
    return out.with_name(f"{out.stem}.drift.csv")


@dataclass
class Totals:
    """What the chunks' stats add up to."""

    rows: int = 0
    customers: int = 0
    cold_start: int = 0
    tiers: dict[tuple[str, str], int] = field(default_factory=dict)
    drift: dict[str, np.ndarray] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)
    explain: ExplainStats = field(default_factory=ExplainStats)

    def add(self, stats: Mapping[str, Any]) -> None:
        self.rows += int(stats["rows"])
        self.customers += int(stats["customers"])
        self.cold_start += int(stats["cold_start"])
        for model_tier, rule_tier, n in stats["tiers"]:
            self.tiers[(model_tier, rule_tier)] = self.tiers.get((model_tier, rule_tier), 0) + int(n)
        for name, counts in stats["drift"].items():
            values = np.asarray(counts, dtype=float)
            self.drift[name] = self.drift[name] + values if name in self.drift else values
        self.top.extend(stats["top"])
        self.explain.add(ExplainStats(**stats["explain"]))

    def crosstab(self) -> pd.DataFrame:
        # Rows: the model's tiers and committed pipeline; columns: the points rule's tiers.
        table = pd.DataFrame(0, index=list(TIERS_SHOWN), columns=list(TIER_ORDER[::-1]), dtype=np.int64)
        for (model_tier, rule_tier), n in self.tiers.items():
            table.loc[model_tier, rule_tier] = n
        table.index.name, table.columns.name = "model tier", "baseline tier"
        return table

    def top_disagreements(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.top)
        if frame.empty:
            return pd.DataFrame(columns=["customer_id", "tier", "propensity", "baseline_tier", "baseline_points"])
        frame = frame.assign(size=frame["gap"].abs())
        frame = frame.sort_values(["size", "propensity", "customer_id"], ascending=[False, False, True], kind="stable")
        return frame.head(TOP_DISAGREEMENTS).drop(columns=["size"]).reset_index(drop=True)
