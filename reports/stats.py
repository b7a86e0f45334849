"""The numbers behind the dataset card, the HTML report and `vlfactory show`, read from one version.

Each query reads the tables at the version's snapshot (`traces@12`), so a report of
`iter1` says what `iter1` held even after later iterations rewrote the sets. The
generation tables are read directly rather than through the `generations` and
`pass_rates` views, because DuckLake views do not time-travel.

    from vlfactory.reports.stats import version_stats
    with Lake("./lake", read_only=True) as lake:
        s = version_stats(lake, "iter1")
        print(s.funnel, s.rejected)
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

import yaml

from vlfactory.recipe import TRACKED_KEYWORDS, RLSetConfig, SFTSetConfig, VerifyConfig
from vlfactory.stores.lake import Lake, LakeError

# Per source, in funnel order: label -> SQL giving (source, count) at snapshot {s}.
FUNNEL = {
    "problems": "SELECT source, count(*) FROM problems@{s} GROUP BY 1",
    "captioned": """SELECT p.source, count(DISTINCT c.problem_id) FROM captions@{s} c
                    JOIN problems@{s} p USING (problem_id) GROUP BY 1""",
    "distilled": """SELECT p.source, count(DISTINCT t.problem_id) FROM traces@{s} t
                    JOIN problems@{s} p USING (problem_id) GROUP BY 1""",
    "solved": "SELECT source, count(DISTINCT problem_id) FROM grades@{s} WHERE accepted GROUP BY 1",
    "in sft": "SELECT source, count(DISTINCT problem_id) FROM sft@{s} GROUP BY 1",
    "in rl": "SELECT source, count(*) FROM rl@{s} GROUP BY 1",
    "traces": "SELECT p.source, count(*) FROM traces@{s} t JOIN problems@{s} p USING (problem_id) GROUP BY 1",
    "accepted traces": """SELECT source, count(DISTINCT ref_id) FROM grades@{s}
                          WHERE accepted AND ref_table = 'traces' GROUP BY 1""",
    "rollouts": "SELECT p.source, count(*) FROM rollouts@{s} r JOIN problems@{s} p USING (problem_id) GROUP BY 1",
    "correct rollouts": """SELECT source, count(DISTINCT ref_id) FROM grades@{s}
                           WHERE correct AND ref_table = 'rollouts' GROUP BY 1""",
    "sft examples": "SELECT source, count(*) FROM sft@{s} GROUP BY 1",
}
PROBLEM_STAGES = ("problems", "captioned", "distilled", "solved", "in sft", "in rl")  # the funnel plot's bars


def generations(s: int) -> str:
    """Every model call at snapshot s: the `generations` view's rows, with the sampling settings."""
    cols = "model, prompt_hash, prompt_tokens, completion_tokens, latency_s"
    sampled = f"{cols}, temperature, top_p, max_tokens, sample_index"
    return f"""(SELECT 'caption' AS stage, {cols}, NULL::DOUBLE AS temperature, NULL::DOUBLE AS top_p,
                       NULL::INTEGER AS max_tokens, 0 AS sample_index FROM captions@{s} WHERE origin = 'model'
                UNION ALL SELECT 'distil', {sampled} FROM traces@{s}
                UNION ALL SELECT 'rollout', {sampled} FROM rollouts@{s})"""


@dataclass
class VersionStats:
    version: str
    snapshot: int
    funnel: dict[str, dict[str, int]] = field(default_factory=dict)   # source -> label -> count
    rejected: list[dict] = field(default_factory=list)                # stage, reason, rows
    verdicts: list[dict] = field(default_factory=list)                # ref_table, reason, rows (graded, not accepted)
    lengths: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # words|tokens -> group -> values
    pass_rates: dict[str, list[float]] = field(default_factory=dict)  # policy model -> per-problem pass rates
    usage: list[dict] = field(default_factory=list)                   # stage, model, calls, tokens, latency
    sampling: list[dict] = field(default_factory=list)                # stage, model, temperature, top_p, ...
    prompts: list[dict] = field(default_factory=list)                 # stage, name, prompt_hash, text
    runs: list[dict] = field(default_factory=list)                    # the runs that wrote this version
    recipes: list[dict] = field(default_factory=list)                 # name, hash, text, in order of last use
    licenses: dict[str, str | None] = field(default_factory=dict)     # source -> the recipe's license
    settings: dict[str, dict] = field(default_factory=dict)           # verify / sft / rl, defaults filled in
    evals: list[dict] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return sorted(self.funnel)

    @property
    def band(self) -> tuple[float, float] | None:
        rl = self.settings.get("rl")
        return tuple(rl["band"]) if rl else None


