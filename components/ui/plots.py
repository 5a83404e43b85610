"""Small inline SVG line charts: drawn as text in the page (no image round trip, crisp at any zoom),
with each point's number in a <title> tooltip, so the chart and the table beside it agree."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 240, 48, 130, 12, 32


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def line_chart(
    xs: Sequence[float],
    series: dict[str, Sequence[float | None]],
    x_label: str,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    css_class: str = "chart",
) -> str:
    """One SVG with a line per series over shared x values; None leaves a gap."""
    values = [v for ys in series.values() for v in ys if v is not None]
    if not xs or not values:
        return '<p class="muted">nothing to plot yet</p>'
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(values)), max(values)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y1 = y0 + 1
    y1 += (y1 - y0) * 0.05

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def py(y: float) -> float:
        return H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM)

    parts = [f'<svg class="{css_class}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">']
    for t in _ticks(y0, y1):
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 4}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="11">{t:.2f}</text>'
        )
    whole = all(float(x).is_integer() for x in xs)  # steps, versions: label ticks as whole numbers
    default_ticks = sorted({round(x) for x in _ticks(x0, x1)}) if whole else _ticks(x0, x1)
    for x, label in x_ticks or [(x, f"{x:g}") for x in default_ticks]:
        parts.append(
            f'<text x="{px(x):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11">{escape(label)}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 2}" text-anchor="middle" font-size="11">{escape(x_label)}</text>'
    )
    for i, (name, ys) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [(px(x), py(y), x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        if len(points) <= 40:  # markers with tooltips where they can be told apart
            for a, b, x, y in points:
                parts.append(
                    f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{colour}">'
                    f"<title>{escape(name)} at {x:g}: {y:.4f}</title></circle>"
                )
        ly = TOP + 14 + 18 * i
        parts.append(
            f'<line x1="{W - RIGHT + 10}" x2="{W - RIGHT + 28}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="3"/>'
            f'<text x="{W - RIGHT + 32}" y="{ly}" font-size="12">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
