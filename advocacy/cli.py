"""The `advocacy` command line (spec section 7): data, scoring and serving commands.

Heavy libraries are imported inside each command so that `advocacy --help` stays fast. The app,
its error path and shared options are in `advocacy.app`; training and registry commands in
`advocacy.model_commands`, registered here by importing it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

# Importing them registers their commands: plan, references, report, sync.
from advocacy import plan_commands, reference_commands, report_commands, sync_commands  # noqa: F401
from advocacy.app import DataDir, app, clear_errors, console, current_settings, err_console, parse_time
from advocacy.model_commands import print_train_result  # importing it registers the training commands
from advocacy.present import plain, show_left_out, styled

__all__ = ["app", "clear_errors", "main", "parse_time"]


@app.command()
@clear_errors
def generate(
    out: Annotated[Path, typer.Option(help="Directory to write the world into.")],
    customers: Annotated[int, typer.Option(min=10, help="Number of customers.")] = 2000,
    months: Annotated[int, typer.Option(min=6, max=120, help="Months of history.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same world).")] = 0,
    end: Annotated[str, typer.Option(help="First day after the simulated period (UTC).")] = "2026-11-01",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    stationary: Annotated[bool, typer.Option(help="The old world that never changes (no drift).")] = False,
    acceptance_truth: Annotated[
        bool, typer.Option(help="Write truth/acceptance_by_type (every live customer x ask type x month).")
    ] = True,
) -> None:
    """Write a synthetic world in the spec's layout, plus truth/ with the true probabilities.

    By default the world drifts as real ones do: willingness fades and organic advocacy grows over
    time, December and August slump, answers take days to weeks, some accepted asks are never
    delivered, and whom the company asks follows a rapport that no table records.
    """
    from features.synthetic import DRIFTING, STATIONARY, generate_world
    from storage.files import write_tables

    if fmt not in ("parquet", "csv"):
        raise ValueError(f"--format must be parquet or csv, got {fmt!r}")
    with console.status(f"Simulating {customers:,} customers x {months} months"):
        world = generate_world(
            n_customers=customers,
            months=months,
            seed=seed,
            end=parse_time(end, "--end"),
            drift=STATIONARY if stationary else DRIFTING,
            acceptance_truth=acceptance_truth,
        )
    write_tables(world.tables, out, fmt)
    write_tables(world.truth, out / "truth", "parquet")
    rows = ", ".join(f"{name} {len(frame):,}" for name, frame in world.tables.items())
    console.print(f"Wrote {out}: {rows}")


@app.command()
@clear_errors
def features(
    data: DataDir,
    as_of: Annotated[str, typer.Option("--as-of", help="Features from events strictly before this time (UTC).")],
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv), written atomically.")],
) -> None:
    """Write the point-in-time feature table of every active customer as of a time.

    Accepted asks stay pipeline for ADVOCACY_COMMITMENT_LAPSE_DAYS (a trained model keeps the lapse
    it was trained with, and scoring uses that one)."""
    from storage.files import check_frame_path, write_frame
    from usecases import Sources, features_at

    check_frame_path(out)
    settings = current_settings()
    world = Sources.from_settings(settings, data).read().world
    frame = features_at(world, parse_time(as_of), settings.commitment_lapse_days)
    write_frame(frame, out)
    console.print(f"Wrote {len(frame):,} feature rows x {frame.shape[1] - 2} features to {out}")


def _print_baseline_summary(scored: Any, title: str) -> None:
    from features.baseline import BASELINE_TIERS, NO_TIER

    counts = scored["tier"].value_counts()
    table = Table(title=title)
    table.add_column("baseline tier")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    for tier in [name for name, _ in BASELINE_TIERS] + [NO_TIER]:
        n = int(counts.get(tier, 0))
        table.add_row(tier, f"{n:,}", f"{n / max(len(scored), 1):.1%}")
    console.print(table)


@app.command()
@clear_errors
def baseline(
    data: DataDir,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Default: the end of the data.")] = None,
) -> None:
    """Print the points baseline's tier counts for every active customer."""
    from features.baseline import score_baseline
    from usecases import Sources, features_at, left_out_words

    settings = current_settings()
    read = Sources.from_settings(settings, data).read()
    when = parse_time(as_of) or read.data_end
    frame = features_at(read.world, when, settings.commitment_lapse_days)
    _print_baseline_summary(score_baseline(frame), f"Points baseline as of {when:%Y-%m-%d}, {len(frame):,} customers")
    show_left_out(console, left_out_words(read.left_out))


