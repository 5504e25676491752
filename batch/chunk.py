"""Stage 2 of the batch job: score one chunk of customers, exactly as the API would.

Per chunk: the scoring recipe (`usecases.recipe.score_world`: point-in-time features, the
feature-store rows, the guardrails and `models.scoring.score`, the function the API calls), with
reasons from `PatternTreeShap`. A chunk is
written to a temporary folder and renamed: it is complete or absent, so a killed run resumes from
the chunks it finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batch.scratch import SUFFIX, write_piece
from batch.tables import load_chunk_world
from models.bundle import Bundle
from models.drift import drift_counts
from models.explain_fast import ExplainStats, PatternTreeShap
from usecases.recipe import score_world

TOP_DISAGREEMENTS = 10


@dataclass
class Scorer:
    """What every chunk needs from the model; sent to each Dask worker once."""

    bundle: Bundle
    explainer: PatternTreeShap | None

    @classmethod
    def for_bundle(cls, bundle: Bundle, explain: bool) -> Scorer:
        return cls(bundle, PatternTreeShap(bundle.propensity.booster) if explain else None)


_STRING = pa.string()
_FLOAT = pa.float64()
_RESULT_TYPES: dict[str, pa.DataType] = {
    "propensity": _FLOAT,
    "percentile": _FLOAT,
    "next_best_ask_probability": _FLOAT,
    "re_engage": pa.bool_(),
    "baseline_points": pa.int64(),
    "baseline_qualified": pa.bool_(),
    "cold_start": pa.bool_(),
    "committed": pa.bool_(),
    "features_as_of": pa.timestamp("us", tz="UTC"),
}


def result_table(frame: pd.DataFrame) -> pa.Table:
    """The output columns with fixed types, so that every chunk has the same schema."""
    types = [_RESULT_TYPES.get(c, _FLOAT if c.startswith("acceptance_") else _STRING) for c in frame.columns]
    schema = pa.schema([pa.field(c, t) for c, t in zip(frame.columns, types, strict=True)])
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(None)


def _top_disagreements(result: pd.DataFrame, gap: np.ndarray, k: int = TOP_DISAGREEMENTS) -> pd.DataFrame:
    """The largest tier gaps (`Scores.tier_gaps`: none on cold start or for committed pipeline)."""
    frame = result.assign(gap=gap)[gap != 0]
    frame = frame.assign(size=frame["gap"].abs())
    frame = frame.sort_values(["size", "propensity", "customer_id"], ascending=[False, False, True], kind="stable")
    columns = ["customer_id", "tier", "propensity", "baseline_tier", "baseline_points", "gap", "reason_1"]
    return frame.head(k).loc[:, columns].reset_index(drop=True)


def score_chunk(work: Path, chunk: int, scorer: Scorer, as_of: pd.Timestamp, num_threads: int) -> dict[str, Any]:
    """Stage 2 for one chunk: write `chunks/NNNNN/` (complete, or not at all); return its stats."""
    done = work / "chunks" / f"{chunk:05d}"
    if (done / "stats.json").exists():
        stats: dict[str, Any] = json.loads((done / "stats.json").read_text())
        return stats
    started = time.perf_counter()
    bundle = scorer.bundle
    world = load_chunk_world(work, chunk)
    # The reasons come from the fast explainer (exact for the top 3), not from `score`'s own TreeSHAP.
    scored = score_world(bundle, world, as_of, explain=False, num_threads=num_threads)
    scores, snapshot, features, matrix = scored.scores, scored.snapshot, scored.features, scored.matrix
    explain = ExplainStats()
    if scorer.explainer is not None:
        scores.contributions, explain = scorer.explainer.contributions(matrix)
    result = scores.columns()
    crosstab = pd.crosstab(result["tier"], result["baseline_tier"]) if len(result) else pd.DataFrame()
    stats = {
        "chunk": chunk,
        "rows": len(result),
        "customers": len(world.customers),
        "cold_start": int(result["cold_start"].sum()),
        "tiers": [[str(m), str(b), int(crosstab.loc[m, b])] for m in crosstab.index for b in crosstab.columns],
        "drift": drift_counts(bundle.drift_reference, features, scores.model_propensity),
        "top": _top_disagreements(result, scores.tier_gaps).to_dict(orient="records"),
        "explain": explain.__dict__,
        "asks": len(snapshot.asks),
        "seconds": time.perf_counter() - started,
    }
    staging = work / "chunks" / f".{chunk:05d}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        write_piece(result_table(result), staging / f"result{SUFFIX}")
        for part in ("features", "asks", "history"):
            frame = getattr(snapshot, part)
            write_piece(pa.Table.from_pandas(frame, preserve_index=False), staging / f"{part}{SUFFIX}")
        (staging / "stats.json").write_text(json.dumps(stats, default=_json_default))
        try:
            os.replace(staging, done)
        except OSError:
            if not (done / "stats.json").exists():  # someone else finished it meanwhile: theirs is the same
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or value is None:
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
