"""The viewer's sorted-page index: per table and snapshot, the in-memory copy of what a list shows and filters on,
and the kept keys of a WHERE naming columns the index lacks (a mixin of vlfactory.viewer.queries.Viewer)."""

from __future__ import annotations

from vlfactory.stores import tables as store
from vlfactory.stores.lake import DB
from vlfactory.viewer.specs import INDEXED, ITERATION, SNIPPET, SPECS


class IndexQueries:
    """The index behind every list, count and facet of a table at a snapshot."""

    def index(self, table: str, snap: int) -> str:
        """The in-memory index of a table at a snapshot (built on first use; one build at a time per index)."""
        with self._once(("index", table, snap)):
            if (table, snap) not in self._index:
                self._index[table, snap] = self._build(table, snap)
        return self._index[table, snap]

    def index_columns(self, table: str, snap: int) -> list[str]:
        """The index's columns as the view names them: key, _row, what filters read, the listed scalars."""
        spec, types = SPECS[table], self.types(table, snap)
        wanted = [spec.key, "_row", *INDEXED, *([spec.model] if spec.model else []),
                  *(c for c in spec.listed if c not in spec.texts)]
        return [c for c in dict.fromkeys(wanted) if c in types]

    def _build(self, table: str, snap: int) -> str:
        spec = SPECS[table]
        name = f"memory.main.vlf_index_{next(self._ids)}"
        texts = [c for c in spec.texts if c in self.types(table, snap)]
        cols = [f'v."{c}"' for c in self.index_columns(table, snap)]
        cols += [f'left(v."{c}", {SNIPPET}) AS "snippet_{c}"' for c in texts]
        first = "NULL::INTEGER"
        joins = ""
        tags = [(int(m.group(1)), s) for t, s in self.tags.items() if (m := ITERATION.fullmatch(t)) and s <= snap]
        if tags and not spec.is_set:  # the iteration that added each row: the first iteration tag holding its key
            union = " UNION ALL ".join(f"SELECT {spec.key} AS k, {k} AS it FROM {DB}.{table} AT (VERSION => {s})"
                                       for k, s in tags if table in self.tables(s))
            if union:
                joins = f" LEFT JOIN (SELECT k, min(it) AS it FROM ({union}) GROUP BY k) f ON f.k = v.{spec.key}"
                first = "f.it"
        # in the table's order: its zone maps then skip what lies before a page of the default order; an ART
        # index on _row: a sorted page's rows are fetched by it (`rows`), not by a scan of every row
        return store.keep(self.lake, name, f"SELECT {', '.join(cols)}, {first} AS first_iteration "
                                           f"FROM ({self.view(table, snap)}) v{joins} ORDER BY v._row", index="_row")

    def where_keys(self, index: str, table: str, snap: int, where: str) -> str:
        """The keys of the rows a WHERE over the whole table matches (one that names columns the index lacks),
        kept as an in-memory table for paging and counting."""
        key = SPECS[table].key
        with self._once(("where", index, where)):
            if (index, where) not in self._wheres:
                found = self.lake.query(f"SELECT v.{key} AS k FROM ({self.view(table, snap)}) v WHERE (\n{where}\n)"
                                        ).to_arrow_table()
                name = f"memory.main.vlf_where_{next(self._ids)}"
                with store.registered(self.lake, "_vlf_keys", found):
                    store.keep(self.lake, name, "SELECT k FROM _vlf_keys")
                self._wheres[index, where] = name
        return self._wheres[index, where]
