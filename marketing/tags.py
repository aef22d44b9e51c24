"""The tag library: groups of rule, model and manual tags, and exclusive groups.

A library is a TOML file (the shipped template is ``marketing/templates/retail.toml``)::

    [groups.value]                         # groups form a tree by their path: "a", "a/b"
    description = "What a customer is worth"

    [groups."value/spending_power"]        # an exclusive group: each customer gets one value
    exclusive = "levels"                   # levels of one feature ...
    feature = "spend_365d"
    quantiles = [0.2, 0.4, 0.6, 0.8]       # ... at quantiles of its positive values, or
    # bounds = [100, 500, 1000, 5000]      # ... at fixed upper bounds (inclusive)
    values = ["low", "lower-middle", "middle", "upper-middle", "high"]

    [groups."value/rfm"]
    exclusive = "rfm"                      # the RFM groups of marketing.rfm

    [groups."habits/frequency"]
    exclusive = "rules"                    # its rule tags must cover every customer once

    [[tags]]
    name = "promotion-sensitive"
    group = "habits"
    kind = "rule"                          # rule | model | manual
    where = "discount_order_share >= 0.5 and orders_lifetime >= 3"
    description = "Most orders use a discount"

A rule tag's ``where`` names features, RFM columns and behaviour terms (``purchased(...)``,
``spent(...)``, ``events(...)``); a model tag's names score columns from a scores table
(``repurchase_90d_percentile >= 80``, ``persona_name = '...'``). A tag with ``each = COLUMN``
expands into one tag per value of a text column, named ``"<name>: <value>"`` (interests from
``favourite_category``, one tag per persona from ``persona_name``). Level and RFM tags are
named ``"<group label>: <value>"`` (``"spending power: high"``).

Level rules: quantile bounds come from the customers whose value is positive; customers at or
below zero (or missing) get the first level; customers with no purchase order before the
as-of date get ``no_purchase`` (default "no purchase yet") instead, as in RFM.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import late_as_of_note, nobody_before
from marketing import manual
from marketing.filters import ANY, NUMBER, Condition, FilterError, Schema, closest_names, evaluate, parse_condition
from marketing.population import PERSONA_COLUMNS, SCORE_SUFFIXES, Population
from marketing.rfm import GROUPS as RFM_GROUPS
from portrait.errors import ConfigError, PortraitError
from portrait.files import atomic_write, atomic_write_text, check_targets, parquet_attrs, read_parquet

KINDS = ("rule", "model", "manual")
EXCLUSIVE = ("levels", "rfm", "rules")
NO_PURCHASE = "no purchase yet"
_GROUP_KEYS = {"description", "label", "exclusive", "feature", "quantiles", "bounds", "values", "no_purchase"}
_TAG_KEYS = {"name", "group", "kind", "description", "where", "each"}


@dataclass(frozen=True)
class Group:
    path: str
    description: str = ""
    label: str = ""
    exclusive: str | None = None
    feature: str | None = None
    quantiles: tuple[float, ...] = ()
    bounds: tuple[float, ...] = ()
    values: tuple[str, ...] = ()
    no_purchase: str = NO_PURCHASE

    @property
    def parent(self) -> str | None:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else None

    def tag_name(self, value: str) -> str:
        return f"{self.label}: {value}"


@dataclass(frozen=True)
class Tag:
    name: str
    group: str
    kind: str
    description: str = ""
    where: str | None = None
    each: str | None = None

    def holds_name(self, name: str) -> bool:
        """Whether ``name`` is this tag, or one of an ``each`` tag's ("interest: Dairy")."""
        return self.name == name or bool(self.each and name.startswith(f"{self.name}: "))

    def definition(self) -> str:
        if self.kind == "manual":
            return "assigned by hand (portrait tags assign)"
        text = self.where or ""
        if self.each:
            text = f"one tag per {self.each}" + (f" where {text}" if text else "")
        return text


