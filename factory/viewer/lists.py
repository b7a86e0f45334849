"""The viewer's list queries: the page's filters as bound SQL over the index, sorting, and keyset pages of rows
(a mixin of vlfactory.viewer.queries.Viewer)."""

from __future__ import annotations

import json
import re

from vlfactory.stores.lake import LakeError
from vlfactory.viewer.specs import PAGE_ROWS, SPECS, Spec


class ListQueries:
    """A table's rows as the list shows them: filtered, sorted and paged on the index."""

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
