"""The numbers behind the dataset card, the HTML report and `vlfactory show`, read from one version.

Each query reads the tables at the version's snapshot (`traces@12`), so a report of
`iter1` says what `iter1` held even after later iterations rewrote the sets. The
generation tables are read directly rather than through the `generations` and
`pass_rates` views, because DuckLake views do not time-travel.

    from vlfactory.reports.stats import version_stats
    with Lake("./lake", read_only=True) as lake:
        s = version_stats(lake, "iter1")
        print(s.funnel, s.rejected)

The evaluation sections are in reports/evals.py, the reflection keywords in reports/keywords.py, and the
reading helpers (rows, iteration tags) in reports/reads.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from vlfactory.reports.evals import accuracy_by, answers, paired
from vlfactory.reports.reads import rows, strings
from vlfactory.stores.lake import Lake

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
    pass_counts: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # policy -> per problem (right, n)
    usage: list[dict] = field(default_factory=list)                   # stage, model, calls, tokens, latency
    sampling: list[dict] = field(default_factory=list)                # stage, model, temperature, top_p, ...
    prompts: list[dict] = field(default_factory=list)                 # stage, name, prompt_hash, text
    runs: list[dict] = field(default_factory=list)                    # the runs that wrote this version
    recipes: list[dict] = field(default_factory=list)                 # name, hash, text, in order of last use
    licenses: dict[str, str | None] = field(default_factory=dict)     # source -> the recipe's license
    settings: dict[str, dict] = field(default_factory=dict)           # verify / sft / rl, defaults filled in
    evals: list[dict] = field(default_factory=list)
    since: int | None = None                                          # counting only rows added after this snapshot
    names: dict[str, str] = field(default_factory=dict)               # model identity -> a short name
    stage_time: list[dict] = field(default_factory=list)              # stage, wall_s, commits, calls, tokens, tokens/s
    per_source: list[dict] = field(default_factory=list)              # source, ref_table, graded, correct, accepted
    finish: list[dict] = field(default_factory=list)                  # stage, finish_reason, rows
    answers: list[dict] = field(default_factory=list)                 # series, answer, rows (the most frequent)
    trainings: list[dict] = field(default_factory=list)               # the trainings of this version, labelled
    curves: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)  # label -> name -> points
    examples: list[dict] = field(default_factory=list)                # a few traces/rollouts with their problem
    by_type: list[dict] = field(default_factory=list)                 # eval accuracy per question type, baseline
    by_source: list[dict] = field(default_factory=list)               # ... per source (benchmark), baseline
    paired: list[dict] = field(default_factory=list)                  # consecutive models on the same problems

    @property
    def sources(self) -> list[str]:
        return sorted(self.funnel)

    @property
    def pass_rates(self) -> dict[str, list[float]]:
        """Per policy model, each problem's pass rate (correct / samples)."""
        return {model: [c / n for c, n in counts] for model, counts in self.pass_counts.items()}

    @property
    def band(self) -> tuple[float, float] | None:
        rl = self.settings.get("rl")
        return tuple(rl["band"]) if rl else None



# Tables whose rows a version adds (keyed, never rewritten): a section about what an iteration did reads
# only the rows added since the tag before it. The sets (sft, rl) are whole at every version.
ADDED = {"captions": "caption_id", "traces": "trace_id", "rollouts": "rollout_id", "grades": "grade_id",
         "rejected": "rejected_id", "trainings": "training_id", "eval_samples": "eval_key"}


def scoped(sql: str, s: int, since: int | None) -> str:
    """The query with each `TABLE@s` of an ADDED table narrowed to the rows added after snapshot `since`."""
    if since is None:
        return sql

    def added(m: re.Match) -> str:
        table, key = m.group(1), ADDED[m.group(1)]
        return f"(SELECT * FROM {table}@{s} WHERE {key} NOT IN (SELECT {key} FROM {table}@{since}))"

    return re.sub(rf"\b({'|'.join(ADDED)})@{s}\b", added, sql)


def funnel(lake: Lake, s: int, since: int | None = None) -> dict[str, dict[str, int]]:
    """Per source, FUNNEL's counts at snapshot s (generated rows: those added after `since`), in one query (each
    query of a report costs more than the small scans it makes)."""
    out: dict[str, dict[str, int]] = {}
    parts = [f"SELECT {i} AS label, * FROM ({scoped(sql.format(s=s), s, since)})" for i, sql in enumerate(FUNNEL.values())]
    labels = list(FUNNEL)
    for r in rows(lake, " UNION ALL ".join(parts)):
        label, source, n = r.values()
        out.setdefault(source, dict.fromkeys(FUNNEL, 0))[labels[label]] = n
    return out


