"""The report's reflection-keyword section: the words the loop follows and how often they occur per 1k words
across iterations (the traces and rollouts each iteration tag added, and each evaluated model's answers).

    from vlfactory.reports.keywords import keyword_rates
    with Lake("./lake", read_only=True) as lake:
        print(keyword_rates(lake, ["wait", "verify"]))
"""

from __future__ import annotations

import re

import yaml

from vlfactory.reports.evals import eval_label, eval_order
from vlfactory.reports.reads import iteration_tags, rows
from vlfactory.reports.stats import VersionStats
from vlfactory.stores.lake import Lake
from vlfactory.stores.sqltext import literal


def tracked_keywords(st: VersionStats) -> list[str]:
    """The words the loop follows (the last recipe's loop.track_keywords), else the paper's list."""
    from vlfactory.recipe import TRACKED_KEYWORDS  # recipes load only where a report reads one

    for recipe in reversed(st.recipes):
        loop = (yaml.safe_load(recipe["text"]) or {}).get("loop") or {}
        if loop.get("track_keywords"):
            return [str(k) for k in loop["track_keywords"] if "\x00" not in str(k)]  # no NUL in SQL text
    return list(TRACKED_KEYWORDS)


def _keyword_sql(keywords: list[str], rows: str) -> str:
    """A query of the words and per-keyword counts (whole words, any case) of `completion`, summed over `rows` (a
    FROM clause). Words are the runs of characters other than space, tab, newline, form feed and carriage return.
    The one-word keywords are found in one regex pass (their alternatives: two whole words never overlap, so each
    match is one keyword's); a keyword of several words ("but wait") by its own regex, as it may overlap another.
    On 100k completions of ~250 words: 8 regexes 4.4 s -> 1.1 s, and the words 4.0 s (a regex split) -> 2.1 s."""
    single = [k for k in dict.fromkeys(k.lower() for k in keywords) if re.fullmatch(r"[a-z0-9_]+", k)]
    found = (f"regexp_extract_all(text, {literal(chr(92) + 'b(?:' + '|'.join(single) + ')' + chr(92) + 'b')})"
             if single else "[]::VARCHAR[]")
    counts = ", ".join(f"sum(len(list_filter(found, lambda x: x = {literal(k.lower())}))) AS \"{i}\""
                       if k.lower() in single else f"sum(len(regexp_extract_all(text, {literal(_word(k))}))) AS \"{i}\""
                       for i, k in enumerate(keywords))
    space = "chr(9) || chr(10) || chr(12) || chr(13)"  # tab, newline, form feed, carriage return -> space
    words = f"len(list_filter(string_split(translate(completion, {space}, '    '), ' '), lambda w: w <> ''))"
    return f"""SELECT count(*) AS samples, coalesce(sum(words), 0) AS words, {counts}
               FROM (SELECT {words} AS words, text, {found} AS found
                     FROM (SELECT completion, lower(completion) AS text {rows}))"""


def _word(keyword: str) -> str:
    return r"\b" + re.escape(keyword.lower()).replace(r"\ ", r"\s+") + r"\b"


def keyword_rates(lake: Lake, keywords: list[str]) -> list[dict]:
    """Reflection-keyword frequency per 1k words, as the paper follows it across iterations: in the traces
    and rollouts each iteration tag added (rows at iterK, not at the tag before), and in the answers of
    each evaluated model of the loop (eval samples of base, iterK sft, iterK grpo)."""
    out: list[dict] = []
    previous = None

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
            add(table, name, (k, 0), _keyword_sql(keywords, f"FROM {table}@{s}{new}"))
        previous = s
    # Each evaluated model once, at the last iteration tag (evals are never rewritten).
    tags = iteration_tags(lake)
    if tags:
        s = tags[-1][1]
        models = rows(lake, f"""SELECT DISTINCT iteration, stage, eval_key FROM evals@{s}
                                WHERE iteration IS NOT NULL AND stage IS NOT NULL""")
        for m in models:
            add("eval samples", eval_label(m), eval_order(m), _keyword_sql(keywords, f"""FROM eval_samples@{s}
                                                  WHERE eval_key = {literal(m['eval_key'])}"""))
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
