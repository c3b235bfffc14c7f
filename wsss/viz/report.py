"""A static HTML report (one ``index.html`` plus PNGs beside it; no server, no external assets)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from wsss.io import atomic_write_text

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; image-rendering: pixelated; }
p.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Section:
    """One titled block of the report: optional note, tables (header + rows), links (href, text) and
    figures (path, caption)."""

    title: str
    note: str = ""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            parts.append(f"<p class='note'>{html.escape(s.note)}</p>")
        parts.extend(_table(h, r) for h, r in s.tables)
        if s.links:
            parts.append("<ul>" + "".join(f"<li><a href='{html.escape(href)}'>{html.escape(text)}</a></li>"
                                          for href, text in s.links) + "</ul>")
        for src, caption in s.figures:
            parts.append(f"<figure><img src='{html.escape(src)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(report_dir: Path, title: str, sections: list[Section]) -> Path:
    """Write ``report_dir/index.html``; figure paths in ``sections`` are relative to ``report_dir``."""
    index = Path(report_dir) / "index.html"
    atomic_write_text(index, render(title, sections))
    return index