def version_stats(lake: Lake, version: str | int, since: int | None = None) -> VersionStats:
    """What a version holds; with `since` (a snapshot), generated rows, grades, rejections and trainings
    count only when added after it (what one iteration did)."""
    s = lake.resolve(version)
    st = VersionStats(str(version), s, since=since)

    def q(sql: str) -> list[dict]:
        return rows(lake, scoped(sql, s, since))

    st.funnel = funnel(lake, s, since)
    st.rejected = q(f"""SELECT stage, reason, count(*) AS rows FROM rejected@{s}
                                GROUP BY ALL ORDER BY 3 DESC, 1, 2""")
    st.verdicts = q(f"""SELECT ref_table, reason, count(*) AS rows FROM (
                                    SELECT ref_table, unnest(coalesce(nullif(reasons, []), [grade_reason])) AS reason
                                    FROM grades@{s} WHERE NOT accepted) GROUP BY ALL ORDER BY 3 DESC, 1, 2""")
    # Lengths as (value, how many) counted by DuckDB, expanded here: 1M completions are a few thousand values,
    # where reading every row to Python took 3 of a report's 10 s. Joined on (ref_table, ref_id) as keys: `ON
    # g.ref_table = 'traces' AND ...` in a LEFT JOIN tests the left side's constant inside the join, which
    # DuckDB runs as a nested loop (1M grades x 1M traces ran past 10 minutes).
    for r in q(f"""WITH x AS MATERIALIZED (
                       SELECT CASE WHEN g.accepted THEN 'accepted' ELSE 'rejected' END AS grp, g.words, t.tokens
                       FROM grades@{s} g LEFT JOIN (
                           SELECT 'traces' AS ref_table, trace_id AS ref_id, completion_tokens AS tokens FROM traces@{s}
                           UNION ALL SELECT 'rollouts', rollout_id, completion_tokens FROM rollouts@{s}) t
                       USING (ref_table, ref_id)
                       UNION ALL SELECT 'sft', words, NULL FROM sft@{s})
                   SELECT 'words' AS unit, grp, words AS value, count(*) AS n FROM x WHERE words IS NOT NULL GROUP BY ALL
                   UNION ALL SELECT 'tokens', grp, tokens, count(*) FROM x WHERE tokens IS NOT NULL GROUP BY ALL
                   ORDER BY unit DESC, grp, value"""):  # words first
        st.lengths.setdefault(r["unit"], {}).setdefault(r["grp"], []).extend([r["value"]] * r["n"])
    # Per model, each problem's (correct, samples), counted by DuckDB and expanded here (a row per problem was
    # 250k rows for 1M rollouts), in the order of the values as before.
    for r in q(f"""SELECT model, correct, samples, count(*) AS problems FROM (
                       SELECT r.model, count(*) FILTER (WHERE g.correct) AS correct, count(*) AS samples
                       FROM rollouts@{s} r JOIN grades@{s} g ON g.ref_table = 'rollouts' AND g.ref_id = r.rollout_id
                       WHERE g.correct IS NOT NULL GROUP BY r.problem_id, r.model)
                   GROUP BY ALL ORDER BY ALL"""):
        st.pass_counts.setdefault(r["model"], []).extend([(r["correct"], r["samples"])] * r["problems"])
    st.usage = q(f"""SELECT stage, model, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens,
                                     sum(completion_tokens) AS completion_tokens, sum(latency_s) AS latency_s
                              FROM {generations(s)} GROUP BY ALL ORDER BY ALL""")
    st.sampling = q(f"""SELECT stage, model, temperature, top_p, max_tokens,
                                        max(sample_index) + 1 AS samples_per_prompt, count(*) AS rows
                                 FROM {generations(s)} WHERE stage != 'caption' GROUP BY ALL ORDER BY ALL""")
    st.prompts = q(f"""SELECT g.stage, p.name, g.prompt_hash, p.text
                                FROM (SELECT DISTINCT stage, prompt_hash FROM {generations(s)}) g
                                LEFT JOIN (SELECT prompt_hash, any_value(name) AS name, any_value(text) AS text
                                           FROM prompts@{s} GROUP BY 1) p USING (prompt_hash) ORDER BY ALL""")
    # SELECT *: a version from before migration 8 has no stage, protocol or pass_at_k columns
    st.evals = [{"stage": None, "pass_at_k": None, "samples_per_problem": None, "protocol": None} | r
                for r in q(f"SELECT * FROM evals@{s} ORDER BY created_at")]
    st.runs = runs_until(lake, s)
    lineage(st)
    st.names = model_names(lake, s)
    for r in st.usage:
        r["name"] = short_name(r["model"], st.names)
    st.stage_time = stage_times(lake.snapshots(), s, since)
    st.per_source = q(f"""SELECT source, ref_table, count(*) AS graded, count(*) FILTER (WHERE correct) AS correct,
                                 count(*) FILTER (WHERE accepted) AS accepted
                          FROM grades@{s} GROUP BY ALL ORDER BY ALL""")
    st.finish = q(f"""SELECT stage, coalesce(finish_reason, 'not recorded') AS finish_reason, count(*) AS rows FROM (
                          SELECT 'caption' AS stage, finish_reason FROM captions@{s} WHERE origin = 'model'
                          UNION ALL SELECT 'distil', finish_reason FROM traces@{s}
                          UNION ALL SELECT 'rollout', finish_reason FROM rollouts@{s}
                          UNION ALL SELECT 'eval', finish_reason FROM eval_samples@{s})
                      GROUP BY ALL ORDER BY 1, 3 DESC, 2""")
    st.answers = q(f"""SELECT series, answer, rows FROM (
                           SELECT ref_table || ' (extracted)' AS series, coalesce(extracted, '(none)') AS answer,
                                  count(*) AS rows FROM grades@{s} GROUP BY ALL
                           UNION ALL SELECT 'problems (gold)', answer, count(*) FROM problems@{s} GROUP BY ALL)
                       QUALIFY row_number() OVER (PARTITION BY series ORDER BY rows DESC, answer) <= {TOP_ANSWERS}
                       ORDER BY series, rows DESC, answer""")
    made = {r["stage"]: r for r in q(f"""SELECT stage, count(*) AS calls, sum(completion_tokens) AS completion_tokens
                                          FROM (SELECT stage, completion_tokens FROM {generations(s)}
                                                UNION ALL SELECT 'eval', completion_tokens FROM eval_samples@{s})
                                          GROUP BY 1""")}
    for r in st.stage_time:
        r |= {"calls": None, "completion_tokens": None, "tokens_per_s": None} | made.get(r["stage"], {})
        if r["completion_tokens"] and r["wall_s"] > 0:
            r["tokens_per_s"] = r["completion_tokens"] / r["wall_s"]
    trainings(lake, st, q)
    st.examples = examples(lake, s, q)
    answered = answers(lake, s)
    st.by_type, st.by_source, st.paired = accuracy_by(answered, "type"), accuracy_by(answered), paired(lake, s)
    return st


