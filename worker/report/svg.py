"""Inline SVG charts for the quality report: no JavaScript, no external files, so the page
opens offline and in any mail client that shows HTML attachments. Tooltips are SVG <title>
elements (the browser shows them on hover). Every label is escaped here, once."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac")
ALL_TRAFFIC = "#3b3b3b"
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 14, 24, 30


@dataclasses.dataclass
class Series:
    label: str
    color: str
    daily: Sequence[float | None]
    moving: Sequence[float | None]
    n_daily: Sequence[int]
    dashed: bool = False


@dataclasses.dataclass
class Stack:
    label: str
    color: str
    values: Sequence[float]


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _x_axis(days: Sequence[str], x_of: Callable[[int], float], y: float) -> list[str]:
    step = max(1, math.ceil(len(days) / 14))
    out = []
    for i, day in enumerate(days):
        if (len(days) - 1 - i) % step == 0:  # counted back from today, so today always has its label
            out.append(f'<text x="{_fmt(x_of(i))}" y="{_fmt(y + 16)}" text-anchor="middle" class="ax">'
                       f'{escape(day[5:])}</text>')
    return out


def _week_bands(days: Sequence[str], x_of: Callable[[int], float], band_w: float, top: float, bottom: float) -> list[str]:
    """Shade last week and this week: the two windows the drift test compares."""
    if len(days) < 7:
        return []
    out = []
    for start, label, css in ((len(days) - 14, "last week", "band-prev"), (len(days) - 7, "this week", "band-curr")):
        if start < 0:
            continue
        x0 = x_of(start) - band_w / 2
        out.append(f'<rect x="{_fmt(x0)}" y="{_fmt(top)}" width="{_fmt(band_w * 7)}" height="{_fmt(bottom - top)}" '
                   f'class="{css}"/>')
        out.append(f'<text x="{_fmt(x0 + band_w * 3.5)}" y="{_fmt(top - 8)}" text-anchor="middle" class="band-label">'
                   f'{label}</text>')
    return out


def _y_range(values: list[float]) -> tuple[float, float, float]:
    lo = max(0.0, math.floor((min(values) - 4) / 10) * 10)
    hi = min(100.0, math.ceil((max(values) + 4) / 10) * 10)
    while hi - lo < 30:
        lo, hi = max(0.0, lo - 10), min(100.0, hi + 10)
    return lo, hi, 10.0 if hi - lo <= 60 else 20.0


def line_chart(days: Sequence[str], series: Sequence[Series], *, width: int = 1160, height: int = 280,
               aria: str = "chart") -> str:
    """Daily means as dots and the 7-day moving average as a line, per series, in quality points."""
    values = [v for s in series for v in list(s.daily) + list(s.moving) if v is not None]
    if not values:
        return _empty(width, 80, "no scores in this window")
    lo, hi, tick = _y_range(values)
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    band_w = plot_w / len(days)

    def x_of(i: int) -> float:
        return _LEFT + (i + 0.5) * band_w

    def y_of(v: float) -> float:
        return _TOP + (hi - v) / (hi - lo) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(aria)}" class="chart">']
    parts += _week_bands(days, x_of, band_w, _TOP, _TOP + plot_h)
    v = lo
    while v <= hi + 1e-9:
        y = y_of(v)
        parts.append(f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}" class="grid"/>')
        parts.append(f'<text x="{_LEFT - 8}" y="{_fmt(y + 4)}" text-anchor="end" class="ax">{v:g}</text>')
        v += tick
    parts += _x_axis(days, x_of, _TOP + plot_h)
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for run in _runs(s.moving):
            pts = " ".join(f"{_fmt(x_of(i))},{_fmt(y_of(val))}" for i, val in run)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2.4" '
                         f'stroke-linejoin="round"{dash}><title>{escape(s.label)}: 7-day moving average</title>'
                         f'</polyline>')
        for i, val in enumerate(s.daily):
            if val is None:
                continue
            tip = f"{s.label} {days[i]}: mean {val:.1f} (n={s.n_daily[i]}); 7-day avg " + (
                "-" if s.moving[i] is None else f"{s.moving[i]:.1f}")
            parts.append(f'<circle cx="{_fmt(x_of(i))}" cy="{_fmt(y_of(val))}" r="2.8" fill="{s.color}" '
                         f'fill-opacity="0.45"><title>{escape(tip)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive non-empty stretches: a day without data is a gap, not a line to zero."""
    runs: list[list[tuple[int, float]]] = []
    run: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append((i, v))
    if run:
        runs.append(run)
    return [r if len(r) > 1 else r * 2 for r in runs]


def bar_chart(days: Sequence[str], stacks: Sequence[Stack], *, fmt: Callable[[float], str],
              tooltip: Callable[[int], str], width: int = 570, height: int = 220, aria: str = "chart",
              empty: str = "nothing to show in this window") -> str:
    """Stacked bars per day; ``fmt`` labels the y axis, ``tooltip(i)`` describes day i."""
    totals = [sum(s.values[i] for s in stacks) for i in range(len(days))]
    top = max(totals, default=0)
    if top <= 0:
        return _empty(width, 80, empty)
    tick = _nice_tick(top / 4)
    hi = tick * math.ceil(top / tick)
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    band_w = plot_w / len(days)

    def x_of(i: int) -> float:
        return _LEFT + (i + 0.5) * band_w

    def y_of(v: float) -> float:
        return _TOP + (hi - v) / hi * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(aria)}" class="chart">']
    parts += _week_bands(days, x_of, band_w, _TOP, _TOP + plot_h)
    v = 0.0
    while v <= hi + tick * 1e-9:
        y = y_of(v)
        parts.append(f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}" class="grid"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{_fmt(y + 4)}" text-anchor="end" class="ax">{escape(fmt(v))}</text>')
        v += tick
    parts += _x_axis(days, x_of, _TOP + plot_h)
    bar_w = max(2.0, band_w * 0.7)
    for i in range(len(days)):
        if totals[i] <= 0:
            continue
        base = 0.0
        parts.append("<g>")
        parts.append(f"<title>{escape(tooltip(i))}</title>")
        for s in stacks:
            val = s.values[i]
            if val <= 0:
                continue
            y0, y1 = y_of(base + val), y_of(base)
            parts.append(f'<rect x="{_fmt(x_of(i) - bar_w / 2)}" y="{_fmt(y0)}" width="{_fmt(bar_w)}" '
                         f'height="{_fmt(max(0.5, y1 - y0))}" fill="{s.color}"/>')
            base += val
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _nice_tick(raw: float) -> float:
    exp: float = 10 ** math.floor(math.log10(raw))  # int ** int is typed Any (a negative power is a float)
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


def _empty(width: int, height: int, text: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="chart empty">'
            f'<text x="{width / 2}" y="{height / 2 + 4}" text-anchor="middle" class="ax">{escape(text)}</text></svg>')
