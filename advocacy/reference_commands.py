"""`advocacy references`: whom to ask for a reference call for a deal or a prospect (spec section 5)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from advocacy.app import DataDir, app, clear_errors, console, current_settings
from advocacy.present import show_left_out

PANEL = "Planning"


@app.command(rich_help_panel=PANEL)
@clear_errors
def references(
    data: DataDir,
    opportunity: Annotated[
        str | None,
        typer.Option("--opportunity", help="A deal's opportunity_id: its prospect's attributes are matched."),
    ] = None,
    industry: Annotated[str | None, typer.Option(help="The prospect's industry (without --opportunity).")] = None,
    segment: Annotated[str | None, typer.Option(help="The prospect's segment (without --opportunity).")] = None,
    use_case: Annotated[
        str | None, typer.Option("--use-case", help="The prospect's use case (without --opportunity).")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="How many candidates.")] = 10,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the candidates as `POST /references` gives them.")
    ] = False,
) -> None:
    """Rank customers to ask for a reference call: acceptance x similarity to the deal's or the
    prospect's industry, segment and use case, skipping those a guardrail blocks (at the end of the data)."""
    import json

    from usecases import ReferenceRequest, Sources, load_champion, references_from_sources

    request = ReferenceRequest(opportunity, industry, segment, use_case, k)  # checked before the model loads
    settings = current_settings()
    _, bundle = load_champion(settings)
    with console.status("Scoring the customers and ranking references"):
        found = references_from_sources(bundle, Sources.from_settings(settings, data), request)
    if as_json:
        sys.stdout.write(json.dumps({"candidates": found.records()}) + "\n")
        return
    p = found.prospect
    deal = f"deal {opportunity}: " if opportunity is not None else ""
    title = f"References for {deal}{p.industry or '?'} / {p.segment} / {p.use_case or '?'}"
    table = Table(title=f"{title}, as of {found.as_of:%Y-%m-%d}")
    for name in ("rank", "customer_id", "name", "acceptance", "similarity", "score", "recent calls", "matched"):
        table.add_column(name, justify="right" if name in ("rank", "acceptance", "similarity", "score") else "left")
    for rank, row in enumerate(found.records(), start=1):
        table.add_row(
            str(rank),
            str(row["customer_id"]),
            str(row["name"] or ""),
            f"{row['acceptance']:.0%}",
            f"{row['similarity']:.1f}",
            f"{row['score']:.3f}",
            str(row["recent_reference_calls"]),
            ", ".join(row["matched"]),
        )
    console.print(table)
    if not found.records():
        console.print("No candidates: no customer free of guardrails shares an attribute with the prospect.")
    show_left_out(console, found.left_out)