@dataclass
class Library:
    source: str
    groups: dict[str, Group]
    tags: list[Tag] = field(default_factory=list)

    def tag(self, name: str) -> Tag:
        for tag in self.tags:
            if tag.name == name:
                return tag
        close = closest_names(name, [t.name for t in self.tags])
        raise ConfigError(f"no tag {name!r} in {self.source}" + (f"; did you mean {close}?" if close else ""))

    def names(self) -> list[str]:
        """Every fixed tag name (expanding ``each`` tags needs data)."""
        names = [t.name for t in self.tags if not t.each]
        for group in self.groups.values():
            if group.exclusive == "levels":
                names += [group.tag_name(v) for v in (*group.values, group.no_purchase) if v]
            elif group.exclusive == "rfm":
                names += [group.tag_name(v) for v in RFM_GROUPS]
        return names

    def check_tag(self, name: str) -> None:
        """Raise unless ``name`` is a tag of the library: a fixed name, or ``"<tag>: <value>"``
        of an ``each`` tag (its values depend on the data)."""
        names = self.names()
        if name in names or any(name.startswith(f"{t.name}: ") for t in self.tags if t.each):
            return
        close = closest_names(name, names)
        raise ConfigError(f"no tag {name!r} in {self.source}" + (f"; did you mean {close}?" if close else ""))

    def reads(self, name: str) -> str:
        """The text of what tag ``name`` is computed from (its condition, the column of an
        ``each`` tag, the feature of a level group), for checks on what a crowd reveals about
        its members; empty for a manual tag or a name the library does not hold."""
        parts = []
        for tag in self.tags:
            if tag.holds_name(name):
                parts += [tag.where or "", tag.each or ""]
        for group in self.groups.values():
            if group.label and name.startswith(f"{group.label}: "):
                parts.append(group.feature or "")
        return " ".join(part for part in parts if part)

    def children(self, path: str | None) -> list[str]:
        return sorted(g.path for g in self.groups.values() if g.parent == path)


def template_path() -> Path:
    return Path(str(resources.files("marketing") / "templates" / "retail.toml"))


@functools.cache
def shipped_library() -> Library:
    """The packaged retail template, read once per process (it never changes while it runs)."""
    return load_library()


def load_library(path: Path | None = None) -> Library:
    """Read and check a tag library (the shipped retail template when ``path`` is None)."""
    path = path or template_path()
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read tag library {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the tag library as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(raw) - {"groups", "tags"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)}; a library has [groups.*] and [[tags]]")
    if not isinstance(raw.get("groups", {}), dict):
        raise ConfigError(f"{path}: groups must be tables, [groups.NAME] (got groups = {raw['groups']!r})")
    if not isinstance(raw.get("tags", []), list):
        raise ConfigError(f"{path}: tags must be [[tags]] entries (got tags = {raw['tags']!r})")
    groups = {name: _group(path, name, spec) for name, spec in (raw.get("groups") or {}).items()}
    for group in groups.values():
        if group.parent and group.parent not in groups:
            raise ConfigError(f"{path}: group {group.path!r} is inside {group.parent!r}, which is not defined")
    tags = [_tag(path, spec, groups) for spec in raw.get("tags") or []]
    library = Library(str(path), groups, tags)
    seen: set[str] = set()
    for name in library.names():
        if name in seen:
            raise ConfigError(f"{path}: tag {name!r} is defined twice")
        seen.add(name)
        # an each tag names its tags "NAME: VALUE": a tag of such a name would be counted twice
        if owner := next((t for t in tags if t.each and name.startswith(f"{t.name}: ")), None):
            raise ConfigError(
                f"{path}: tag {name!r} takes a name of the tags of {owner.name!r} (each = {owner.each}), which are "
                f"named '{owner.name}: VALUE': rename it"
            )
    for group in groups.values():
        members = [t for t in tags if t.group == group.path]
        if group.exclusive in ("levels", "rfm") and members:
            raise ConfigError(f"{path}: group {group.path!r} makes its own tags; move {members[0].name!r} elsewhere")
        if group.exclusive == "rules" and (len(members) < 2 or any(t.kind != "rule" or t.each for t in members)):
            raise ConfigError(f"{path}: exclusive group {group.path!r} needs two or more plain rule tags")
    return library


def _group(path, name: str, spec: dict) -> Group:
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: [groups.{name}] must be a table")
    if unknown := set(spec) - _GROUP_KEYS:
        raise ConfigError(f"{path}: group {name!r} has unknown keys {sorted(unknown)}; known: {sorted(_GROUP_KEYS)}")
    _check_types(path, f"group {name!r}", spec, _GROUP_LISTS)
    exclusive = spec.get("exclusive")
    if exclusive is not None and exclusive not in EXCLUSIVE:
        raise ConfigError(f"{path}: group {name!r}: exclusive must be one of {EXCLUSIVE}, got {exclusive!r}")
    group = Group(
        path=name,
        description=str(spec.get("description", "")),
        label=str(spec.get("label") or name.rsplit("/", 1)[-1].replace("_", " ")),
        exclusive=exclusive,
        feature=spec.get("feature"),
        quantiles=tuple(spec.get("quantiles", ())),
        bounds=tuple(spec.get("bounds", ())),
        values=tuple(spec.get("values", ())),
        no_purchase=str(spec.get("no_purchase", NO_PURCHASE)),
    )
    if exclusive == "levels":
        cuts = group.quantiles or group.bounds
        if not group.feature or bool(group.quantiles) == bool(group.bounds):
            raise ConfigError(f"{path}: levels group {name!r} needs a feature and either quantiles or bounds")
        if len(group.values) != len(cuts) + 1:
            raise ConfigError(
                f"{path}: levels group {name!r} has {len(cuts)} boundaries, so it needs {len(cuts) + 1} values, "
                f"got {len(group.values)}"
            )
        if list(cuts) != sorted(set(cuts)) or (group.quantiles and not all(0 < q < 1 for q in group.quantiles)):
            raise ConfigError(
                f"{path}: levels group {name!r}: boundaries must be ascending (quantiles between 0 and 1)"
            )
    return group


