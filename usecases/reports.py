"""The program report (spec section 7): what was asked, what came of it, and whether the plans kept
their promise; made from the sources and kept where the CSM page shows it.

One road for `advocacy report` and the service, which remakes a kept report when the ask log or the
champion has changed since it was made, or makes one on `POST /report` with a refresh.

The deals section (spec 9) is made whenever the data directory holds an `opportunities` table. Its
adjusted estimate refits a learner per bootstrap resample and per refutation simulation, and the
service remakes the report whenever an ask is recorded: a remake reuses the kept report's estimate
while the deals and the settings it was made from are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.catalog import DEALS, TABLES
from features.io import table_files
from models.deal_report import DealOptions, KeptEstimate
from models.program import ProgramReport, program_report
from models.program_plots import figure_png, report_figures
from storage.reports import ReportStore, UnreadableReportError
from storage.settings import Settings
from usecases.sources import Sources, left_out_words

KEPT_ESTIMATE = "deal_estimate"  # the kept report's adjusted estimate, for the next remake


@dataclass
class MadeReport:
    report: ProgramReport
    figures: dict[str, Any]  # matplotlib figures, for MLflow
    charts: dict[str, bytes]  # the same, rendered once as PNG
    metrics: dict[str, float]  # the finite headline figures
    data_dir: Path  # the data directory it was made from
    kept_at: Path | None = None


def deal_options(settings: Settings) -> DealOptions:
    """The deals section's cost and program cost from the settings."""
    return DealOptions(settings.deal_resamples, settings.deal_refutation_simulations, settings.program_cost)


def has_deals(data_dir: Path) -> bool:
    """Whether the data directory holds an `opportunities` table (empty or not)."""
    return DEALS in table_files(data_dir, (*TABLES, DEALS))


def make_report(
    sources: Sources,
    since: pd.Timestamp | None = None,
    deals: DealOptions | None = None,
    kept_estimate: KeptEstimate | None = None,
) -> MadeReport:
    """The program report of the asks made at or after `since` (all without it), the ask log's
    included, with its charts and headline figures; with an `opportunities` table, its deals section
    on `deals` (the settings' without: the service remakes a report in a child process that has
    only its environment). `kept_estimate`: see `models.program.program_report`."""
    read = sources.read()
    links = read.plan_links
    plans = sources.stored_plans(set(links["plan_id"]))
    # Read afresh, not through the CLI's cached settings: a report made in-process must not fix the
    # settings of the next command run in the same process (a test's, an embedding program's).
    options = (deals or deal_options(Settings())) if has_deals(sources.data_dir) else None
    made = program_report(read.world, links, plans, since, left_out_words(read.left_out), options, kept_estimate)
    figures = report_figures(made)
    charts = {name: figure_png(fig) for name, fig in figures.items()}
    metrics = {k: v for k, v in made.metrics().items() if math.isfinite(v)}
    return MadeReport(made, figures, charts, metrics, sources.data_dir)


def report_stamp(sources: Sources, model_version: str | None) -> dict[str, Any]:
    """What a report made now is made from: the ask log's last write and the champion's version."""
    log = sources.ask_log()
    return {"ask_log_write": 0 if log is None else log.last_write(), "model_version": model_version}


def keep_for_the_page(made: MadeReport, store: ReportStore, stamp: dict[str, Any] | None = None) -> Path:
    """The aggregate tables and the charts where the service reads them (`storage.reports`).

    `stamp` says what the report was made from (the ask log's last write, the champion), so that the
    service can tell when it is stale; the data directory is kept too, so that the service remakes
    it from the same data, not from its own default."""
    report = made.report
    tables = {name: frame for name, frame in report.tables().items() if name != "planned_asks"}  # a row per ask
    meta = {
        "since": None if report.since is None else report.since.isoformat(),
        "until": report.until.isoformat(),
        "metrics": made.metrics,
        "left_out": dict(report.left_out),
        "data_dir": str(made.data_dir),
        "made_from": stamp or {},
    }
    if report.deals is not None:
        meta["deals"] = {"status": report.deals.effect.status, "notes": report.deals.notes()}
        meta[KEPT_ESTIMATE] = KeptEstimate(report.deals.estimate_key, report.deals.effect).to_json()
    made.kept_at = store.save(tables, made.charts, meta)
    return made.kept_at


def remake_and_keep(sources: Sources, since: pd.Timestamp | None, store: ReportStore, stamp: dict[str, Any]) -> Path:
    """`make_report` then `keep_for_the_page`, with nothing kept in between: a long-lived process
    (the service) runs this in a child process of its own, so that the report's data and charts
    never stay in its memory. The kept report's adjusted estimate is reused if its deals are unchanged."""
    return keep_for_the_page(make_report(sources, since, kept_estimate=kept_estimate(store)), store, stamp)


def kept_estimate(store: ReportStore) -> KeptEstimate | None:
    """The adjusted estimate of the kept report, if there is one that can be read."""
    try:
        kept = store.load()
    except UnreadableReportError:
        return None
    return None if kept is None or KEPT_ESTIMATE not in kept else KeptEstimate.from_json(kept[KEPT_ESTIMATE])
