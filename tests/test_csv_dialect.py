"""Which CSV files are read with quoting the sniffer missed (portrait.csv_dialect)."""

from __future__ import annotations

import pytest

from portrait import csv_dialect
from portrait.csv_dialect import QuotedDialect, missed_quoting

HEADER = "order_id;customer_id;ts;amount;category\n"


def _file(tmp_path, lines: list[str], header: str = HEADER):
    path = tmp_path / "purchases.csv"
    path.write_text(header + "".join(lines))
    return path


def _lines(n: int, delimiter: str = ";") -> list[str]:
    fields = [["o{i}", "c{i}", "2024-01-05", "1.5", '"Home; Garden"' if i % 2 else "Food"] for i in range(n)]
    return [delimiter.join(f.format(i=i) for f in row) + "\n" for i, row in enumerate(fields)]


def test_a_stray_quote_gives_the_delimiter_and_the_header_names(tmp_path):
    lines = _lines(20)
    lines[4] = 'o4;c4;2024-01-05;1.5;"TV 55" LED"\n'
    assert missed_quoting(_file(tmp_path, lines), "utf-8") == QuotedDialect(
        ";", ("order_id", "customer_id", "ts", "amount", "category")
    )


def test_a_clean_quoted_file_is_left_to_the_sniffer_without_reading_it_twice(tmp_path, monkeypatch):
    def read_both_ways(*args):
        raise AssertionError("a clean file was read both ways")

    monkeypatch.setattr(csv_dialect, "_better_quoted", read_both_ways)
    lines = _lines(20)
    lines[3] = 'o3;c3;2024-01-05;1.5;"Lamp ""Nordic"""\n'  # doubled quotes, an empty quoted value
    lines[5] = 'o5;c5;2024-01-05;"";"Home; Garden"\n'
    assert missed_quoting(_file(tmp_path, lines), "utf-8") is None


def test_values_that_only_start_with_a_quote_are_left_to_the_sniffer(tmp_path):
    """'"Classic" T-shirt' in every third line and a few quoted values: read with RFC 4180
    quoting a third of the rows were malformed; as sniffed, all are read, quotes as written."""
    lines = [line.replace('"Home; Garden"', "Home") for line in _lines(30)]
    lines = [f'o{i};c{i};2024-01-05;1.5;"Classic" T-shirt\n' if i % 3 == 0 else line for i, line in enumerate(lines)]
    lines[1], lines[2], lines[4] = ('o1;c1;2024-01-05;1.5;"Food"\n',) * 3
    assert missed_quoting(_file(tmp_path, lines), "utf-8") is None


def test_header_names_are_read_as_duckdb_names_them():
    """Trimmed (a header "customer_id " lost its column), an empty one (an export's trailing
    delimiter) ``column<i>``, a repeated one numbered."""
    names = ["a", " b ", "", "TS", "ts", "ts", ""]
    assert csv_dialect._names_as_duckdb_reads(names) == ["a", "b", "column2", "TS", "ts_1", "ts_2", "column6"]


def test_the_answer_is_kept_per_version_of_the_file(tmp_path, monkeypatch):
    lines = _lines(20)
    lines[4] = 'o4;c4;2024-01-05;1.5;"TV 55" LED"\n'
    path = _file(tmp_path, lines)
    first = missed_quoting(path, "utf-8", cache=tmp_path / "cache")
    assert first is not None and list((tmp_path / "cache" / "csv-dialects").glob("*.json"))
    csv_dialect._CHOSEN.clear()  # another command: only the folder remembers
    monkeypatch.setattr(csv_dialect, "_missed_quoting", lambda *a: pytest.fail("looked at again"))
    assert missed_quoting(path, "utf-8", cache=tmp_path / "cache") == first
    monkeypatch.undo()
    path.write_text(HEADER + "".join(_lines(20)))  # a new version
    assert missed_quoting(path, "utf-8", cache=tmp_path / "cache") is None


@pytest.mark.parametrize(
    "stray",
    [
        'o4;c4;2024-01-05;1.5;"TV 55\\" LED"\n',  # backslash-escaped quotes: not RFC 4180's
        'o4;c4;2024-01-05;1.5;TV 55" LED\n',  # a quote inside an unquoted value, with few quoted values
    ],
)
def test_files_not_in_rfc_4180_quoting_are_left_to_the_sniffer(tmp_path, stray):
    lines = _lines(20) if "\\" in stray else [line.replace('"Home; Garden"', "Home") for line in _lines(20)]
    lines[4] = stray
    assert missed_quoting(_file(tmp_path, lines), "utf-8") is None


