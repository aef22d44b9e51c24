"""The nightly crowd material: what every crowd report reads, stored by the refresh.

A crowd report computes one value per customer for every dimension, and the per-customer
category and brand spend, from the data as of its date: on a million customers that is most of
a minute and a half. The refresh already has the population of its date open, so its ``crowds``
step stores those per-customer tables once (``<run>/crowds/``), and a report on that run
(``portrait crowd report --run DIR``, and the API on the served run) reads them instead: the
crowd's mask and a few group-bys.

What is stored (all as of the run's date, data before it only):

- ``frame.parquet``: per customer, the features and RFM columns the dimensions, key figures and
  activity table read;
- ``dimensions.parquet``: per customer and dimension, an integer code into the categories kept in
  ``meta.json`` (-1 never occurs: unknown is a category of its own);
- ``by_category.parquet``, ``by_brand.parquet``: per customer and value, spend over all history
  and, for those with a sold line of it in the last 365 days, spend and units there (what the
  top categories and brands read);
- ``order_mix.parquet``: per customer, orders of the last 365 days and those spanning several
  categories (the cross-sell rate);
- ``lines.parquet``: the purchase lines before the date, as the features read them (identities
  merged, bad and repeated rows out), which behaviour terms on purchases read;
- ``meta.json``: the date, the data set's fingerprint, the tag library's level groups (the
  spending power and buyer level dimensions depend on them), the condition schema, the
  dimension labels and categories.

A :class:`StoredCrowdData` answers like :class:`~marketing.crowd.CrowdData`. Tags, saved
segments and personas come from the run's own tables; a ``--where`` filter on the stored columns
is evaluated on them; anything else (other features, behaviour terms, a segment the run did not
refresh, consent for an export, behaviour terms on events or on a column the lines do not hold)
opens the data set as of the run's date, as a report without the material would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from features.build import LATE_AS_OF_DAYS
from marketing.crowd import CrowdData, Dimension, level_groups
from marketing.filters import Schema, evaluate, parse_condition
from marketing.population import PURCHASES_READ, Population
from marketing.segments import SegmentStore
from marketing.tags import Applied, Library, skipped_in, tags_file
from portrait import connections
from portrait.errors import PortraitError
from portrait.files import atomic_target, atomic_write, atomic_write_text, read_parquet
from portrait.resources import MATERIAL_MEMORY_SHARE, duckdb_memory_limit
from portrait.sql import quote_literal

FOLDER = "crowds"
META = "meta.json"
LINES = "lines.parquet"
LINE_COLUMNS = ("category", "brand")
FORMAT = 6  # bumped when what is stored changes; older material is not read (5: tied favourite weekdays, no time of day for dates; 6: values holding personal data withheld)


def levels_fingerprint(library: Library) -> str:
    """What the level dimensions depend on: the library's level groups, in a short hash."""
    text = repr([repr(g) for g in level_groups(library)])  # every field: feature, cuts, values, labels
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_crowd_material(data: CrowdData, folder: Path) -> dict[str, int]:
    """Store ``data``'s per-customer tables in ``folder`` (see the module); the row counts. Rows
    are written in a fixed order, so re-running a date writes the same files. DuckDB works
    within :data:`~portrait.resources.MATERIAL_MEMORY_SHARE` of the machine's memory meanwhile
    (spilling beyond it): the sorted copy of every purchase line is the largest sort of a run."""
    with duckdb_memory_limit(data.con, MATERIAL_MEMORY_SHARE):
        return _write_crowd_material(data, folder)


