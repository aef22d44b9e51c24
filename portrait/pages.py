"""The one look of every HTML page the program writes (personas, crowd reports): the style
sheet, the page frame, Markdown tables, and charts embedded as PNG so a page is one file.
Text taken from the data is HTML-escaped by the callers; this module escapes titles."""

from __future__ import annotations

import base64
import io
import logging
import re
import warnings
from html import escape

import pandas as pd

log = logging.getLogger(__name__)

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


# Fonts with letters DejaVu Sans lacks (Chinese, Japanese, Korean), used for those letters when
# installed (matplotlib falls back glyph by glyph along the list): category names are the data's.
_FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Arial Unicode MS",
)


# matplotlib's warning for a letter its fonts lack: "Glyph 12362 (\N{HIRAGANA LETTER O}) missing from font(s) ..."
_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")
_said_missing_glyphs: list[bool] = []  # once per process


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported on first use, not at import),
    with the installed fonts of :data:`_FALLBACK_FONTS` after DejaVu Sans."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    fallbacks = [name for name in _FALLBACK_FONTS if name in installed]
    if fallbacks and fallbacks[0] not in matplotlib.rcParams["font.sans-serif"]:
        matplotlib.rcParams["font.sans-serif"] = ["DejaVu Sans", *fallbacks, *matplotlib.rcParams["font.sans-serif"]]
    return plt


def png(fig) -> str:
    """The figure as base64 PNG (and closed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        # a letter no installed font has is drawn as a box: said once, with what to install (a
        # warning per letter, matplotlib's, says nothing the user can act on); the tables beside
        # the chart hold the text
        warnings.simplefilter("always")
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    missing = sorted({m.group(1) for w in caught if (m := _MISSING_GLYPH.search(str(w.message)))})
    for w in caught:
        if not _MISSING_GLYPH.search(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing and not _said_missing_glyphs:
        _said_missing_glyphs.append(True)
        log.warning(
            "charts: letters no installed font has (%s) are drawn as boxes; install a font with them "
            "(Noto Sans CJK JP, SC or KR for Chinese, Japanese and Korean is found by name; for another "
            "script add its font to matplotlib's font.sans-serif): the tables beside the charts show the text",
            " ".join(f"'{chr(int(code))}'" for code in missing[:5]),
        )
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
