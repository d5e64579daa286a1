"""An attribution as the alert's text: the WHERE line (the named slice, or why none is named
yet), the MIX line (the traffic-mix part of the drop) and a CHANGED line per change event.
"""
from __future__ import annotations

from worker.drift.attribution_types import Attribution, label


def describe(a: Attribution) -> list[str]:
    """The attribution as the alert's lines (WHERE, MIX, WHAT CHANGED)."""
    lines: list[str] = []
    if a.status == "slice":
        for s in a.slices:
            lines.append(
                f"WHERE {label(s.key)} ({s.share_after:.0%} of traffic): {s.before_mean:.1f} → "
                f"{s.after_mean:.1f} (rate {s.effect:+.1f}, 95% {s.effect_low:+.1f} … "
                f"{s.effect_high:+.1f}; n {s.n_before} → {s.n_after}) explains {s.share_of_drop:.0%} "
                f"of the drop (mix-adjusted, z {s.z:.1f})")
    else:
        lines.append(f"WHERE {a.reason}")
    if a.mix_dimension is not None and a.mix_drivers:
        top = a.mix_drivers[0]
        lines.append(f"MIX {a.mix:+.1f} of {a.drop:+.1f} points along {a.mix_dimension} "
                     f"({top.value} {top.share_before:.0%} → {top.share_after:.0%}); rate {a.rate:+.1f}")
    for f in a.events:
        e = f.event
        if f.old_mean is None or f.new_mean is None:
            lines.append(f"CHANGED {e.dimension} {e.value} first seen {e.first_seen:.0f} (no comparison yet)")
            continue
        when = "on the same days" if f.same_days else "(old: before the start)"
        old = f.old_value if f.old_value is not None else "others"
        lines.append(f"CHANGED {e.dimension} {old} {f.old_mean:.1f}, {e.value} {f.new_mean:.1f} "
                     f"{when} (n {f.old_n} vs {f.new_n}); explains {f.share_of_drop:.0%} of the drop")
    return lines