# A group's keys that take a list, and of what; every other key of a group or a tag is text.
_GROUP_LISTS = {"quantiles": "numbers", "bounds": "numbers", "values": "names"}


def _check_types(path, what: str, spec: dict, lists: dict[str, str]) -> None:
    """Each value of ``spec`` of the type its key takes: a library edited by hand would
    otherwise be misread (values = "xyz" as three levels) or fail later with a traceback."""
    for key, value in spec.items():
        if key in lists:
            numbers = lists[key] == "numbers"
            fits = isinstance(value, list) and all(
                (isinstance(v, int | float) and not isinstance(v, bool)) if numbers else isinstance(v, str)
                for v in value
            )
            if not fits:
                raise ConfigError(
                    f"{path}: {what}: {key} must be a list of {lists[key]}, {key} = [...] (got {value!r})"
                )
        elif not isinstance(value, str):
            raise ConfigError(f'{path}: {what}: {key} must be text, {key} = "..." (got {value!r})')


def _tag(path, spec: dict, groups: dict[str, Group]) -> Tag:
    if not isinstance(spec, dict) or not spec.get("name"):
        raise ConfigError(f"{path}: every [[tags]] entry needs a name")
    if not isinstance(spec["name"], str):
        raise ConfigError(f'{path}: a tag\'s name must be text, name = "..." (got {spec["name"]!r})')
    name = spec["name"]
    if unknown := set(spec) - _TAG_KEYS:
        raise ConfigError(f"{path}: tag {name!r} has unknown keys {sorted(unknown)}; known: {sorted(_TAG_KEYS)}")
    _check_types(path, f"tag {name!r}", spec, {})
    group = spec.get("group")
    if group not in groups:
        close = difflib.get_close_matches(str(group), list(groups), n=3)
        raise ConfigError(
            f"{path}: tag {name!r} is in group {group!r}, which is not defined"
            + (f"; did you mean {close}?" if close else f"; groups: {sorted(groups)}")
        )
    kind = spec.get("kind", "rule")
    if kind not in KINDS:
        raise ConfigError(f"{path}: tag {name!r}: kind must be one of {KINDS}, got {kind!r}")
    where, each = spec.get("where"), spec.get("each")
    if kind == "manual" and (where or each):
        raise ConfigError(f"{path}: manual tag {name!r} is assigned by hand; it takes no where or each")
    if kind != "manual" and not (where or each):
        raise ConfigError(f"{path}: {kind} tag {name!r} needs a where condition (or each = COLUMN)")
    return Tag(name, group, kind, str(spec.get("description", "")), where, each)


# ---------------------------------------------------------------- applying


@dataclass
class Applied:
    """The tags of every customer as of a date, and what could not be applied."""

    tags: pd.DataFrame  # customer_id, tag, group, kind, since
    customers: int
    coverage: dict[str, dict]  # exclusive group -> {"customers": n, "values": {...}}
    notes: list[str] = field(default_factory=list)
    # Model tags not computed (no scores, or scores without their column): they neither left
    # nor entered, and their history is carried from the last run that computed them.
    skipped: list[str] = field(default_factory=list)
    why_skipped: dict[str, str] = field(default_factory=dict)  # skipped tag -> what its scores lack

    def unscored(self, tag: str) -> str | None:
        """Why ``tag`` (a tag's name, or ``"<tag>: <value>"`` of an ``each`` tag) was not computed
        in this run (a model tag without its scores), or None when it was: nobody holding it
        then says nothing about anyone."""
        for name in self.skipped:
            if tag == name or tag.startswith(f"{name}: "):
                return self.why_skipped.get(name, "its model's scores are missing")
        return None

    def refuse_unscored(self, tags, what: str) -> None:
        """Raise :class:`PortraitError` for the first of ``tags`` not computed in this run:
        asked for, it would have selected nobody (``what`` names who asks, e.g. a segment)."""
        for tag in tags:
            reason = self.unscored(tag)
            if reason is not None:
                raise PortraitError(
                    f"{what}: tag {tag!r} is a model tag, and {reason}, so nobody would hold it; score its model "
                    "first (portrait score ... --models NAME, then --scores DIR; in a refresh, list it under models)"
                )


