"""Progress of long work on the command line, one helper for every command: a spinner with the
elapsed time on a terminal; where the output is no terminal (a nightly job's log, cron), where a
spinner shows nothing, one line per new message with the seconds since the start."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def _log_lines(console: Console) -> Callable[[str], None]:
    """``log(message)``: a line ``[  12 s] message`` unless the message is the last one again."""
    started, last = time.monotonic(), [None]

    def log(text: str) -> None:
        if text != last[0]:
            last[0] = text
            console.print(f"[{time.monotonic() - started:6.0f} s] {text}", markup=False, highlight=False)

    return log


@contextmanager
def spinner(console: Console, title: str) -> Iterator[Callable[..., None]]:
    """A spinner titled ``title`` with the elapsed time; yields ``say(message, **update)``,
    which shows ``message`` (``update``: the task's other fields, e.g. ``completed``). Without a
    terminal no live display is started (it would leave an empty line in the log): log lines."""
    if not console.is_terminal:
        log = _log_lines(console)
        yield lambda text, **update: log(text)
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(title, total=None)
        yield lambda text, **update: progress.update(task, description=text, **update)


@contextmanager
def counter(console: Console, title: str, total: int) -> Iterator[Callable[[str], None]]:
    """A bar titled ``title`` counting ``total`` units of work; yields ``done(message)``, called
    once per unit finished. Without a terminal: a log line ``title i/total: message`` each."""
    if not console.is_terminal:
        log, count = _log_lines(console), [0]

        def logged(text: str) -> None:
            count[0] += 1
            log(f"{title} {count[0]}/{total}: {text}")

        yield logged
        return
    with Progress(
        TextColumn(title, markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=total)
        yield lambda text: progress.update(task, description=text, advance=1)
