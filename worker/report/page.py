"""The quality report as one self-contained HTML page: inline CSS, inline SVG, no scripts, no
fonts or files from anywhere else, so it opens offline.

Trace ids, segment values, reasons and rubric text come from traces and metadata: untrusted.
Every one goes through ``escape`` (or the chart module, which escapes its own labels), and a
link is only emitted for an http(s) URL.
"""
from __future__ import annotations

from html import escape

from worker.drift.check import CellReport
from worker.report.data import DayOps, Line, ReportData, Section, segment_kind
from worker.report.style import CSS
from worker.report.svg import ALL_TRAFFIC, PALETTE, Series, Stack, bar_chart, line_chart

REASON_COLORS = ("#e15759", "#f28e2b", "#b07aa1", "#9c755f", "#edc948", "#76b7b2", "#ff9da7", "#bab0ac")
_STATUS_ORDER = {"alert": 0, "explained": 2, "ok": 3, "insufficient_data": 4}
_KIND_ORDER = {"all": 0, "feature": 1, "tenant": 2, "combo": 3}


def render(data: ReportData) -> str:
    body = [_header(data)]
    if not data.sections:
        body.append('<section class="empty-state"><h2>No data yet</h2><p>There are no scores in Redis yet, so '
                    'there is nothing to chart. Scores appear here once the worker has judged traces: run '
                    '<code>tracejudge sample --once</code> with a worker running, or <code>tracejudge demo</code> '
                    'for the local stack, then write this report again.</p></section>')
    else:
        body.append(_summary(data))
        body.append(_nav(data))
        body += [_section(data, s) for s in data.sections]
    body.append('<footer>Quality points: every rubric\'s score mapped to 0–100, higher is better; pass/fail '
                'rubrics show the pass rate. Weeks are bucketed by the trace\'s own timestamp (UTC). Hover a dot '
                'or a bar for its numbers.</footer>')
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>tracejudge quality report {escape(data.today.isoformat())}</title>'
            f'<style>{CSS}</style></head><body><main>{"".join(body)}</main></body></html>\n')


def _header(data: ReportData) -> str:
    return (f'<header><h1>Quality report</h1><p class="sub">tracejudge · generated '
            f'{escape(data.generated_at.strftime("%Y-%m-%d %H:%M UTC"))} · charts cover '
            f'{escape(data.days[0])} to {escape(data.days[-1])} · this week {escape(_span(data.this_week))}, '
            f'last week {escape(_span(data.last_week))}</p></header>')


def _span(span: tuple[str, str]) -> str:
    return f"{span[0][5:]} – {span[1][5:]}"


def _summary(data: ReportData) -> str:
    cells = [c for s in data.sections for c in s.cells]
    alerts = sum(c.decision.status == "alert" for c in cells)
    unscored_alerts = sum(c.unscored_alert for c in cells)
    explained = sum(c.decision.status == "explained" for c in cells)
    insufficient = sum(c.decision.status == "insufficient_data" for c in cells)
    ops = [o for s in data.sections for o in s.ops]
    scored, unscored = sum(o.scored for o in ops), sum(o.unscored for o in ops)
    cost = sum(o.cost_usd for o in ops)
    rate = unscored / (scored + unscored) if scored + unscored else 0.0
    cards = [
        ("cells checked", str(len(cells)), ""),
        ("quality alerts", str(alerts), "bad" if alerts else "good"),
        ("unscored-rate alerts", str(unscored_alerts), "bad" if unscored_alerts else "good"),
        ("explained by a feature", str(explained), "warn" if explained else ""),
        ("insufficient data", str(insufficient), ""),
        (f"scored in {len(data.days)} days", f"{scored:,}", ""),
        ("unscored rate", f"{100 * rate:.1f}%", ""),
        (f"judge cost, {len(data.days)} days", _usd(cost), ""),
    ]
    return '<section class="cards">' + "".join(
        f'<div class="card {css}"><div class="num">{escape(value)}</div><div class="lbl">{escape(label)}</div></div>'
        for label, value, css in cards) + "</section>"


def _nav(data: ReportData) -> str:
    items = []
    for s in data.sections:
        alerts = sum(c.decision.status == "alert" or c.unscored_alert for c in s.cells)
        badge = f' <span class="badge alert">{alerts} alert{"s" * (alerts != 1)}</span>' if alerts else ""
        items.append(f'<li><a href="#{escape(s.anchor)}">{escape(s.rubric)} v{s.version}</a> '
                     f'<span class="muted">{escape(s.judge_model)}</span>{badge}</li>')
    return f'<nav><ul>{"".join(items)}</ul></nav>'


