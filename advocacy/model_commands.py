"""Training and registry commands: `advocacy train`, `recalibrate`, `promote` and `rollback`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from advocacy.app import app, clear_errors, console, current_settings
from advocacy.present import styled

PANEL = "Training and the registry"


def print_train_result(result: Any) -> None:
    from training.pipeline import train_summary

    table = Table(title=f"Held-out window: model v{result.version} beside {result.baseline_name}")
    for col in ("metric", "model", result.baseline_name):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for metric, model, baseline in train_summary(result.metrics).itertuples(index=False):
        fmt = lambda v: "" if v is None or v != v else f"{v:.3f}"  # noqa: E731
        table.add_row(metric, fmt(model), fmt(baseline))
    console.print(table)
    colour = "green" if result.promoted else "yellow"
    console.print(
        Text.assemble(styled(result.gate.reason, colour), f"  (MLflow run {result.run_id}, version {result.version})")
    )


@app.command(rich_help_panel=PANEL)
@clear_errors
def train(
    data: Annotated[Path | None, typer.Option("--data", help="Directory of raw tables.")] = None,
    tune: Annotated[int, typer.Option("--tune", min=0, help="Optuna trials before the final fit (0: none).")] = 0,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
    table: Annotated[Path | None, typer.Option("--table", help="A prepared feature table (bring your own).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="Label column of --table.")] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="Time column of --table.")] = None,
    drop: Annotated[
        list[str] | None, typer.Option("--drop", help="Column of --table not to use (repeat), e.g. a leak.")
    ] = None,
    engine: Annotated[str, typer.Option(help="local or dask.")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (with --engine dask).")] = None,
) -> None:
    """Train both models, evaluate beside the points rule, log to MLflow, and promote if the gate passes."""
    settings = current_settings()
    if table is not None:
        from training.byof import train_table

        if not label:
            raise ValueError("--label is required with --table")
        result = train_table(
            settings, table, label, time_column, drop=drop or [], experiment=experiment, progress=console.log
        )
        print_train_result(result)
        return
    if engine not in ("local", "dask"):
        raise ValueError(f"--engine must be local or dask, got {engine!r}")
    from training.pipeline import train as run_training

    trainer = None
    if engine == "dask":
        from training.distributed import dask_trainer

        trainer = dask_trainer(scheduler)
    result = run_training(
        settings, data, experiment=experiment, tune_trials=tune, trainer=trainer, progress=console.log
    )
    print_train_result(result)


@app.command(rich_help_panel=PANEL)
@clear_errors
def promote(version: Annotated[str, typer.Argument(help="Registered model version to make @champion.")]) -> None:
    """Move @champion to VERSION by hand."""
    from training import registry

    settings = current_settings()
    registry.configure(settings)
    registry.promote(settings.model_name, version)
    console.print(f"@champion -> version {version}")


@app.command(rich_help_panel=PANEL)
@clear_errors
def rollback() -> None:
    """Move @champion back to the previous champion."""
    from training import registry

    settings = current_settings()
    registry.configure(settings)
    console.print(f"@champion -> version {registry.rollback(settings.model_name)}")


@app.command(rich_help_panel=PANEL)
@clear_errors
def recalibrate(
    data: Annotated[Path | None, typer.Option("--data", help="Directory of raw tables.")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
) -> None:
    """Recalibrate @champion on the newest answered asks (its trees stay), register, promote if the gate passes.

    Campaign answers (asks recorded with a plan's plan_id) weigh more than asks the company chose itself."""
    from training.recalibrate import recalibrate as run_recalibration

    result = run_recalibration(current_settings(), data, experiment=experiment, progress=console.log)
    print_campaign_answers(result.campaign)
    print_train_result(result)


def print_campaign_answers(evidence: Any) -> None:
    """Per ask type, the campaign answers the acceptance calibrators used and what each weighed."""
    if not evidence.total:
        console.print("No campaign answers among the asks recalibrated on: every answered ask weighed the same.")
        return
    title = f"Campaign answers weighed as unbiased evidence (ADVOCACY_HABIT_BIAS={evidence.habit_bias:g})"
    table = Table(title=title)
    for col in ("ask type", "campaign answers", "weight each (an off-plan ask: 1)"):
        table.add_column(col, justify="left" if col == "ask type" else "right")
    for name, n in evidence.answers.items():
        table.add_row(name, f"{n:,}", f"{evidence.weight[name]:.1f}")
    console.print(table)
