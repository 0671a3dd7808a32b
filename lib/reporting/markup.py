"""The tear sheet's HTML building blocks: the page's CSS, escaping, number formats, tables, cards and
inline PNGs (data URIs, so the page stays one self-contained file)."""

from __future__ import annotations

import base64
import html
from typing import Any

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2433}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d7dbe2;padding-bottom:4px}
.sub{color:#5b6578;font-size:13px;margin-bottom:14px}
.verdict{font-size:18px;background:#fff;border-left:6px solid #c0392b;padding:12px 16px;margin:12px 0 18px}
.verdict.pass{border-left-color:#1e8449}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #e1e4ea;border-radius:6px;
padding:8px 12px;min-width:150px;flex:1}.card b{display:block;font-size:20px}.card span{font-size:12px;color:#5b6578}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0 10px}
th,td{border:1px solid #e1e4ea;padding:4px 9px;text-align:right}th{background:#eef1f5}td:first-child,th:first-child{text-align:left}
img{max-width:100%;background:#fff;border:1px solid #e1e4ea;margin:6px 0}
.two{display:grid;grid-template-columns:1fr 1fr;gap:12px}.note{font-size:12px;color:#5b6578;max-width:1000px}
"""


def e(x: Any) -> str:
    return html.escape(str(x))


def pct(x: float | None, d: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{d}f} %"


def num(x: float | None, f: str = ".2f") -> str:
    return "n/a" if x is None else format(x, f)


def ci(iv: dict | None, fmt=num) -> str:
    if not iv or iv.get("low") is None:
        return ""
    return f" <small>[{fmt(iv['low'])}, {fmt(iv['high'])}]</small>"


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def card(value: str, label: str) -> str:
    return f'<div class="card"><b>{value}</b><span>{label}</span></div>'


def p3(x: float | None) -> str:
    return num(x, ".3f")