@app.command("backup-asks")
@clear_errors
def backup_asks(
    out: Annotated[Path, typer.Argument(help="Where to write the copy (a SQLite file).")],
) -> None:
    """Copy the ask log (asks posted to the service) consistently, even while the service writes to it."""
    from features.contracts import CONTRACTS
    from storage.asklog import AskLog

    log = current_settings().ask_log_path()
    if not log.exists():
        raise FileNotFoundError(f"no ask log at {log} (ADVOCACY_ASK_LOG): nothing to back up")
    rows = AskLog(log, CONTRACTS["asks"]).backup(out)
    console.print(f"Backed up {rows:,} asks from {log} to {out}")


@app.command()
@clear_errors
def up(
    serve_it: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the service at the end.")] = True,
    host: Annotated[str, typer.Option(help="Address for the service.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for the service.")] = 3000,
) -> None:
    """Bring the product up on its embedded defaults: sample data, local MLflow, a champion, the service."""
    from features.baseline import score_baseline
    from storage.reports import ReportStore
    from storage.settings import redact
    from storage.snapshots import current_snapshot_dir
    from usecases import (
        Sources,
        configure_tracking,
        features_at,
        find_champion,
        keep_for_the_page,
        left_out_words,
        make_report,
        report_stamp,
    )

    settings = current_settings()
    data = settings.resolved_data_dir()
    console.print(f"Data: {data}\nMLflow: {redact(settings.tracking_uri())}")
    sources = Sources.from_settings(settings, data)
    read = sources.read()
    when = read.data_end
    frame = features_at(read.world, when, settings.commitment_lapse_days)
    _print_baseline_summary(score_baseline(frame), f"Points baseline as of {when:%Y-%m-%d}, {len(frame):,} customers")
    show_left_out(console, left_out_words(read.left_out))
    configure_tracking(settings)
    current = find_champion(settings.model_name)
    if current is None:
        from training.pipeline import train as run_training

        console.print("No @champion yet: training one on the sample data.")
        result = run_training(settings, data, progress=console.log)
        print_train_result(result)
        trained = True
    else:
        console.print(f"@champion is version {current.version}")
        trained = False
    try:
        current_snapshot_dir(settings.feature_store_path())
        fresh = not trained
    except FileNotFoundError:
        fresh = False
    if not fresh:
        from batch import run_batch

        console.print("Scoring every customer and writing the feature snapshot the service reads.")
        out = settings.state_dir() / "scores.parquet"
        run_batch(settings, data, out, as_of=when, explain=True, engine="local", scheduler=None, console=console)
    reports = ReportStore(settings.report_path())
    if reports.load() is None:
        console.print("Making the first program report for the page's Program report tab.")
        champion = find_champion(settings.model_name)
        stamp = report_stamp(sources, None if champion is None else champion.version)
        keep_for_the_page(make_report(sources), reports, stamp)
    if serve_it:
        serve(host=host, port=port)


@app.command()
@clear_errors
def explain(
    customer_id: Annotated[str, typer.Argument(help="The customer to explain.")],
    data: DataDir,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Default: the end of the data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as `POST /score` gives it.")] = False,
) -> None:
    """Explain one customer's scores in the terminal: reasons, points, disagreement, next ask."""
    import json

    from usecases import Sources, explain_customer, load_champion

    settings = current_settings()
    _, bundle = load_champion(settings)
    when, result, left_out = explain_customer(
        bundle, Sources.from_settings(settings, data), customer_id, parse_time(as_of)
    )
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    shown = "cold start: points rule" if result["cold_start"] else f"{result['propensity']:.0%}"
    console.print(
        Text.assemble(
            styled(customer_id, "bold"),
            f" as of {when:%Y-%m-%d}: propensity {shown}, tier ",
            styled(result["tier"], "bold"),
            plain(f" (percentile {result['percentile']}), model v{result['model_version']}"),
        )
    )
    for r in result["reasons"]:
        console.print(
            Text.assemble(f"  - {plain(r['text'])}", styled("  (actionable)", "green") if r["actionable"] else "")
        )
    base = result["baseline"]
    console.print(
        f"Points rule: {base['points']} points, tier {base['tier']}: "
        + ", ".join(f"{b['label']} {b['points']}/{b['max_points']}" for b in base["breakdown"])
    )
    if result["disagreement"]:
        console.print(styled(result["disagreement"]["text"], "yellow"))
    nba = result["next_best_ask"]
    ask = f"{nba['ask_type']} ({nba['probability']:.0%})" if nba["ask_type"] else "none: every ask is blocked"
    console.print(f"Next best ask: {ask}")
    for b in nba["blocked"]:
        console.print(f"  blocked {b['ask_type']}: {b['reason']} (until {b['until'] or 'it clears'})")
    show_left_out(console, left_out)


