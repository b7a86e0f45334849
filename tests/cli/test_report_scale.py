"""The report at scale (issue 20): every query of a version's statistics joins on keys, never a nested loop or a
cross product (a LEFT JOIN testing a constant of its left side ran one version's statistics past 10 minutes on
a 1M-trace lake), and version_stats reads counts to Python, not a row per completion, with the numbers unchanged.
The 1M-trace timing itself is `python bench/scale.py --report` (too slow for a test)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
from test_reports import build_lake, grade

from vlfactory.reports import stats
from vlfactory.reports.evals import eval_examples
from vlfactory.reports.keywords import keyword_rates
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

GROWN = 3000  # traces added over the small lake's problems, with 7 distinct lengths
POLICY = 600  # problems added with 4 rollouts of policy-2 each, 0 to 4 of them correct


@pytest.fixture(scope="module")
def grown_lake(tmp_path_factory) -> Path:
    """The reports' small lake (two iterations, tagged), then one commit of GROWN more traces and their grades,
    and POLICY more problems with their graded rollouts."""
    lake_dir = build_lake(tmp_path_factory.mktemp("scale"))
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT problem_id, source, answer FROM problems ORDER BY problem_id").fetchall()
        run = lake.start_run("test grow")
        traces, grades = [], []
        for i in range(GROWN):
            (pid, source, gold), ok, words, tid = problems[i % len(problems)], i % 3 == 0, 10 + i % 7, f"big-{i:05}"
            said = gold if ok else "no"
            traces.append({"trace_id": tid, "problem_id": pid, "sample_index": i, "model": "reasoner",
                           "prompt_hash": "reason-1", "completion": f"<think>{'wait, check ' * words}</think>"
                                                                    f"<answer>{said}</answer>",
                           "answer": said, "prompt_tokens": 80, "completion_tokens": 3 * words, "temperature": 0.6,
                           "top_p": 0.95, "max_tokens": 512, "seed": 0, "request_key": tid, "latency_s": 1.5,
                           "finish_reason": "stop", "run_id": run})
            grades.append(grade(tid, "traces", pid, source, ok, said, [] if ok else ["incorrect"], words))
        added, rollouts = [], []
        for n in range(POLICY):
            pid = f"big-p{n:04}"
            added.append({"problem_id": pid, "source": "charts", "source_id": pid, "split": "train",
                          "question": f"How tall is bar {n}?", "answer": "4", "run_id": run})
            for i in range(4):
                ok, rid = i < n % 5, f"big-r{n:04}-{i}"
                rollouts.append({"rollout_id": rid, "problem_id": pid, "sample_index": i, "model": "policy-2",
                                 "completion": "<answer>4</answer>", "completion_tokens": 5, "request_key": rid,
                                 "run_id": run})
                grades.append(grade(rid, "rollouts", pid, "charts", ok, "4" if ok else "5",
                                    [] if ok else ["incorrect"], 1))
        with lake.transaction("test grow"):
            lake.insert("problems", pa.Table.from_pylist(added, schema=schema.PROBLEMS))
            lake.insert("traces", pa.Table.from_pylist(traces, schema=schema.TRACES))
            lake.insert("rollouts", pa.Table.from_pylist(rollouts, schema=schema.ROLLOUTS))
            lake.insert("grades", pa.Table.from_pylist(grades, schema=schema.GRADES))
        lake.end_run("ok")
    return lake_dir


def sent(lake: Lake) -> list[str]:
    """Every query a version's report sends: version_stats (whole and since iter1), keyword rates, eval answers."""
    found, query = [], lake.query

    def record(sql: str, params: list | None = None):
        found.append(sql)
        return query(sql, params)

    lake.query = record
    try:
        stats.version_stats(lake, "latest")
        stats.version_stats(lake, "latest", since=lake.resolve("iter1"))
        keyword_rates(lake, ["wait", "check"])
        eval_examples(lake)
    finally:
        lake.query = query
    return found


