"""Small SVG charts drawn on the server: no JavaScript library, nothing from a CDN, nothing the
admin's Content-Security-Policy would block. Every label goes through format_html."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str = ""  # shown after the bar; the value when blank
    css_class: str = ""


def horizontal_bars(bars: Sequence[Bar], *, title: str, width: int = 560, row_height: int = 20) -> SafeString:
    """One bar per row, label on the left, value on the right (a funnel, queue depths)."""
    label_width, value_width = 230, 70
    track = width - label_width - value_width
    largest = max((bar.value for bar in bars), default=0) or 1
    height = max(row_height * len(bars), row_height)
    rows = format_html_join(
        "",
        '<g transform="translate(0,{})"><text x="{}" y="15" text-anchor="end" class="chart-label">{}</text>'
        '<rect x="{}" y="4" width="{}" height="14" rx="2" class="chart-bar {}"></rect>'
        '<text x="{}" y="15" class="chart-value">{}</text></g>',
        (
            (
                index * row_height,
                label_width - 8,
                bar.label,
                label_width,
                f"{max(bar.value / largest * track, 1 if bar.value else 0):.1f}",
                bar.css_class,
                label_width + track + 6,
                bar.text or f"{bar.value:g}",
            )
            for index, bar in enumerate(bars)
        ),
    )
    return format_html(
        '<svg class="chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" aria-label="{}">'
        "<title>{}</title>{}</svg>",
        width,
        height,
        width,
        height,
        title,
        title,
        rows,
    )


def paired_columns(
    columns: Sequence[tuple[str, float, float]], *, title: str, legend: tuple[str, str], width: int = 720
) -> SafeString:
    """Two series side by side per column (received and delivered per hour)."""
    height, bottom, left = 170, 150, 30
    slot = (width - left) / max(len(columns), 1)
    largest = max((max(first, second) for _, first, second in columns), default=0) or 1
    scale = (bottom - 20) / largest
    bars = []
    for index, (label, first, second) in enumerate(columns):
        x = left + index * slot
        for offset, value, css_class in ((0.1, first, "chart-bar-first"), (0.5, second, "chart-bar-second")):
            bar_height = value * scale
            bars.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" class="{}"><title>{}: {}</title></rect>',
                    f"{x + slot * offset:.1f}",
                    f"{bottom - bar_height:.1f}",
                    f"{slot * 0.38:.1f}",
                    f"{bar_height:.1f}",
                    css_class,
                    label,
                    f"{value:g}",
                )
            )
        if index % 3 == 0:
            bars.append(
                format_html(
                    '<text x="{}" y="{}" class="chart-axis">{}</text>', f"{x:.1f}", bottom + 14, label
                )
            )
    axis = format_html(
        '<text x="0" y="16" class="chart-axis">{}</text><line x1="{}" y1="{}" x2="{}" y2="{}" class="chart-line"/>',
        f"{largest:g}",
        left,
        bottom,
        width,
        bottom,
    )
    legend_svg = format_html(
        '<rect x="{}" y="2" width="10" height="10" class="chart-bar-first"/><text x="{}" y="11" class="chart-axis">{}</text>'
        '<rect x="{}" y="2" width="10" height="10" class="chart-bar-second"/><text x="{}" y="11" class="chart-axis">{}</text>',
        width - 200,
        width - 186,
        legend[0],
        width - 100,
        width - 86,
        legend[1],
    )
    return format_html(
        '<svg class="chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" aria-label="{}">'
        "<title>{}</title>{}{}{}</svg>",
        width,
        height,
        width,
        height,
        title,
        title,
        axis,
        legend_svg,
        mark_safe("".join(bars)),  # noqa: S308 - each piece was built with format_html above
    )