def model_output_kind(name: str) -> str | None:
    """The kind of a column a scores table would hold (``<model>_score``, ``_percentile``,
    ``_decile``, ``persona_id``, ``persona_name``), or None for any other name."""
    if name in PERSONA_COLUMNS:
        return PERSONA_COLUMNS[name]
    return NUMBER if name.endswith(SCORE_SUFFIXES) else None


def check_conditions(
    library: Library, schema: Schema, with_models: bool, unscored: dict[str, list[str]] | None = None
) -> dict[str, Condition]:
    """Parse every rule and model tag's condition against the columns available. A model tag
    that reads the output of a model the scores do not hold (no personas fitted, say) is left
    out and, given ``unscored``, recorded there (tag -> missing columns); any other unknown
    column is an error."""
    conditions = {}
    for tag in library.tags:
        if tag.kind == "manual" or (tag.kind == "model" and not with_models):
            continue
        if tag.kind == "model":
            missing = _unscored_columns(tag, schema)
            if missing:
                if unscored is not None:
                    unscored[tag.name] = missing
                continue
        where = tag.where or ""
        if tag.each:
            if schema.kind(tag.each) is None:
                raise FilterError(f"tag {tag.name!r}: each = {tag.each!r} is not a known column")
            where = f"({where}) and {tag.each} is not null" if where else f"{tag.each} is not null"
        try:
            conditions[tag.name] = parse_condition(where, schema, behaviour=tag.kind == "rule")
        except FilterError as exc:
            raise FilterError(f"tag {tag.name!r} ({library.source}): {exc}") from None
    for group in library.groups.values():
        if group.exclusive == "levels" and schema.kind(group.feature) is None:
            raise FilterError(f"levels group {group.path!r}: unknown feature {group.feature!r}")
        if group.exclusive == "levels" and schema.kind(group.feature) not in (NUMBER, ANY):  # ANY: data-less
            raise FilterError(f"levels group {group.path!r}: feature {group.feature!r} is text; levels cut a number")
    return conditions


def _unscored_columns(tag: Tag, schema: Schema) -> list[str]:
    """Model-output columns ``tag`` reads that the schema does not hold."""
    wanted = [tag.each] if tag.each else []
    if tag.where:
        lenient = Schema(schema.kinds, lambda name: schema.kind(name) or model_output_kind(name))
        try:
            wanted += list(parse_condition(tag.where, lenient).columns)
        except FilterError:
            return []  # reported with its message by the strict parse
    return sorted({c for c in wanted if schema.kind(c) is None and model_output_kind(c) is not None})