def rows(lake: Lake, sql: str, params: list | None = None) -> list[dict]:
    """A query's rows as dicts; empty when a table it reads did not exist yet at that version."""
    try:
        rel = lake.query(sql, params)
    except LakeError as e:
        if "does not exist at version" in str(e):
            return []  # the table came with a later migration than the version
        raise
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def version_stats(lake: Lake, version: str | int) -> VersionStats:
    s = lake.resolve(version)
    st = VersionStats(str(version), s)
    for label, sql in FUNNEL.items():
        for r in rows(lake, sql.format(s=s)):
            source, n = r.values()
            st.funnel.setdefault(source, dict.fromkeys(FUNNEL, 0))[label] = n
    st.rejected = rows(lake, f"""SELECT stage, reason, count(*) AS rows FROM rejected@{s}
                                GROUP BY ALL ORDER BY 3 DESC, 1, 2""")
    st.verdicts = rows(lake, f"""SELECT ref_table, reason, count(*) AS rows FROM (
                                    SELECT ref_table, unnest(coalesce(nullif(reasons, []), [grade_reason])) AS reason
                                    FROM grades@{s} WHERE NOT accepted) GROUP BY ALL ORDER BY 3 DESC, 1, 2""")
    graded = rows(lake, f"""SELECT CASE WHEN g.accepted THEN 'accepted' ELSE 'rejected' END AS grp, g.words,
                                   coalesce(t.completion_tokens, r.completion_tokens) AS tokens
                            FROM grades@{s} g
                            LEFT JOIN traces@{s} t ON g.ref_table = 'traces' AND t.trace_id = g.ref_id
                            LEFT JOIN rollouts@{s} r ON g.ref_table = 'rollouts' AND r.rollout_id = g.ref_id""")
    sft = rows(lake, f"SELECT 'sft' AS grp, words, NULL AS tokens FROM sft@{s}")
    for r in graded + sft:
        for unit in ("words", "tokens"):
            if r[unit] is not None:
                st.lengths.setdefault(unit, {}).setdefault(r["grp"], []).append(r[unit])
    for r in rows(lake, f"""SELECT r.model, avg(CASE WHEN g.correct THEN 1.0 ELSE 0.0 END) AS rate
                            FROM rollouts@{s} r JOIN grades@{s} g ON g.ref_table = 'rollouts' AND g.ref_id = r.rollout_id
                            WHERE g.correct IS NOT NULL GROUP BY r.problem_id, r.model ORDER BY ALL"""):
        st.pass_rates.setdefault(r["model"], []).append(float(r["rate"]))
    st.usage = rows(lake, f"""SELECT stage, model, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens,
                                     sum(completion_tokens) AS completion_tokens, sum(latency_s) AS latency_s
                              FROM {generations(s)} GROUP BY ALL ORDER BY ALL""")
    st.sampling = rows(lake, f"""SELECT stage, model, temperature, top_p, max_tokens,
                                        max(sample_index) + 1 AS samples_per_prompt, count(*) AS rows
                                 FROM {generations(s)} WHERE stage != 'caption' GROUP BY ALL ORDER BY ALL""")
    st.prompts = rows(lake, f"""SELECT g.stage, p.name, g.prompt_hash, p.text
                                FROM (SELECT DISTINCT stage, prompt_hash FROM {generations(s)}) g
                                LEFT JOIN (SELECT prompt_hash, any_value(name) AS name, any_value(text) AS text
                                           FROM prompts@{s} GROUP BY 1) p USING (prompt_hash) ORDER BY ALL""")
    # SELECT *: a version from before migration 8 has no stage, protocol or pass_at_k columns
    st.evals = [{"stage": None, "pass_at_k": None, "samples_per_problem": None, "protocol": None} | r
                for r in rows(lake, f"SELECT * FROM evals@{s} ORDER BY created_at")]
    st.runs = runs_until(lake, s)
    lineage(st)
    return st


