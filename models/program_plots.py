"""The program report's charts (`models.program`): acceptance and delivery by ask type and month, the
plans' calibration (promised against realised acceptance), yeses per ask against the points rule,
and, with deals, the plain difference of win rates beside the adjusted effect of a reference.

Figures are made on matplotlib's Agg canvas directly, not through `pyplot`: no backend is switched
for the whole process, and no figure lingers in pyplot's registry once the caller drops it.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.deal_report import ADJUSTED, PLAIN, DealReport
from models.program import PLANNED, POINTS_RULE, ProgramReport

FIGURES: tuple[str, ...] = ("acceptance_delivery.png", "calibration.png", "yeses_per_ask.png")
DEAL_FIGURES: tuple[str, ...] = ("deal_effect.png",)  # only in a report with a deals section


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _nothing(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="grey")


def acceptance_delivery_plot(by_month: pd.DataFrame) -> Figure:
    """Acceptance rate (accepted / asks) and delivery rate (delivered / accepted) per ask type and
    month of `asked_at`: one line per ask type (`ProgramReport.by_month`)."""
    fig = _figure(10, 7)
    top, bottom = fig.subplots(2, 1, sharex=True)
    months = sorted(by_month["month"].unique())
    x = np.arange(len(months))
    for ask_type, rows in by_month.groupby("ask_type", sort=False):
        rows = rows.set_index("month").reindex(months)
        top.plot(x, rows["acceptance_rate"], marker="o", markersize=3, label=str(ask_type))
        bottom.plot(x, rows["delivery_rate"], marker="o", markersize=3, label=str(ask_type))
    top.set(ylabel="accepted / asks", ylim=(-0.02, 1.02), title="Acceptance by ask type and month asked")
    bottom.set(ylabel="delivered / accepted", ylim=(-0.02, 1.02), title="Delivery of accepted asks (by ask_id)")
    if not months:
        _nothing(top, "no asks in the period")
    else:
        step = max(1, len(months) // 12)
        bottom.set_xticks(x[::step], months[::step], rotation=45, ha="right")
        top.legend(loc="center left", bbox_to_anchor=(1.01, 0.0), fontsize="small")
    return fig


def calibration_chart(reliability: pd.DataFrame) -> Figure:
    """The plans' promise against what happened: per bin of promised acceptance, the realised rate of
    the on-plan asks, with the diagonal a kept promise lies on and each bin's ask count."""
    fig = _figure(6, 6)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="grey", label="promise kept")
    if len(reliability):
        sizes = 30 + 300 * reliability["asks"] / reliability["asks"].max()
        ax.scatter(reliability["mean_promised"], reliability["realised_rate"], s=sizes, zorder=3, label="planned asks")
        ax.plot(reliability["mean_promised"], reliability["realised_rate"], "-", alpha=0.5)
        for row in reliability.itertuples(index=False):
            ax.annotate(
                f"n={row.asks}", (row.mean_promised, row.realised_rate), textcoords="offset points", xytext=(8, -4)
            )
        promised = float((reliability["mean_promised"] * reliability["asks"]).sum())
        title = f"Planned asks: {promised:.1f} yeses promised, {int(reliability['yeses'].sum())} realised"
    else:
        _nothing(ax, "no asks recorded from a plan")
        title = "Planned asks: promised against realised"
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="promised acceptance (plan)", ylabel="realised acceptance")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return fig


def yeses_per_ask_plot(versus: pd.DataFrame) -> Figure:
    """Yeses per ask of the planned asks beside the points rule's picks, per ask type and over all,
    each bar labelled with its number of asks."""
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    types = list(dict.fromkeys(versus["ask_type"]))
    x = np.arange(len(types))
    width = 0.38
    for offset, who in ((-width / 2, PLANNED), (width / 2, POINTS_RULE)):
        rows = versus[versus["picked_by"] == who].set_index("ask_type").reindex(types)
        bars = ax.bar(x + offset, rows["yeses_per_ask"].fillna(0.0), width, label=who)
        labels = [f"{int(n)} asks" if n == n else "" for n in rows["asks"]]
        ax.bar_label(bars, labels, fontsize="x-small", padding=2)
    ax.set_xticks(x, types, rotation=20, ha="right")
    ax.set(ylabel="yeses per ask", ylim=(0, 1.15), title="Yeses per ask: the plans against the points rule's picks")
    if not types:
        _nothing(ax, "no asks in the period")
    ax.legend(loc="upper center", ncols=2)
    return fig


def _points(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def deal_effect_plot(deals: DealReport) -> Figure:
    """The plain difference of win rates (with a delivered reference minus without) beside the
    adjusted effect on the treated deals, in percentage points with their 90% intervals: a reader
    sees at once how far apart they are. No adjusted bar when there is no estimate: the reason."""
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    estimates = deals.estimates().set_index("estimate")
    ax.axhline(0, color="grey", linewidth=0.8)
    for x, name, colour in ((0, PLAIN, "tab:grey"), (1, ADJUSTED, "tab:blue")):
        value, low, high = (float(v) for v in estimates.loc[name, ["value", "ci_low", "ci_high"]])
        if np.isnan(value):
            why = deals.effect.status if name == ADJUSTED else "no closed deals to compare"
            note = textwrap.fill(f"no {name}: {why}", 32)
            ax.text(x, 0.5, note, ha="center", va="center", fontsize="small", transform=ax.get_xaxis_transform())
            continue
        error = None if np.isnan(low) else [[(value - low) * 100], [(high - value) * 100]]
        ax.bar([x], [value * 100], 0.5, yerr=error, capsize=8, color=colour, label=name)
        interval = "" if np.isnan(low) else f"\n90%: {_points(low)}\nto {_points(high)}"
        ax.annotate(f"{_points(value)}{interval}", (x + 0.28, value * 100), va="center", fontsize="small")
    ax.set_xticks([0, 1], [PLAIN, ADJUSTED])
    ax.set_xlim(-0.5, 1.9)
    ax.set(ylabel="won share, percentage points", title="A delivered reference and winning: plain against adjusted")
    return fig


def report_figures(report: ProgramReport) -> dict[str, Figure]:
    """The report's charts by file name: FIGURES, then DEAL_FIGURES with a deals section."""
    charts = (
        acceptance_delivery_plot(report.by_month),
        calibration_chart(report.reliability),
        yeses_per_ask_plot(report.versus_rule),
    )
    figures = dict(zip(FIGURES, charts, strict=True))
    if report.deals is not None:
        figures[DEAL_FIGURES[0]] = deal_effect_plot(report.deals)
    return figures


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


__all__ = [
    "DEAL_FIGURES",
    "FIGURES",
    "acceptance_delivery_plot",
    "calibration_chart",
    "deal_effect_plot",
    "figure_png",
    "report_figures",
    "yeses_per_ask_plot",
]
