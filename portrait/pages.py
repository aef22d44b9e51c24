"""The one look of every HTML page the program writes (personas, crowd reports): the style
sheet, the page frame, Markdown tables, and charts embedded as PNG so a page is one file.
Text taken from the data is HTML-escaped by the callers; this module escapes titles."""

from __future__ import annotations

import base64
import io
import re
from html import escape

import pandas as pd

STYLE = (
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}"
    "section{border:1px solid #ddd;padding:.5em 1em;margin:.8em 0;border-radius:6px}"
    ".cols{display:flex;gap:2em;align-items:flex-start}.cols>div{flex:1}"
    "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
    ".note{color:#666;font-size:13px}.sig{color:#c0392b;font-weight:bold}img{max-width:100%;height:auto}"
)


def page(title: str, body: str) -> str:
    """A whole self-contained HTML document."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported on first use, not at import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> str:
    """The figure as base64 PNG (and closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def img(encoded_png: str, alt: str) -> str:
    return f"<img alt='{escape(alt, quote=True)}' src='data:image/png;base64,{encoded_png}'>"


def md_text(value) -> str:
    """Text from the data as Markdown shows it literally: no HTML tag or entity (a viewer that
    renders HTML inside Markdown runs no tag from the data: a ``<`` that opens one and an ``&``
    that starts one are escaped, while ``<10``, a suppressed count, stays readable), on one line
    (a newline would end a table row or a heading), pipes escaped (a table cell's border)."""
    text = re.sub(r"&(?=#?[A-Za-z0-9]+;)", "&amp;", str(value))
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    return re.sub(r"[\r\n\v\f\x85\u2028\u2029]+", " ", text).replace("|", "\\|")


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table; floats with two decimals and thousands separators, NaN blank; every
    header and cell through :func:`md_text`."""
    shown = table.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:,.2f}")
    shown = shown.astype(object).where(shown.notna(), "")
    lines = ["| " + " | ".join(map(md_text, shown.columns)) + " |", "|" + " --- |" * len(shown.columns)]
    lines += ["| " + " | ".join(map(md_text, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)
