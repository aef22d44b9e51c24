"""``portrait profile ID``: the whole profile of one customer (:mod:`serving.profile`), as
readable sections or as JSON."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from features.options import checked_date


def register(app: typer.Typer, out, console) -> None:
    @app.command("profile")
    def profile_command(
        customer_id: Annotated[str, typer.Argument(help="A customer id; a merged id answers with its person.")],
        data: Annotated[Path, typer.Option("--data", help="The data set (folder or DuckDB file).")],
        as_of: Annotated[
            str | None,
            typer.Option(
                "--as-of",
                callback=checked_date,
                help="Orders and events before this date; outputs of this date or earlier.",
            ),
        ] = None,
        runs: Annotated[
            Path | None,
            typer.Option("--runs", help="A portrait refresh output root (LATEST run; runs/ for the score history)."),
        ] = None,
        scores: Annotated[
            Path | None, typer.Option("--scores", help="Without --runs: a portrait score --out folder.")
        ] = None,
        tags: Annotated[
            Path | None, typer.Option("--tags", help="Without --runs: a portrait tags apply --out folder.")
        ] = None,
        rfm: Annotated[Path | None, typer.Option("--rfm", help="Without --runs: a portrait rfm --out folder.")] = None,
        segments: Annotated[
            Path | None,
            typer.Option(
                "--segments",
                help="Saved segments folder (membership of their last refresh), when no run has members "
                "(default segments/ or $PORTRAIT_SEGMENTS, when there).",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
        reasons: Annotated[
            bool,
            typer.Option(
                "--reasons/--no-reasons",
                help="When the scores hold no reasons, compute them with the model that scored (loads it).",
            ),
        ] = True,
        hide_sensitive: Annotated[
            bool,
            typer.Option(
                "--hide-sensitive", help="Leave out attributes marked sensitive, as the API's marketing role sees it."
            ),
        ] = False,
        alias: Annotated[str, typer.Option(help="Registry alias of the models that compute reasons.")] = "champion",
    ) -> None:
        """The whole profile of one customer: attributes, merged ids, tags, segments, RFM, persona, scores, orders, events.

        Scores come with their reasons and their history; orders and events are the last ones."""
        from features.build import parse_cutoff
        from serving.profile import ProfileSources, build_profile, profile_json
        from serving.refresh import check_refresh_root

        if runs is not None:
            check_refresh_root(runs)
        elif segments is None:  # the folder `segment` and `list` use, as the API's profiles read it
            from marketing.segments import default_folder

            segments = default_folder() if default_folder().is_dir() else None

        sources = ProfileSources(
            data=data,
            runs=runs,
            scores=scores,
            tags=tags,
            segments=segments,
            rfm=rfm,
            as_of=parse_cutoff(as_of) if as_of else None,
        )
        loaded: dict = {}

        def loader(name: str):
            from portrait.tracking import setup_tracking
            from serving.registry import load_model

            if not loaded:
                setup_tracking()
            if name not in loaded:
                loaded[name] = load_model(name, alias)
            return loaded[name]

        with console.status("reading the profile"):
            profile = build_profile(
                customer_id,
                sources,
                include_sensitive=not hide_sensitive,
                compute_reasons=reasons,
                model_loader=loader,
            )
        if as_json:
            out.print_json(profile_json(profile)) if out.is_terminal else print(profile_json(profile))
            return
        show(profile, out, hide_sensitive=hide_sensitive)


def _money(value: float | None) -> str:
    # + 0.0: refunds that cancel their purchases leave -0.0 (or a residue below a cent), shown as 0.00
    return "-" if value is None else f"{round(value, 2) + 0.0:,.2f}"


def _orders(count: float | None) -> str:
    return "- orders" if count is None else f"{count:,.0f} order{'' if count == 1 else 's'}"


def _number(value: float | None, pattern: str = "{:,.0f}") -> str:
    return "-" if value is None else pattern.format(value)


def _when(value: dt.datetime, dated: bool = False) -> str:
    return value.strftime("%Y-%m-%d" if dated else "%Y-%m-%d %H:%M")


# An order's categories shown in the table (sorted); --json has them all. A weekly basket of
# 50 categories took 17 lines of a 120-column terminal.
SHOWN_CATEGORIES = 8


def _categories(categories: list[str]) -> str:
    shown = ", ".join(categories[:SHOWN_CATEGORIES])
    more = len(categories) - SHOWN_CATEGORIES
    return f"{shown}, +{more} more" if more > 0 else shown


def _dates_only(moments: list[dt.datetime]) -> bool:
    """Every moment at midnight: a log of dates (CDNOW's), shown without a made-up 00:00."""
    return bool(moments) and all(m.time() == dt.time() for m in moments)


def show(profile, out, hide_sensitive: bool = False) -> None:
    """The profile as readable sections."""
    # The console prints text, not markup (portrait_cli.main): styles are given as styles.
    head = Text().append(f"customer {profile.customer_id}", style="bold")
    if profile.resolved_from:
        head.append(f" (asked as {profile.resolved_from}, one of this person's merged ids)")
    when = {
        "given": f"as of {profile.as_of}",
        "run": f"as of {profile.as_of} (the run's date)",
        "scores": f"as of {profile.as_of} (the scores' date)",
    }.get(profile.as_of_from, "all history")
    out.print(head.append(f", {when}"), highlight=False)

    def section(title: str) -> None:
        out.print()
        out.print(title, style="bold underline")

    section("Attributes")
    if profile.attributes:
        for attribute in profile.attributes.values:
            out.print(f"  {attribute.name}: {attribute.value or '-'}", highlight=False)
        if profile.attributes.sensitive_left_out:
            out.print(f"  ({profile.attributes.sensitive_left_out} sensitive column(s) left out)")
        elif hide_sensitive:  # asked to hide, and nothing to hide: said, not a silent no-op
            out.print(
                "  (--hide-sensitive: no column is marked sensitive; [privacy] sensitive_columns in portrait.toml)"
            )
    else:
        out.print("  -")

    section("Identities")
    if profile.identities:
        ids = profile.identities
        out.print(f"  customer ids: {', '.join(ids.customer_ids)}", highlight=False)
        if ids.types:
            held = ", ".join(f"{t.id_type} {t.identifiers}" for t in ids.types)
            out.print(f"  identifiers held: {held}", highlight=False)
        for shared in ids.shared:
            out.print(
                f"  joined by {shared.identifiers} shared {shared.id_type}: {', '.join(shared.customer_ids)}",
                highlight=False,
            )
    else:
        out.print("  -")

    section("Persona")
    if profile.persona:
        version = f" (personas v{profile.persona.version})" if profile.persona.version else ""
        out.print(f"  {profile.persona.name}{version}", highlight=False)
    else:
        out.print("  -")

    section("Scores")
    if profile.scores:
        table = Table(title=f"as of {profile.scores.as_of}", title_justify="left")
        for column in ("model", "score", "percentile", "decile", "version", "reasons"):
            table.add_column(column, justify="left" if column in ("model", "reasons") else "right")
        for score in profile.scores.models:
            reasons = "; ".join(score.reasons) if score.reasons else f"({score.reasons_note or 'none'})"
            table.add_row(
                score.model,
                _number(score.score, "{:.4g}"),
                _number(score.percentile, "{:.1f}"),
                _number(score.decile, "{:.0f}"),
                score.version or "-",
                reasons,
            )
        out.print(table)
    else:
        out.print("  -")

    section("Score history")
    if profile.score_history and profile.score_history.points:
        models = sorted({m.model for p in profile.score_history.points for m in p.models})
        table = Table()
        table.add_column("as of")
        for model in models:
            table.add_column(f"{model} (percentile)", justify="right")
        shown_version: dict[str, str | None] = {}
        for point in profile.score_history.points:
            by_model = {m.model: m for m in point.models}
            cells = []
            for m in models:
                held = by_model.get(m)
                if held is None or held.score is None or held.percentile is None:
                    cells.append("-")
                    continue
                # the version where it changes (and first): scores of two versions differ in kind
                changed = held.version is not None and shown_version.get(m) != held.version
                shown_version[m] = held.version
                cells.append(f"{held.score:.4g} ({held.percentile:.1f})" + (f" v{held.version}" if changed else ""))
            table.add_row(str(point.as_of), *cells)
        out.print(table)
    else:
        out.print("  -")

    section("RFM")
    if profile.rfm:
        r = profile.rfm
        scores = f"R {r.r} F {r.f} M {r.m} (FM {r.fm})" if r.r is not None else "no purchase"
        out.print(
            f"  {r.group}: {scores}; {_number(r.days_since_last_purchase)} days since the last purchase, "
            f"{_orders(r.orders_lifetime)}, {_money(r.spend_lifetime)} spent (as of {r.as_of})",
            highlight=False,
        )
    else:
        out.print("  -")

    section("Tags")
    if profile.tags:
        if not profile.tags.tags:
            out.print(f"  none (as of {profile.tags.as_of})")
        groups: dict[str, list] = {}
        for tag in profile.tags.tags:
            groups.setdefault(tag.group, []).append(tag)
        for group, tags in groups.items():
            shown = ", ".join(f"{t.tag}" + (f" (since {t.since})" if t.since else "") for t in tags)
            out.print(f"  {group}: {shown}", highlight=False)
    else:
        out.print("  -")

    section("Segments")
    if profile.segments and profile.segments.checked:
        member = ", ".join(m.name for m in profile.segments.member_of) or "none"
        out.print(f"  member of: {member} (of {len(profile.segments.checked)} checked)", highlight=False)
    else:
        out.print("  -")

    section("Key features")
    if profile.key_features:
        for feature in profile.key_features:
            out.print(f"  {feature.label}: {feature.shown}", highlight=False)
    else:
        out.print("  -")

    section("Last orders")
    if profile.orders:
        dated = _dates_only([order.ts for order in profile.orders.last])
        zone = f" (times in {profile.timezone})" if profile.timezone and not dated else ""
        # every order, refunds too (the RFM line above counts purchase orders)
        out.print(f"  {_orders(profile.orders.total)} (refunds too), {_money(profile.orders.spend)} net{zone}")
        if profile.orders.last:
            table = Table()
            for column in ("date", "order", "amount", "lines", "categories", "channel"):
                table.add_column(
                    column, justify="right" if column in ("amount", "lines") else "left", no_wrap=column == "date"
                )
            for order in profile.orders.last:
                table.add_row(
                    _when(order.ts, dated),
                    order.order_id,
                    _money(order.amount),
                    str(order.lines),
                    _categories(order.categories),
                    order.channel or "-",
                )
            out.print(table)
    else:
        out.print("  -")

    section("Last events")
    if profile.events:
        out.print(f"  {profile.events.total:,} events")
        if profile.events.last:
            dated = _dates_only([event.ts for event in profile.events.last])
            table = Table()
            for column in ("time", "event", "channel", "category", "value"):
                table.add_column(column, justify="right" if column == "value" else "left", no_wrap=column == "time")
            for event in profile.events.last:
                table.add_row(
                    _when(event.ts, dated),
                    event.event_type,
                    event.channel or "-",
                    event.category or "-",
                    _number(event.value, "{:,.2f}"),
                )
            out.print(table)
    else:
        out.print("  -")

    if profile.notes:
        section("Notes")
        for note in profile.notes:
            out.print(f"  {note.section}: {note.note}", highlight=False)