STAGE_ORDER = {"base": 0, "sft": 1, "grpo": 3}   # grpo-<stage> (an earlier GRPO run) sorts between


def eval_label(r: dict) -> str:
    """Which model of the loop an evals row is about: base, iter1 sft, iter1 grpo, ... (else its iteration)."""
    if r.get("stage") == "base":
        return "base"
    if r.get("stage"):
        return f"iter{r['iteration']} {r['stage']}"
    return f"iter{r['iteration']}" if r.get("iteration") is not None else "-"


def eval_order(r: dict) -> tuple:
    return (r["iteration"] if r.get("iteration") is not None else 10**9, STAGE_ORDER.get(r.get("stage"), 2))


def tracked_keywords(st: VersionStats) -> list[str]:
    """The words the loop follows (the last recipe's loop.track_keywords), else the paper's list."""
    for recipe in reversed(st.recipes):
        loop = (yaml.safe_load(recipe["text"]) or {}).get("loop") or {}
        if loop.get("track_keywords"):
            return [str(k) for k in loop["track_keywords"]]
    return list(TRACKED_KEYWORDS)


def _keyword_sql(keywords: list[str]) -> str:
    """Words and per-keyword counts (whole words, any case) of `completion`, summed over the rows."""
    counts = ", ".join(f"sum(len(regexp_extract_all(lower(completion), '{_word(k)}'))) AS \"{i}\""
                       for i, k in enumerate(keywords))
    words = "sum(CASE WHEN trim(completion) = '' THEN 0 ELSE len(string_split_regex(trim(completion), '\\s+')) END)"
    return f"count(*) AS samples, coalesce({words}, 0) AS words, {counts}"


def _word(keyword: str) -> str:
    return r"\b" + re.escape(keyword.lower()).replace("'", "''").replace(r"\ ", r"\s+") + r"\b"


def keyword_rates(lake: Lake, keywords: list[str]) -> list[dict]:
    """Reflection-keyword frequency per 1k words, as the paper follows it across iterations: in the traces
    and rollouts each iteration tag added (rows at iterK, not at the tag before), and in the answers of
    each evaluated model of the loop (eval samples of base, iterK sft, iterK grpo)."""
    out: list[dict] = []
    previous = None
    select = _keyword_sql(keywords)

    def add(series: str, point: str, order: tuple, sql: str) -> None:
        for r in rows(lake, sql):
            if r["samples"]:
                counts = {k: int(r[str(i)] or 0) for i, k in enumerate(keywords)}
                out.append({"series": series, "point": point, "order": order, "samples": r["samples"],
                            "words": int(r["words"]), "counts": counts,
                            "per_1k": {k: 1000 * c / r["words"] if r["words"] else 0.0 for k, c in counts.items()}})

    for k, (name, s) in enumerate(iteration_tags(lake), 1):
        for table, key in (("traces", "trace_id"), ("rollouts", "rollout_id")):
            new = f" WHERE {key} NOT IN (SELECT {key} FROM {table}@{previous})" if previous is not None else ""
            add(table, name, (k, 0), f"SELECT {select} FROM {table}@{s}{new}")
        previous = s
    # Each evaluated model once, at the last iteration tag (evals are never rewritten).
    tags = iteration_tags(lake)
    if tags:
        s = tags[-1][1]
        models = rows(lake, f"""SELECT DISTINCT iteration, stage, eval_key FROM evals@{s}
                                WHERE iteration IS NOT NULL AND stage IS NOT NULL""")
        for m in models:
            add("eval samples", eval_label(m), eval_order(m), f"""SELECT {select} FROM eval_samples@{s}
                                                  WHERE eval_key = '{m['eval_key']}'""")
    # one point per (series, label): evals of several benchmarks add up
    merged: dict[tuple, dict] = {}
    for r in out:
        m = merged.setdefault((r["series"], r["point"]), {**r, "samples": 0, "words": 0,
                                                         "counts": dict.fromkeys(keywords, 0)})
        m["samples"] += r["samples"]
        m["words"] += r["words"]
        for kw, c in r["counts"].items():
            m["counts"][kw] += c
    for m in merged.values():
        m["per_1k"] = {k: 1000 * c / m["words"] if m["words"] else 0.0 for k, c in m["counts"].items()}
    return sorted(merged.values(), key=lambda r: (r["series"], r["order"]))


