"""Planning commands: `advocacy plan` (whom to ask, for what, to get the yeses needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from advocacy.app import DataDir, app, clear_errors, console, current_settings, parse_time
from advocacy.present import styled

if TYPE_CHECKING:
    import pandas as pd

PANEL = "Planning"


@app.command(rich_help_panel=PANEL)
@clear_errors
def plan(
    data: DataDir,
    need: Annotated[list[str], typer.Option("--need", help="TYPE=N yeses needed, e.g. review=120 (repeat).")],
    confidence: Annotated[float, typer.Option(help="Chance of at least N yeses each list must reach.")] = 0.9,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Default: the end of the data.")] = None,
    segment: Annotated[str | None, typer.Option(help="Only customers of this segment.")] = None,
    industry: Annotated[str | None, typer.Option(help="Only customers of this industry.")] = None,
    region: Annotated[str | None, typer.Option(help="Only customers of this region.")] = None,
    use_case: Annotated[str | None, typer.Option("--use-case", help="Only customers with this use case.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the plan (.csv or .parquet), atomically.")] = None,
) -> None:
    """Plan whom to ask for what: per ask type the shortest list reaching the confidence, one ask per customer."""
    from storage.files import check_frame_path, write_frame
    from usecases import PlanJob, PlanRequest, Sources, load_champion, parse_need, plan_from_sources

    request = PlanRequest.from_options(parse_need(need), confidence, segment, industry, region, use_case)
    if out is not None:
        check_frame_path(out)  # before the plan is made and stored
    settings = current_settings()
    current, bundle = load_champion(settings)
    job = PlanJob(request, parse_time(as_of))
    with console.status("Scoring the base and planning"):
        made = plan_from_sources(bundle, current, Sources.from_settings(settings, data), job)
    if out is not None:  # the file first: what is shown cannot cost what was asked for
        write_frame(made.table, out)
    _print_plan(made.plan.plan_id, made.plan.summary, made.table)
    if out is not None:
        console.print(f"Wrote {len(made.table):,} planned asks to {out}")


def _print_plan(plan_id: str, summary: dict[str, dict[str, Any]], table: pd.DataFrame) -> None:
    sums = Table(title=f"Plan {plan_id}")
    for col in ("ask type", "need", "asks", "expected yeses", "P(at least need)", "met"):
        sums.add_column(col, justify="left" if col == "ask type" else "right")
    for name, s in summary.items():
        met = styled("yes", "green") if s["met"] else styled("cannot be met", "red")
        sums.add_row(
            name, str(s["need"]), str(s["asked"]), f"{s['expected_yes']:.1f}", f"{s['p_at_least_needed']:.2f}", met
        )
    console.print(sums)
    first = Table(title="Ask first (top 5 per type)")
    for col in ("ask type", "rank", "customer", "name", "acceptance", "why"):
        first.add_column(col)
    for row in table.groupby("ask_type", sort=False).head(5).itertuples(index=False):
        first.add_row(
            row.ask_type, str(row.rank), row.customer_id, row.name, f"{row.acceptance:.0%}", str(row.reason_1 or "")
        )
    console.print(first)
