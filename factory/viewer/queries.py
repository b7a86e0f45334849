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
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass

from vlfactory.stores import tables as store
from vlfactory.stores.lake import DB, Lake, LakeError

PAGE_ROWS = 50
SNIPPET = 160  # characters of a long text kept in the index and shown in a list


@dataclass(frozen=True)


class Spec:
    """How a table is listed: its key, the columns shown (content first), which of them are long texts, what its
    grade and model are."""

    key: str
    listed: tuple[str, ...]
    texts: tuple[str, ...] = ()   # long texts: listed as their first SNIPPET characters
    graded: str | None = None     # the column grades.ref_id names (with ref_table = `ref_table`)
    ref_table: str | None = None  # SQL for the grades.ref_table of a row
    model: str | None = None      # the column the model filter reads
    is_set: bool = False          # rewritten per version (sft, rl): an iteration is the set at its tag


SAMPLED = ("question", "completion", "accepted", "reasons", "model", "source", "sample_index", "completion_tokens",
           "finish_reason")
SPECS = {
    "traces": Spec("trace_id", SAMPLED, ("question", "completion"), "trace_id", "'traces'", "model"),
    "rollouts": Spec("rollout_id", SAMPLED, ("question", "completion"), "rollout_id", "'rollouts'", "model"),
    "problems": Spec("problem_id", ("question", "answer", "choices", "source", "split", "source_id"), ("question",)),
    "captions": Spec("caption_id", ("question", "caption", "model", "origin", "source", "completion_tokens",
                                    "finish_reason"), ("question", "caption"), model="model"),
    "grades": Spec("grade_id", ("question", "extracted", "gold", "accepted", "reasons", "ref_table", "source", "words",
                                "cleaned_ok"), ("question",)),
    "rejected": Spec("rejected_id", ("stage", "reason", "reasons", "detail", "source"), ("detail",)),
    "sft": Spec("example_id", ("question", "completion", "model", "source", "from_table", "words", "accepted"),
                ("question", "completion"), "from_id", "t.from_table", "model", is_set=True),
    "rl": Spec("problem_id", ("question", "pass_rate", "samples", "correct", "policy_model", "source"), ("question",),
               model="policy_model", is_set=True),
}
FACETS = ("source", "verdict", "reason", "model", "iteration")
ITERATION = re.compile(r"iter(\d+)")
GENERATED = ("captions", "traces", "rollouts", "sft", "rl")  # a problem's rows, on its page
INDEXED = ("problem_id", "image_id", "source", "accepted", "stage", "reason", "reasons")  # beside the listed ones


