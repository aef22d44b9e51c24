"""The command's help as a user reads it."""

from __future__ import annotations


def _commands(command, path):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():  # groups (typer's own click)
        yield from _commands(sub, f"{path} {name}")


def test_every_help_text_reads_as_written():
    """Help is rendered as Rich markup: a text in square brackets that reads as a style is
    dropped ("Where the report and quarantine go [default: outputs/validation/NAME]." was shown
    as "... go ."). Brackets meant as text are escaped (``\\[features]``) or avoided."""
    import typer
    from rich.errors import MarkupError
    from rich.text import Text

    from portrait_cli import main

    main._register_later_commands()
    commands = list(_commands(typer.main.get_command(main.app), "portrait"))
    assert len(commands) > 40
    changed = []
    for path, command in commands:
        for where, text in [("", command.help)] + [
            (param.name, getattr(param, "help", None)) for param in command.params
        ]:
            if not text:
                continue
            try:
                shown = Text.from_markup(text).plain
            except MarkupError as exc:
                shown = f"(not shown: {exc})"
            if shown != text.replace("\\[", "["):
                changed.append(f"{path} {where}: {text!r} is shown as {shown!r}")
    assert not changed, "\n".join(changed)


def test_every_command_summary_is_one_line():
    """The command lists (``portrait --help``) show a command's first paragraph with its line
    breaks kept: a summary wrapped in the docstring was shown cut in two mid-sentence."""
    import typer

    from portrait_cli import main

    main._register_later_commands()
    wrapped = []
    for path, command in _commands(typer.main.get_command(main.app), "portrait"):
        summary = (command.short_help or command.help or "").strip().split("\n\n")[0]
        if "\n" in summary:
            wrapped.append(f"{path}: {summary!r}")
    assert not wrapped, "\n".join(wrapped)


def test_an_option_of_one_value_given_twice_is_refused_not_the_last_one_taken(monkeypatch, capsys, tmp_path):
    """``crowd report --segment a --segment b`` reported on b alone (click keeps the last value),
    and ``--as-of`` twice on a job's line ran on the second date."""
    import sys

    import pytest

    from portrait_cli.main import main

    def exit_of(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["portrait", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        return exit_.value.code, capsys.readouterr().err

    code, err = exit_of("crowd", "report", "--segment", "a", "--segment", "b", "--data", str(tmp_path))
    assert code == 2
    assert "error: --segment given 2 times; give it once (see " in err and "crowd report --help)" in err
    code, err = exit_of("score", str(tmp_path), "--reasons", "--reasons", "--as-of", "2024-01-01")
    assert code == 2 and "--reasons given 2 times" in err
    # an option taken many times (one per table) is not refused; the command goes on to its own check
    code, err = exit_of(
        "features",
        "build",
        str(tmp_path / "none"),
        "--as-of",
        "2024-01-01",
        "--out",
        str(tmp_path / "f.parquet"),
        "--table",
        "purchases=a.b",
        "--table",
        "events=c.d",
    )
    assert "given 2 times" not in err and code != 0
