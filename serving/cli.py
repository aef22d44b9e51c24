"""``portrait score``, ``portrait list`` and ``portrait serve``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from features.cli import EngineOption, SparkMasterOption
from features.options import checked_date
from portrait.audit import AUDIT_LOG_ENV, DEFAULT_AUDIT_LOG, audit_log_path
from portrait.errors import PortraitError
from portrait.progress import spinner
from serving.keys import ROLE_HELP, Role
from serving.settings import API_KEY_ENV, DEFAULT_MODELS, DEFAULT_SCORES, REASONS_FIRST

LOCALHOST = ("127.0.0.1", "localhost", "::1")
MIN_API_KEY_LENGTH = 16  # of PORTRAIT_API_KEY when serving beyond this machine
MAX_DEFAULT_WORKERS = 4
ROLES_TEXT = ", ".join(f"{role.value} ({what})" for role, what in ROLE_HELP.items())


def register(app: typer.Typer, out, console) -> None:
    from portrait.tracking import setup_tracking

    keys_app = typer.Typer(no_args_is_help=True, help="API keys with roles: add, list (only hashes are stored).")
    register_keys(keys_app, out)
    app.add_typer(keys_app, name="keys")

    @app.command("score")
    def score_command(
        dataset: Annotated[
            str, typer.Argument(help="Data set folder or DuckDB file (Spark: also hdfs://, s3a://, abfss:// paths).")
        ],
        as_of: Annotated[
            str, typer.Option("--as-of", callback=checked_date, help="Score as of this date (YYYY-MM-DD).")
        ],
        models: Annotated[str, typer.Option(help="Comma-separated registered models.")] = ",".join(DEFAULT_MODELS),
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for the scores table.")] = DEFAULT_SCORES,
        alias: Annotated[str, typer.Option(help="Registry alias to load.")] = "champion",
        reasons: Annotated[
            bool,
            typer.Option("--reasons", help="Add the top three reasons per score (slow: about 170-730 rows/s here)."),
        ] = False,
        csv: Annotated[bool, typer.Option("--csv", help="Also write CSV.")] = False,
        skip_validation: Annotated[
            bool, typer.Option("--skip-validation", help="Do not validate the data set first.")
        ] = False,
        engine: EngineOption = "duckdb",
        spark_master: SparkMasterOption = None,
        table: Annotated[
            list[str] | None,
            typer.Option("--table", help="Spark: read TABLE from the catalog, e.g. purchases=sales.order_lines."),
        ] = None,
    ) -> None:
        """Score every customer with registered models; write one scores table atomically."""
        from portrait.dataset import open_dataset
        from portrait.engine import check_engine_name

        on_spark = check_engine_name(engine) == "spark" or bool(table or spark_master)
        # the data set first: a mistyped folder is said at once, not after the scoring modules'
        # and MLflow's imports (about 3 s)
        ds = None if on_spark else open_dataset(dataset)
        from serving.score import refuse_refresh_output, score

        refuse_refresh_output(out_dir)
        setup_tracking()
        names = [m.strip() for m in models.split(",") if m.strip()]
        try:
            if on_spark:
                run = _score_on_spark(
                    dataset,
                    as_of,
                    names,
                    out_dir,
                    alias,
                    reasons,
                    csv,
                    skip_validation,
                    engine,
                    spark_master,
                    table,
                    console,
                )
                _print_summary(out, run)
                return
            with spinner(console, "starting") as say:
                run = score(
                    ds,
                    as_of,
                    names,
                    out_dir,
                    alias=alias,
                    with_reasons=reasons,
                    csv=csv,
                    validate_first=not skip_validation,
                    progress=say,
                )
            _print_summary(out, run)
        except PortraitError as exc:
            if names == list(DEFAULT_MODELS) and str(exc).startswith("no registered model named"):
                raise PortraitError(
                    f"{exc}; without --models every default model is scored ({', '.join(DEFAULT_MODELS)}): "
                    "name the registered ones with --models"
                ) from None
            raise

    @app.command("list")
    def list_command(
        model: Annotated[str, typer.Option("--model", help="Model whose score ranks the list.")],
        out_file: Annotated[Path, typer.Option("--out", help="CSV to write.")],
        top: Annotated[
            int | None, typer.Option("--top", min=1, help="The N customers with the highest scores.")
        ] = None,
        min_percentile: Annotated[
            float | None,
            typer.Option("--min-percentile", min=0, max=100, help="Those at or above this percentile (0-100)."),
        ] = None,
        min_score: Annotated[
            float | None, typer.Option("--min-score", help="Those whose score is at least this.")
        ] = None,
        persona: Annotated[str | None, typer.Option("--persona", help="Persona name or id.")] = None,
        where: Annotated[
            str | None, typer.Option("--where", help='e.g. "spend_365d > 100 and days_since_last_purchase < 60"')
        ] = None,
        exclude_bought_within: Annotated[
            int | None, typer.Option("--exclude-bought-within", help="Drop customers who bought in the last DAYS.")
        ] = None,
        scores_dir: Annotated[Path, typer.Option("--scores", help="Folder of scores tables.")] = DEFAULT_SCORES,
        alias: Annotated[str, typer.Option(help="Alias of the model used for reasons.")] = "champion",
        segment: Annotated[str | None, typer.Option("--segment", help="Only this saved segment's members.")] = None,
        tag: Annotated[list[str] | None, typer.Option("--tag", help="Only holders of this tag (repeatable).")] = None,
        data: Annotated[
            Path | None,
            typer.Option(
                "--data",
                help="Data set to evaluate --segment/--tag on, as of the scores, and whose consent rules apply "
                "(default: the one the scores were computed from).",
            ),
        ] = None,
        segments_dir: Annotated[Path | None, typer.Option("--segments", help="Segments folder.")] = None,
        tags_file: Annotated[Path | None, typer.Option("--tags-file", help="Tag library TOML.")] = None,
        reasons_for: Annotated[
            int,
            typer.Option(
                "--reasons-for",
                min=0,
                help="Compute reasons (when the scores store none) for the list's first N customers; "
                "a few hundred a second.",
            ),
        ] = REASONS_FIRST,
    ) -> None:
        """Write a scored list a marketer can upload (without those who may not be contacted)."""
        from portrait.audit import os_user, record_export
        from portrait.files import atomic_write, check_suffix
        from portrait.outputs import latest_scores
        from portrait.privacy import export_note, load_consent, with_withheld_columns
        from serving.lists import build_list, list_filter, model_for_reasons
        from serving.registry import load_model

        check_suffix(out_file, (".csv",))

        setup_tracking()
        scores, features = latest_scores(scores_dir, default=scores_dir == DEFAULT_SCORES)
        source = dataset_of_scores(scores_dir, data)
        consent = load_consent(source)
        members = None
        if segment or tag:
            members = _members(scores, scores_dir, segment, tag or [], data, segments_dir, tags_file)
        reasons_model, reasons_note = (
            model_for_reasons(model, lambda: load_model(model, alias))
            if f"{model}_reason_1" not in scores.columns
            else (None, None)
        )
        asked = {
            "top": top,
            "min_percentile": min_percentile,
            "min_score": min_score,
            "persona": persona,
            "where": where,
            "exclude_bought_within": exclude_bought_within,
        }
        rows = build_list(
            scores,
            features,
            model,
            **asked,
            reasons_model=reasons_model,
            reasons_note=reasons_note,
            reasons_first=reasons_for,
            customers=members,
            consent=consent,
            privacy=with_withheld_columns(source.privacy, source),
        )

        def audited() -> None:  # recorded once the file is written whole, published once recorded
            record_export(
                None,
                os_user(),
                "portrait list",
                list_filter(
                    model,
                    str(scores["as_of"].iloc[0].date()) if len(scores) else None,
                    **asked,
                    segment=segment,
                    tag=tag or None,
                    out=str(out_file),
                ),
                len(rows),
                left_out=rows.attrs["left_out"],
            )

        atomic_write(rows, out_file, csv=True, before_publish=audited)
        scored = str(scores["as_of"].iloc[0].date()) if len(scores) else "unknown"
        # LATEST names the scores: after a backfill, an older date than the newest scores
        out.print(f"{len(rows):,} customers -> {out_file} (scores as of {scored}, {model})")
        out.print(export_note(rows.attrs["left_out"], rows.attrs["matched"]))
        if rows.attrs.get("note"):
            out.print(f"note: {rows.attrs['note']}")

    def _members(scores, scores_dir, segment, tags, data, segments_dir, tags_file) -> set[str]:
        """Members of a segment and/or holders of every tag, as of the scores' date."""
        from marketing.manual import default_store
        from marketing.population import Population
        from marketing.segments import Segment, SegmentEvaluator, SegmentStore
        from marketing.tags import load_library
        from portrait.outputs import latest_scores_dataset
        from portrait.validate import open_checked

        if data is not None and not Path(data).exists():
            raise PortraitError(f"--data {data} does not exist")
        data = data or latest_scores_dataset(scores_dir)  # as --data's help says: the scores' own
        if data is None or not Path(data).exists():
            raise PortraitError(
                "--segment and --tag are evaluated on the data set the scores were computed from, which "
                f"{'they do not record' if data is None else f'no longer exists ({data})'}: give --data DATASET"
            )
        as_of = scores["as_of"].iloc[0].date()
        store = SegmentStore(segments_dir)
        with Population(open_checked(data), as_of, scores_dir=scores_dir) as population:
            evaluator = SegmentEvaluator(population, store, load_library(tags_file), default_store())
            found = set(evaluator.evaluate(store.load(segment)).members) if segment else None
            if tags:
                try:
                    holders = set(evaluator.evaluate(Segment("tags", tags=list(tags))).members)
                except PortraitError as exc:  # the segment of the --tag options has no name of its own
                    exc.args = (str(exc).replace("segment 'tags': ", "--tag: ", 1),)
                    raise
                found = holders if found is None else found & holders
        return found

    @app.command("serve")
    def serve_command(
        host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8000,
        scores_dir: Annotated[
            Path | None, typer.Option("--scores", help=f"Folder of scores tables (default: {DEFAULT_SCORES}).")
        ] = None,
        runs: Annotated[
            Path | None,
            typer.Option(
                "--runs",
                help="A portrait refresh output root: serve the scores, tags and segment members of the run "
                "LATEST names, followed without a restart (instead of --scores and --tags).",
            ),
        ] = None,
        alias: Annotated[str, typer.Option(help="Registry alias for on-demand scoring.")] = "champion",
        segments_dir: Annotated[Path | None, typer.Option("--segments", help="Segments folder (/segments).")] = None,
        tags_dir: Annotated[
            Path | None, typer.Option("--tags", help="Folder of portrait tags apply outputs (/tags counts).")
        ] = None,
        tags_file: Annotated[Path | None, typer.Option("--tags-file", help="Tag library TOML.")] = None,
        rfm: Annotated[
            Path | None, typer.Option("--rfm", help="Folder of portrait rfm outputs (RFM in profiles).")
        ] = None,
        data: Annotated[
            Path | None,
            typer.Option(
                "--data",
                help="Data set for consent, profiles and crowd reports (default: the one the scores come from).",
            ),
        ] = None,
        keys: Annotated[
            Path | None,
            typer.Option(
                "--keys",
                help="Keys file with roles (portrait keys add); without it PORTRAIT_API_KEY is the one analyst key.",
            ),
        ] = None,
        audit: Annotated[
            Path | None,
            typer.Option(
                "--audit", help=f"Audit log of list pulls (default: ${AUDIT_LOG_ENV}, else {DEFAULT_AUDIT_LOG})."
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                min=1,
                help=f"Worker processes, each with its own copy of the scores and models "
                f"(default: one per CPU, at most {MAX_DEFAULT_WORKERS}).",
            ),
        ] = None,
    ) -> None:
        """Serve profiles, scores, lists, tags and segments over HTTP (docs at /docs)."""
        import uvicorn

        from serving.api import build_app
        from serving.settings import ServeSettings, check_serve_paths

        api_key = os.environ.get(API_KEY_ENV) or None
        if host not in LOCALHOST and not (api_key or keys):
            raise PortraitError(
                f"refusing to listen on {host} without an API key: set {API_KEY_ENV} or give --keys FILE, "
                "or keep the default 127.0.0.1"
            )
        if api_key is not None and not keys and api_key != api_key.strip():
            # a request's header is trimmed, so no request could ever match it
            raise PortraitError(f"{API_KEY_ENV} has blanks around it (or is blank): set the key alone")
        if api_key is not None and not keys and host not in LOCALHOST and len(api_key) < MIN_API_KEY_LENGTH:
            raise PortraitError(
                f"refusing to listen on {host} with a {len(api_key)}-character {API_KEY_ENV}: a key reachable from "
                f"other machines needs at least {MIN_API_KEY_LENGTH} random characters (portrait keys add draws one)"
            )
        # --runs serves one run's scores, tags and RFM: a folder given beside it would be ignored
        mixed = [option for option, value in (("--scores", scores_dir), ("--tags", tags_dir), ("--rfm", rfm)) if value]
        if runs is not None and mixed:
            raise PortraitError(
                f"give either --runs (a refresh root: the scores, tags and RFM of its latest run) or "
                f"{', '.join(mixed)}, not both"
            )
        workers = workers or default_workers()
        setup_tracking()
        settings = ServeSettings(
            scores=scores_dir or DEFAULT_SCORES,
            runs=runs,
            alias=alias,
            segments=segments_dir,
            tags=tags_dir,
            tags_library=tags_file,
            rfm=rfm,
            data=data,
            keys=keys,
            audit=audit_log_path(audit),
            api_key=api_key,
        ).resolved()
        check_serve_paths(settings)
        # Built here first in every case, so a missing scores folder, a bad keys file or tag
        # library stops with its message before any worker starts (a failing worker is restarted).
        app_instance = build_app(settings)
        _check_port_free(host, port)
        access = (
            f"keys from {keys}" if keys else ("one API key (PORTRAIT_API_KEY)" if api_key else "no key: local use only")
        )
        out.print(
            f"serving on http://{host}:{port} with {workers} worker{'s' if workers > 1 else ''} "
            f"(docs: /docs); {access}; audit log {settings.audit}",
            highlight=False,
        )
        if keys and api_key:
            out.print(f"note: {API_KEY_ENV} is not used: only the keys in {keys} are accepted", highlight=False)
        if workers == 1:
            uvicorn.run(app_instance, host=host, port=port, log_level="warning")
            return
        del app_instance
        # Several workers: uvicorn starts each from an import string, and each builds its app
        # from the settings in the environment (serving.api.app_from_environment).
        os.environ.update(settings.to_environment())
        uvicorn.run(
            "serving.api:app_from_environment",
            factory=True,
            workers=workers,
            http="serving.api:NoDelayHTTPProtocol",  # uvicorn leaves Nagle on with workers: +40 ms
            host=host,
            port=port,
            log_level="warning",
        )


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another program holds, with one line, before saying "serving on" (uvicorn
    logs the bind error and exits 3). A probe, not a reservation: the race is left to uvicorn."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PortraitError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise PortraitError(f"cannot serve on {host}:{port}: {exc.strerror}; choose another --port") from None


