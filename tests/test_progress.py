import io

from rich.console import Console

from portrait.progress import spinner


def test_progress_goes_to_a_log_as_one_line_per_new_message_where_there_is_no_terminal():
    log = io.StringIO()
    with spinner(Console(file=log, force_terminal=False), "tagging") as say:
        say("reading purchases")
        say("reading purchases")  # the same message again: no second line
        say("RFM scores")
    assert log.getvalue().splitlines() == ["[     0 s] reading purchases", "[     0 s] RFM scores"]


def test_a_terminal_gets_the_spinner_and_no_lines():
    screen = io.StringIO()
    with spinner(Console(file=screen, force_terminal=True), "tagging") as say:
        say("reading purchases")
    assert "[     0 s]" not in screen.getvalue()