class Viewer:
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

    # ---- the index -----------------------------------------------------------------------

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

    # ---- filters ---------------------------------------------------------------------

    def scope(self, q: dict) -> tuple[str, int, Spec]:
        table = q.get("table", "traces")
        if table not in SPECS:
            raise LakeError(f"unknown table {table!r}; the viewer shows {', '.join(SPECS)}")
        iteration = q.get("iteration")
        if iteration and not str(iteration).isdigit():
            raise LakeError(f"iteration: expected a number, got {iteration!r}")
        return table, self.snapshot(f"iter{int(iteration)}" if iteration else q.get("at")), SPECS[table]

    def filters(self, table: str, snap: int, q: dict, skip: str | None = None) -> tuple[list[str], list, bool]:
        """SQL conditions on the index (`v`) and their parameters from the page's filters, less the facet `skip`;
        and whether they hold the user's WHERE (then the query goes through Lake.query). Values are bound."""
        spec, index = SPECS[table], self.index(table, snap)
        cols = set(self.index_columns(table, snap))
        where, params, user = [], [], False
        if q.get("problem"):
            where.append("v.problem_id = ?")
            params.append(q["problem"])
        if q.get("source") and skip != "source":
            where.append("v.source = ?")
            params.append(q["source"])
        if q.get("model") and spec.model and skip != "model":
            where.append(f'v."{spec.model}" = ?')
            params.append(q["model"])
        if q.get("verdict") and "accepted" in cols and skip != "verdict":
            verdicts = {"accepted": "v.accepted", "rejected": "NOT v.accepted", "ungraded": "v.accepted IS NULL"}
            if q["verdict"] not in verdicts:
                raise LakeError(f"unknown verdict {q['verdict']!r}; verdicts: {', '.join(verdicts)}")
            where.append(verdicts[q["verdict"]])
        if q.get("reason") and skip != "reason":
            if "reason" in cols:
                where.append("(v.reason = ? OR list_contains(v.reasons, ?))")
                params += [q["reason"], q["reason"]]
            elif "reasons" in cols:
                where.append("list_contains(v.reasons, ?)")
                params.append(q["reason"])
        if q.get("iteration") and not spec.is_set and skip != "iteration":  # rows the iteration added
            where.append("v.first_iteration = ?")
            params.append(int(q["iteration"]))
        text = q.get("where", "").strip()
        if text:
            try:  # over the index's columns it runs there; naming others, once over the whole table
                self.lake.query(f"SELECT 1 FROM {index} v WHERE (\n{text}\n) LIMIT 0")
                where.append(f"(\n{text}\n)")  # on its own lines: a trailing -- comment ends there
                user = True
            except LakeError as e:
                if not re.search(r"Binder Error|not found in FROM clause|does not have a column", str(e)):
                    raise
                where.append(f"v.{spec.key} IN (SELECT k FROM {self.where_keys(index, table, snap, text)})")
        return where, params, user

    def order(self, table: str, snap: int, q: dict) -> tuple[str, bool]:
        """The sort column (default: the table's own order, `_row`) and whether it is descending."""
        sort = q.get("sort") or "_row"
        sortable = self.sortable(table, snap)
        if sort != "_row" and sort not in sortable:
            raise LakeError(f"sort: {table} lists no sortable column {sort!r}; sortable: {', '.join(sortable)}")
        return sort, q.get("desc") in ("1", "true")

    def sortable(self, table: str, snap: int) -> list[str]:
        types = self.types(table, snap)
        return [c for c in self.index_columns(table, snap) if c != "_row" and not types[c].endswith("[]")
                and c in (*SPECS[table].listed, SPECS[table].key)]

    @staticmethod
    def after(sort: str, desc: bool, key: str, cursor: list, before: bool = False) -> tuple[str, list]:
        """SQL that a row comes after (or before) the cursor [value, key] in `ORDER BY sort [DESC] NULLS LAST,
        key`: keyset paging on any column, nulls last."""
        value, k = cursor
        c, gt, lt = f'v."{sort}"', "<" if desc else ">", ">" if desc else "<"
        if not before:
            if value is None:
                return f"({c} IS NULL AND v.{key} > ?)", [k]
            # `c >= x AND (...)` first: a plain range a scan can test before the rest
            return f"({c} IS NULL OR ({c} {gt}= ? AND ({c} {gt} ? OR v.{key} > ?)))", [value, value, k]
        if value is None:
            return f"({c} IS NOT NULL OR v.{key} < ?)", [k]
        return f"({c} IS NOT NULL AND {c} {lt}= ? AND ({c} {lt} ? OR v.{key} < ?))", [value, value, k]

    # ---- endpoints -----------------------------------------------------------------

    def meta(self, q: dict) -> dict:
        """Versions, tables, and the values each filter offers at the chosen version."""
        snap = self.snapshot(q.get("at"))
        if snap not in self._values:
            self._values[snap] = self.values(snap)
        return {"lake": self.lake.spec.display, "at": q.get("at") or str(self.version or "latest"), "snapshot": snap,
                "latest": self.lake.current_snapshot(),
                "tags": [{"name": t, "snapshot": s} for t, s in self.tags.items()],
                "tables": {t: {"key": SPECS[t].key, "graded": bool(SPECS[t].graded) or t == "grades",
                               "model": bool(SPECS[t].model), "set": SPECS[t].is_set} for t in self.tables(snap)},
                "values": self._values[snap]}

    def values(self, snap: int) -> dict[str, list]:
        """What each filter offers at a snapshot (models with the short name the page shows)."""
        tables, values = self.tables(snap), {}
        for field, sql in (("source", "SELECT DISTINCT source FROM {} WHERE source IS NOT NULL"),
                           ("reason", "SELECT DISTINCT unnest(reasons) FROM {} WHERE reasons IS NOT NULL")):
            values[field] = sorted(r[0] for r in store.rows(self.lake, sql.format(
                f"{DB}.{'problems' if field == 'source' else 'rejected'} AT (VERSION => {snap})")))
        values["reason"] = sorted(set(values["reason"]) | {r[0] for r in store.rows(
            self.lake, f"SELECT DISTINCT reason FROM {DB}.rejected AT (VERSION => {snap})")})
        models = set()
        for name, col in (("captions", "model"), ("traces", "model"), ("rollouts", "model"), ("rl", "policy_model")):
            if name in tables:
                models |= {r[0] for r in store.rows(
                    self.lake, f"SELECT DISTINCT {col} FROM {DB}.{name} AT (VERSION => {snap})")}
        values["model"] = sorted(m for m in models if m)
        values["model_names"] = {m: self.model_name(m, snap) for m in values["model"]}
        values["iteration"] = sorted({int(m.group(1)) for t in self.tags if (m := ITERATION.fullmatch(t))})
        return values

    def rows(self, q: dict) -> dict:
        """One page of a table's rows from the cursor `after` (the last row of the page before), in the table's
        order or sorted by a listed column (`sort`, `desc`): keyset paging on the index, so a page deep in a
        million rows, or sorted by token count, costs what the first does."""
        table, snap, spec = self.scope(q)
        index = self.index(table, snap)
        where, params, user = self.filters(table, snap, q)
        sort, desc = self.order(table, snap, q)
        limit = str(q.get("limit") or PAGE_ROWS)
        if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 500):
            raise LakeError(f"limit: expected a whole number of rows from 1 to 500, got {limit!r}")
        limit = int(limit)
        page, page_params = list(where), list(params)
        if q.get("after"):
            cursor = self.cursor(q["after"])
            cond, values = self.after(sort, desc, spec.key, cursor)
            page.append(cond)
            page_params += values
        cond = lambda w: f" WHERE {' AND '.join(w)}" if w else ""  # noqa: E731
        order = f'v."{sort}" {"DESC" if desc else "ASC"} NULLS LAST, v.{spec.key}'
        if sort == "_row":  # the index's own order: its zone maps skip to the page
            found = self.query(f"SELECT v.* FROM {index} v{cond(page)} ORDER BY {order} LIMIT {limit + 1}",
                               page_params, user)
        else:  # a top-N of the sort column and key alone, then the page's whole rows by the index on _row: a
            # top-N carrying every listed column (the snippets) through a million rows took 3-5x as long
            at = self.query(f"SELECT v._row FROM {index} v{cond(page)} ORDER BY {order} LIMIT {limit + 1}",
                            page_params, user)
            picked = ", ".join(str(int(r["_row"])) for r in at) or "NULL"
            # no LIMIT here: with one, DuckDB scans every row instead of using the index
            found = self.query(f"SELECT v.* FROM {index} v WHERE v._row IN ({picked}) ORDER BY {order}")
        count_key = (index, json.dumps(where), json.dumps(params))
        if count_key not in self.counts:
            self.counts[count_key] = self.query(f"SELECT count(*) AS n FROM {index} v{cond(where)}", params,
                                                user)[0]["n"]
        shown = [c for c in spec.listed if c in self.types(table, snap)]
        rows = [self.listed(r, spec, snap) for r in found[:limit]]
        last = found[limit - 1] if len(found) > limit else None
        return {"table": table, "snapshot": snap, "key": spec.key, "columns": shown, "texts": list(spec.texts),
                "sortable": self.sortable(table, snap), "sort": None if sort == "_row" else sort, "desc": desc,
                "rows": rows, "total": self.counts[count_key],
                "next": json.dumps([last[sort], last[spec.key]]) if last else None}

    def listed(self, r: dict, spec: Spec, snap: int) -> dict:
        """A row of the index as the list shows it: snippets under their column's name, the model's short name."""
        out = {k: v for k, v in r.items() if not k.startswith("snippet_")}
        out |= {k.removeprefix("snippet_"): v for k, v in r.items() if k.startswith("snippet_")}
        if spec.model:
            out["model_name"] = self.model_name(r.get(spec.model), snap)
        return out

    @staticmethod
    def cursor(text: str) -> list:
        try:
            cursor = json.loads(text)
        except ValueError:
            cursor = None
        if not (isinstance(cursor, list) and len(cursor) == 2 and isinstance(cursor[1], str)):
            raise LakeError(f"after: expected the `next` of the page before, got {text!r}")
        return cursor

    def facets(self, q: dict) -> dict:
        """How many rows each value of each facet (source, verdict, reason, model, iteration) would list, under
        the page's other filters: one grouped count of the index per WHERE, the rest summed here."""
        table, snap, spec = self.scope(q)
        index, cols = self.index(table, snap), set(self.index_columns(table, snap))
        base = {k: v for k, v in q.items() if k in ("problem", "where", "table", "at", "iteration")}
        where, params, user = self.filters(table, snap, {k: v for k, v in base.items() if k != "iteration"})
        key = (index, json.dumps(where), json.dumps(params))
        if key not in self._combos:
            picked = [f"v.{c}" if c in cols else f"NULL AS {c}" for c in ("source", "accepted", "reasons", "reason")]
            picked += [f'v."{spec.model}" AS model' if spec.model else "NULL AS model", "v.first_iteration"]
            cond = f" WHERE {' AND '.join(where)}" if where else ""
            self._combos[key] = [tuple(r.values()) for r in self.query(
                f"SELECT {', '.join(picked)}, count(*) AS n FROM {index} v{cond} GROUP BY ALL", params, user)]
        verdict = {True: "accepted", False: "rejected", None: "ungraded"}
        out: dict[str, dict] = {f: {} for f in FACETS}
        chosen = {f: q.get(f) or None for f in FACETS}
        for source, accepted, reasons, reason, model, first, n in self._combos[key]:
            values = {"source": [source], "verdict": [verdict[accepted]] if "accepted" in cols else [],
                      "reason": sorted({*(reasons or []), *([reason] if reason else [])}), "model": [model],
                      "iteration": [first] if not spec.is_set else []}
            for f in FACETS:
                others = all(chosen[g] is None or str(chosen[g]) in map(str, values[g])
                             for g in FACETS if g != f and not (g == "iteration" and spec.is_set))
                if others:
                    for v in values[f]:
                        if v is not None:
                            out[f][str(v)] = out[f].get(str(v), 0) + n
        if spec.is_set:  # a set's iteration is the set as it stood at that tag
            out["iteration"] = {m.group(1): store.one(
                self.lake, f"SELECT count(*) FROM {DB}.{table} AT (VERSION => {s})")[0]
                for t, s in self.tags.items() if (m := ITERATION.fullmatch(t)) and table in self.tables(s)}
        return {"table": table, "snapshot": snap, "facets": out}

    def sample(self, q: dict) -> dict:
        """One row with everything about it, how it stood at every tagged version, and the rows before and after it
        in the list it was opened from (the list's filters and sort)."""
        table, key = q.get("table", ""), q.get("id", "")
        if table not in SPECS:
            raise LakeError(f"unknown table {table!r}")
        snap, spec = self.snapshot(q.get("at")), SPECS[table]
        index = self.index(table, snap)
        place = self.query(f"SELECT _row FROM {index} WHERE {spec.key} = ?", [key])
        found = self.query(f"SELECT * EXCLUDE (_row) FROM ({self.view(table, snap, row=True)}) v "
                           f"WHERE v.{spec.key} = $key", {"row": place[0]["_row"], "key": key}) if place else []
        if not found:
            raise LakeError(f"no {table} row {key!r} at snapshot {snap}")
        row = found[0]
        out = {"table": table, "key": spec.key, "snapshot": snap, "row": row}
        if spec.model:
            row["model_name"] = self.model_name(row.get(spec.model), snap)
        if row.get("caption_id"):  # the caption the reasoner saw
            out["caption"] = next(iter(self.query(
                f"SELECT caption, model, origin, caption_id FROM {DB}.captions AT (VERSION => {snap}) "
                "WHERE caption_id = ?",
                [row["caption_id"]])), None)
        if row.get("prompt_hash") and "prompts" in self.lake.tables():
            out["prompt"] = next(iter(self.query(f"SELECT name, text FROM {DB}.prompts AT (VERSION => {snap}) "
                                                 "WHERE prompt_hash = ?", [row["prompt_hash"]])), None)
        ref = row.get(spec.graded) if spec.graded else (row.get("ref_id") if table == "grades" else None)
        if ref:
            out["rejected"] = self.query(f"SELECT stage, reason, reasons, detail FROM {DB}.rejected AT (VERSION => "
                                         f"{snap}) WHERE ref_id = ? ORDER BY stage, reason", [ref])
        out["versions"] = self.versions(table, spec.key, key, spec.graded and ref)
        out["list"] = self.neighbours(q, key)
        return out

    def neighbours(self, q: dict, key: str) -> dict:
        """The keys before and after a row in its list (the page's filters and sort), and its place there."""
        table, snap, spec = self.scope(q)
        index = self.index(table, snap)
        where, params, user = self.filters(table, snap, q)
        sort, desc = self.order(table, snap, q)
        here = self.query(f'SELECT v."{sort}" AS s FROM {index} v WHERE v.{spec.key} = ?', [key])
        if not here:
            return {}
        cursor = [here[0]["s"], key]
        out = {}
        for name, before in (("previous", True), ("next", False)):
            cond, values = self.after(sort, desc, spec.key, cursor, before)
            flip = before != desc  # walking back reverses the order
            order = (f'v."{sort}" {"DESC" if flip else "ASC"} NULLS {"FIRST" if before else "LAST"}, '
                     f'v.{spec.key} {"DESC" if before else "ASC"}')
            got = self.query(f"SELECT v.{spec.key} AS k FROM {index} v WHERE {' AND '.join([*where, cond])} "
                             f"ORDER BY {order} LIMIT 1", [*params, *values], user)
            out[name] = got[0]["k"] if got else None
        cond, values = self.after(sort, desc, spec.key, cursor, True)
        out["position"] = self.query(f"SELECT count(*) AS n FROM {index} v WHERE {' AND '.join([*where, cond])}",
                                     [*params, *values], user)[0]["n"] + 1
        count_key = (index, json.dumps(where), json.dumps(params))
        if count_key not in self.counts:
            cond = f" WHERE {' AND '.join(where)}" if where else ""
            self.counts[count_key] = self.query(f"SELECT count(*) AS n FROM {index} v{cond}", params, user)[0]["n"]
        out["of"] = self.counts[count_key]
        return out

    def versions(self, table: str, key_col: str, key: str, ref: str | None) -> list[dict]:
        """At each tag and the latest snapshot: whether the row is there and its verdict then (one query)."""
        parts, points = [], self.points()
        for i, (_, snap) in enumerate(points):
            have = self.tables(snap)
            present = (f"(SELECT count(*) > 0 FROM {DB}.{table} AT (VERSION => {snap}) WHERE {key_col} = $key)"
                       if table in have else "false")
            grade = (f"(SELECT {{'accepted': accepted, 'grade_reason': grade_reason, 'reasons': reasons}} "
                     f"FROM {DB}.grades AT (VERSION => {snap}) WHERE ref_id = $ref LIMIT 1)"
                     if ref and "grades" in have else "NULL")
            parts.append(f"SELECT {i} AS i, {present} AS present, {grade} AS grade")
        sql = " UNION ALL ".join(parts) + " ORDER BY i"
        rows = store.rows(self.lake, sql, {"key": key} | ({"ref": ref} if "$ref" in sql else {}))
        return [{"at": name, "snapshot": snap, "present": present, **(grade or {})}
                for (name, snap), (_, present, grade) in zip(points, rows)]

    def points(self) -> list[tuple[str, int]]:
        """The versions worth comparing: every tag, in snapshot order, then the latest snapshot."""
        return [*self.tags.items(), ("latest", self.lake.current_snapshot())]

    def problem(self, q: dict) -> dict:
        """A problem with all its generations at a version, and their counts at every tagged version."""
        pid, snap = q.get("id", ""), self.snapshot(q.get("at"))
        found = self.query(f"SELECT * FROM {DB}.problems AT (VERSION => {snap}) WHERE problem_id = ?", [pid])
        if not found:
            raise LakeError(f"no problem {pid!r} at snapshot {snap}")
        versions = [{"at": name, "snapshot": s, **self.generations(pid, s)} for name, s in self.points()]
        here = next((v for v in versions if v["snapshot"] == snap), None) or self.generations(pid, snap)
        tables = {t: self.rows({"table": t, "at": str(snap), "limit": 200, "problem": pid})
                  for t in GENERATED if here.get(t)}  # a table without rows of this problem costs no scan
        return {"snapshot": snap, "problem": found[0], "tables": tables, "versions": versions}

    def generations(self, pid: str, snap: int) -> dict[str, int]:
        """How many rows of each generated table (and accepted grades) a problem has at a snapshot."""
        have, out = self.tables(snap), {}
        for table in (*GENERATED, "grades"):
            if table in have:
                accepted = " AND accepted" if table == "grades" else ""
                sql = f"SELECT count(*) FROM {DB}.{table} AT (VERSION => {snap}) WHERE problem_id = ?{accepted}"
                out["accepted" if table == "grades" else table] = store.one(self.lake, sql, [pid])[0]
        return out

    def image(self, image_id: str, thumb: int | None = None) -> tuple[bytes, str] | None:
        """An image's stored bytes, or a PNG thumbnail at most `thumb` pixels wide and high (for lists)."""
        row = store.one(self.lake, f"SELECT bytes, format FROM {DB}.images WHERE image_id = ?", [image_id])
        if row is None:
            return None
        if not thumb:
            return row[0], f"image/{(row[1] or 'png').lower()}"
        import io

        from PIL import Image

        with Image.open(io.BytesIO(row[0])) as im:
            im.thumbnail((thumb, thumb))
            out = io.BytesIO()
            im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB").save(out, "PNG")
        return out.getvalue(), "image/png"