def test_two_quoted_values_are_too_few_to_override_the_sniffer(tmp_path):
    lines = [line.replace('"Home; Garden"', "Home") for line in _lines(20)]
    lines[1], lines[2] = 'o1;c1;2024-01-05;1.5;"A; B"\n', 'o2;c2;2024-01-05;1.5;"A; B"\n'
    lines[4] = 'o4;c4;2024-01-05;1.5;"TV 55" LED"\n'
    assert missed_quoting(_file(tmp_path, lines), "utf-8") is None
    lines[3] = 'o3;c3;2024-01-05;1.5;"A; B"\n'
    assert missed_quoting(_file(tmp_path, lines), "utf-8") is not None


def test_the_options_name_every_header_column_as_text():
    options = QuotedDialect(",", ("id", "it's")).read_options()
    assert "auto_detect = false, header = false, skip = 1" in options
    assert "skip = 3" in QuotedDialect(",", ("id", "x"), 3).read_options()
    assert "delim = ','" in options and "columns = {'id': 'VARCHAR', 'it''s': 'VARCHAR'}" in options


def test_a_file_that_cannot_be_read_now_is_not_remembered_so(tmp_path, monkeypatch):
    lines = _lines(20)
    lines[4] = 'o4;c4;2024-01-05;1.5;"TV 55" LED"\n'
    path = _file(tmp_path, lines)

    def unreadable(*args):
        raise OSError("busy")

    monkeypatch.setattr(csv_dialect, "_missed_quoting", unreadable)
    assert missed_quoting(path, "utf-8", cache=tmp_path / "cache") is None
    assert not (tmp_path / "cache" / "csv-dialects").exists()
    monkeypatch.undo()
    assert missed_quoting(path, "utf-8", cache=tmp_path / "cache") is not None


def _late(n_before: int, later: list[str]) -> list[str]:
    """``n_before`` lines with no quote, then ``later``."""
    return [line.replace('"Home; Garden"', "Home") for line in _lines(n_before)] + later


def test_quoted_values_first_met_after_the_sniffed_lines_are_read_quoted(tmp_path, monkeypatch):
    """pandas quotes only a value holding the delimiter: a category "Home; Garden" first sold
    after the lines DuckDB sniffs was read unquoted and its lines quarantined."""
    monkeypatch.setattr(csv_dialect, "SAMPLE_LINES", 11)
    later = [f'o{i};c{i};2024-02-05;1.5;"Home; Garden"\n' for i in range(100, 104)] + _lines(6)
    assert missed_quoting(_file(tmp_path, _late(30, later)), "utf-8") == QuotedDialect(
        ";", ("order_id", "customer_id", "ts", "amount", "category")
    )


@pytest.mark.parametrize(
    "later",
    [
        ['o100;c1;2024-02-05;1.5;"Classic" T-shirt\n'] * 6 + ['o101;c1;2024-02-05;1.5;"A; B"\n'] * 3,
        ['o100;c1;2024-02-05;1.5;"A; B"\n'] * 2,  # too few to be more than stray quotes
        ['o100;c1;2024-02-05;1.5;"TV 55\\" LED"\n'] + ['o101;c1;2024-02-05;1.5;"A; B"\n'] * 3,
        [],  # no quote anywhere: the whole file read once to know it
    ],
    ids=["start-with-a-quote", "two-values", "backslash", "none"],
)
def test_later_quotes_that_are_not_quoted_values_leave_the_file_as_sniffed(tmp_path, monkeypatch, later):
    monkeypatch.setattr(csv_dialect, "SAMPLE_LINES", 11)
    assert missed_quoting(_file(tmp_path, _late(30, later)), "utf-8") is None


def test_the_later_sample_starts_at_its_line_across_reads(tmp_path, monkeypatch):
    """The first quote's line began in the read before the one holding the quote."""
    monkeypatch.setattr(csv_dialect, "LATE_READ_BYTES", 7)
    path = _file(tmp_path, ["a;b;c\r\n", 'long line;with "a quote";x\r\n', "next;line;y\r\n"])
    assert csv_dialect.late_quote_sample(path, "utf-8") == 'long line;with "a quote";x\nnext;line;y\n'
    assert csv_dialect.late_quote_sample(_file(tmp_path, ["a;b\n"] * 3), "utf-8") is None