def _first_of(names, shown: int = 5) -> str:
    """The first ``shown`` of ``names``, and how many more the summary file lists (a console
    line of 5 read as the whole list: a user's test found a sixth flagged feature in the file)."""
    names = list(names)
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more (the summary file lists them)" if more > 0 else "")


def _print_summary(out, run) -> None:
    summary = run.summary
    out.print(f"scored {summary['customers']:,} customers as of {summary['as_of']} in {summary['duration_seconds']} s")
    for name, info in summary["models"].items():
        line = f"  {escape(name)} v{info['version']}"
        if "mean" in info:
            line += f": mean {info['mean']:.4f}, median {info['score_quantiles'][0.5]:.4f}"
            if "prior_shift_logit" in info:
                line += f" (moved to the label's share from a mean of {info['mean_before_shift']:.4f})"
            drift = info["drift"]
            if drift["flagged"]:
                line += f"  [red]drift flagged (PSI > 0.25): {escape(_first_of(drift['flagged']))}[/red]"
            elif drift["warnings"]:
                line += f"  [yellow]drift warning (PSI > 0.1): {escape(_first_of(drift['warnings']))}[/yellow]"
        out.print(line, markup=True)
    if summary.get("note"):
        out.print(f"[yellow]warning: {escape(summary['note'])}[/yellow]", markup=True)
    for info in summary["models"].values():
        if info.get("note"):
            out.print(f"[yellow]warning: {escape(info['note'])}[/yellow]", markup=True)
    out.print(f"scores: {run.scores_file}\nsummary: {run.summary_file}")
    if run.newer:
        out.print(f"a backfill: LATEST stays at the newer {run.newer} (lists, profiles and serve read those)")
    if summary.get("csv"):
        out.print(f"scores as CSV: {summary['csv']}")