@app.command()
@clear_errors
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback needs ADVOCACY_API_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 3000,
) -> None:
    """Start the scoring service (BentoML): the HTTP API and the CSM page."""
    import os

    import serving
    from serving.auth import check_bind
    from serving.limits import server_environment
    from storage.snapshots import current_snapshot_dir

    settings = current_settings()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    host = "127.0.0.1" if host == "localhost" else host  # BentoML takes IP addresses only
    check_bind(host, token)
    example = "CUSTOMER_ID"
    try:
        import pandas as pd

        folder = current_snapshot_dir(settings.feature_store_path())
        ids = pd.read_parquet(folder / "features.parquet", columns=["customer_id"])
        example = str(ids["customer_id"].iloc[0]) if len(ids) else example
    except (OSError, ValueError, KeyError):  # only the example id is lost; the service reports the rest
        err_console.print(
            styled("No feature snapshot yet: /score stays not ready until `advocacy score` writes one.", "yellow")
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}" if ":" not in shown else f"http://[{shown}]:{port}"
    auth = " -H 'Authorization: Bearer $ADVOCACY_API_TOKEN'" if token else ""
    console.print(f"CSM page: {url}/")
    console.print(
        f"Try: curl -s {url}/score -H 'Content-Type: application/json'{auth} "
        f'-d \'{{"customer_ids": ["{example}"]}}\'',
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
    os.environ.update(server_environment(os.environ))
    root = Path(serving.__file__).resolve().parents[1]
    args = ["serving.service:Advocacy", "--host", host, "--port", str(port), "--working-dir", str(root)]
    # Replace this process, so signals (Ctrl+C, SIGTERM from a supervisor) reach the server directly.
    os.execv(sys.executable, [sys.executable, "-m", "bentoml", "serve", *args])


@app.command()
@clear_errors
def score(
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Output file (.parquet or .csv), one row per active customer.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Use events strictly before this time (UTC). Default: now.")
    ] = None,
    explain: Annotated[bool, typer.Option("--explain/--no-explain", help="Top-3 reasons per customer.")] = True,
    engine: Annotated[str, typer.Option(help="local, or dask (a local cluster unless --scheduler).")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (with --engine dask).")] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size",
            min=1,
            help="Customers per chunk (default: batch.DEFAULT_CHUNK_SIZE); fewer need less memory per process.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Local engine: processes scoring chunks side by side. Default: one per core from 200,000 customers.",
        ),
    ] = None,
    snapshot: Annotated[
        bool, typer.Option("--snapshot/--no-snapshot", help="Also write the feature snapshot the service reads.")
    ] = True,
    force_snapshot: Annotated[
        bool,
        typer.Option(
            "--force-snapshot",
            help="Publish the snapshot even if it holds no customers or under ADVOCACY_MIN_SNAPSHOT_SHARE of "
            "the served ones.",
        ),
    ] = False,
) -> None:
    """Score every active customer with the @champion model: streamed in chunks, resumable, atomic."""
    from batch import DEFAULT_CHUNK_SIZE, check_output, run_batch

    check_output(out)
    when = parse_time(as_of)
    if engine not in ("local", "dask"):
        raise ValueError(f"--engine must be local or dask, got {engine!r}")
    if scheduler and engine != "dask":
        raise ValueError("--scheduler needs --engine dask")
    if workers is not None and engine != "local":
        raise ValueError("--workers is for --engine local (a Dask cluster has its own workers)")
    run_batch(
        current_settings(),
        data,
        out,
        as_of=when,
        explain=explain,
        engine=engine,
        scheduler=scheduler,
        chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        workers=workers,
        snapshot=snapshot,
        force_snapshot=force_snapshot,
        console=console,
    )


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
