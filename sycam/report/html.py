"""Self-contained HTML pages: text, tables and PNG pictures inlined as base64 (one file, no network).

    page = Page("sycam search: demo")
    page.heading("Leaderboard")
    page.paragraph("...")
    page.table(rows, columns)
    page.image("grid.png", "best vs seeds")
    page.write("report.html")
"""
from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{background:#f6f6f6;padding:1px 4px;font-size:0.9em}pre{padding:8px;overflow-x:auto;white-space:pre-wrap}
.verdict{padding:8px 12px;border-left:5px solid #888;background:#fafafa}
.good{border-color:#2a2}.bad{border-color:#c33}img{max-width:100%}figure{margin:1em 0}
figcaption{font-size:0.85em;color:#555}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(path: str | Path) -> str:
    data = Path(path).read_bytes()
    kind = "jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "png"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>' if value == value else '<td class="num">-</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{esc(value)}</td>"


class Page:
    """An HTML page built part by part; every picture is embedded."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = [f"<h1>{esc(title)}</h1>"]

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{esc(text)}</h2>")

    def paragraph(self, text: str, cls: str | None = None) -> None:
        c = f' class="{esc(cls)}"' if cls else ""
        self.parts.append(f"<p{c}>{esc(text)}</p>")

    def code(self, text: str) -> None:
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def raw(self, markup: str) -> None:
        """Markup the caller built (escape its text with :func:`esc`)."""
        self.parts.append(markup)

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        if not rows:
            self.paragraph("(none)")
            return
        columns = list(columns or rows[0].keys())
        head = "".join(f"<th>{esc(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(r.get(c, "")) for c in columns) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, path: str | Path | None, caption: str = "") -> None:
        if path is None or not Path(path).exists():
            return
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{data_uri(path)}" alt="{esc(caption)}">{cap}</figure>')

    def render(self) -> str:
        return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
                f"<title>{esc(self.title)}</title><style>{_STYLE}</style></head><body>"
                + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        tmp.replace(path)
        return path
