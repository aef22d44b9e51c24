"""Everything a tag or segment condition can name, for every customer, as of one date.

A :class:`Population` opens the data set once and gives, per customer known before the as-of
date: the point-in-time features (only those the conditions need are built), the RFM
scores and group, the behaviour terms the conditions call, and, given a scores folder, each
model's score, percentile and decile and the persona from the newest scores table not later
than the as-of date. Customers are those of the feature table (anyone with a purchase, refund
or event before the as-of date, or a signup before it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from features.build import as_text, attribute_kinds, build_features, parse_cutoff, present_text, vocabulary_as_of
from features.catalogue import Feature, catalogue, legacy_names
from features.config import FeatureConfig
from marketing.behaviour import behaviour_table
from marketing.filters import NUMBER, TEXT, Condition, Schema
from marketing.rfm import GROUPS as RFM_GROUPS
from marketing.rfm import RFM_COLUMNS, RFM_INPUTS, rfm_scores
from portrait.dataset import Dataset
from portrait.engine import as_engine
from portrait.errors import PortraitError
from portrait.outputs import scores_as_of
from portrait.views import compute_once

# vocabulary_as_of reads the purchases before the as-of date once into this table, which stays
# on the connection for the Population's life: features and behaviour terms both read it.
PURCHASES_READ = "f_purchases"
RFM_KINDS = {"rfm_r": NUMBER, "rfm_f": NUMBER, "rfm_m": NUMBER, "rfm_fm": NUMBER, "rfm_group": TEXT}
# Score columns carried over from a scores table (model-specific columns end in these).
SCORE_SUFFIXES = ("_score", "_percentile", "_decile")


def dataless_schema(unchecked: list[str] | None = None) -> Schema:
    """The columns a condition may name on any data, for checking one without data (a saved
    segment, a tag library): the catalogue's features, the RFM columns (the groups' names are
    the same on any data), scores and personas; a per-value feature is recognised by its name.
    A customers attribute's kind only the data tells: it is taken as any kind and its name
    appended to ``unchecked``."""
    from features.catalogue import describe
    from marketing.filters import ANY

    def resolve(name: str) -> str | None:
        if name in RFM_KINDS:
            return RFM_KINDS[name]
        if name.endswith(SCORE_SUFFIXES) or name == "persona_id":
            return NUMBER
        if name == "persona_name":
            return TEXT
        found = describe([name]).get(name)
        if found is not None and found.family == "attributes":
            if unchecked is not None:
                unchecked.append(name)
            return ANY  # number, date or text: the data tells (a CSV's age is a number)
        if found is None and name.startswith("days_since_"):  # a date attribute's (days_since_signup_date)
            if unchecked is not None:
                unchecked.append(name)
            return NUMBER
        return None if found is None else (TEXT if found.scale == "category" else NUMBER)

    known = {f.name: (TEXT if f.scale == "category" else NUMBER) for f in catalogue(attributes={})}
    return Schema({**known, **RFM_KINDS}, resolve, values={"rfm_group": RFM_GROUPS})


PERSONA_COLUMNS = {"persona_id": NUMBER, "persona_name": TEXT}
# A text attribute of more values is free text: a condition's value is not checked against them.
ATTRIBUTE_VALUES_CHECKED = 500


def persona_named(scores: pd.DataFrame, persona: str) -> str | None:
    """The name of the persona ``persona`` names among ``scores`` (its ``persona_name`` and, when
    it has one, ``persona_id`` columns; one row per customer or per persona): itself when it is a
    name, else the name of the persona whose id it is ("3", as a caller writes it; an id stored as
    3.0 is 3 too); None for neither. Lists, segments and crowd reports take a persona either way."""
    known = scores[[c for c in ("persona_id", "persona_name") if c in scores.columns]].drop_duplicates()
    if persona in set(known["persona_name"].dropna().astype(str)):
        return persona
    if "persona_id" not in known.columns:
        return None
    try:
        wanted = float(persona)
    except ValueError:
        return None
    match = known.loc[pd.to_numeric(known["persona_id"], errors="coerce") == wanted, "persona_name"].dropna()
    return str(match.iloc[0]) if len(match) else None


def feature_kind(feature: Feature) -> str:
    return TEXT if feature.scale == "category" else NUMBER


class Population:
    """Lazily built columns for one data set as of one date (see the module docstring)."""

    def __init__(
        self,
        dataset: Dataset,
        as_of,
        *,
        scores_dir: Path | None = None,
        config: FeatureConfig | None = None,
        progress: Callable[[str], None] | None = None,
        con=None,
        event_first_seen: str | None = None,
    ):
        """``con``: a connection of ``dataset`` to use (and leave open) instead of a new one, or
        an engine with its views (:func:`portrait.spark_engine.spark_dataset`: Spark);
        ``event_first_seen``: a relation on it of each event id's first event time, read for who
        had an event before the date when no event feature is built (:func:`build_features`)."""
        self.dataset = dataset
        self.as_of: dt.date = parse_cutoff(as_of)
        self.scores_dir = scores_dir
        self.event_first_seen = event_first_seen
        self.config = config or FeatureConfig()
        self.say = progress or (lambda message: None)
        self._own_connection = con is None
        self.con = con or dataset.connect()
        if self._own_connection and dataset.has("customers"):  # read several times: computed once
            compute_once(self.con, "customers")
        self.say("reading purchases before the as-of date")
        self.vocabulary = vocabulary_as_of(self.con, self.as_of, self.config, with_store=True)
        self.attributes = (
            attribute_kinds(self.con, dataset.sources["customers"].decimal) if dataset.has("customers") else {}
        )
        self.features = catalogue(self.config, self.vocabulary, self.attributes)
        self._scores: pd.DataFrame | None = None
        self.scores_date: dt.date | None = None
        self._frame: pd.DataFrame | None = None
        self._built: set[str] = set()
        self._attribute_held: dict[str, tuple[str, ...]] | None = None

    def close(self) -> None:
        if self._own_connection:
            self.con.close()
        else:  # the caller's connection or engine: leave it as it was
            as_engine(self.con).drop(PURCHASES_READ)

    def __enter__(self) -> Population:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ what can be named

    @property
    def scores(self) -> pd.DataFrame | None:
        """The newest scores table not later than the as-of date, or None without a folder."""
        if self._scores is None and self.scores_dir is not None:
            scores, self.scores_date = scores_as_of(self.scores_dir, self.as_of)
            keep = ["customer_id"] + [c for c in scores.columns if c.endswith(SCORE_SUFFIXES) or c in PERSONA_COLUMNS]
            self._scores = scores[keep].assign(customer_id=scores["customer_id"].astype("str"))
        return self._scores

    def schema(self, *, models: bool = True) -> Schema:
        """Feature, RFM and (with ``models``) score columns with their kinds."""
        kinds = {f.name: feature_kind(f) for f in self.features}
        kinds.update(RFM_KINDS)
        kinds["customer_id"] = TEXT  # a person's id, as a list's filter names it (a crowd's was unknown)
        current = {
            "favourite_category": (*self.vocabulary.categories, "other"),
            "favourite_channel": tuple(self.vocabulary.channels),
            **self._attribute_values(),
        }
        if models and self.scores is not None:
            kinds.update(
                {c: NUMBER if c != "persona_name" else TEXT for c in self.scores.columns if c != "customer_id"}
            )
        return Schema(kinds, values={"rfm_group": RFM_GROUPS}, current=current, renamed=legacy_names(self.vocabulary))

    def _attribute_values(self) -> dict[str, tuple[str, ...]]:
        """Each text attribute's values (of at most :data:`ATTRIBUTE_VALUES_CHECKED`: more is
        free text), read once, as its feature holds them: a condition's value off one only in
        case or spaces (``attr_region = 'South'`` where the data says ``south``) is refused with
        the one meant, where it matched nobody without a word. Values nobody holds stay allowed."""
        if self._attribute_held is None:
            self._attribute_held = {}
            engine = as_engine(self.con)
            types = dict(engine.columns("SELECT * FROM customers")) if self.attributes else {}
            for feature in self.features:
                if feature.family != "attributes" or feature.scale != "category" or feature.sql not in types:
                    continue
                text = present_text(as_text(feature.sql, types[feature.sql]))
                rows = engine.rows(
                    f"SELECT DISTINCT {text} FROM customers WHERE {text} IS NOT NULL LIMIT {ATTRIBUTE_VALUES_CHECKED + 1}"
                )
                if len(rows) <= ATTRIBUTE_VALUES_CHECKED:
                    self._attribute_held[feature.name] = tuple(str(row[0]) for row in rows)
        return self._attribute_held

    # ------------------------------------------------------------ the table

    def frame(self, conditions: Iterable[Condition] = (), columns: Iterable[str] = ()) -> pd.DataFrame:
        """One row per customer with every column the conditions (and ``columns``) read and
        every behaviour term they call. Builds more features only when needed."""
        conditions = list(conditions)
        wanted = set(columns) | {c for cond in conditions for c in cond.columns}
        names = {f.name for f in self.features if f.name in wanted} | set(RFM_INPUTS)
        if self._frame is not None and not names <= self._built:
            self._add_features(names - self._built)
        if self._frame is None:
            self._built |= names
            self.say(f"building {len(self._built)} features")
            built = self._build(self._built)
            self.say("RFM scores")
            rfm = rfm_scores(built)
            if rfm["customer_id"].equals(built["customer_id"]):  # row for row: no merge on the ids
                self._frame = pd.concat([built, rfm.drop(columns="customer_id").set_axis(built.index)], axis=1)
            else:
                self._frame = built.merge(rfm, on="customer_id", how="left")
        frame = self._frame
        if any(c in wanted for c in self._score_columns()):
            if self.scores is None:
                raise PortraitError("model conditions need a scores folder (--scores DIR)")
            frame = frame.merge(self.scores, on="customer_id", how="left")
        terms = [t for cond in conditions for t in cond.terms]
        if terms:
            self.say(f"computing {len(set(terms))} behaviour condition(s) in SQL")
            behaviour = behaviour_table(self.con, terms, self.as_of, frame["customer_id"], purchases=PURCHASES_READ)
            frame = pd.concat([frame, behaviour.drop(columns="customer_id")], axis=1)
        missing = sorted(wanted - set(frame.columns))
        if missing:
            raise PortraitError(f"these columns are not available as of {self.as_of}: {missing}")
        return frame

    def _build(self, names: set[str]) -> pd.DataFrame:
        return build_features(
            self.dataset,
            self.as_of,
            self.config,
            vocabulary=self.vocabulary,
            only=names,
            con=self.con,
            purchases_ready=True,
            event_first_seen=self.event_first_seen,
        )

    def _add_features(self, names: set[str]) -> None:
        """Build only the features not built yet and add them beside the others: every build has
        the same customers in the same order (the spine does not depend on the features asked),
        so the columns are placed row for row. Should that ever not hold, everything is rebuilt."""
        self.say(f"building {len(names)} more features")
        built = self._build(names)
        if not built["customer_id"].equals(self._frame["customer_id"]):
            self._frame = None  # rebuilt whole by the caller
            return
        added = [c for c in built.columns if c not in self._frame.columns]
        self._frame = pd.concat([self._frame, built[added].set_axis(self._frame.index)], axis=1)
        self._built |= names

    def _score_columns(self) -> list[str]:
        if self.scores is None:
            return list(PERSONA_COLUMNS)
        return [c for c in self.scores.columns if c != "customer_id"]


__all__ = ["Population", "RFM_COLUMNS"]