def _section(data: ReportData, s: Section) -> str:
    alerts = sum(c.decision.status == "alert" or c.unscored_alert for c in s.cells)
    badge = f'<span class="badge alert">{alerts} alert{"s" * (alerts != 1)}</span>' if alerts else (
        '<span class="badge ok">no alerts</span>' if s.checked else '<span class="badge muted">not checked</span>')
    parts = [f'<section class="rubric" id="{escape(s.anchor)}"><h2>{escape(s.rubric)} '
             f'<span class="ver">v{s.version}</span> <span class="model">judge {escape(s.judge_model)}</span> '
             f'<span class="model">judges {escape(s.unit)}</span> {badge}</h2>']
    parts.append(_scoreline(s))
    if s.description:
        parts.append(f'<p class="desc">{escape(s.description)}</p>')
    if not s.checked:
        parts.append('<p class="note">This version is not in the rubric folder any more: its charts are shown, '
                     'but it has no week-over-week check.</p>')
    more = f" (and {s.more_features} smaller features in the table)" if s.more_features else ""
    parts.append(_chart_block(f"Quality by feature{more}", data.days, [s.all_traffic] + s.features,
                              f"{s.key} daily mean and 7-day moving average per feature"))
    if s.tenants:
        parts.append(_chart_block(f"Top {len(s.tenants)} tenants by volume", data.days, [s.all_traffic] + s.tenants,
                                  f"{s.key} daily mean and 7-day moving average for the top tenants"))
    parts.append(f'<div class="two"><div>{_cost(s.ops, s.key, s.unit)}</div><div>{_unscored(s.ops, s.key)}</div></div>')
    parts.append(_cells_table(s))
    if s.sampling:  # a power-aware rubric's rate plan: per cell its rate, detection time, and why it misses
        items = "".join(f"<li>{escape(x.strip())}</li>" for x in s.sampling)
        parts.append(f"<h3>Sampling plan</h3><ul>{items}</ul>")
    parts.append(_bottom_table(s))
    parts.append("</section>")
    return "".join(parts)


def _chart_block(title: str, days: list[str], lines: list[Line], aria: str) -> str:
    series = []
    for i, ln in enumerate(lines):
        is_all = ln.segment == "all"
        series.append(Series(ln.label, ALL_TRAFFIC if is_all else PALETTE[(i - 1) % len(PALETTE)], ln.daily_mean,
                             ln.moving_average, ln.n_daily, dashed=is_all))
    legend = "".join(
        f'<span class="key"><i style="background:{se.color}"{" class=dash" if se.dashed else ""}></i>'
        f'{escape(se.label)} <span class="muted">n={ln.n_total:,}</span></span>' for se, ln in zip(series, lines))
    return (f'<h3>{escape(title)} <small>dots: daily mean · lines: 7-day moving average · quality points</small></h3>'
            f'<div class="legend">{legend}</div>{line_chart(days, series, aria=aria)}')


def _cost(ops: list[DayOps], key: str, unit: str = "traces") -> str:
    days = [o.day for o in ops]
    total = sum(o.cost_usd for o in ops)
    chart = bar_chart(days, [Stack("judge cost", "#4e79a7", [o.cost_usd for o in ops])], fmt=_usd_axis,
                      tooltip=lambda i: f"{days[i]}: {_usd(ops[i].cost_usd)} judge cost, {ops[i].scored:,} scored",
                      aria=f"{key} judge cost per day", empty="no judge cost recorded in this window")
    return (f'<h3>Judge cost per day <small>{escape(_usd(total))} in {len(days)} days, scored {escape(unit)}</small></h3>'
            f'{chart}')


