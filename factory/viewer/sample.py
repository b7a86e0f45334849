"""The viewer's sample and problem pages: one row with all about it, its neighbours in its list and how it stood
at every tag; a problem with its generations; an image or its thumbnail (a mixin of
vlfactory.viewer.queries.Viewer)."""

from __future__ import annotations

import json

from vlfactory.stores import tables as store
from vlfactory.stores.lake import DB, LakeError
from vlfactory.viewer.specs import GENERATED, SPECS


class SampleQueries:
    """A sample's page, a problem's page and the images they show."""

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
