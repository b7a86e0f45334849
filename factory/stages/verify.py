"""The verify stage: grade every trace and rollout, reject with every reason that applies, and
clean the accepted ones for SFT.

Each sample (a `traces` or `rollouts` row) of the problems in scope gets one `grades` row:
the verifier's verdict (`vlfactory.verify.grade_many`, with the problem's question and choices),
every rejection reason that applies, and for an accepted sample its cleaned completion. A
rejected sample also lands in `rejected` (stage 'verify', `reason` its first reason, `reasons`
all of them, `ref_id` the trace or rollout id). Reasons, in the order the funnel counts them:

    problem_missing   its problem is no longer in `problems` (nothing to grade against)
    invalid_text      U+FFFD replacement characters: the model's bytes were not valid UTF-8
    unparsable_gold   math-verify cannot read the gold answer
    truncated         the model hit max_tokens (finish_reason 'length')
    repetition        opt-in (`repetition_max`): a word n-gram of `repetition_ngram` words occurs
                      more than `repetition_max` times
    too_long          opt-in: more than `max_words` words
    no_answer         no final answer found
    incorrect         the final answer is not the gold
    timeout, error    math-verify overran its time limit, or failed
    format_error      with `require_format`: not <think>...</think> ... <answer>...</answer>
    mentions_caption  opt-in: one of `forbidden_phrases` (OpenVLThinker keeps such chains; the
                      reasoning prompt invites "the description")
    duplicate         the same completion (case and spacing aside) as a lower sample_index of its problem

Cleaning (OpenVLThinker, paper v1 Table 3: MathVista 48.4 unfiltered, 62.5 with reflections
removed): the reasoning is cut at the first `reflection_keywords` phrase (the paper's: "Wait",
"But wait", "But the question") that starts a sentence or a line ("Wait," cuts, "Waiter" does
not); every line before it stays, and so does everything after `</think>` (the short
justification and the `<answer>` as written; an `<answer>{extracted}</answer>` is added when
the completion has none): `<think>\\n{kept}\\n</think>\\n{after}`, stored in `grades.cleaned`
beside the original. `cleaned_ok` when the kept reasoning is not empty, and, opt-in, it has at
most `clean_max_words` words (the paper's "under 500 words" variant, 55.0, which it did not
adopt) and with `clean_reverify` an answer the kept reasoning states itself (a \\boxed{}, "the
answer is") grades correct too (a chain only the reflection fixed). The sft set picks the
shortest correct chain by its *original* length, then uses its cleaned text, as the paper does.

With another `protocol` (vlfactory.verify.PROTOCOLS) the verdicts are that protocol's:
`openvlthinker-data` is the official grader of training data (OpenVLThinker's
generate_reasoning_thinker.py: the `<answer>` after clean_answer(), equality or mathruler, the gold as
the dataset writes it, so an option's text and not its letter), `openvlthinker` the official
evaluation judge (the gold mapped to its option letter); either needs `</answer>`. `extracted`
stays the factory's one extraction (the `answer` of traces and rollouts). The rl stage's pass rates
count these grades (the same verify block), so they agree with the verify stage by construction.

Versioned and resumable: a grade is keyed by (ref_table, ref_id, verifier, settings_hash), the
verdict's identity (`vlfactory.verify.verdict_identity`: "vlfactory.verify VERSION / math-verify
VERSION" and the hash of the recipe's `verify:` block). Samples whose grade is current are skipped; the others are graded
in batches of `BATCH`, each one transaction that deletes their older grades and verify
rejections and inserts the new ones, so the latest snapshot holds only current grades, older
ones stay readable by time travel (`grades@iter1`), and a crash loses at most one batch.

    vlfactory run RECIPE --stage verify
    vlfactory sql "SELECT source, reason, count(*) FROM rejected WHERE stage = 'verify' GROUP BY ALL"
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator

import pyarrow as pa

from vlfactory import verify
from vlfactory.stages.distil import split_reasoning
from vlfactory.recipe import VerifyConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema, tables
from vlfactory.stores.lake import DB, Lake
from vlfactory.stores.sqltext import literal

BATCH = 16384                         # samples per transaction: each batch reads the tables once, so few batches
TABLES = {"traces": "trace_id", "rollouts": "rollout_id"}
REASONS = ("problem_missing", "invalid_text", "unparsable_gold", "truncated", "repetition", "too_long",
           "no_answer", "incorrect", "timeout", "error", "format_error", "mentions_caption", "duplicate")


def _id(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

# ---- the checks ----------------------------------------------------------------------------


def repeated_ngram(words: list[str], n: int, limit: int) -> tuple[str, int] | None:
    """The most frequent n-gram of `words` and its count, when it occurs more than `limit` times."""
    if len(words) - n + 1 <= limit:
        return None
    gram, count = Counter(zip(*(words[i:] for i in range(n)))).most_common(1)[0]
    return (" ".join(gram), count) if count > limit else None


@lru_cache(maxsize=16)
def _phrases(phrases: tuple[str, ...]) -> re.Pattern | None:
    # No word character just before: "the description" also finds "the descriptions".
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, phrases)) + ")", re.I) if phrases else None


@lru_cache(maxsize=16)
def _reflection(keywords: tuple[str, ...]) -> re.Pattern:
    # At the start of a line (after markdown bullets or emphasis) or of a sentence, as a whole word.
    words = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?:^[ \t>*_#-]*|(?<=[.!?])[ \t]+|(?<=[.!?][\"')\]*])[ \t]+)(?:{words})(?!\w)",
                      re.I | re.M)


def clean(completion: str, answer: str | None, keywords: list[str]) -> tuple[str, str]:
    """(the cleaned completion, the reasoning kept): reasoning cut at the first reflection, then what
    follows `</think>` as written (an `<answer>{answer}</answer>` added when it has none).

    >>> clean("<think>3 + 4 = 7. Wait, is it? Yes.</think> So 7. <answer>7</answer>", "7", ["Wait"])[0]
    '<think>\\n3 + 4 = 7.\\n</think>\\nSo 7. <answer>7</answer>'
    """
    reasoning = split_reasoning(completion)
    cut = _reflection(tuple(keywords)).search(reasoning) if keywords else None
    kept = reasoning[:cut.start()].rstrip() if cut else reasoning
    end = completion.find("</think>")
    if end != -1:
        after = completion[end + len("</think>"):].strip()
    else:   # no think tags: the reasoning is what precedes the <answer>, if any
        start = completion.find("<answer>")
        after = completion[start:].strip() if start != -1 else ""
    if "<answer>" not in after:
        after = f"{after}\n<answer>{answer}</answer>".strip()
    return f"<think>\n{kept}\n</think>\n{after}", kept

# ---- grading rows --------------------------------------------------------------------------


def grade_rows(rows: list[dict], table: str, cfg: VerifyConfig, verifier_: str, settings: str,
               run_id: str | None) -> tuple[list[dict], list[dict]]:
    """`grades` rows and `rejected` rows for these samples.

    A row has the sample's id (`ref_id`), problem_id, sample_index, model, completion,
    finish_reason; its problem's source, question, answer, choices (None when the problem is
    missing, then `has_problem` is false); and `original`, the id of the lowest sample of its
    problem with the same text (its own id if none is lower).
    """
    have = [r for r in rows if r["has_problem"]]
    verdicts = dict(zip((r["ref_id"] for r in have), verify.grade_many(
        [(r["completion"] or "", r["answer"], r["choices"], r["question"]) for r in have],
        timeout_s=cfg.timeout_s, rel_tol=cfg.rel_tol, protocol=cfg.protocol)))
    phrases = _phrases(tuple(cfg.forbidden_phrases))
    grades, rejected, to_clean = [], [], []
    for r in rows:
        text = r["completion"] or ""
        words = text.split()
        g = verdicts.get(r["ref_id"])
        found: dict[str, str] = {}    # reason -> what it is about, for the detail line
        if g is None:
            found["problem_missing"] = f"problem {r['problem_id']} is not in problems"
        if bad := text.count("\ufffd"):
            found["invalid_text"] = f"{bad} U+FFFD characters"
        if g is not None and g.reason != "correct":
            said, gold = repr(_short(g.extracted)), repr(_short(r["answer"]))
            found[g.reason] = {"no_answer": "no final answer found", "incorrect": f"answered {said}, gold {gold}",
                               "unparsable_gold": f"math-verify cannot read the gold {gold}",
                               "timeout": f"math-verify overran {cfg.timeout_s:g}s on {said} vs {gold}",
                               }.get(g.reason, f"the verifier failed on {said} vs {gold}")
        if r["finish_reason"] == "length":
            found["truncated"] = "hit max_tokens"
        if cfg.repetition_max is not None and (
                loop := repeated_ngram([w.lower() for w in words], cfg.repetition_ngram, cfg.repetition_max)):
            found["repetition"] = f"{loop[0][:60]!r} x{loop[1]}"
        if cfg.max_words is not None and len(words) > cfg.max_words:
            found["too_long"] = f"{len(words)} words > {cfg.max_words}"
        if cfg.require_format and not verify.format_reward([text])[0]:
            found["format_error"] = "not <think>...</think> ... <answer>...</answer>"
        if phrases and (m := phrases.search(text)):
            found["mentions_caption"] = repr(m.group())
        if r["original"] != r["ref_id"]:
            found["duplicate"] = f"same text as {r['original']}"
        reasons = [k for k in REASONS if k in found]
        row = {"grade_id": _id("grade", table, r["ref_id"], verifier_, settings), "ref_table": table,
               "ref_id": r["ref_id"], "problem_id": r["problem_id"], "source": r["source"],
               "verifier": verifier_, "settings_hash": settings,
               "correct": None if g is None else g.correct,
               "extracted": verify.extract_answer(text),  # the one extraction: traces.answer and rollouts.answer too
               "grade_reason": None if g is None else g.reason, "reasons": reasons,
               "accepted": not reasons, "words": len(words), "run_id": run_id}
        grades.append(row)
        if reasons:
            detail = "; ".join(f"{k}: {found[k]}" for k in reasons)
            rejected.append({
                "rejected_id": _id("rejected", "verify", row["grade_id"]), "stage": "verify",
                "reason": reasons[0], "reasons": reasons, "ref_id": r["ref_id"], "source": r["source"],
                "detail": f"{table} {r['ref_id']} (problem {r['problem_id']}, sample {r['sample_index']}): "
                          f"{detail}".replace("\n", " "),
                "payload": json.dumps({
                    "ref_table": table, "problem_id": r["problem_id"], "sample_index": r["sample_index"],
                    "model": r["model"], "finish_reason": r["finish_reason"], "words": len(words),
                    "gold": _short(r["answer"]), "extracted": _short(row["extracted"]),
                    "grade_reason": row["grade_reason"],
                    "completion": text if len(text) <= 400 else f"{text[:200]} [...] {text[-200:]}"},
                    ensure_ascii=False),
                "run_id": run_id})
        else:
            to_clean.append((row, r))
    _clean_accepted(to_clean, cfg)
    return grades, rejected


def _clean_accepted(pairs: list[tuple[dict, dict]], cfg: VerifyConfig) -> None:
    """Fill cleaned, cleaned_words and cleaned_ok for accepted samples.

    A verdict depends only on the answer read (given the problem), so an answer that reads as
    the accepted one is correct without asking math-verify again; the others go through one
    grade_many: the cleaned completion when its answer reads differently, and (with
    `clean_reverify`) an answer the kept reasoning states itself.
    """
    items, checks = [], []
    for row, r in pairs:
        row["cleaned"], kept = clean(r["completion"], row["extracted"], cfg.reflection_keywords)
        row["cleaned_words"] = len(row["cleaned"].split())
        problem = (r["answer"], r["choices"], r["question"])
        start = len(items)
        if verify.extract_answer(row["cleaned"]) != row["extracted"]:
            items.append((row["cleaned"], *problem))
        stated = verify.stated_answer(kept) if cfg.clean_reverify else None
        if stated is not None and stated != row["extracted"]:
            items.append((f"<answer>{stated}</answer>", *problem))
        checks.append((start, len(items), kept.strip() != ""))
    verdicts = verify.grade_many(items, timeout_s=cfg.timeout_s, rel_tol=cfg.rel_tol, protocol=cfg.protocol)
    for (row, _), (start, end, kept) in zip(pairs, checks):
        row["cleaned_ok"] = (kept and all(g.correct for g in verdicts[start:end])
                             and (cfg.clean_max_words is None or row["cleaned_words"] <= cfg.clean_max_words))


def _short(s: str | None, n: int = 60) -> str | None:
    return s if s is None or len(s) <= n else s[:n] + "..."

# ---- the stage -----------------------------------------------------------------------------


@dataclass
class Funnel:
    generated: int = 0
    first: Counter = field(default_factory=Counter)     # rejected samples by their first reason
    applies: Counter = field(default_factory=Counter)   # samples each reason applies to
    accepted: int = 0
    cleaned_ok: int = 0


def funnel_lines(funnels: dict[tuple[str, str], Funnel]) -> list[str]:
    lines = []
    width = max([len(r) for f in funnels.values() for r in f.applies] + [10])
    for (table, source), f in funnels.items():
        lines.append(f"  {table} of {source}: {f.generated} generated")
        for reason in (r for r in REASONS if f.applies[r]):
            lines.append(f"    - {reason:<{width}} {f.first[reason]:>7}   (applies to {f.applies[reason]})")
        lines.append(f"    = {'accepted':<{width}} {f.accepted:>7}   ({f.cleaned_ok} clean for SFT)")
    return lines


def funnel_counts(funnels: dict[tuple[str, str], Funnel]) -> dict[str, int]:
    out = {}
    for (table, source), f in funnels.items():
        out |= {f"{table}.{source}.generated": f.generated, f"{table}.{source}.accepted": f.accepted,
                f"{table}.{source}.cleaned_ok": f.cleaned_ok}
        out |= {f"{table}.{source}.{reason}": n for reason, n in f.first.items()}
    return out


def _scope(scope: Scope) -> str:
    """SQL condition on `s.problem_id`: the problems in scope; with no limit, also samples whose
    problem is gone (graded problem_missing)."""
    orphans = "" if scope.limit is not None else f" OR s.problem_id NOT IN (SELECT problem_id FROM {DB}.problems)"
    return f"(s.problem_id IN (SELECT problem_id FROM {scope.problems()}){orphans})"


def pending(lake: Lake, table: str, current: tuple[str, str], scope: Scope) -> tuple[list[str], int, set[str]]:
    """Ids of the samples in scope without a current grade, in problem order; how many have one; and
    which of the pending ones have an older grade (to replace: only those need a delete)."""
    id_col = TABLES[table]
    rows = tables.rows(lake, f"""
        SELECT s.{id_col}, coalesce(g.current, false), g.ref_id IS NOT NULL
        FROM {DB}.{table} s LEFT JOIN {DB}.problems p ON p.problem_id = s.problem_id
        LEFT JOIN (SELECT ref_id, bool_or(verifier = ? AND settings_hash = ?) AS current FROM {DB}.grades
                   WHERE ref_table = ? GROUP BY ref_id) g ON g.ref_id = s.{id_col}
        WHERE {_scope(scope)}
        ORDER BY p.source, p.source_id, s.problem_id, s.sample_index, s.{id_col}""",
        [*current, table])
    return [r[0] for r in rows if not r[1]], sum(r[1] for r in rows), {r[0] for r in rows if r[2] and not r[1]}


def stream(lake: Lake, table: str, ids: list[str], batch: int) -> Iterator[list[dict]]:
    """These samples with their problems, in batches of `batch`, each with its `original`: the lowest
    sample (sample_index, then id) of its problem with the same text, case and spacing aside.

    One query writes every sample of the problems that have one to grade, grouped by problem, to a
    temporary Parquet file, and the batches are read from it: the lake's tables are read once per
    stage run however many batches there are, and no read stays open while the batches commit.
    """
    import tempfile

    import pyarrow.parquet as pq

    id_col = TABLES[table]
    with tempfile.TemporaryDirectory(prefix="vlfactory-verify-") as tmp:
        path = f"{tmp}/samples.parquet"
        with tables.registered(lake, "_ids", pa.table({"v": pa.array(ids, pa.string())})):
            tables.rows(lake, f"""COPY (
                SELECT s.{id_col} AS ref_id, s.problem_id, s.sample_index, s.model, s.completion, s.finish_reason,
                       p.source, p.question, p.answer, p.choices, p.problem_id IS NOT NULL AS has_problem,
                       s.{id_col} IN (SELECT v FROM _ids) AS wanted
                FROM {DB}.{table} s LEFT JOIN {DB}.problems p ON p.problem_id = s.problem_id
                WHERE s.problem_id IN (SELECT problem_id FROM {DB}.{table} WHERE {id_col} IN (SELECT v FROM _ids))
                ORDER BY s.problem_id, s.sample_index, s.{id_col}) TO {literal(path)} (FORMAT parquet)""")
        out: list[dict] = []
        problem, first = None, {}
        for chunk in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for r in chunk.to_pylist():
                if r["problem_id"] != problem:
                    problem, first = r["problem_id"], {}
                r["original"] = first.setdefault(" ".join((r["completion"] or "").lower().split()), r["ref_id"])
                if r["wanted"]:
                    out.append(r)
                    if len(out) >= batch:
                        yield out
                        out = []
        if out:
            yield out


def commit(lake: Lake, table: str, grades: list[dict], rejected: list[dict], graded_before: set[str]) -> int:
    """One snapshot: these refs' older grades and verify rejections out (only for refs graded before:
    a first grading reads neither table), the new ones in; returns how many older grades it replaced."""
    replaced = [g["ref_id"] for g in grades if g["ref_id"] in graded_before]
    accepted = sum(g["accepted"] for g in grades)
    with lake.transaction(f"verify: {len(grades)} {table} graded, {accepted} accepted"):
        old = tables.delete_in(lake, "grades", "ref_id", replaced, "ref_table = ?", [table])
        tables.delete_in(lake, "rejected", "ref_id", replaced, "stage = 'verify'")
        lake.insert("grades", pa.Table.from_pylist(grades, schema=schema.GRADES))
        lake.insert("rejected", pa.Table.from_pylist(rejected, schema=schema.REJECTED))
    return old


def funnels(lake: Lake, current: tuple[str, str], scope: Scope) -> dict[tuple[str, str], Funnel]:
    """Per (table, source): the current grades of the samples in scope, as a funnel."""
    out: dict[tuple[str, str], Funnel] = {}
    for table, id_col in TABLES.items():
        # Few distinct lists of reasons: count per list here, add up per reason below.
        rows = tables.rows(lake, f"""
            SELECT coalesce(g.source, '(no problem)') AS source, g.reasons, count(*), count(*) FILTER (g.cleaned_ok)
            FROM {DB}.grades g JOIN {DB}.{table} s ON s.{id_col} = g.ref_id
            WHERE g.ref_table = ? AND g.verifier = ? AND g.settings_hash = ? AND {_scope(scope)}
            GROUP BY ALL ORDER BY source""", [table, *current])
        for source, reasons, n, cleaned_ok in rows:
            f = out.setdefault((table, source), Funnel())
            f.generated += n
            f.cleaned_ok += cleaned_ok
            f.applies.update({r: n for r in reasons})
            if reasons:
                f.first[reasons[0]] += n
            else:
                f.accepted += n
    return out


def run(lake: Lake, cfg: VerifyConfig, scope: Scope, progress=None) -> StageResult:
    current = verify.verdict_identity(cfg)
    result = StageResult("verify")
    t0 = time.perf_counter()
    todo, before, regraded = {}, {}, 0
    for table in TABLES:
        todo[table], have, before[table] = pending(lake, table, current, scope)
        result.wanted += len(todo[table]) + have
        result.cached += have
    for table, ids in todo.items():
        for rows in stream(lake, table, ids, BATCH) if ids else ():
            grades, rejected = grade_rows(rows, table, cfg, *current, lake.run_id)
            regraded += commit(lake, table, grades, rejected, before[table])
            result.written += len(grades)
            result.rejected.update(r["reason"] for r in rejected)
            if progress:
                progress(result, len(grades))
    found = funnels(lake, current, scope)
    result.seconds = time.perf_counter() - t0
    result.value = found
    result.extra = {"regraded": regraded, **funnel_counts(found)}
    if result.written:
        again = f" ({regraded} regraded: older verifier or settings)" if regraded else ""
        result.summary = (f"verify: graded {result.written} samples{again}, {result.cached} already current, "
                          f"in {result.seconds:.1f}s ({result.written / max(result.seconds, 1e-9):.0f}/s)")
    else:
        result.summary = f"verify: nothing new: all {result.wanted} samples already graded (same verifier, settings)"
    result.notes = [f"  verifier {current[0]}, settings {current[1]}", *funnel_lines(found)]
    return result