TOP_ANSWERS = 10            # the most frequent answers shown per series
EXAMPLES = {True: 2, False: 1}  # example samples per table: accepted, not accepted
# A commit message's first words name the step that wrote it (see the modules' transaction messages).
STEPS = ("ingest", "caption", "distil", "verify", "sft set", "rl set", "rollout", "eval", "train sft", "train grpo",
         "model", "prompt template", "run ok", "run failed")


def short_name(model: str | None, names: dict[str, str]) -> str:
    """A model as a reader knows it: iter1 sft, tiny-qwen2.5-vl, a folder's own name; never a long local path."""
    if model is None:
        return "-"
    if model in names:
        return names[model]
    if model.startswith(("/", "./", "../", "~")):
        return model.rstrip("/").rsplit("/", 1)[-1]
    return model[:len("sha256:") + 12] if model.startswith("sha256:") else model


def model_names(lake: Lake, s: int) -> dict[str, str]:
    """Model identity -> short name: the loop's models by iteration and kind (iter1 sft), built-in and hub
    models by the name they were given, other folders by the folder's name."""
    out: dict[str, str] = {}
    found = rows(lake, f"""SELECT m.model_id, m.name, m.path, m.kind, t.kind AS trained, t.iteration
                           FROM models@{s} m LEFT JOIN trainings@{s} t USING (training_id)
                           ORDER BY t.kind IS NULL, m.created_at""")
    for r in found:
        if r["trained"]:
            name = f"iter{r['iteration']} {r['trained']}" if r["iteration"] is not None else f"{r['trained']} model"
        else:
            name = short_name(r["name"], {}) if r["kind"] == "folder" else r["name"]
        for key in (r["model_id"], r["name"], r["path"]):  # trainings name their base model by path or name
            if key:
                out.setdefault(key, name)
    return out


