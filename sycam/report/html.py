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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em;overflow-wrap:anywhere}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0;max-width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}
td code{overflow-wrap:break-word}.long{overflow-wrap:anywhere}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{background:#f6f6f6;padding:1px 4px;font-size:0.9em;overflow-wrap:anywhere}
pre{padding:8px;overflow-x:auto;white-space:pre-wrap}
p,li,figcaption,summary{overflow-wrap:anywhere}
table.header{width:100%;table-layout:fixed}table.header th{width:11em;white-space:normal}
table.wide{width:100%}
.verdict{padding:8px 12px;border-left:5px solid #888;background:#fafafa}
.good{border-color:#2a2}.bad{border-color:#c33}img{max-width:100%;height:auto}figure{margin:1em 0}
figcaption,.note{font-size:0.85em;color:#555}details{margin:0.5em 0}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(path: str | Path) -> str:
    data = Path(path).read_bytes()
    kind = "jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "png"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


_BREAK = re.compile(r"([(,/_:=])")


def _soft(text: Any) -> tuple[str, bool]:
    """Escaped text that may break after ``( , / _ : =`` (expressions, paths, metric names), and
    whether it has a run of more than 30 characters without such a place or a space (then it may
    break anywhere: such a run would otherwise widen its table past the page)."""
    text = str(text)
    long = max((len(r) for r in re.split(r"[\s(,/_:=]", text)), default=0) > 30
    return _BREAK.sub(r"\1<wbr>", esc(text)), long


def _breakable(text: Any) -> str:
    markup, long = _soft(text)
    return f'<span class="long">{markup}</span>' if long else markup


def _code(text: Any) -> str:
    """An expression as code that may break after ``( , / _ : =`` and at spaces."""
    markup, long = _soft(text)
    return f'<code{" class=long" if long else ""}>{markup}</code>'


def _cell(value: Any, code: bool = False) -> str:
    if code and value not in ("", None):
        return f"<td>{_code(value)}</td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>' if value == value else '<td class="num">-</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{_breakable(value)}</td>"


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

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
              labels: Mapping[str, str] | None = None, code: Sequence[str] = (), wide: bool = False) -> None:
        """Rows as a table; ``labels``: column headings (default the keys), ``code``: columns shown as
        code (expressions), ``wide``: the table takes the page's width (long expressions wrap)."""
        if not rows:
            self.paragraph("(none)")
            return
        columns = list(columns or rows[0].keys())
        labels = dict(labels or {})
        head = "".join(f"<th>{_breakable(labels.get(c, c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(r.get(c, ""), c in code) for c in columns) + "</tr>" for r in rows)
        cls = ' class="wide"' if wide else ""
        self.parts.append(f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def header(self, rows: Sequence[tuple[str, str]]) -> None:
        """What the report is about, as label / value rows (model, layer, metric, data, time)."""
        body = "".join(f"<tr><th>{esc(k)}</th><td>{_breakable(v)}</td></tr>" for k, v in rows if v not in ("", None))
        self.parts.append(f'<table class="header"><tbody>{body}</tbody></table>')

    def details(self, summary: str, text: str) -> None:
        """Text folded away (raw settings and the like)."""
        self.parts.append(f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>")

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
