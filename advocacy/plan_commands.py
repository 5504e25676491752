"""Planning commands: `advocacy plan` (whom to ask, for what, to get the yeses needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from advocacy.app import app, clear_errors, console, current_settings, parse_time
from advocacy.present import plain, show_left_out, styled

if TYPE_CHECKING:
    import pandas as pd

PANEL = "Planning"


@app.command(rich_help_panel=PANEL)
@clear_errors
def plan(
    data: Annotated[
        Path | None, typer.Option("--data", help="Directory of raw tables (with --continue: the campaign's).")
    ] = None,
    need: Annotated[
        list[str] | None, typer.Option("--need", help="TYPE=N yeses needed, e.g. review=120 (repeat).")
    ] = None,
    confidence: Annotated[
        float | None, typer.Option(help="Chance of at least N yeses each list must reach (0.9).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Default: the end of the data (next wave: the last plus wave days).")
    ] = None,
    segment: Annotated[str | None, typer.Option(help="Only customers of this segment.")] = None,
    industry: Annotated[str | None, typer.Option(help="Only customers of this industry.")] = None,
    region: Annotated[str | None, typer.Option(help="Only customers of this region.")] = None,
    use_case: Annotated[str | None, typer.Option("--use-case", help="Only customers with this use case.")] = None,
    waves: Annotated[int | None, typer.Option(help="Ask in this many waves (a campaign); 1: all at once.")] = None,
    wave_days: Annotated[int | None, typer.Option("--wave-days", help="Days between waves (14).")] = None,
    continue_id: Annotated[
        str | None, typer.Option("--continue", help="Plan the next wave of this campaign (its plan_id).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the plan (.csv or .parquet), atomically.")] = None,
) -> None:
    """Plan whom to ask for what: per ask type the shortest list reaching the confidence, one ask per
    customer; with --waves, wave 1 of a campaign, and with --continue, its next wave."""
    from storage.files import check_frame_path, write_frame
    from usecases import (
        DEFAULT_CONFIDENCE,
        PlanJob,
        PlanRequest,
        Schedule,
        Sources,
        continue_campaign,
        load_champion,
        parse_need,
        plan_from_sources,
    )

    if out is not None:
        check_frame_path(out)  # before the plan is made and stored
    settings = current_settings()
    if continue_id is not None:
        given: dict[str, object] = {"--need": need, "--confidence": confidence, "--waves": waves}
        given |= {"--wave-days": wave_days, "--segment": segment, "--industry": industry}
        given |= {"--region": region, "--use-case": use_case}
        repeated = [name for name, value in given.items() if value]
        if repeated:
            raise ValueError(
                f"--continue: {', '.join(repeated)} come from the stored campaign; give only --data, --as-of"
            )
        sources = Sources.from_settings(settings, data or _campaign_data(settings, continue_id))
        current, bundle = load_champion(settings)
        with console.status("Reading the campaign's answers and planning its next wave"):
            made = continue_campaign(bundle, current, sources, continue_id, parse_time(as_of))
    else:
        if not need:
            raise ValueError("--need: name at least one ask type and how many yeses, e.g. --need review=120")
        if data is None:
            raise ValueError("--data: the directory of raw tables to plan from")
        request = PlanRequest.from_options(
            parse_need(need),
            DEFAULT_CONFIDENCE if confidence is None else confidence,
            segment,
            industry,
            region,
            use_case,
        )
        schedule = Schedule(1 if waves is None else waves, 14 if wave_days is None else wave_days)
        current, bundle = load_champion(settings)
        job = PlanJob(request, parse_time(as_of), schedule=schedule)
        with console.status("Scoring the base and planning"):
            made = plan_from_sources(bundle, current, Sources.from_settings(settings, data), job)
    if out is not None:  # the file first: what is shown cannot cost what was asked for
        write_frame(made.table, out)
    _print_plan(made.plan.plan_id, made.plan.summary, made.table, made.plan.campaign)
    show_left_out(console, made.left_out)
    if out is not None:
        console.print(f"Wrote {len(made.table):,} planned asks to {out}")


def _campaign_data(settings: Any, plan_id: str) -> Path | None:
    """The data folder a stored campaign's wave 1 was planned from (None: the settings' default)."""
    from usecases import Sources, load_campaign

    _, record = load_campaign(Sources.from_settings(settings).plans(), plan_id)
    folder = record["campaign"].get("data_dir")
    return Path(folder) if folder else None


def _print_plan(
    plan_id: str, summary: dict[str, dict[str, Any]], table: pd.DataFrame, campaign: dict[str, Any] | None
) -> None:
    if campaign is None:
        title = f"Plan {plan_id}"
    else:
        wave = f"wave {campaign['wave']} of {campaign['waves']}" if campaign["wave"] <= campaign["waves"] else "done"
        title = f"Campaign {plan_id}: {wave}, deadline {campaign['deadline'][:10]}"
    sums = Table(title=title)
    columns = ["ask type", "need", "asks", "expected yeses", "P(at least need)", "met"]
    if campaign is not None:
        columns[2:2] = ["yeses so far", "pending"]
    for col in columns:
        sums.add_column(col, justify="left" if col == "ask type" else "right")
    for name, s in summary.items():
        if campaign is None:
            met = styled("yes", "green") if s["met"] else styled("cannot be met", "red")
        else:
            reachable = s["p_at_least_needed"] >= 0.5
            met = (
                styled("met", "green")
                if s["met"]
                else (styled("on track", "green") if reachable else styled("at risk", "red"))
            )
        so_far = [str(s["yeses_so_far"]), str(s["pending"])] if campaign is not None else []
        sums.add_row(
            name,
            str(s["need"]),
            *so_far,
            str(s["asked"]),
            f"{s['expected_yes']:.1f}",
            f"{s['p_at_least_needed']:.2f}",
            met,
        )
    console.print(sums)
    drawn = [name for name, s in summary.items() if s.get("invited_at_random")]
    if drawn:
        console.print(
            plain(
                f"{', '.join(drawn)}: invited at random among customers no fatigue guardrail blocks, not by how"
                " likely they are to say yes. Asking only the customers expected to be happy for a public review"
                " is what the FTC's guide on soliciting reviews tells businesses not to do; the model only"
                " forecasts how many invitations reach the need (ADVOCACY_UNGATED_TYPES)."
            )
        )
    if table.empty:
        console.print("Nothing more to ask." if campaign is not None else "Nobody to ask.")
        return
    first = Table(title="Ask first (top 5 per type)")
    for col in ("ask type", "rank", "customer", "name", "acceptance", "why"):
        first.add_column(col)
    for row in table.groupby("ask_type", sort=False).head(5).itertuples(index=False):
        first.add_row(
            row.ask_type, str(row.rank), row.customer_id, row.name, f"{row.acceptance:.0%}", str(row.reason_1 or "")
        )
    console.print(first)
