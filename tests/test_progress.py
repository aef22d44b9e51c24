import io

from rich.console import Console

from portrait.progress import counter, spinner


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


def test_a_counted_task_logs_each_unit_with_its_number_where_there_is_no_terminal():
    log = io.StringIO()
    with counter(Console(file=log, force_terminal=False), "tuning", 2) as done:
        done("trial 0: complete 0.81")
        done("trial 1: pruned")
    assert log.getvalue().splitlines() == [
        "[     0 s] tuning 1/2: trial 0: complete 0.81",
        "[     0 s] tuning 2/2: trial 1: pruned",
    ]
    screen = io.StringIO()
    with counter(Console(file=screen, force_terminal=True), "tuning", 2) as done:
        done("trial 0: complete 0.81")
    assert "[     0 s]" not in screen.getvalue()  # a terminal gets the bar, not log lines