def _write_crowd_material(data: CrowdData, folder: Path) -> dict[str, int]:
    folder = Path(folder)
    frame = data.frame
    dims = data.dimensions
    data.say("writing the crowd material")
    atomic_write(frame, folder / "frame.parquet")
    codes = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(),  # with each row, so a rewrite keeps them together
            **{name: dims[name].cat.codes.to_numpy().astype("int16") for name in dims.columns},
        }
    )
    atomic_write(codes, folder / "dimensions.parquet")
    con = data.con
    counts = {"customers": int(len(frame))}
    for column in LINE_COLUMNS:
        table = data.per_customer(column)
        if table is None:
            continue
        with atomic_target(folder / f"by_{column}.parquet") as tmp:
            con.execute(
                f"COPY (SELECT * FROM {table} ORDER BY customer_id, value) TO {quote_literal(str(tmp))} (FORMAT PARQUET, USE_TMP_FILE false)"
            )
        counts[f"by_{column}"] = int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchall()[0][0])
    with atomic_target(folder / LINES) as tmp:  # what behaviour terms read: the lines before the date
        con.execute(
            f"COPY (SELECT * EXCLUDE (age) FROM {PURCHASES_READ} ORDER BY ALL) TO {quote_literal(str(tmp))} (FORMAT PARQUET, USE_TMP_FILE false)"
        )
    counts["lines"] = int(con.execute(f"SELECT COUNT(*) FROM {PURCHASES_READ}").fetchall()[0][0])
    with atomic_target(folder / "order_mix.parquet") as tmp:
        con.execute(
            f"COPY (SELECT * FROM {data.order_mix()} ORDER BY customer_id) TO {quote_literal(str(tmp))} (FORMAT PARQUET, USE_TMP_FILE false)"
        )
    population = data.population
    meta = {
        "format": FORMAT,
        "as_of": data.as_of.isoformat(),
        "dataset": population.dataset.fingerprint(),
        "levels": levels_fingerprint(data.library),
        "has_events": data.has_events,
        "schema": population.schema(models=False).kinds,
        "attribute_features": data.attribute_features(),
        "lines_columns": [row[0] for row in con.execute(f"DESCRIBE {PURCHASES_READ}").fetchall() if row[0] != "age"],
        "dimensions": {
            name: {
                "label": data.dimension_label(name),
                "order": list(data.definitions[name].order) if name in data.definitions else [],
                "categories": [str(c) for c in dims[name].cat.categories],
            }
            for name in dims.columns
        },
    }
    atomic_write_text(json.dumps(meta, indent=1), folder / META)
    data.drop_work_tables()
    return counts


def material_problem(folder: Path, library: Library, as_of: dt.date | None, fingerprint: str | None) -> str | None:
    """Why the material in ``folder`` cannot answer for this library, date and data set (None: it can)."""
    meta_path = Path(folder) / META
    if not meta_path.is_file():
        return f"{folder} holds no crowd material (a refresh before the crowds step, or another folder)"
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        return f"the crowd material in {folder} was written by another version"
    if as_of is not None and meta["as_of"] != as_of.isoformat():
        return f"the crowd material in {folder} is as of {meta['as_of']}, not {as_of}"
    if fingerprint is not None and meta["dataset"] != fingerprint:
        return f"the data set changed since the crowd material in {folder} was written"
    if meta["levels"] != levels_fingerprint(library):
        return f"the crowd material in {folder} was built with another tag library's levels"
    return None


