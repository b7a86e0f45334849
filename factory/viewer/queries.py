"""The viewer's queries over one read-only lake: the tables it lists, their filters, facets, sorted pages,
samples, problems and images (vlfactory.viewer.server serves them).

Lists read an index, as the Hub's dataset viewer does: per table and version, one pass over the lake copies
into DuckDB's in-memory database what a list shows and filters on (the key, the row's place in the table,
source, verdict, reasons, model, the iteration that added it, the listed numbers, and the first
`SNIPPET` characters of long texts). A page, a sort by any listed column, a count and the facet counts are
then queries of that index (milliseconds at a million rows), where on the Parquet files a page sorted by
token count decodes the completions of every row group its rows fall in (seconds). A snapshot never changes,
so an index is never stale. A WHERE over the index's columns runs on it; one naming other columns runs once
on the whole table, and its matching keys are kept for paging.

The queries live by concern, as mixins of `Viewer` (one object, so the server's per-request copy keeps
sharing what is kept): specs.py what is listed, index.py the index, lists.py filters and pages, facets.py
filter values and facet counts, sample.py the sample and problem pages.
"""

from __future__ import annotations

import itertools
import threading

from vlfactory.stores import tables as store
from vlfactory.stores.lake import DB, Lake, LakeError
from vlfactory.viewer.facets import FacetQueries
from vlfactory.viewer.index import IndexQueries
from vlfactory.viewer.lists import ListQueries
from vlfactory.viewer.sample import SampleQueries
from vlfactory.viewer.specs import SPECS


class Viewer(IndexQueries, ListQueries, FacetQueries, SampleQueries):
    """The queries behind the page, over one lake opened read-only (the server gives each request a copy of it
    on a cursor of its own, so requests run side by side; the copies share what is kept).

    A read-only Lake is pinned to the snapshot it opened at, and a snapshot never changes, so what the page asks
    again (tables and columns, tags, filter values, model names, indexes, counts, facets) is kept.
    """

    def __init__(self, lake: Lake, version: str | int | None = None):
        self.lake, self.version = lake, version
        self.tags = dict(sorted(lake.tags().items(), key=lambda kv: (kv[1], kv[0])))  # in snapshot order
        self.counts: dict[tuple, int] = {}  # (index, filters) -> rows: paging does not recount
        self._tables: dict[int, dict[str, list[str]]] = {}       # snapshot -> table -> columns
        self._types: dict[tuple[str, int], dict[str, str]] = {}  # (table, snapshot) -> its view's column types
        self._values: dict[int, dict[str, list]] = {}            # snapshot -> what each filter offers
        self._names: dict[int, dict[str, str]] = {}              # snapshot -> model identity -> short name
        self._index: dict[tuple[str, int], str] = {}             # (table, snapshot) -> its index table
        self._wheres: dict[tuple[str, str], str] = {}            # (index, WHERE) -> the table of its matching keys
        self._combos: dict[tuple, list[tuple]] = {}              # (index, WHERE, problem) -> facet value counts
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()
        self._ids = itertools.count()

    # ---- helpers -------------------------------------------------------------------

    def snapshot(self, at: str | None) -> int:
        at = str(at or self.version or "latest")
        return self.tags[at] if at in self.tags else self.lake.resolve(at)

    def tables(self, snap: int) -> dict[str, list[str]]:
        """The viewable tables at a snapshot, with their columns."""
        if snap not in self._tables:
            out = {}
            for name in SPECS:
                try:
                    out[name] = list(store.columns(self.lake, f"SELECT * FROM {DB}.{name} AT (VERSION => {snap})"))
                except Exception:
                    continue  # not there yet at this version
            self._tables[snap] = out
        return self._tables[snap]

    def view(self, table: str, snap: int, row: bool = False) -> str:
        """The table at a snapshot with what a reader wants beside each row: the problem's source, question, gold
        answer and image, and the sample's current grade; `_row`, the row's place in the table (DuckLake's
        rowid). With `row`, only the row whose rowid is the parameter `$row` (a point read of one row group)."""
        spec, cols = SPECS[table], self.tables(snap).get(table)
        if cols is None:
            raise LakeError(f"no table {table!r} at snapshot {snap}")

        def at(name: str, alias: str) -> str:  # DuckDB wants the alias before AT
            return f"{DB}.{name} {alias} AT (VERSION => {snap})"

        one = " WHERE rowid = $row" if row else ""
        base = f"(SELECT *, rowid AS _row FROM {at(table, 'b')}{one}) t"
        if table == "rejected":  # a verify rejection names its problem and sample in the payload
            base = (f"(SELECT *, rowid AS _row, CASE WHEN stage = 'verify' THEN json_extract_string(payload, "
                    f"'$.problem_id') END AS problem_id, CASE WHEN stage = 'verify' THEN "
                    f"json_extract_string(payload, '$.ref_table') END AS ref_table FROM {at(table, 'b')}{one}) t")
            cols = [*cols, "problem_id", "ref_table"]
        sel, joins = ["t.*"], []
        if "problem_id" in cols and table != "problems":
            joins.append(f"LEFT JOIN {at('problems', 'p')} ON p.problem_id = t.problem_id")
            sel += [f"p.{c}" for c in ("source", "question", "image_id") if c not in cols]
            sel.append("p.answer AS gold")
        if spec.graded:
            joins.append(f"LEFT JOIN {at('grades', 'g')} ON g.ref_table = {spec.ref_table} "
                         f"AND g.ref_id = t.{spec.graded}")
            sel += [f"g.{c}" for c in ("accepted", "correct", "grade_reason", "reasons", "extracted", "cleaned",
                                       "cleaned_words", "cleaned_ok", "verifier", "settings_hash")]
        return f"SELECT {', '.join(sel)} FROM {base} {' '.join(joins)}"

    def types(self, table: str, snap: int) -> dict[str, str]:
        if (table, snap) not in self._types:
            self._types[table, snap] = store.columns(self.lake, self.view(table, snap))
        return self._types[table, snap]

    def query(self, sql: str, params: list | dict | None = None, user: bool = False) -> list[dict]:
        """Rows as dicts. SQL holding a user's fragment (`user`) goes through `Lake.query`: one SELECT statement
        (else refused), TABLE@VERSION expanded; the viewer's own SQL runs as it is."""
        if not user:
            return store.dicts(self.lake, sql, params)
        rel = self.lake.query(sql, params or None)
        names = [d[0] for d in rel.description]
        return [dict(zip(names, row)) for row in rel.fetchall()]

    def names(self, snap: int) -> dict[str, str]:
        """Model identity -> the short name the report gives it (iter1 sft, smollm2-135m-instruct, a folder's)."""
        if snap not in self._names:
            from vlfactory.reports.stats import model_names

            self._names[snap] = model_names(self.lake, snap)
        return self._names[snap]

    def model_name(self, model: str | None, snap: int) -> str | None:
        from vlfactory.reports.stats import short_name

        return None if model is None else short_name(model, self.names(snap))

    def _once(self, key: tuple):
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())