def apply_tags(
    library: Library,
    population: Population,
    *,
    manual_store: Path | None = None,
) -> Applied:
    """Every customer's tags as of ``population.as_of`` (``since`` is that date; see
    :func:`with_since` to carry it over from a previous run)."""
    notes: list[str] = []
    skipped: list[str] = []
    why_skipped: dict[str, str] = {}
    with_models = population.scores_dir is not None
    if not with_models and any(t.kind == "model" for t in library.tags):
        skipped = [t.name for t in library.tags if t.kind == "model"]
        notes.append(f"model tags skipped (no --scores folder): {', '.join(skipped)}")
        why_skipped = dict.fromkeys(skipped, "no scores folder (--scores DIR) was given")
    unscored: dict[str, list[str]] = {}
    conditions = check_conditions(library, population.schema(models=with_models), with_models, unscored)
    if unscored:
        missing = sorted({c for columns in unscored.values() for c in columns})
        notes.append(f"model tags skipped (the scores hold no {', '.join(missing)}): {', '.join(sorted(unscored))}")
        skipped += sorted(unscored)
        why_skipped.update({name: f"the scores hold no {', '.join(columns)}" for name, columns in unscored.items()})
    if with_models and population.scores_date is not None and population.scores_date != population.as_of:
        notes.append(
            f"model tags use the scores as of {population.scores_date} (the newest not after {population.as_of})"
        )
    frame = population.frame(conditions.values(), columns=tag_columns(library, conditions))
    customers = frame["customer_id"].astype("str").reset_index(drop=True)
    bought = frame["orders_lifetime"].fillna(0).to_numpy() > 0
    if not len(frame):
        notes.append(nobody_before(population.as_of, "nothing to tag"))
    late = late_as_of_note(frame, population.as_of)
    if late:
        notes.append(late)
    # Each tag is a set of row positions; the long table is built once at the end with one
    # take of the ids (building millions of rows from Python strings is slow).
    positions: list[np.ndarray] = []
    labels: list[tuple[str, str, str]] = []  # (tag, group, kind) per entry of positions
    coverage: dict[str, dict] = {}

    def add(mask, tag: str, group: str, kind: str) -> None:
        add_rows(np.flatnonzero(np.asarray(mask, bool)), tag, group, kind)

    def add_rows(rows: np.ndarray, tag: str, group: str, kind: str) -> None:
        positions.append(rows)
        labels.append((tag, group, kind))

    for tag in library.tags:
        if tag.name not in conditions:
            continue
        mask = evaluate(conditions[tag.name], frame).to_numpy()
        if tag.each:
            values = frame[tag.each].astype("object").where(mask)
            codes, uniques = pd.factorize(values)  # the distinct values, and each row's one
            fractions = _has_fractions(frame[tag.each])
            if len(uniques) > MAX_EACH_VALUES or fractions:
                # one tag per amount (spend_365d) would tell customers apart, not group them
                raise FilterError(
                    f"tag {tag.name!r}: each = {tag.each!r} has {len(uniques):,} distinct values"
                    + (" with fractions" if fractions else "")
                    + f"; each takes a column of names or codes (at most {MAX_EACH_VALUES}: favourite_category, "
                    "rfm_r, persona_name, ...); cut an amount into a levels group instead"
                )
            # each value's rows from one sort of the codes, not a pass over everyone per value
            matched = np.flatnonzero(codes >= 0)
            by_value = matched[np.argsort(codes[matched], kind="stable")]
            bounds = np.searchsorted(codes[by_value], np.arange(len(uniques) + 1))
            for code in sorted(range(len(uniques)), key=lambda c: str(uniques[c])):
                add_rows(by_value[bounds[code] : bounds[code + 1]], f"{tag.name}: {uniques[code]}", tag.group, tag.kind)
        else:
            add(mask, tag.name, tag.group, tag.kind)
    for group in library.groups.values():
        if group.exclusive == "levels":
            value = levels(frame[group.feature], group, bought)
        elif group.exclusive == "rfm":
            value = frame["rfm_group"].astype("object").to_numpy()
        else:
            continue
        for level in pd.unique(value):
            add(value == level, group.tag_name(level), group.path, "rule")
        counts = pd.Series(value).value_counts()
        coverage[group.path] = {"customers": int(len(value)), "values": {str(k): int(v) for k, v in counts.items()}}
    for group in (g for g in library.groups.values() if g.exclusive == "rules"):
        coverage[group.path] = _check_exclusive(group, library, conditions, frame, customers.to_numpy())
    since: list[np.ndarray] = [np.full(len(p), population.as_of, dtype=object) for p in positions]
    if manual_store is not None:
        manual_names = [t.name for t in library.tags if t.kind == "manual"]
        zone = population.dataset.timezone
        held = manual.as_persons(population.con, manual.holders(manual_store, population.as_of, manual_names, zone))
        if later := manual.assigned_later(manual_store, population.as_of, manual_names, zone):
            notes.append(
                f"{later:,} manual assignment(s) are dated after {population.as_of} and hold from their own date: "
                "tags as of a later date show them"
            )
        where = pd.Index(customers).get_indexer(held["customer_id"])
        if (where < 0).any():
            notes.append(
                f"{int((where < 0).sum()):,} manual assignment(s) are for customers not in the data as of "
                f"{population.as_of}"
            )
        groups = {t.name: t.group for t in library.tags}
        for name, rows in held.assign(_row=where)[where >= 0].groupby("tag", sort=True):
            add(np.isin(np.arange(len(customers)), rows["_row"].to_numpy()), name, groups[name], "manual")
            since.append(rows.set_index("_row")["since"].reindex(positions[-1]).to_numpy())
    rows = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    entry = np.repeat(np.arange(len(labels)), [len(p) for p in positions])
    names, groups_of, kinds = (list(column) for column in zip(*labels, strict=True)) if labels else ([], [], [])
    tags = pd.DataFrame(
        {
            "customer_id": customers.take(rows).reset_index(drop=True),
            # rows come per tag in library order, customers in id order: no sort of millions of rows
            "tag": pd.Categorical.from_codes(entry, categories=pd.Index(names))
            if len(set(names)) == len(names)
            else np.asarray(names, dtype=object)[entry],
            "group": pd.Categorical(np.asarray(groups_of, dtype=object)[entry]),
            "kind": pd.Categorical(np.asarray(kinds, dtype=object)[entry]),
            "since": np.concatenate(since) if since else np.zeros(0, dtype=object),
        }
    )
    return Applied(tags, int(len(frame)), coverage, notes, skipped, why_skipped)


def unheld_tags(tags: pd.DataFrame, names) -> dict[str, list[str]]:
    """Of the tags ``names``, those nobody holds in ``tags`` (a misspelt value of an ``each``
    tag, most often: the library knows its group), each with the closest tags someone holds."""
    held = sorted(set(tags["tag"].astype(str)))
    return {name: difflib.get_close_matches(name, held, n=3) for name in names if name not in held}