class StoredCrowdData(CrowdData):
    """:class:`CrowdData` over a run's stored material (see the module docstring)."""

    def __init__(
        self,
        run: Path,
        dataset_path: Path | None,
        library: Library,
        *,
        segments: SegmentStore | None = None,
        manual_store: Path | None = None,
        say: Callable[[str], None] | None = None,
    ):
        self.run = Path(run)
        self.folder = self.run / FOLDER
        self.dataset_path = dataset_path
        self.meta = json.loads((self.folder / META).read_text())
        self.library = library
        self.columns = None
        self.segments = segments or SegmentStore()
        self.manual_store = manual_store
        self.say = say or (lambda message: None)
        self.has_events = bool(self.meta["has_events"])
        self._applied = None
        self._evaluator = None
        self._dims = None
        self._per_customer = {}
        self._population: Population | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._raw_con: duckdb.DuckDBPyConnection | None = None
        self._scores: pd.DataFrame | None = None
        self.definitions = {
            name: Dimension(name, spec["label"], tuple(spec["order"])) for name, spec in self.meta["dimensions"].items()
        }
        self.say("reading the crowd material")
        self._frame = read_parquet(self.folder / "frame.parquet")

    # ------------------------------------------------------------ what the base class reads

    @property
    def as_of(self) -> dt.date:
        return dt.date.fromisoformat(self.meta["as_of"])

    @property
    def population(self) -> Population:
        """The data set as of the run's date, opened only when the material cannot answer."""
        if self._population is None:
            from portrait.validate import open_checked

            dataset = open_checked(self._need_data(), self.say)
            self.say("reading the data set (the crowd material does not hold this)")
            self._population = Population(dataset, self.as_of, scores_dir=self._scores_dir(), progress=self.say)
        return self._population

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = connections.connect()
        return self._con

    def close(self) -> None:
        for con in (self._con, self._raw_con):
            if con is not None:
                con.close()
        if self._population is not None:
            self._population.close()

    def check_as_of(self, max_gap_days: int = LATE_AS_OF_DAYS) -> None:
        """The refresh checked its date against the data when it ran."""

    def attribute_features(self) -> list[str]:
        return list(self.meta["attribute_features"])

    @property
    def frame(self) -> pd.DataFrame:
        return self._frame

    @property
    def dimensions(self) -> pd.DataFrame:
        if self._dims is None:
            codes = read_parquet(self.folder / "dimensions.parquet")
            if not codes["customer_id"].astype("str").equals(self.ids):  # rows in the frame's order
                codes = codes.set_index(codes["customer_id"].astype("str")).reindex(self.ids).reset_index(drop=True)
            self._dims = pd.DataFrame(
                {
                    name: pd.Categorical.from_codes(
                        codes[name].to_numpy().astype("int64"), categories=spec["categories"]
                    )
                    for name, spec in self.meta["dimensions"].items()
                }
            )
        return self._dims

    def per_customer(self, column: str) -> str | None:
        if column not in self._per_customer:
            path = self.folder / f"by_{column}.parquet"
            self._per_customer[column] = self._view(f"_crowd_by_{column}", path) if path.is_file() else None
        return self._per_customer[column]

    def order_mix(self) -> str:
        return self._view("_crowd_order_mix", self.folder / "order_mix.parquet")

    def _view(self, name: str, path: Path) -> str:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({quote_literal(str(path))})")
        return name

    # ------------------------------------------------------------ crowds from the run

    def _scores_dir(self) -> Path | None:
        folder = self.run / "scores"
        return folder if folder.is_dir() else None

    def personas(self) -> pd.Series | None:
        """Each customer's persona from the run's scores (read once, with the score columns)."""
        if "persona_name" not in self._score_kinds():
            return None
        named = self._score_table(["persona_name"]).set_index("customer_id")["persona_name"]
        return pd.Series(named.reindex(self.ids).to_numpy(), dtype="object")

    def _persona_table(self) -> pd.DataFrame:
        columns = [c for c in ("persona_id", "persona_name") if c in self._score_kinds()]
        return self._score_table(columns)

    @property
    def applied(self) -> Applied:
        """The run's tags as its table holds them, with the model tags its run skipped."""
        if self._applied is None:
            path = tags_file(self.run / "tags", self.as_of)
            if not path.is_file():
                return super().applied  # a run without its tags: applied from the data set
            stored = read_parquet(path, columns=["customer_id", "tag"])
            skipped = skipped_in(self.run / "tags", self.as_of)
            why = dict.fromkeys(skipped, f"the refresh run of {self.as_of} had no scores for it")
            self._applied = Applied(stored, len(self.ids), {}, [], skipped, why)
        return self._applied

    def mask(self, crowd) -> np.ndarray:
        if crowd.kind == "segment":
            members = self.run / "segments" / f"{crowd.value}.parquet"
            if members.is_file() and "/" not in crowd.value and not crowd.value.startswith("."):
                return self._rows(read_parquet(members)["customer_id"])
        if crowd.kind == "where":
            return self._where(crowd.value)
        return super().mask(crowd)

    def _where(self, text: str) -> np.ndarray:
        """A filter on the stored columns (and behaviour terms, read from the data set)."""
        condition = parse_condition(text, self._schema(), behaviour=True)
        frame = self.frame
        missing = [c for c in condition.columns if c not in frame.columns]
        scored = [c for c in missing if self._scores_dir() is not None and c in self._score_kinds()]
        if scored:
            frame = frame.merge(self._score_table(scored), on="customer_id", how="left")
            missing = [c for c in missing if c not in scored]
        if missing:  # features the material does not hold: the data set as of the run's date
            built = self.population.frame([condition]).assign(customer_id=lambda f: f["customer_id"].astype("str"))
            return self._rows(built.loc[evaluate(condition, built).to_numpy(bool), "customer_id"])
        if condition.terms:
            from marketing.behaviour import behaviour_table

            self.say(f"computing {len(set(condition.terms))} behaviour condition(s) in SQL")
            behaviour = behaviour_table(self._terms_con(condition.terms), condition.terms, self.as_of, self.ids)
            frame = pd.concat([frame.reset_index(drop=True), behaviour.drop(columns="customer_id")], axis=1)
        return evaluate(condition, frame).to_numpy(bool)

    def _behaviour(self, term) -> np.ndarray:
        from marketing.behaviour import behaviour_table

        return behaviour_table(self._terms_con([term]), [term], self.as_of, self.ids)[term.column].to_numpy()

    def _terms_con(self, terms) -> duckdb.DuckDBPyConnection:
        """Where behaviour terms are read: the stored purchase lines when every term is on
        purchases and filters on columns they hold, else the data set."""
        lines = self.folder / LINES
        stored = set(self.meta.get("lines_columns", ()))
        if lines.is_file() and all(t.table == "purchases" and {c for c, _ in t.filters} <= stored for t in terms):
            self._view("purchases", lines)
            return self.con
        return self._dataset_con()

    def apply_consent(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        from portrait.dataset import open_dataset
        from portrait.privacy import apply_consent

        if self._population is not None:
            return super().apply_consent(frame)
        return apply_consent(frame, open_dataset(self._need_data()), self._dataset_con())

    def _need_data(self) -> Path:
        if self.dataset_path is None:
            raise PortraitError("this question needs the data set (--data), not only the run's crowd material")
        return self.dataset_path

    def _dataset_con(self) -> duckdb.DuckDBPyConnection:
        """The data set's views without the population's reads (behaviour terms need no more)."""
        if self._population is not None:
            return self._population.con
        if self.dataset_path is None:
            raise PortraitError("behaviour conditions need the data set (--data)")
        if self._raw_con is None:
            from portrait.validate import open_checked

            self._raw_con = open_checked(self.dataset_path, self.say).connect()
        return self._raw_con

    def _schema(self) -> Schema:
        kinds = dict(self.meta["schema"])
        kinds.update(self._score_kinds())
        return Schema(kinds)

    def _score_kinds(self) -> dict[str, str]:
        from marketing.filters import NUMBER, TEXT
        from marketing.population import PERSONA_COLUMNS, SCORE_SUFFIXES
        from portrait.outputs import scores_as_of

        folder = self._scores_dir()
        if folder is None:
            return {}
        if self._scores is None:
            scores, _ = scores_as_of(folder, self.as_of)
            keep = ["customer_id"] + [c for c in scores.columns if c.endswith(SCORE_SUFFIXES) or c in PERSONA_COLUMNS]
            self._scores = scores[keep].assign(customer_id=scores["customer_id"].astype("str"))
        return {c: TEXT if c == "persona_name" else NUMBER for c in self._scores.columns if c != "customer_id"}

    def _score_table(self, columns: list[str]) -> pd.DataFrame:
        self._score_kinds()
        return self._scores[["customer_id", *columns]].drop_duplicates("customer_id")


def open_stored_crowds(
    run: Path,
    dataset_path: Path | None,
    library: Library,
    *,
    as_of: dt.date | None = None,
    segments: SegmentStore | None = None,
    manual_store: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> StoredCrowdData:
    """The run's crowd material, checked against the library, the date and the data set."""
    fingerprint = None
    if dataset_path is not None:
        from portrait.dataset import open_dataset

        fingerprint = open_dataset(dataset_path).fingerprint()
    problem = material_problem(Path(run) / FOLDER, library, as_of, fingerprint)
    if problem:  # the command line's way round it (the API logs its own and reads the data set)
        same_day = Path(run).parent / as_of.isoformat() if as_of is not None else None
        if same_day is not None and same_day != Path(run) and (same_day / FOLDER).is_dir():
            raise PortraitError(f"{problem}: give that date's run, --run {same_day}")
        raise PortraitError(f"{problem}: run the command again without --run (it reads the data set itself)")
    return StoredCrowdData(run, dataset_path, library, segments=segments, manual_store=manual_store, say=say)
