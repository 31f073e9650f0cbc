"""Charts drawn on the server as SVG: no script, no library, nothing fetched.

Each function returns markup (escaped where it carries text) that a template
inserts as it is. Every mark carries a <title>, which a browser shows on
hover and a screen reader reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 220
PAD_LEFT = 56
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 28


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str
    values: Sequence[int]


def _nice_max(value: int) -> int:
    """A round upper bound for an axis (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def _axis(top: int) -> str:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    parts = []
    for i in range(5):
        value = top * i // 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{value:,}</text>'
        )
    return "".join(parts)


def balance_chart(points: Sequence[tuple[datetime, int]], label: str) -> Markup:
    """A line of the balance over time, one marker per point."""
    if not points:
        return Markup('<p class="empty">No entries yet: nothing to draw.</p>')
    top = _nice_max(max(b for _, b in points))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    n = len(points)
    coords = []
    marks = []
    for i, (at, value) in enumerate(points):
        x = PAD_LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)
        y = PAD_TOP + plot_h - plot_h * value / top
        coords.append(f"{x:.1f},{y:.1f}")
        marks.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3">'
            f"<title>{escape(at.strftime('%Y-%m-%d %H:%M UTC'))}: {value:,}</title></circle>"
        )
    first, last = points[0][0], points[-1][0]
    labels = (
        f'<text class="tick" x="{PAD_LEFT}" y="{HEIGHT - 8}">'
        f"{escape(first.strftime('%Y-%m-%d %H:%M'))}</text>"
        f'<text class="tick" x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{escape(last.strftime('%Y-%m-%d %H:%M'))}</text>"
    )
    svg = (
        f'<svg class="chart balance-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" data-points="{n}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(label)}</title>{_axis(top)}"
        f'<polyline class="line" points="{" ".join(coords)}"/>{"".join(marks)}{labels}</svg>'
    )
    return Markup(svg)


def daily_bars(days: Sequence[date], series: Sequence[Series], label: str) -> Markup:
    """Grouped bars: one group per day, one bar per series."""
    top = _nice_max(max((max(s.values, default=0) for s in series), default=0))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    group_w = plot_w / max(len(days), 1)
    bar_w = max(group_w * 0.8 / max(len(series), 1), 1.0)
    bars = []
    for d, day in enumerate(days):
        for k, s in enumerate(series):
            value = s.values[d]
            h = plot_h * value / top
            x = PAD_LEFT + group_w * d + group_w * 0.1 + bar_w * k
            y = PAD_TOP + plot_h - h
            bars.append(
                f'<rect class="bar {s.css_class}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}"><title>{escape(day.isoformat())} {escape(s.name)}: {value:,}'
                f"</title></rect>"
            )
    ticks = []
    for d, day in enumerate(days):
        if (len(days) - 1 - d) % 7 == 0:  # the last day, and every 7th before it
            x = PAD_LEFT + group_w * d + group_w / 2
            ticks.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(day.strftime('%m-%d'))}</text>"
            )
    legend = "".join(f'<span class="key {s.css_class}">{escape(s.name)}</span>' for s in series)
    svg = (
        f'<svg class="chart daily-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" data-days="{len(days)}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(label)}</title>{_axis(top)}{''.join(bars)}{''.join(ticks)}</svg>"
        f'<p class="legend">{legend}</p>'
    )
    return Markup(svg)
