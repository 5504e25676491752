"""CRM commands: `advocacy sync hubspot|salesforce` (spec section 10): profiles and campaign asks, to the CRM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from advocacy.app import app, clear_errors, console, current_settings, err_console
from advocacy.present import plain, styled

if TYPE_CHECKING:
    from usecases.sync import SyncReport

PANEL = "CRM"
SHOWN_KEYS = 10  # keys a dry run lists per kind
ONE = {"profiles": "profile", "activities": "activity"}


def _refused(message: str) -> click.exceptions.Exit:
    """Exit 1 after one line: the CRM refused (Click's own Exit passes through `clear_errors`)."""
    err_console.print(Text.assemble(styled("error:", "bold red"), " ", plain(message)), soft_wrap=True)
    return click.exceptions.Exit(1)


@app.command(rich_help_panel=PANEL)
@clear_errors
def sync(
    target: Annotated[str, typer.Argument(help="The CRM: hubspot or salesforce.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Data directory whose customers table marks as churned those who left since the snapshot was made.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be sent; send nothing.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Send every record, changed or not.")] = False,
    to_csv: Annotated[
        Path | None,
        typer.Option("--to-csv", help="Write the CRM's import files into this folder instead of sending."),
    ] = None,
) -> None:
    """Write an Advocate Profile per customer of the served snapshot (churned ones marked) and the campaign
    asks as Advocacy Activities to HubSpot or Salesforce; after the first sync only what changed."""
    from crm import check_target, connect, field_names, sync_state, write_import_files
    from storage.syncstate import SyncBusyError
    from usecases import Sources, load_champion
    from usecases.sync import SyncJob, build_records
    from usecases.sync import sync as run_sync

    check_target(target)
    if to_csv is not None and (dry_run or full):
        raise ValueError("--to-csv writes every record to files: it takes no --dry-run or --full")
    if to_csv is not None and to_csv.exists() and not to_csv.is_dir():
        raise ValueError(f"--to-csv must be a folder, not a file: {to_csv}")
    settings = current_settings()
    names = field_names(settings, target)  # a bad rename is refused before any work
    sink = None if to_csv is not None else connect(settings, target, token_needed=not dry_run)
    _, bundle = load_champion(settings)
    sources = Sources.from_settings(settings, data)
    job = SyncJob(settings.feature_store_path(), sources, full=full, dry_run=dry_run, churn_from_data=data is not None)
    if to_csv is not None:
        with console.status("Scoring the served snapshot"):
            records = build_records(bundle, job, {})
        for path in write_import_files(target, records, names, to_csv):
            console.print(f"Wrote {path}")
        return
    assert sink is not None
    try:
        with _progress() as progress:
            tasks: dict[str, TaskID] = {}

            def advance(kind: str, done: int, total: int) -> None:
                if kind not in tasks:
                    tasks[kind] = progress.add_task(f"{target} {kind}", total=total)
                progress.update(tasks[kind], completed=done)

            report = run_sync(bundle, job, sink, sync_state(settings, target), progress=advance)
    except SyncBusyError as err:
        raise _refused(str(err)) from None
    _print_report(report)
    _fail_on_refusals(report)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _print_report(report: SyncReport) -> None:
    verb = "would send" if report.dry_run else "sent"
    table = Table(title=f"{report.target}: {'dry run, nothing sent' if report.dry_run else 'sync'}")
    for column in ("records", "total", "unchanged", verb, "of them churned", "refused"):
        table.add_column(column, justify="left" if column == "records" else "right")
    for kind, part in report.kinds.items():
        done = len(part.due) if report.dry_run else part.acknowledged
        table.add_row(
            kind, f"{part.total:,}", f"{part.unchanged:,}", f"{done:,}", f"{part.churned:,}", f"{len(part.failed):,}"
        )
    console.print(table)
    if report.dry_run:
        for kind, part in report.kinds.items():
            if part.due:
                more = len(part.due) - SHOWN_KEYS
                tail = f" and {more:,} more" if more > 0 else ""
                console.print(f"{kind} to send: {', '.join(part.due[:SHOWN_KEYS])}{tail}")


def _fail_on_refusals(report: SyncReport) -> None:
    """Name every record the CRM refused (by key, with its reason), then exit 1 if any was, or the sync stopped."""
    refused = 0
    for kind, failed in report.failed.items():
        for key, why in failed.items():
            err_console.print(Text.assemble(styled(f"refused {ONE.get(kind, kind)} {key}:", "red"), " ", plain(why)))
            refused += 1
    if report.error:
        raise _refused(
            f"{report.error}. What the CRM acknowledged before this is kept: run the same command again to resume"
        )
    if refused:
        raise _refused(
            f"{report.target} refused {refused:,} record(s), named above; they are sent again by the next sync"
        )
