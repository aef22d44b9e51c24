import logging

import pytest

from portrait import pages


def test_letters_without_a_font_are_said_once_not_per_letter(caplog, monkeypatch):
    monkeypatch.setattr(pages, "_said_missing_glyphs", [])
    monkeypatch.setattr(pages, "_FALLBACK_FONTS", ())  # as on a machine without CJK fonts
    plt = pages.pyplot()
    if any("CJK" in name for name in plt.rcParams["font.sans-serif"]):
        pytest.skip("a CJK font is installed here: the letters are drawn, nothing to say")
    with caplog.at_level(logging.WARNING, logger="portrait.pages"):
        for title in ("\u304a\u8336", "\u7dd1\u8336"):
            fig, ax = plt.subplots()
            ax.set_title(title)
            assert pages.png(fig)
    said = [r.getMessage() for r in caplog.records if "drawn as boxes" in r.getMessage()]
    assert len(said) == 1 and "'\u304a' '\u8336'" in said[0] and "Noto Sans CJK" in said[0]
