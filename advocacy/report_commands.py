"""Reporting commands: `advocacy report` (the program report: what was asked, what came of it,
whether the plans kept their promise, and with deals what references did for winning them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from advocacy.app import DataDir, app, clear_errors, console, current_settings, parse_time
from advocacy.present import show_left_out

if TYPE_CHECKING:
    import pandas as pd

    from storage.settings import Settings
    from usecases import DealReport, MadeReport, ProgramReport

PANEL = "Planning"


@app.command(rich_help_panel=PANEL)
@clear_errors
def report(
    data: DataDir,
    since: Annotated[
        str | None, typer.Option("--since", help="Only asks made, and deals created, at or after this time (UTC).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the tables (CSV) and charts (PNG) into this folder.")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment of the report's run. Default: ADVOCACY_EXPERIMENT-report.")
    ] = None,
) -> None:
    """The program report: asks, acceptance and delivery by ask type and month; planned asks' promise
    against what happened; yeses per ask against the points rule; with an opportunities table, the
    deals (influenced pipeline, the effect of a delivered reference, referrals; `deals.csv`). Logged
    to MLflow with its charts."""
    from storage.reports import ReportStore
    from usecases import (
        Sources,
        configure_tracking,
        deal_options,
        find_champion,
        keep_for_the_page,
        make_report,
        report_stamp,
    )

    when = parse_time(since, "--since")
    settings = current_settings()
    sources = Sources.from_settings(settings, data)
    with console.status("Counting asks, scoring the points rule as of each ask, estimating what references did"):
        made = make_report(sources, when, deal_options(settings))
    _print_report(made.report)
    configure_tracking(settings, experiment or f"{settings.experiment}-report")
    champion = find_champion(settings.model_name)
    stamp = report_stamp(sources, None if champion is None else champion.version)
    kept = keep_for_the_page(made, ReportStore(settings.report_path()), stamp)
    console.print(f"The CSM page's Program report tab now shows this report ({kept})")
    if out is not None:
        _write_report(made.report, made.charts, out)
        console.print(f"Wrote {len(made.report.tables())} tables and {len(made.charts)} charts to {out}")
    run_id = _log_report(settings, made, experiment or f"{settings.experiment}-report", data)
    console.print(f"MLflow run {run_id}")


def _fmt(value: Any, kind: str = "") -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if kind == "%":
        return f"{value:.0%}"
    if kind == "pts":  # a difference of shares, in percentage points
        return f"{value * 100:+.1f} pts"
    if kind == "money":
        return f"{value:,.0f}"
    return f"{value:.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _table(title: str, frame: pd.DataFrame, kinds: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    for i, col in enumerate(frame.columns):
        table.add_column(col.replace("_", " "), justify="left" if i == 0 else "right")
    for row in frame.itertuples(index=False):
        table.add_row(
            *(
                _fmt(v.item() if hasattr(v, "item") else v, (kinds or {}).get(c, ""))
                for c, v in zip(frame.columns, row, strict=True)
            )
        )
    return table


def _print_report(made: ProgramReport) -> None:
    rates = {"acceptance_rate": "%", "delivery_rate": "%", "realised_rate": "%", "yeses_per_ask": ""}
    period = f"{made.since:%Y-%m-%d}" if made.since is not None else "the start"
    console.print(f"Program report: asks from {period} to {made.until:%Y-%m-%d}")
    console.print(_table("By ask type", made.by_type, rates))
    console.print(_table("By month asked", made.monthly, rates))
    if made.planned.empty:
        console.print("No ask in the period was recorded with a plan_id (POST /asks with plan_id).")
    else:
        console.print(
            _table(
                "Planned asks: promised against realised acceptance",
                made.reliability.drop(columns=["lower", "upper"]),
                rates,
            )
        )
        console.print(_table("Per plan: promised expected yeses against yeses", made.plans.drop(columns="stored")))
        if (made.waves["wave"] > 1).any():  # a campaign: its promise wave by wave
            console.print(_table("Per campaign wave: promised expected yeses against yeses", made.waves, rates))
    start = f" from {made.compared_from:%Y-%m-%d}" if made.compared_from is not None else ""
    console.print(_table(f"Yeses per ask{start}: plans against the points rule's picks", made.versus_rule))
    if made.deals is not None:
        _print_deals(made.deals, period)
    show_left_out(console, made.left_out)


def _print_deals(deals: DealReport, period: str) -> None:
    """The deals section: pipeline, both estimates (never an adjusted number without an estimate),
    the refutations, the revenue and the referral pipeline."""
    money = {"amount": "money", "won_amount": "money", "win_rate": "%"}
    points = {"value": "pts", "ci_low": "pts", "ci_high": "pts", "estimated_effect": "pts", "new_effect": "pts"}
    console.print(f"Deals created from {period}: {len(deals.deals):,}")
    title = "Pipeline with a delivered reference and without (win rate and days to close: closed deals)"
    console.print(_table(title, deals.by_reference, money))
    title = "A delivered reference and winning: plain difference and adjusted effect (90% intervals)"
    console.print(_table(title, deals.estimates().drop(columns="note"), points))
    for note in deals.notes():
        console.print(note)
    if deals.effect.refutations:
        console.print(_table("DoWhy's refutations of the adjusted effect", deals.refutations(), points))
    revenue = deals.revenue().drop(columns=["return_on_program_cost"])
    roi = deals.return_on_cost
    console.print(_table("Influenced pipeline and incremental won revenue", revenue, dict.fromkeys(revenue, "money")))
    if roi is not None:
        console.print(f"Return on the program cost: {roi:.0%}")
    if deals.referrals_by_month.empty:
        console.print("No deal in the period was referred by a customer (referred_by).")
        return
    console.print(_table("Referred deals by month created", deals.referrals_by_month, money))
    title = "Referred deals by the referrer's points tier when the deal was created"
    console.print(_table(title, deals.referrals_by_tier, money))
    console.print(_table("Referrers who brought the most deals", deals.top_referrers, money))


def _write_report(made: ProgramReport, charts: dict[str, bytes], out: Path) -> None:
    """Each table as `NAME.csv` and each chart (PNG) in `out`, every file whole or not at all."""
    from storage.files import atomic_path, write_frame

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder: {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in made.tables().items():
        write_frame(frame, out / f"{name}.csv")
    for name, png in charts.items():
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(png)


def _log_report(settings: Settings, made: MadeReport, experiment: str, data: Path) -> str:
    """One MLflow run holding the charts, the tables (CSV) and the headline figures; its id."""
    import mlflow

    from storage.files import spreadsheet_safe
    from storage.tracking import configure

    report = made.report
    configure(settings, experiment)
    with mlflow.start_run(run_name="program report") as run:
        mlflow.set_tag("kind", "program_report")
        if report.deals is not None:
            mlflow.set_tag("deal_effect_status", report.deals.effect.status)
        since = "" if report.since is None else report.since.isoformat()
        mlflow.log_params({"data": str(data), "since": since, "until": report.until.isoformat()})
        mlflow.log_metrics(made.metrics)
        for name, fig in made.figures.items():
            mlflow.log_figure(fig, name)
        for name, frame in report.tables().items():
            mlflow.log_text(spreadsheet_safe(frame).to_csv(index=False), f"tables/{name}.csv")
        return str(run.info.run_id)
