"""The viewer's facets and filter values: what each filter offers at a version, and how many rows each of its
values would list under the page's other filters (a mixin of vlfactory.viewer.queries.Viewer)."""

from __future__ import annotations

import json

from vlfactory.stores import tables as store
from vlfactory.stores.lake import DB
from vlfactory.viewer.specs import FACETS, ITERATION, SPECS


class FacetQueries:
    """The page's versions, tables, filter values and facet counts."""

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
