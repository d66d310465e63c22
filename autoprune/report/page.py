"""One self-contained HTML page from sections of tables, Plotly figures and text (no network needed to open it).

Every string from a run directory is untrusted: text goes through :func:`html.escape`, and the figures are
embedded as JSON in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, so no value
can close the block or start markup. plotly.js (the basic partial bundle) and the page's own script are inlined
from package data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from html import escape
from importlib.resources import files
from typing import Any

ASSETS = ("plotly-basic.min.js", "report.js", "report.css")


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells (escaped when rendered)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    """One part of the page: a title, a note, and a figure, a table or preformatted text.

    Attributes:
        key: the section's id in the page (``section-<key>``; its chart is ``chart-<key>``).
        title: the heading.
        note: a sentence under the heading (e.g. why a chart is empty).
        figure: a Plotly figure ``{"data": [...], "layout": {...}}``.
        table: a table of formatted cells.
        text: preformatted text (the config).
    """

    key: str
    title: str
    note: str = ""
    figure: Mapping[str, Any] | None = None
    table: Table | None = None
    text: str | None = None


def render_page(title: str, facts: Sequence[tuple[str, str]], sections: Sequence[Section]) -> str:
    """The HTML document: a header with ``facts`` (label, value), then the sections in order."""
    figures = {s.key: s.figure for s in sections if s.figure is not None}
    head = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
    body = "\n".join(_section(s) for s in sections)
    nav = "".join(f'<a href="#section-{escape(s.key)}">{escape(s.title)}</a>' for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{asset('report.css')}</style>\n</head>\n<body>\n"
        f"<header><h1>{escape(title)}</h1><dl>{head}</dl><nav>{nav}</nav></header>\n<main>\n{body}\n</main>\n"
        f'<script type="application/json" id="report-figures">{embed_json(figures)}</script>\n'
        f"<script>{asset('plotly-basic.min.js')}</script>\n<script>{asset('report.js')}</script>\n"
        "</body>\n</html>\n"
    )


def embed_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (NaN and infinities become null)."""
    text = json.dumps(_finite(value), allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _section(section: Section) -> str:
    key = escape(section.key)
    parts = [f'<section id="section-{key}">', f"<h2>{escape(section.title)}</h2>"]
    if section.note:
        parts.append(f'<p class="note">{escape(section.note)}</p>')
    if section.figure is not None:
        parts.append(f'<div class="chart" id="chart-{key}" data-figure="{key}"></div>')
    if section.table is not None:
        parts.append(_table(section.table))
    if section.text is not None:
        parts.append(f"<pre>{escape(section.text)}</pre>")
    parts.append("</section>")
    return "\n".join(parts)


def _table(table: Table) -> str:
    header = "".join(f'<th scope="col">{escape(h)}</th>' for h in table.header)
    rows = "".join(
        "<tr>" + f'<th scope="row">{escape(row[0])}</th>' + "".join(f"<td>{escape(c)}</td>" for c in row[1:]) + "</tr>"
        for row in table.rows
    )
    return f'<div class="table"><table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table></div>'


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@cache
def asset(name: str) -> str:
    """The text of a file of ``autoprune/assets`` (package data)."""
    return files("autoprune").joinpath("assets", name).read_text(encoding="utf-8")