def stage_times(snapshots: list[dict], s: int, since: int | None) -> list[dict]:
    """Wall seconds per step of the runs, from the commit times: each commit's time since the commit before it
    goes to the step its message names; a run's or training's start ends an idle gap, which counts for nothing."""
    out: dict[str, dict] = {}
    previous = None
    for snap in snapshots:
        sid, message = snap["snapshot_id"], snap["commit_message"] or ""
        if sid > s:
            break
        step = next((w for w in STEPS if message.startswith(w)), None)
        if previous is not None and step and not message.endswith(": start") and sid > (since or 0):
            seconds = (snap["snapshot_time"] - previous).total_seconds()
            entry = out.setdefault(step, {"stage": step, "wall_s": 0.0, "commits": 0})
            entry["wall_s"] += seconds
            entry["commits"] += 1
        previous = snap["snapshot_time"]
    return [e for e in out.values() if e["stage"] not in ("run ok", "run failed")]


def trainings(lake: Lake, st: VersionStats, q: Callable[[str], list[dict]]) -> None:
    """The version's trainings (labelled iter1 sft, ...) and their logged curves from `training_logs`."""
    s = st.snapshot
    st.trainings = q(f"""SELECT training_id, kind, iteration, dataset, rows, status, base_model, model_id,
                                started_at, ended_at FROM trainings@{s} ORDER BY started_at""")
    for t in st.trainings:
        t["label"] = (f"iter{t['iteration']} {t['kind']}" if t["iteration"] is not None
                      else f"{t['kind']} {t['training_id'][:8]}")
        t["base"] = short_name(t["base_model"], st.names)
    labels = {t["training_id"]: t["label"] for t in st.trainings}
    if not labels:
        return
    logged = rows(lake, f"""SELECT training_id, step, name, value FROM training_logs@{s}
                            WHERE list_contains({strings(labels)}, training_id) AND step IS NOT NULL
                                  AND isfinite(value) ORDER BY training_id, name, step""")
    for r in logged:
        st.curves.setdefault(labels[r["training_id"]], {}).setdefault(r["name"], []).append((r["step"], r["value"]))


def examples(lake: Lake, s: int, q: Callable[[str], list[dict]]) -> list[dict]:
    """A few traces and rollouts (accepted and not) with their problem, caption, cleaned text and image."""
    found = []
    for table, key in (("traces", "trace_id"), ("rollouts", "rollout_id")):
        # a trace's reasoner read the caption it names; a rollout's policy saw the image, no caption
        caption, captions = (("c.caption", f"LEFT JOIN captions@{s} c ON c.caption_id = x.caption_id")
                             if table == "traces" else ("NULL::VARCHAR", ""))
        # The first keys of each verdict are picked on keys alone (min(x, n) keeps n, sorting nothing), then
        # their rows read whole: a window over every row with its texts (completion, question, caption) sorted
        # 1M wide rows, 1.5 s of a report on a 1M-trace lake (now 0.8 s, most of it joining the grades).
        found += q(f"""WITH pick AS (
                           SELECT unnest(list_slice(firsts, 1, CASE WHEN accepted THEN {EXAMPLES[True]}
                                                                    ELSE {EXAMPLES[False]} END), recursive := true)
                           FROM (SELECT coalesce(g.accepted, false) AS accepted,
                                        min({{'ref_id': x.{key}, 'grade_id': g.grade_id}}, {max(EXAMPLES.values())}) AS firsts
                                 FROM {table}@{s} x JOIN problems@{s} p USING (problem_id)
                                 LEFT JOIN grades@{s} g ON g.ref_table = '{table}' AND g.ref_id = x.{key} GROUP BY 1))
                       SELECT '{table}' AS ref_table, x.{key} AS ref_id, x.model, x.completion, x.completion_tokens,
                              x.finish_reason, coalesce(g.accepted, false) AS accepted, g.grade_reason, g.reasons,
                              g.extracted, g.cleaned, p.source, p.question, p.answer AS gold, p.image_id, {caption} AS caption
                       FROM pick JOIN {table}@{s} x ON x.{key} = pick.ref_id JOIN problems@{s} p USING (problem_id)
                       LEFT JOIN grades@{s} g ON g.grade_id = pick.grade_id
                       {captions}
                       ORDER BY accepted DESC, ref_id""")
    ids = sorted({r["image_id"] for r in found if r["image_id"]})
    images = {r["image_id"]: r for r in rows(lake, f"""SELECT image_id, bytes, format FROM images@{s}
                                                        WHERE list_contains({strings(ids)}, image_id)""")} if ids else {}
    for r in found:
        image = images.get(r["image_id"])
        r["image"], r["image_format"] = (image["bytes"], image["format"]) if image else (None, None)
    return found



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
    return rows(lake, f"""SELECT run_id, command, argv, recipe_name, recipe_hash, recipe, versions, started_at,
                                 ended_at, status, snapshot_start, snapshot_end
                          FROM runs WHERE list_contains({strings(ids)}, run_id) ORDER BY started_at""")


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
    from vlfactory.recipe import RLSetConfig, SFTSetConfig, VerifyConfig

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
