"""The features a scores table was scored from, read a few columns at a time.

A list reads the columns its filter names and, for computed reasons, its page's rows. An API
worker used to hold the whole feature table beside the scores: about 2.5 GB of its 5 GB at 1M
customers, in every worker. :class:`FeatureColumns` reads from the features file only what a
request needs, in the scores' row order, and keeps the latest :data:`KEPT_COLUMNS` columns read
(a marketer's filters name the same few); a frame already in memory (a command's, a test's)
is served the same way.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from portrait.files import schema_attrs

KEPT_COLUMNS = 32  # about 8 MB each at 1M customers


class FeatureColumns:
    """The feature table at ``source`` (a Parquet file, or a frame), its columns aligned to
    ``ids`` (the scores' customer ids, in the scores' order): a customer without a feature row
    reads as missing, as a left merge gives it. The file is opened once, here, and read through
    that handle: a re-score that replaces it (a rename) is not mixed with the scores held, the
    file read being the one that was there with them."""

    def __init__(self, source: Path | pd.DataFrame, ids: pd.Series) -> None:
        self._source = source
        self._ids_array = ids.array  # to know the same scores again (in_order_of) without comparing ids
        self._ids = pd.Series(ids).reset_index(drop=True)
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, pd.Series] = OrderedDict()
        self._positions: np.ndarray | None = None  # each score row's row in the source
        self._source_index: pd.Index | None = None  # the source's customer ids, read once
        self.attrs: dict = dict(source.attrs) if isinstance(source, pd.DataFrame) else {}
        if isinstance(source, pd.DataFrame):
            self.empty = source.head(0)
        else:
            self._source = open(source, "rb")  # noqa: SIM115  (held while this object lives)
            # closed when this object goes (a request may still read a snapshot just replaced)
            weakref.finalize(self, self._source.close)
            schema = pq.read_schema(self._source)
            self.empty = schema.empty_table().to_pandas()
            # the frame's pandas attributes as written (a scoring's token among them)
            self.attrs = schema_attrs(schema)
        self.columns = list(self.empty.columns)

    def _read(self, columns: list[str]) -> pd.DataFrame:
        if isinstance(self._source, pd.DataFrame):
            return self._source[columns]
        return pd.read_parquet(self._source, columns=columns)

    def _source_ids(self) -> pd.Index:
        """The source's customer ids in its row order (read once, for the columns and the pages)."""
        if self._source_index is None:
            self._source_index = pd.Index(self._read(["customer_id"])["customer_id"])
        return self._source_index

    def _aligned(self, column: pd.Series) -> pd.Series:
        """``column`` (in the source's row order) in the scores' row order."""
        if self._positions is None:
            self._positions = self._source_ids().get_indexer(self._ids)
        values = pd.api.extensions.take(column.array, self._positions, allow_fill=True)
        return pd.Series(values, name=column.name)

    def in_order_of(self, ids: pd.Series) -> bool:
        """Whether :meth:`read`'s rows are ``ids``' rows, one for one (the scores it was made for)."""
        return ids.array is self._ids_array or (
            len(ids) == len(self._ids) and ids.reset_index(drop=True).equals(self._ids)
        )

    def read(self, columns: Collection[str]) -> pd.DataFrame:
        """``customer_id`` (the scores') and ``columns``, in the scores' row order."""
        wanted = [c for c in dict.fromkeys(columns) if c != "customer_id"]
        if unknown := [c for c in wanted if c not in self.columns]:
            raise KeyError(f"no feature column {unknown[0]!r}")
        with self._lock:
            missing = [c for c in wanted if c not in self._kept]
            if missing:
                read = self._read(missing)
                for name in missing:
                    self._kept[name] = self._aligned(read[name])
            for name in wanted:
                self._kept.move_to_end(name)
            kept = {name: self._kept[name] for name in wanted}
            while len(self._kept) > max(KEPT_COLUMNS, len(wanted)):
                self._kept.popitem(last=False)
        return pd.DataFrame({"customer_id": self._ids, **kept})

    def rows(self, ids: Sequence[str], columns: Collection[str] | None = None) -> pd.DataFrame:
        """``customer_id`` and ``columns`` (every column by default) for the customers ``ids``
        (a page of a list), one row each in their order, missing for an id without a feature
        row. Read from the row groups that hold them; nothing kept."""
        wanted = ["customer_id", *(c for c in dict.fromkeys(columns or self.columns) if c != "customer_id")]
        ids = pd.Series(list(ids), dtype="str")
        if isinstance(self._source, pd.DataFrame):
            return ids.to_frame("customer_id").merge(self._source[wanted], on="customer_id", how="left")
        with self._lock:
            positions = self._source_ids().get_indexer(ids)
            file = pq.ParquetFile(self._source)
            starts = np.cumsum([0] + [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)])
            groups = np.searchsorted(starts, positions, side="right") - 1
            parts = []
            for group in np.unique(groups[positions >= 0]):
                inside = positions[groups == group] - starts[group]
                table = file.read_row_group(int(group), columns=wanted).take(pa.array(inside))
                parts.append(table.to_pandas())
        found = pd.concat(parts, ignore_index=True) if parts else self.empty[wanted]
        return ids.to_frame("customer_id").merge(found, on="customer_id", how="left")