def nobody_holds(tag: str, as_of, close: list[str]) -> str:
    """The note said when nobody holds ``tag`` as of the date."""
    hint = f"; did you mean {close}?" if close else ""
    return f"nobody holds the tag {tag!r} as of {as_of}{hint}"


def of_tags(tags: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Which rows of a tags table come from the library tags ``names`` (a tag with ``each``
    gives rows named ``"<name>: <value>"``)."""
    if not names or tags.empty:
        return np.zeros(len(tags), dtype=bool)
    text = tags["tag"].astype("str")
    return (text.isin(names) | text.str.startswith(tuple(f"{n}: " for n in names))).to_numpy()


def tag_columns(library: Library, conditions: dict[str, Condition]) -> list[str]:
    """Every column applying the library reads: its conditions', the level features, the
    columns ``each`` tags expand over, and the order count that marks a buyer."""
    columns = [c for condition in conditions.values() for c in condition.columns]
    columns += [g.feature for g in library.groups.values() if g.exclusive == "levels"]
    columns += [t.each for t in library.tags if t.each and t.name in conditions]
    return list(dict.fromkeys([*columns, "orders_lifetime"]))


def levels(values: pd.Series, group: Group, bought: np.ndarray) -> np.ndarray:
    """The level of each value (see the module's level rules)."""
    x = values.astype("float64").to_numpy()
    if group.quantiles:
        positive = x[(x > 0) & bought]
        cuts = np.quantile(positive, group.quantiles) if len(positive) else np.zeros(len(group.quantiles))
    else:
        cuts = np.asarray(group.bounds, dtype=float)
    index = np.searchsorted(cuts, np.where(np.isnan(x), -np.inf, x), side="left")
    index = np.where(np.isnan(x) | (x <= 0), 0, index)
    result = np.asarray(group.values, dtype=object)[index]
    if group.no_purchase:
        result = np.where(bought, result, group.no_purchase)
    return result


def _check_exclusive(group, library, conditions, frame, customers) -> dict:
    members = [t for t in library.tags if t.group == group.path]
    masks = np.column_stack([evaluate(conditions[t.name], frame).to_numpy() for t in members])
    hits = masks.sum(axis=1)
    overlap, none = int((hits > 1).sum()), int((hits == 0).sum())
    if overlap or none:
        problems = []
        if overlap:
            problems.append(f"{overlap:,} customers match more than one of its tags (e.g. {customers[hits > 1][0]})")
        if none:
            problems.append(f"{none:,} customers match none (e.g. {customers[hits == 0][0]})")
        raise FilterError(
            f"exclusive group {group.path!r} must give every customer exactly one of "
            f"{[t.name for t in members]}: " + "; ".join(problems)
        )
    return {"customers": int(len(hits)), "values": {t.name: int(masks[:, i].sum()) for i, t in enumerate(members)}}


MAX_EACH_VALUES = 200  # tags one ``each`` tag may make: beyond, the column names people, not groups


def _has_fractions(column: pd.Series) -> bool:
    """A number column holding values that are not whole: an amount, not a code."""
    if not pd.api.types.is_float_dtype(column):
        return False
    values = column.dropna().to_numpy()
    return bool(len(values)) and bool((values != np.round(values)).any())


def with_since(current: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Carry ``since`` over from the previous run for customers who kept a rule or model tag."""
    if previous is None or previous.empty:
        return current
    kept = previous[["customer_id", "tag", "since"]].rename(columns={"since": "previous_since"})
    merged = current.merge(kept, on=["customer_id", "tag"], how="left")
    carry = merged["previous_since"].notna() & (merged["kind"] != "manual")
    merged.loc[carry, "since"] = merged.loc[carry, "previous_since"]
    return merged.drop(columns="previous_since")


def movement(current: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Per tag: customers now, and how many entered and left since the previous run."""
    now = current.groupby("tag").size().rename("customers")
    if previous is None:
        return now.to_frame().assign(entered=pd.NA, left=pd.NA).reset_index()
    key = ["customer_id", "tag"]
    both = current[key].merge(previous[key], on=key, how="outer", indicator=True)
    entered = both[both["_merge"] == "left_only"].groupby("tag").size().rename("entered")
    left = both[both["_merge"] == "right_only"].groupby("tag").size().rename("left")
    table = pd.concat([now, entered, left], axis=1).fillna(0).astype("int64")
    return table.rename_axis("tag").reset_index()


def tags_summary(
    library: Library,
    applied: Applied,
    tags: pd.DataFrame,
    as_of: dt.date,
    previous: pd.DataFrame | None,
    previous_date: dt.date | None,
    previous_reads: dict[str, str] | None = None,
) -> dict:
    """What is written beside a tags table (``tags_<date>.summary.json``): per tag its size,
    who entered and left since ``previous``, and what it is computed from (``reads``, so a
    reader without the library, a profile, can tell a tag computed from a sensitive attribute).
    Tags skipped in this run (``applied.skipped``) are listed as such, not as everyone leaving.
    A tag whose definition differs from the one the previous run recorded (``previous_reads``,
    its summary's) has no entered and left: they would count the edit (a lapsing threshold moved
    from 2 to 1.5: 254 "entered"), and a note says so."""
    # skipped by every earlier run (a first run with --scores after runs without): no movement
    uncounted = list(previous.attrs.get(NEVER_COMPUTED, [])) if previous is not None else []
    if previous is not None:
        previous = previous[~of_tags(previous, applied.skipped)]
    moves = movement(tags, previous)
    recorded = previous_reads or {}
    redefined = {
        name: recorded[name]
        for name in set(moves["tag"]) | set(library.names())
        if recorded.get(name) and library.reads(name) and recorded[name] != library.reads(name)
    }
    # a tag nobody holds is listed with 0, not left out: an empty tag read as one never computed
    listed = set(moves["tag"])
    empty = [n for n in library.names() if n not in listed and n not in applied.skipped]
    if empty:
        zero = 0 if previous is not None else pd.NA
        moves = pd.concat(
            [moves, pd.DataFrame({"tag": empty, "customers": 0, "entered": zero, "left": zero})], ignore_index=True
        )

    # a tag everyone left (a value it names gone from the data, or out of the top categories):
    # said, as an empty segment is, not only a 0 in the table
    def why(name: str) -> str:
        # the library's tag, or the `each` tag it is one of ("interest: Dairy"); a group's
        # level or RFM tag (customers moved to another level) has none, and no question
        tag = next((t for t in library.tags if t.holds_name(name)), None)
        if tag is None:
            return " (it is no longer in the tag library)" if name not in library.names() else ""
        if tag.kind == "manual":
            return " (its assignments expired or were removed: tags assign gives it again)"
        if tag.each or "'" in (tag.where or ""):  # it names a value
            return " (does a value it names no longer occur, or no longer rank among the top ones?)"
        return ""

    counted = ~of_tags(moves, uncounted)
    emptied = [
        f"tag {row.tag!r}: nobody holds it now; {int(row.left):,} held it on {previous_date}{why(row.tag)}"
        for row, count in zip(moves.itertuples(), counted, strict=True)
        if previous is not None and count and int(row.customers) == 0 and int(row.left) > 0 and row.tag not in redefined
    ]
    changed = [
        f"tag {name!r}: its definition changed since the run of {previous_date} (it read {was}; now "
        f"{library.reads(name)}): who entered and left is not counted across the change"
        for name, was in sorted(redefined.items())
    ]
    return {
        "as_of": as_of.isoformat(),
        "library": library.source,
        "customers": applied.customers,
        "previous_run": previous_date.isoformat() if previous_date else None,
        "tags": {
            row.tag: {
                "customers": int(row.customers),
                "entered": int(row.entered) if previous is not None and row.tag not in redefined and count else None,
                "left": int(row.left) if previous is not None and row.tag not in redefined and count else None,
                "reads": library.reads(row.tag),
            }
            for row, count in zip(moves.itertuples(), counted, strict=True)
        },
        "exclusive_groups": applied.coverage,
        "skipped": applied.skipped,
        "notes": [*applied.notes, *emptied, *changed],
    }


class RecordedReads:
    """What each tag was computed from, as a tags summary recorded it (:func:`tags_summary`),
    else as ``fallback`` (a library) says: answers :meth:`Library.reads` where the library the
    tags were made with is not at hand (summaries written before they recorded it have none)."""

    def __init__(self, summary: dict, fallback: Library | None = None) -> None:
        self._reads = {tag: str(info.get("reads") or "") for tag, info in (summary.get("tags") or {}).items()}
        self._fallback = fallback

    @classmethod
    def beside(cls, tags_table: Path | None, fallback: Library | None = None) -> RecordedReads:
        """The reads recorded beside the tags table ``tags_table`` (its ``.summary.json``)."""
        return cls(summary_beside(tags_table), fallback)

    def reads(self, name: str) -> str:
        recorded = self._reads.get(name, "")
        return recorded or (self._fallback.reads(name) if self._fallback is not None else "")

    def names(self) -> list[str]:
        """Every tag it knows what it reads of: the summary's, then the fallback library's."""
        fallback = [t.name for t in self._fallback.tags] if self._fallback is not None else []
        return list(dict.fromkeys([*self._reads, *fallback]))


def tags_file(out_dir: Path, as_of: dt.date) -> Path:
    return out_dir / f"tags_{as_of.isoformat()}.parquet"


def tags_dates(out_dir: Path | None) -> list[dt.date]:
    """The as-of dates of the tags tables in a folder, oldest first."""
    if out_dir is None or not out_dir.is_dir():
        return []
    stems = (p.stem.removeprefix("tags_") for p in out_dir.glob("tags_*.parquet"))
    return sorted(dt.date.fromisoformat(s) for s in stems if _is_date(s))


def previous_tags(out_dir: Path, as_of: dt.date) -> tuple[pd.DataFrame | None, dt.date | None]:
    """The newest tags table in ``out_dir`` dated before ``as_of``, and its date. The tags that
    run skipped (its summary's ``skipped``: model tags without scores) come from the newest
    earlier table that computed them, so that their ``since`` and movement carry over a run
    made without ``--scores``."""
    earlier = [d for d in tags_dates(out_dir) if d < as_of]
    if not earlier:
        return None, None
    newest = read_parquet(tags_file(out_dir, earlier[-1]))
    missing = skipped_in(out_dir, earlier[-1])
    parts = [newest]
    for day in reversed(earlier[:-1]):
        if not missing:
            break
        older = read_parquet(tags_file(out_dir, day))
        computed = [name for name in missing if name not in skipped_in(out_dir, day)]
        parts.append(older[of_tags(older, computed)])
        missing = [name for name in missing if name not in computed]
    previous = pd.concat(parts, ignore_index=True) if len(parts) > 1 else newest
    # the skipped tags no earlier run computed: nobody "entered" them (tags_summary)
    previous.attrs[NEVER_COMPUTED] = list(missing)
    return previous, earlier[-1]


NEVER_COMPUTED = "never_computed"  # a previous table's attribute: tags no earlier run computed


def summary_beside(tags_table: Path | None) -> dict:
    """The summary written beside a tags table (:func:`tags_summary`); empty when there is no
    table, no summary or an unreadable one."""
    try:
        summary = json.loads(tags_table.with_suffix(".summary.json").read_text(encoding="utf-8"))
    except (AttributeError, OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def skipped_in(out_dir: Path, as_of: dt.date) -> list[str]:
    """The tags the run of ``as_of`` skipped, as its table records them (:func:`with_skipped`),
    else as its summary does (tables written before 2026-12-06; none if unreadable). From the
    table itself: a run stopped between writing the table and its summary left a table without
    one, and the next run took every model tag it had skipped for one nobody held, so that
    everyone "entered" it."""
    try:
        skipped = parquet_attrs(tags_file(out_dir, as_of)).get(SKIPPED)
    except (OSError, ValueError):
        skipped = None
    if skipped is None:
        skipped = summary_beside(tags_file(out_dir, as_of)).get("skipped")
    return [str(name) for name in skipped] if isinstance(skipped, list) else []


SKIPPED = "skipped_tags"  # the table's attribute (Parquet metadata) listing the tags its run skipped


def write_tags(
    library: Library,
    applied: Applied,
    as_of: dt.date,
    out_dir: Path,
    previous_dir: Path | None,
    extra: dict | None = None,
) -> tuple[pd.DataFrame, dict, Path]:
    """The tags ``applied`` as of ``as_of`` written into ``out_dir``, the table (with the tags
    its run skipped) and then its summary (plus ``extra``), carrying ``since``, who entered and
    who left from the newest earlier table in ``previous_dir`` (None: there is none). Returns
    the table, the summary and the table's path. For ``tags apply`` and the refresh's step."""
    previous, previous_date = previous_tags(previous_dir, as_of) if previous_dir is not None else (None, None)
    tags = with_since(applied.tags, previous)
    recorded = RecordedReads.beside(tags_file(previous_dir, previous_date)) if previous_date is not None else None
    reads = {name: recorded.reads(name) for name in recorded.names()} if recorded is not None else None
    summary = tags_summary(library, applied, tags, as_of, previous, previous_date, reads) | (extra or {})
    target = tags_file(out_dir, as_of)
    check_targets([target, target.with_suffix(".summary.json")])
    atomic_write(with_skipped(tags, applied.skipped), target)
    atomic_write_text(json.dumps(summary, indent=2, default=str), target.with_suffix(".summary.json"))
    return tags, summary, target


def with_skipped(tags: pd.DataFrame, skipped: list[str]) -> pd.DataFrame:
    """``tags`` carrying the names of the tags its run skipped, written with the table (pandas
    keeps ``attrs`` in the Parquet file's metadata): one file, written atomically, says both."""
    tags = tags.copy(deep=False)
    tags.attrs[SKIPPED] = [str(name) for name in skipped]
    return tags


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True