def eval_examples(lake: Lake, per_model: int = 3) -> list[dict]:
    """A few stored answers of each evaluated model of the loop, per benchmark, at the last iteration tag
    (all of them are in `eval_samples`)."""
    tags = iteration_tags(lake)
    if not tags:
        return []
    s = tags[-1][1]
    found = rows(lake, f"""SELECT e.iteration, e.stage, e.benchmark, x.source_id, x.sample_index, x.prompt,
                                  x.completion, x.extracted, x.answer, x.correct, x.reason
                           FROM (SELECT DISTINCT iteration, stage, benchmark, eval_key FROM evals@{s}
                                 WHERE iteration IS NOT NULL AND stage IS NOT NULL) e
                           JOIN eval_samples@{s} x USING (eval_key)
                           QUALIFY row_number() OVER (PARTITION BY e.iteration, e.stage, e.benchmark
                                                      ORDER BY x.source_id, x.sample_index) <= {int(per_model)}""")
    return sorted(found, key=lambda r: (eval_order(r), r["benchmark"], r["source_id"], r["sample_index"]))


def runs_until(lake: Lake, snapshot: int) -> list[dict]:
    """The runs whose commits make up the lake up to this snapshot (each commit names its run)."""
    ids = []
    for snap in lake.snapshots():
        extra = json.loads(snap["commit_extra_info"]) if snap["commit_extra_info"] else {}
        if snap["snapshot_id"] <= snapshot and extra.get("run_id") and extra["run_id"] not in ids:
            ids.append(extra["run_id"])
    if not ids:
        return []
    # The runs table as it is now: a run's end (status, counts) is written after its data.
    return rows(lake, """SELECT run_id, command, argv, recipe_name, recipe_hash, recipe, versions, started_at,
                                ended_at, status, snapshot_start, snapshot_end
                         FROM runs WHERE list_contains(?, run_id) ORDER BY started_at""", [ids])


def lineage(st: VersionStats) -> None:
    """Recipes, source licenses and the filter settings, from the recipe texts of the runs."""
    seen = {}
    for run in st.runs:
        if run["recipe"]:
            seen.pop(run["recipe_hash"], None)  # keep the order of last use
            seen[run["recipe_hash"]] = {"name": run["recipe_name"], "hash": run["recipe_hash"], "text": run["recipe"]}
    st.recipes = list(seen.values())
    parsed = [yaml.safe_load(r["text"]) or {} for r in st.recipes]
    for raw in parsed:
        for src in raw.get("sources") or []:
            st.licenses[src.get("name")] = src.get("license")  # a later recipe's word wins
    # The last recipe's settings, with the defaults it left out: what applied.
    raw = parsed[-1] if parsed else {}
    st.settings = {"verify": dataclasses.asdict(VerifyConfig()) | (raw.get("verify") or {})}
    for key, cls in (("sft", SFTSetConfig), ("rl", RLSetConfig)):
        if raw.get(key) is not None:
            st.settings[key] = dataclasses.asdict(cls()) | raw[key]


def summary(values: list[int | float]) -> dict[str, float]:
    """count, mean, median, p90, max of a list of lengths."""
    v = sorted(values)
    if not v:
        return {"count": 0}
    return {"count": len(v), "mean": sum(v) / len(v), "median": v[len(v) // 2], "p90": v[int(0.9 * (len(v) - 1))],
            "max": v[-1]}


def iteration_tags(lake: Lake) -> list[tuple[str, int]]:
    """The loop's tags `iter1`, `iter2`, ... in order, with their snapshots."""
    tags = [(name, snap) for name, snap in lake.tags().items() if re.fullmatch(r"iter\d+", name)]
    return sorted(tags, key=lambda t: int(t[0][4:]))


def previous_tag(lake: Lake, snapshot: int) -> tuple[str, int] | None:
    """The latest tag strictly before a snapshot: what a version is compared against."""
    earlier = [(snap, name) for name, snap in lake.tags().items() if snap < snapshot]
    return (max(earlier)[1], max(earlier)[0]) if earlier else None
