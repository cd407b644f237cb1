"""The Markdown verdict report as one self-contained HTML page: what Snakemake's HTML report shows
first. The report opens an HTML result from a ``data:`` address, where a relative link resolves to
nothing, so the plots are inlined; Chromium shows nothing past 2 MB of address (the page grows by a
third in base64), so plots past :data:`PAGE_BUDGET_BYTES` stay links and the page says so."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

from streamvc_rvq.atomic import atomic_write_bytes

# 1.4 MB of page is 1.87 MB of base64 address, under Chromium's 2 MB (2 * 1024 * 1024) URL limit
PAGE_BUDGET_BYTES = 1_400_000
CHROMIUM_URL_LIMIT = 2 * 1024 * 1024
_IMAGE = re.compile(r'<img alt="([^"]*)" src="([^"]+\.png)" ?/?>')
_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;margin:0.5em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:0 2px}h1{font-size:1.6em}"""


def markdown_page(text: str, title: str, base: Path, budget: int = PAGE_BUDGET_BYTES) -> str:
    """``text`` (Markdown whose images are relative to ``base``) as an HTML page, the PNGs inlined
    in order while the page stays under ``budget`` bytes."""
    body = markdown.markdown(text, extensions=["tables", "sane_lists"])
    size = len(body.encode()) + 2000
    left_out = 0

    def inline(match: re.Match) -> str:
        nonlocal size, left_out
        alt, src = match.group(1), match.group(2)
        path = Path(base) / src
        data = base64.b64encode(path.read_bytes()).decode() if path.is_file() else None
        if data is not None and size + len(data) <= budget:
            size += len(data)
            return f'<img alt="{alt}" src="data:image/png;base64,{data}">'
        left_out += 1
        return f'<a href="{src}">{alt}</a>'

    body = _IMAGE.sub(inline, body)
    note = (f"<p><em>{left_out} plot(s) left out to keep this page openable in the report: "
            "they are in the plots folder next to it.</em></p>" if left_out else "")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body>\n{body}\n{note}</body></html>\n")


def write_markdown_page(md_path: Path, out: Path, title: str) -> Path:
    """The Markdown file ``md_path`` as a self-contained page at ``out``."""
    md_path = Path(md_path)
    atomic_write_bytes(Path(out), markdown_page(md_path.read_text(), title, md_path.parent).encode())
    return Path(out)
