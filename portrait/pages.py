"""The one look of every HTML page the program writes (personas, crowd reports): the style
sheet, the page frame, Markdown tables, and charts embedded as PNG so a page is one file.
Text taken from the data is HTML-escaped by the callers; this module escapes titles."""

from __future__ import annotations

import base64
import io
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


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table; floats with two decimals and thousands separators, NaN blank."""
    shown = table.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:,.2f}")
    shown = shown.astype(object).where(shown.notna(), "")
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + " --- |" * len(shown.columns)]
    lines += [
        "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in shown.itertuples(index=False)
    ]
    return "\n".join(lines)