def test_every_report_query_joins_on_keys(grown_lake):
    with Lake(grown_lake, read_only=True) as lake:
        queries = sent(lake)
        assert len(queries) > 30
        for sql in queries:
            plan = "\n".join(r[-1] for r in lake.con.execute("EXPLAIN " + lake.expand_versions(sql)).fetchall())
            assert not re.search(r"NESTED_LOOP_JOIN|BLOCKWISE_NL_JOIN|CROSS_PRODUCT", plan), (sql, plan)


def test_version_stats_reads_counts_not_rows(grown_lake, monkeypatch):
    fetched = []

    def counted(lake: Lake, sql: str, params: list | None = None) -> list[dict]:
        out = rows(lake, sql, params)
        fetched.append(len(out))
        return out

    rows = stats.rows
    monkeypatch.setattr(stats, "rows", counted)
    with Lake(grown_lake, read_only=True) as lake:
        st = stats.version_stats(lake, "latest")
        graded = lake.query("""SELECT CASE WHEN g.accepted THEN 'accepted' ELSE 'rejected' END, g.words,
                                      coalesce(t.completion_tokens, r.completion_tokens)
                               FROM grades g LEFT JOIN traces t ON g.ref_table = 'traces' AND t.trace_id = g.ref_id
                               LEFT JOIN rollouts r ON g.ref_table = 'rollouts' AND r.rollout_id = g.ref_id
                               UNION ALL SELECT 'sft', words, NULL FROM sft""").fetchall()
        passes = lake.query("""SELECT r.model, count(*) FILTER (WHERE g.correct), count(*) FROM rollouts r
                               JOIN grades g ON g.ref_table = 'rollouts' AND g.ref_id = r.rollout_id
                               WHERE g.correct IS NOT NULL GROUP BY r.problem_id, r.model""").fetchall()
    truth: dict[str, dict[str, list[int]]] = {}
    for group, words, tokens in graded:  # one row per completion, as version_stats read them before
        for unit, value in (("words", words), ("tokens", tokens)):
            if value is not None:
                truth.setdefault(unit, {}).setdefault(group, []).append(value)
    assert len(graded) > GROWN
    ordered = lambda lengths: {u: {g: sorted(v) for g, v in groups.items()} for u, groups in lengths.items()}
    assert ordered(st.lengths) == ordered(truth)
    assert list(st.lengths) == ["words", "tokens"]
    assert sum(fetched) < GROWN / 10, fetched  # counts per value, not a row per completion or per problem
    per_model: dict[str, list[tuple[int, int]]] = {}
    for model, correct, samples in sorted(passes):
        per_model.setdefault(model, []).append((correct, samples))
    assert st.pass_counts == per_model and len(per_model["policy-2"]) > POLICY
    assert st.pass_rates == {m: [c / n for c, n in v] for m, v in per_model.items()}
    # the examples are still the first keys of each verdict, read whole
    traces = [e for e in st.examples if e["ref_table"] == "traces"]
    assert [(e["ref_id"], e["accepted"]) for e in traces] == [("big-00000", True), ("big-00003", True),
                                                              ("big-00001", False)]
    assert all(e["completion"].startswith("<think>wait") and e["question"] and e["caption"] is None
               for e in traces)


def test_keyword_counts_in_one_pass_equal_a_regex_per_keyword():
    """The one-word keywords are counted from one regex of alternatives: a keyword that begins another (may,
    maybe) or lies inside one of several words (wait, but wait) still counts as its own regex finds it; words
    are what str.split() finds, leading and trailing newlines included (a regex split counted them as words)."""
    import duckdb

    from vlfactory.reports.keywords import _keyword_sql

    keywords = ["may", "maybe", "wait", "but wait", "Check", "first"]
    texts = ["\nMaybe I may check.\tBut wait, wait!\n", "may-be maybe_not waiting", "", "  but   wait  ", "first\r\n"]
    got = duckdb.sql(_keyword_sql(keywords, "FROM (SELECT unnest($t) AS completion)"),
                     params={"t": texts}).fetchone()
    found = [sum(len(re.findall(r"\b" + re.escape(k.lower()).replace(r"\ ", r"\s+") + r"\b", t.lower()))
                 for t in texts) for k in keywords]
    assert got == (len(texts), sum(len(t.split()) for t in texts), *found), got
    assert found == [2, 1, 3, 2, 1, 1]  # may-be is may; maybe_not is one word
