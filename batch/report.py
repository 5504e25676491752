"""What the batch job tells people: a progress bar, an MLflow run, and a summary in the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from models.tiers import COMMITTED, TIER_ORDER, TIERS_SHOWN
from storage.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from batch.job import BatchResult, RunKey

EXPERIMENT = "advocacy-batch"


class _RateColumn(ProgressColumn):
    """Rows per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


def make_progress(console: Console) -> Progress:
    """A Rich progress bar with rows/s and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def log_to_mlflow(settings: Settings, result: BatchResult, key: RunKey, data_dir: Path, engine: str) -> str | None:
    """One run per batch job in the `advocacy-batch` experiment (params, metrics, drift report)."""
    import mlflow

    uri = settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = settings.artifact_root().resolve().as_uri() if uri.startswith("sqlite:") else None
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    tiers = result.tiers
    rows = max(result.rows, 1)
    metrics = {
        "rows": float(result.rows),
        "seconds": result.seconds,
        "rows_per_second": result.rows_per_second,
        "agreement": agreement(tiers) / max(result.rows - int(tiers.loc[COMMITTED].sum()), 1),
        "drifted_features": float(result.drift["drifted"].sum()),
        "max_psi": float(result.drift["psi"].max()) if len(result.drift) else 0.0,
    }
    metrics.update({f"seconds_{stage}": seconds for stage, seconds in result.stages.items()})
    score_psi = result.drift.loc[result.drift["name"] == "score", "psi"]
    if len(score_psi):
        metrics["score_psi"] = float(score_psi.iloc[0])
    for tier in TIERS_SHOWN:
        metrics[f"share_model_{tier}"] = float(tiers.loc[tier].sum()) / rows
    for tier in TIER_ORDER:
        metrics[f"share_baseline_{tier}"] = float(tiers[tier].sum()) / rows
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(
            {
                "data_dir": str(data_dir),
                "data_fingerprint": key.data,
                "as_of": key.as_of,
                "model_name": key.model_name,
                "model_version": key.model_version,
                "explain": key.explain,
                "engine": engine,
                "chunk_size": key.chunk_size,
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.set_tag("model_version", key.model_version)
        mlflow.log_artifact(str(result.drift_path))
        return str(run.info.run_id)


def agreement(tiers: pd.DataFrame) -> int:
    """Customers whose model tier is the points rule's (committed pipeline has no model tier)."""
    return int(sum(tiers.loc[t, t] for t in TIER_ORDER))


def print_summary(result: BatchResult, console: Console) -> None:
    """Tier counts for the model and the points rule, their agreement, drift, and the largest disagreements."""
    tiers = result.tiers
    rows = max(result.rows, 1)
    table = Table(title=f"{result.rows:,} customers scored as of {result.as_of:%Y-%m-%d %H:%M} UTC")
    table.add_column("tier")
    table.add_column("model", justify="right")
    table.add_column("points rule", justify="right")
    for tier in TIERS_SHOWN:
        model_n = int(tiers.loc[tier].sum())
        rule_n = int(tiers[tier].sum()) if tier in tiers.columns else None
        table.add_row(
            tier, f"{model_n:,} ({model_n / rows:.1%})", "" if rule_n is None else f"{rule_n:,} ({rule_n / rows:.1%})"
        )
    console.print(table)
    agree = agreement(tiers)
    tiered = rows - int(tiers.loc[COMMITTED].sum())
    console.print(
        f"Model and points rule agree on the tier of {agree:,} of the {tiered:,} customers not committed "
        f"({agree / max(tiered, 1):.1%})."
    )
    drifted = result.drift[result.drift["drifted"]]
    if len(drifted):
        shown = ", ".join(f"{n} (PSI {p:.2f})" for n, p in zip(drifted["name"], drifted["psi"], strict=True))
        console.print(Text.assemble(("Drift against the training data:", "yellow"), f" {shown}"))
    else:
        console.print("No feature or score drifted against the training data (PSI <= 0.25).")
    ex = result.explain
    if ex.rows:
        console.print(
            f"Reasons: TreeSHAP of {ex.patterns:,} tree patterns ({ex.computed:,} computed, the rest cached); "
            f"{ex.exact_rows:,} rows recomputed exactly at near-ties."
        )
    top = result.top_disagreements
    if len(top):
        t = Table(title="Largest disagreements (customer ids only)")
        for col in ("customer", "model", "propensity", "points rule", "points", "top reason"):
            t.add_column(col, justify="right" if col in ("propensity", "points") else "left")
        for row in top.itertuples(index=False):
            t.add_row(
                str(row.customer_id),
                str(row.tier),
                f"{row.propensity:.3f}",
                str(row.baseline_tier),
                str(row.baseline_points),
                str(row.reason_1 or ""),
            )
        console.print(t)
    if result.stages:
        console.print("Seconds per stage: " + ", ".join(f"{k} {v:,.1f}" for k, v in result.stages.items()))
    console.print(
        f"Wrote {result.out} ({result.rows:,} rows, {result.seconds:,.1f} s, {result.rows_per_second:,.0f} rows/s), "
        f"drift report {result.drift_path}"
        + (f", feature snapshot {result.snapshot_dir}" if result.snapshot_dir else "")
    )