def _unscored(ops: list[DayOps], key: str) -> str:
    days = [o.day for o in ops]
    totals: dict[str, int] = {}
    for o in ops:
        for reason, count in o.reasons.items():
            totals[reason] = totals.get(reason, 0) + count
    reasons = sorted(totals, key=lambda r: (-totals[r], r))
    colors = {r: REASON_COLORS[i % len(REASON_COLORS)] for i, r in enumerate(reasons)}
    stacks = [Stack(r, colors[r], [100 * o.reasons.get(r, 0) / (o.scored + o.unscored) if o.scored + o.unscored else 0
                                   for o in ops]) for r in reasons]

    def tooltip(i: int) -> str:
        o = ops[i]
        why = ", ".join(f"{r} {c}" for r, c in sorted(o.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{o.day}: {100 * (o.unscored_rate or 0):.1f}% unscored ({o.unscored} of {o.scored + o.unscored}): {why}"

    chart = bar_chart(days, stacks, fmt=lambda v: f"{v:g}%", tooltip=tooltip, aria=f"{key} unscored rate per day",
                      empty="no unscored traces in this window")
    unscored = sum(o.unscored for o in ops)
    judged = unscored + sum(o.scored for o in ops)
    legend = "".join(f'<span class="key"><i style="background:{colors[r]}"></i>{escape(r)} '
                     f'<span class="muted">{totals[r]:,}</span></span>' for r in reasons)
    rate = f"{100 * unscored / judged:.1f}% of {judged:,} judged" if judged else "nothing judged"
    return (f'<h3>Unscored rate per day <small>{escape(rate)}, by reason</small></h3>'
            f'<div class="legend">{legend}</div>{chart}')


def _segment_label(segment: str) -> str:
    if segment == "all":
        return "<b>all traffic</b>"
    return " · ".join(f'<span class="k">{escape(k)}</span> {escape(v)}'
                      for k, _, v in (part.partition("=") for part in segment.split("|")))


def _cells_table(s: Section) -> str:
    if not s.cells:
        return ""
    # What needs attention first: alerts, then explained cells, then the rest by kind and volume.
    cells = sorted(s.cells, key=lambda c: (0 if c.unscored_alert else _STATUS_ORDER.get(c.decision.status, 5),
                                           _KIND_ORDER.get(segment_kind(c.segment), 2), -c.decision.n_curr, c.segment))
    # Feature × tenant cells are many and mostly quiet: the quiet ones fold away (no script
    # needed: <details> opens natively); any that alert or are explained stay in the main table.
    folded = [c for c in cells if segment_kind(c.segment) == "combo" and not _needs_attention(c)]
    shown = [c for c in cells if c not in folded]
    parts = ['<h3>This week vs last week <small>one-sided Welch / two-proportion test, Benjamini–Hochberg q '
             'across every cell of the run</small></h3>', _table(shown, s.notified, s.detection)]
    if folded:
        parts.append(f'<details><summary>{len(folded)} more feature × tenant cells, none alerting</summary>'
                     f'{_table(folded, s.notified, s.detection)}</details>')
    return "".join(parts)


def _needs_attention(c: CellReport) -> bool:
    return c.decision.status in ("alert", "explained") or c.unscored_alert


def _table(cells: list[CellReport], notified: dict[str, str], detection: dict[str, str]) -> str:
    rows = "".join(_cell_row(c, notified.get(c.cell), detection.get(c.cell)) for c in cells)
    return ('<table class="cells"><thead><tr><th>segment</th><th class="r">last week</th><th class="r">this week</th>'
            '<th class="r">drop</th><th class="r">q-value</th><th class="r">unscored</th><th>status</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')


def _cell_row(c: CellReport, notified: str | None, detection: str | None = None) -> str:
    d = c.decision
    drop_css = "bad" if d.status == "alert" else ("good" if d.drop is not None and d.drop < 0 else "")
    drop = "–" if d.drop is None else (f"{d.drop:.1f}" if d.drop >= 0 else f"+{-d.drop:.1f} up")
    unscored_css = "bad" if c.unscored_alert else ""
    row_css = "alert" if d.status == "alert" or c.unscored_alert else d.status
    return (f'<tr class="{escape(row_css)}"><td>{_segment_label(c.segment)}</td>'
            f'<td class="r">{_mean(d.prev_mean, d.n_prev)}</td><td class="r">{_mean(d.curr_mean, d.n_curr)}</td>'
            f'<td class="r {drop_css}">{escape(drop)}</td><td class="r">{escape(_q(d.q, d.n_needed))}</td>'
            f'<td class="r {unscored_css}">{100 * c.unscored_rate_prev:.1f}% → {100 * c.unscored_rate_curr:.1f}%</td>'
            f'<td>{_status(c, notified)}'
            + (f'<br><span class="muted">detector: {escape(detection)}</span>' if detection else "") + '</td></tr>')


def _mean(mean: float | None, n: int) -> str:
    return ("–" if mean is None else f"{mean:.1f}") + f' <span class="n">n={n:,}</span>'


def _q(q: float, n_needed: int | None) -> str:
    if n_needed is None:
        return "–"
    return "<0.0001" if q < 1e-4 else f"{q:.2g}"


def _status(c: CellReport, notified: str | None) -> str:
    d = c.decision
    if d.status == "alert":
        out = f'<span class="badge alert">alert</span> dropped {d.drop:.1f} points'
    elif d.status == "explained":
        by = ", ".join(c.explained_by) or "its features"
        out = f'<span class="badge warn">explained</span> by {escape(by)}'
    elif d.status == "insufficient_data":
        has = min(d.n_prev, d.n_curr)
        need = f"n={has:,} of {d.n_needed:,} needed per week" if d.n_needed else "needs 2+ scores in each week"
        out = f'<span class="badge muted">insufficient data</span> {escape(need)}'
    elif d.status == "ok":
        out = '<span class="badge ok">ok</span>'
    else:
        out = f'<span class="badge muted">{escape(d.status)}</span>'
    if c.unscored_alert:
        out += (f' <span class="badge alert">unscored rate up</span> {100 * c.unscored_rate_prev:.1f}% → '
                f'{100 * c.unscored_rate_curr:.1f}%')
    if notified:
        out += f' <span class="muted">· notified {escape(notified)}</span>'
    return out


def _scoreline(s: Section) -> str:
    """This week's score and, beside it, how far the judge agrees with people on this version."""
    curr = next((c.decision for c in s.cells if c.segment == "all"), None)
    score = (f'score this week <b>{curr.curr_mean:.1f}</b> points <span class="n">n={curr.n_curr:,}</span>'
             if curr is not None and curr.curr_mean is not None else "score this week: no confirmed scores")
    a = s.agreement
    if not a or not a.get("n"):
        human = '<span class="agreement muted">judge–human agreement: no human labels yet</span>'
    else:
        def pct(x: float | None) -> str:
            return "–" if x is None else f"{100 * x:.0f}%"

        kappa = "–" if a.get("kappa") is None else f"{a['kappa']:.2f}"
        interval = (f" [{a['kappa_low']:.2f}, {a['kappa_high']:.2f}]" if a.get("kappa_low") is not None else "")
        rho = "" if a.get("spearman") is None else f" · Spearman {a['spearman']:.2f}"
        css = {"low": "bad", "ok": "good"}.get(a.get("status") or "", "muted")
        human = (f'<span class="agreement {css}">judge–human agreement: κ <b>{escape(kappa)}</b>{escape(interval)} · '
                 f'exact {pct(a.get("exact"))} · within one {pct(a.get("within_one"))}{escape(rho)} · '
                 f'<span class="n">n={int(a["n"]):,} human-labelled, {int(a.get("window_days") or 0)} days</span> · '
                 f'{escape(str(a.get("status", "")).replace("_", " "))}</span>')
    return f'<p class="scoreline">{score} · {human}</p>'


def _bottom_table(s: Section) -> str:
    unit = escape(s.unit)
    if not s.bottom:
        return f'<h3>Lowest-scoring {unit} this week</h3><p class="muted">No scored {unit} this week.</p>'
    rows = []
    for i, t in enumerate(s.bottom, 1):
        tid = escape(t.trace_id)
        link = (f'<a href="{escape(t.url)}" rel="noopener noreferrer" target="_blank">{tid}</a>'
                if t.url and t.url.lower().startswith(("http://", "https://")) else tid)
        rows.append(f'<tr><td class="r muted">{i}</td><td class="tid">{link}</td><td class="r">{t.points:.1f}</td>'
                    f'<td>{escape(t.day or "–")}</td><td>{escape(t.feature or "–")}</td>'
                    f'<td>{escape(t.tenant or "–")}</td></tr>')
    what = "session" if s.unit == "sessions" else "trace"
    return (f'<h3>Lowest-scoring {len(s.bottom)} {unit} this week <small>all traffic; links open the {what} in '
            f'Langfuse</small></h3><table class="bottom"><thead><tr><th class="r">#</th><th>{what}</th>'
            '<th class="r">points</th><th>day</th><th>feature</th><th>tenant</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"


def _usd_axis(x: float) -> str:
    return f"${x:,.0f}" if x >= 10 else f"${x:.2f}" if x == 0 or x >= 0.01 else f"${x:.2g}"
