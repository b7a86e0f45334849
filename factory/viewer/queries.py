"""The viewer's queries over one read-only lake: the tables it lists, their filters, pages, samples,
problems and images (vlfactory.viewer.server serves them)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from vlfactory.stores.lake import DB, Lake, LakeError

PAGE_ROWS = 50
CUT = 160  # characters of a long text shown in a list


@dataclass(frozen=True)


class Spec:
    """How a table is listed: its key, the columns shown, what its grade and model are."""

    key: str
    columns: tuple[str, ...]
    graded: str | None = None     # the column grades.ref_id names (with ref_table = `ref_table`)
    ref_table: str | None = None  # SQL for the grades.ref_table of a row
    model: str | None = None      # the column the model filter reads
    is_set: bool = False          # rewritten per version (sft, rl): an iteration is the set at its tag


SAMPLED = ("problem_id", "source", "sample_index", "model", "answer", "accepted", "reasons", "completion_tokens",
           "finish_reason")
SPECS = {
    "traces": Spec("trace_id", ("trace_id", *SAMPLED), "trace_id", "'traces'", "model"),
    "rollouts": Spec("rollout_id", ("rollout_id", *SAMPLED), "rollout_id", "'rollouts'", "model"),
    "problems": Spec("problem_id", ("problem_id", "source", "source_id", "split", "question", "answer")),
    "captions": Spec("caption_id", ("caption_id", "problem_id", "source", "model", "origin", "caption",
                                    "completion_tokens", "finish_reason"), model="model"),
    "grades": Spec("grade_id", ("grade_id", "ref_table", "ref_id", "source", "correct", "extracted", "accepted",
                                "reasons", "words", "cleaned_ok")),
    "rejected": Spec("rejected_id", ("rejected_id", "stage", "reason", "reasons", "source", "ref_id", "detail")),
    "sft": Spec("example_id", ("example_id", "problem_id", "source", "model", "from_table", "words", "accepted",
                               "completion"), "from_id", "t.from_table", "model", is_set=True),
    "rl": Spec("problem_id", ("problem_id", "source", "policy_model", "samples", "correct", "pass_rate",
                              "question"), model="policy_model", is_set=True),
}
ITERATION = re.compile(r"iter(\d+)")
GENERATED = ("captions", "traces", "rollouts", "sft", "rl")  # a problem's rows, on its page


class Viewer:
    """The queries behind the page, over one lake opened read-only (the server gives each request a copy of it
    on a cursor of its own, so requests run side by side).

    A read-only Lake is pinned to the snapshot it opened at, and a snapshot never changes, so what
    the page asks again (tables and columns per snapshot, tags, filter values, row counts) is kept.
    """

    def __init__(self, lake: Lake, version: str | int | None = None):
        self.lake, self.version = lake, version
        self.tags = dict(sorted(lake.tags().items(), key=lambda kv: (kv[1], kv[0])))  # in snapshot order
        self.counts: dict[tuple, int] = {}  # (table, snapshot, filters) -> rows: paging does not recount
        self._tables: dict[int, dict[str, list[str]]] = {}       # snapshot -> table -> columns
        self._types: dict[tuple[str, int], dict[str, str]] = {}  # (table, snapshot) -> its view's column types
        self._values: dict[int, dict[str, list]] = {}            # snapshot -> what each filter offers

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
                    out[name] = self.lake.con.sql(f"SELECT * FROM {DB}.{name} AT (VERSION => {snap}) LIMIT 0").columns
                except Exception:
                    continue  # not there yet at this version
            self._tables[snap] = out
        return self._tables[snap]

    def view(self, table: str, snap: int) -> str:
        """The table at a snapshot with what a reader wants beside each row: the problem's source, question, gold
        answer and image, and the sample's current grade."""
        spec, cols = SPECS[table], self.tables(snap).get(table)
        if cols is None:
            raise LakeError(f"no table {table!r} at snapshot {snap}")

        def at(name: str, alias: str) -> str:  # DuckDB wants the alias before AT
            return f"{DB}.{name} {alias} AT (VERSION => {snap})"

        base = at(table, "t")
        if table == "rejected":  # a verify rejection names its problem and sample in the payload
            base = (f"(SELECT *, CASE WHEN stage = 'verify' THEN json_extract_string(payload, '$.problem_id') END "
                    f"AS problem_id, CASE WHEN stage = 'verify' THEN json_extract_string(payload, '$.ref_table') END "
                    f"AS ref_table FROM {at(table, 'r')}) t")
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

    def filters(self, table: str, q: dict) -> tuple[list[str], list]:
        """SQL conditions and their parameters from the page's filters; the free WHERE goes in as typed."""
        spec, where, params = SPECS[table], [], []
        if q.get("problem"):
            where.append("v.problem_id = ?")
            params.append(q["problem"])
        if q.get("source"):
            where.append("v.source = ?")
            params.append(q["source"])
        if q.get("model") and spec.model:
            where.append(f"v.{spec.model} = ?")
            params.append(q["model"])
        if q.get("verdict") and (spec.graded or table == "grades"):
            verdicts = {"accepted": "v.accepted", "rejected": "NOT v.accepted", "ungraded": "v.accepted IS NULL"}
            if q["verdict"] not in verdicts:
                raise LakeError(f"unknown verdict {q['verdict']!r}; verdicts: {', '.join(verdicts)}")
            where.append(verdicts[q["verdict"]])
        if q.get("reason"):
            if table == "rejected":
                where.append("(v.reason = ? OR list_contains(v.reasons, ?))")
                params += [q["reason"], q["reason"]]
            elif spec.graded or table == "grades":
                where.append("list_contains(v.reasons, ?)")
                params.append(q["reason"])
        if q.get("iteration") and not spec.is_set:  # rows new in iterK: at iterK and not at iter(K-1)
            previous = self.tags.get(f"iter{int(q['iteration']) - 1}")
            if previous is not None and table in self.tables(previous):
                where.append(f"v.{spec.key} NOT IN (SELECT {spec.key} FROM {DB}.{table} AT (VERSION => {previous}))")
        if q.get("where", "").strip():
            where.append(f"(\n{q['where']}\n)")  # on its own lines: a trailing -- comment ends there
        return where, params

    def query(self, sql: str, params: list | None = None, user: bool = False) -> list[dict]:
        """Rows as dicts. SQL holding a user's fragment (`user`) goes through `Lake.query`: one SELECT statement
        (else refused), TABLE@VERSION expanded; the viewer's own SQL runs as it is."""
        rel = self.lake.query(sql, params or None) if user else self.lake.con.execute(sql, params or [])
        names = [d[0] for d in rel.description]
        return [dict(zip(names, row)) for row in rel.fetchall()]

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
        """What each filter offers at a snapshot."""
        tables, values = self.tables(snap), {}
        for field, sql in (("source", "SELECT DISTINCT source FROM {} WHERE source IS NOT NULL"),
                           ("reason", "SELECT DISTINCT unnest(reasons) FROM {} WHERE reasons IS NOT NULL")):
            values[field] = sorted(r[0] for r in self.lake.con.execute(sql.format(
                f"{DB}.{'problems' if field == 'source' else 'rejected'} AT (VERSION => {snap})")).fetchall())
        values["reason"] = sorted(set(values["reason"]) | {r[0] for r in self.lake.con.execute(
            f"SELECT DISTINCT reason FROM {DB}.rejected AT (VERSION => {snap})").fetchall()})
        models = set()
        for name in ("captions", "traces", "rollouts"):
            if name in tables:
                models |= {r[0] for r in self.lake.con.execute(
                    f"SELECT DISTINCT model FROM {DB}.{name} AT (VERSION => {snap})").fetchall()}
        values["model"] = sorted(m for m in models if m)
        values["iteration"] = sorted({int(m.group(1)) for t in self.tags if (m := ITERATION.fullmatch(t))})
        return values

    def rows(self, q: dict) -> dict:
        """One page of a table's rows, in key order from `after` (the last key of the page before): keyset paging,
        so a page deep in 100k rows costs what the first does."""
        table = q.get("table", "traces")
        if table not in SPECS:
            raise LakeError(f"unknown table {table!r}; the viewer shows {', '.join(SPECS)}")
        snap = self.snapshot(f"iter{int(q['iteration'])}" if q.get("iteration") else q.get("at"))
        spec, view = SPECS[table], self.view(table, snap)
        where, params = self.filters(table, q)
        types = self.types(table, snap, view)
        shown = [c for c in spec.columns if c in types]
        select = ", ".join(f'left(v."{c}", {CUT}) AS "{c}"' if types[c] == "VARCHAR" and c != spec.key else f'v."{c}"'
                           for c in shown)
        select += "".join(f', v."{c}"' for c in ("problem_id", "image_id") if c in types and c not in shown)
        limit = str(q.get("limit") or PAGE_ROWS)
        if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 500):
            raise LakeError(f"limit: expected a whole number of rows from 1 to 500, got {limit!r}")
        limit = int(limit)
        page, page_params = list(where), list(params)
        if q.get("after"):
            page.append(f"v.{spec.key} > ?")
            page_params.append(q["after"])
        cond = lambda w: f" WHERE {' AND '.join(w)}" if w else ""  # noqa: E731
        user = bool(q.get("where", "").strip())
        rows = self.query(f"SELECT {select} FROM ({view}) v{cond(page)} ORDER BY v.{spec.key} LIMIT {limit + 1}",
                          page_params, user)
        count_key = (table, snap, json.dumps(where), json.dumps(params))
        if count_key not in self.counts:
            self.counts[count_key] = self.query(f"SELECT count(*) AS n FROM ({view}) v{cond(where)}", params,
                                                user)[0]["n"]
        return {"table": table, "snapshot": snap, "key": spec.key, "columns": shown, "rows": rows[:limit],
                "total": self.counts[count_key], "next": rows[limit - 1][spec.key] if len(rows) > limit else None}

    def types(self, table: str, snap: int, view: str) -> dict[str, str]:
        if (table, snap) not in self._types:
            rel = self.lake.con.sql(f"SELECT * FROM ({view}) LIMIT 0")
            self._types[table, snap] = dict(zip(rel.columns, (str(t) for t in rel.types)))
        return self._types[table, snap]

    def sample(self, q: dict) -> dict:
        """One row with everything about it, and how it stood at every tagged version."""
        table, key = q.get("table", ""), q.get("id", "")
        if table not in SPECS:
            raise LakeError(f"unknown table {table!r}")
        snap, spec = self.snapshot(q.get("at")), SPECS[table]
        found = self.query(f"SELECT * FROM ({self.view(table, snap)}) v WHERE v.{spec.key} = ?", [key])
        if not found:
            raise LakeError(f"no {table} row {key!r} at snapshot {snap}")
        row = found[0]
        out = {"table": table, "key": spec.key, "snapshot": snap, "row": row}
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
        rows = self.lake.con.execute(sql, {"key": key} | ({"ref": ref} if "$ref" in sql else {})).fetchall()
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
                out["accepted" if table == "grades" else table] = self.lake.con.execute(
                    f"SELECT count(*) FROM {DB}.{table} AT (VERSION => {snap}) WHERE problem_id = ?{accepted}", [pid]
                ).fetchone()[0]
        return out

    def image(self, image_id: str) -> tuple[bytes, str] | None:
        row = self.lake.con.execute(f"SELECT bytes, format FROM {DB}.images WHERE image_id = ?", [image_id]).fetchone()
        return (row[0], f"image/{(row[1] or 'png').lower()}") if row else None