def _score_on_spark(
    dataset, as_of, names, out_dir, alias, reasons, csv, skip_validation, engine, master, table, console
):
    from serving.spark_score import score_on_spark

    if engine != "spark":
        raise PortraitError("--table and --spark-master are options of --engine spark")
    if reasons:
        raise PortraitError(
            "--reasons is not computed for the whole population on Spark: portrait list computes the reasons "
            "of the customers in a list (or score with --engine duckdb --reasons)"
        )
    from portrait.spark_engine import parse_table_options

    with spinner(console, "starting") as say:
        return score_on_spark(
            str(dataset),
            as_of,
            names,
            out_dir,
            alias=alias,
            csv=csv,
            validate_first=not skip_validation,
            tables=parse_table_options(table),
            master=master,
            progress=say,
        )


def register_keys(app: typer.Typer, out) -> None:
    """``portrait keys add`` and ``portrait keys list``."""

    @app.command("add")
    def add_command(
        name: Annotated[str, typer.Argument(help="Who the key is for; the audit log records this name.")],
        role: Annotated[Role, typer.Option("--role", help=f"One of: {ROLES_TEXT}.")],
        keys: Annotated[Path, typer.Option("--keys", help="Keys file (created if missing).")],
    ) -> None:
        """Draw a new API key, print it once and store only its hash in the keys file."""
        from serving.keys import add_key

        key = add_key(keys, name, role)
        out.print(f"added key {name!r} with the {role.value} role to {keys}; only its hash is stored.", highlight=False)
        out.print("the key (shown this once; send it in the X-API-Key header):", highlight=False)
        print(key)

    @app.command("list")
    def list_command(keys: Annotated[Path, typer.Option("--keys", help="Keys file.")]) -> None:
        """The names and roles in a keys file (never the keys: only their hashes are stored)."""
        from serving.keys import load_keys

        callers = sorted(load_keys(keys).values(), key=lambda c: c.name)
        for caller in callers:
            out.print(f"{caller.name:<24} {caller.role.value}", highlight=False)
        out.print(f"{len(callers)} key{'s' if len(callers) != 1 else ''} in {keys}", highlight=False)


def dataset_of_scores(scores_dir: Path, data: Path | None):
    """``data``, else the data set the latest scores in ``scores_dir`` were computed from, whose
    consent rules (:func:`portrait.privacy.load_consent`) and sensitive columns a list applies.
    A list is never written without them: when neither is known or the data set is gone, stop
    and say so."""
    from portrait.dataset import open_dataset
    from portrait.outputs import latest_scores_dataset

    path = data or latest_scores_dataset(scores_dir)
    if path is None:
        raise PortraitError(
            f"cannot check marketing consent: the scores in {scores_dir} do not record the data set they "
            "were computed from (scored before it was recorded); give --data DATASET or score again"
        )
    if data is not None and not Path(data).exists():
        raise PortraitError(f"--data {data} does not exist")
    if not Path(path).exists():
        raise PortraitError(
            f"cannot check marketing consent: the scores in {scores_dir} were computed from {path}, which "
            "no longer exists; give --data DATASET"
        )
    return open_dataset(path)


def default_workers() -> int:
    """One worker per CPU, at least 1 and at most MAX_DEFAULT_WORKERS: each worker holds its
    own copy of the scores and models, and more processes than cores only queue."""
    return max(1, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))
