"""Evaluate a model on a benchmark source: answer from the image, grade, record accuracy, pass@k and every answer.

Benchmarks are ordinary sources (the recipe's `benchmarks:` list, or any of its
`sources:`): MathVista, MathVerse or MathVision from the hub on a real
machine, the real slices in ../shared/data here. The recipe's `eval:` block
says how (vlfactory.recipe.EvalSettings):

- the prompt: a template (default: the rollout stage's), or per benchmark the
  official formatting of OpenVLThinker's evaluation/eval_openvlthinker.py
  (`query`: the benchmark's text as is, MathVista's `query`; `hint`:
  `format_instruction`, a hint line and lettered options, for MathVision, EMMA
  and MMMU-Pro; `yes_no`; `vision`); the protocol's own suffix is appended
  (qwen-boxed: "Your final answer MUST BE put in \\boxed{}"), nothing else;
- the decoding: default greedy (the official near-greedy temperature 0.01,
  top_p 0.001, top_k 1 keeps the most likely token: greedy), n samples per
  problem;
- the protocol, one of vlfactory.verify.PROTOCOLS: `vlfactory` (the factory's
  verifier, with the recipe's verify settings), `openvlthinker` (the official
  evaluation judge), `qwen-boxed` (the official Qwen baseline: boxed answers,
  the paper's base-model numbers), `openvlthinker-data` (the official grader of
  training data), or `judge` (an LLM judge, as the official MathVerse script
  evaluation/verify_mathverse_gpt4.py: vlfactory.verify.judge_prompt renders
  what the judge model reads, judge_verdict reads "Yes" after "Judgement: "),
  through any backend (an OpenAI-compatible server for a hosted judge). The
  base model (iteration 0 of the loop) may have its own, `eval.base_protocol`
  (OpenVLThinker: qwen-boxed), for every benchmark.

Every answer lands in `eval_samples` (model identity, benchmark, row, sample
index, prompt, completion, extracted answer, verdict, the judge's text), and
the evaluation in `evals`: accuracy (pass@1 over all samples) and pass@1..n by
the unbiased estimator of Chen et al. (2021). An evaluation is done once per
eval key (the model's identity, the benchmark rows, the prompt, the decoding,
the grading): the same key again, for another iteration or stage of the loop,
gets its own `evals` row without generating.

    vlfactory eval --model runs/quickstart/grpo-... --benchmark synthetic-eval --recipe quickstart
    vlfactory sql "SELECT iteration, stage, benchmark, accuracy, pass_at_k FROM evals ORDER BY created_at"
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from math import comb

import pyarrow as pa

from vlfactory.backends import Request
from vlfactory.stages.generation import image_part, make_backend_for, record_model, sha
from vlfactory.sources.columns import Reject, column_map, map_row
from vlfactory.sources.images import images_root, load_image
from vlfactory.sources.readers import read_source
from vlfactory.prompts import load_template
from vlfactory.recipe import EvalConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake
from vlfactory.verify import JUDGE_FIELDS, PROMPT_SUFFIXES, verdict_identity


@dataclass
class EvalResult:
    benchmark: str
    model: str
    problems: int
    correct: int                      # correct samples
    skipped: int
    done_before: bool = False
    samples_per_problem: int = 1
    pass_at_k: list[float] = field(default_factory=list)  # pass@1..n

    @property
    def accuracy(self) -> float:
        n = self.problems * self.samples_per_problem
        return self.correct / n if n else 0.0

    def line(self) -> str:
        before = "done before: " if self.done_before else ""
        n = self.samples_per_problem
        passes = (f"; pass@k " + ", ".join(f"{k}: {100 * p:.1f}%" for k, p in enumerate(self.pass_at_k, 1))
                  if n > 1 else "")
        return (f"eval {self.benchmark}: {before}{self.correct}/{self.problems * n} correct = {100 * self.accuracy:.1f}%"
                f"{passes} ({self.model})"
                f"{f'; {self.skipped} rows without an image or answer skipped' if self.skipped else ''}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with c correct of n samples (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 3, 2)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n = {n})")
    return 1.0 - comb(n - c, k) / comb(n, k)


def benchmark_rows(cfg: EvalConfig) -> tuple[list, int]:
    """The benchmark's first `limit` usable rows (mapped, image checked), and how many were skipped."""
    src = cfg.benchmark
    mapping, root = column_map(src), images_root(src)
    rows, skipped = [], 0
    for i, raw in enumerate(read_source(src)):
        if cfg.limit is not None and len(rows) >= cfg.limit:
            break
        try:
            row = map_row(src, mapping, raw, i)
            image = load_image(row.image, root)
        except Reject:
            skipped += 1
            continue
        rows.append((row, image))
    return rows, skipped


def official_prompt(fmt: str, question: str, options: list[str] | None) -> str:
    """The prompt text of OpenVLThinker's evaluation/eval_openvlthinker.py (`format_instruction`), by format.

    >>> print(official_prompt("hint", "What is x?", ["1", "2"]))
    Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, E, at the end.
    Question: What is x?
    Choices:
    (A) 1
    (B) 2
    """
    if fmt == "query":
        return question
    choice_list = "\n".join(f"({chr(65 + i)}) {opt}" for i, opt in enumerate(options or []))
    if fmt == "vision":
        hint = "Hint: Please answer the question shown in the image."
        if options:
            hint += " Provide the correct option letter, e.g., A, B, C, D, E, at the end."
            return f"{hint}\nChoices:\n{choice_list}"
        return hint
    if fmt == "yes_no":
        return f"Hint: Please answer the question requiring an answer of yes or no.\nQuestion: {question}"
    if options:
        return ("Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, E, at "
                f"the end.\nQuestion: {question}\nChoices:\n{choice_list}")
    return f"Hint: Please answer the question requiring an answer.\nQuestion: {question}"


def grading_id(cfg: EvalConfig) -> list:
    """What decides the verdicts: part of the eval key."""
    if cfg.protocol == "vlfactory":   # as before protocols existed, so earlier evaluations keep their keys
        return list(verdict_identity(cfg.verify))
    if cfg.protocol != "judge":   # the official protocols, each with its prompt suffix
        return [cfg.protocol, metadata.version("mathruler")]
    judge = cfg.judge
    template = load_template(judge.prompt or "mathverse_judge", fields=JUDGE_FIELDS)
    # the answer shown to the judge as a one-element list, as the official script does (judge_prompt)
    return ["judge", judge.identity, template.hash, dataclasses.asdict(judge.sampling), "prediction as a list"]


def run(lake: Lake, cfg: EvalConfig, scope: Scope | None = None, progress=None) -> StageResult:
    """Evaluate once per eval key: the model's identity, the benchmark rows, the prompt, the decoding and
    the grading. The same key again reads the recorded result instead of generating."""
    gen, src = cfg.generation, cfg.benchmark
    template = None if cfg.format else load_template(gen.prompt or "rollout", needs={"question"})
    rows, skipped = benchmark_rows(cfg)
    identity = gen.identity
    prompt_id = template.hash if template else f"format:{cfg.format}"
    key = sha("eval", identity, src.name, [(row.question, row.answer, row.choices, image.image_id) for row, image in rows],
              prompt_id, dataclasses.asdict(gen.sampling), grading_id(cfg))[:16]
    done = lake.query("SELECT * FROM evals WHERE eval_key = ? ORDER BY created_at", [key])
    done = [dict(zip(done.columns, r)) for r in done.fetchall()]
    if done:
        return _done_before(lake, cfg, done, skipped)

    suffix = PROMPT_SUFFIXES.get(cfg.protocol, "")
    texts = [(official_prompt(cfg.format, row.question, row.choices) if cfg.format
              else template.render(question=row.question, choices=row.choices)) + suffix for row, _ in rows]
    requests = [Request(str(i), [{"role": "user", "content": [image_part(image.image_id, image.data, image.format),
                                                              {"type": "text", "text": text}]}], gen.sampling)
                for i, ((row, image), text) in enumerate(zip(rows, texts))]
    record_model(lake, gen, identity)
    n = gen.sampling.n
    answers: dict[int, list] = {}
    backend = make_backend_for(gen)
    try:
        for r in backend.generate(requests):
            answers[int(r.request.key)] = r.completions if r.ok else []
    finally:
        backend.close()
    samples = []
    for i, ((row, _), text) in enumerate(zip(rows, texts)):
        got = answers.get(i) or []
        for j in range(n):
            c = got[j] if j < len(got) else None
            samples.append({"eval_key": key, "model": identity, "benchmark": src.name, "source_id": row.source_id,
                            "sample_index": j, "question": row.question, "answer": row.answer, "prompt": text,
                            "completion": c.text if c else "", "completion_tokens": c.completion_tokens if c else None,
                            "finish_reason": c.finish_reason if c else "request_failed",
                            "words": len(c.text.split()) if c else 0, "protocol": cfg.protocol,
                            "run_id": lake.run_id, "choices": row.choices})
    _grade(cfg, samples)
    by_problem = [sum(s["correct"] for s in samples[i * n:(i + 1) * n]) for i in range(len(rows))]
    passes = [sum(pass_at_k(n, c, k) for c in by_problem) / len(rows) if rows else 0.0 for k in range(1, n + 1)]
    result = EvalResult(src.name, identity, len(rows), sum(by_problem), skipped, samples_per_problem=n,
                        pass_at_k=passes)
    record = {"model": identity, "model_name": gen.model, "benchmark": src.name, "split": src.split,
              "problems": result.problems, "correct": result.correct, "accuracy": result.accuracy,
              "snapshot_id": lake.current_snapshot(), "sampling": json.dumps(dataclasses.asdict(gen.sampling)),
              "run_id": lake.run_id, "iteration": cfg.iteration, "eval_key": key, "stage": cfg.stage,
              "protocol": cfg.protocol, "prompt_format": cfg.format or prompt_id, "samples_per_problem": n,
              "pass_at_k": passes}
    record["eval_id"] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
    with lake.transaction(f"eval {src.name}: {result.correct}/{result.problems * n} ({identity})"):
        lake.insert("evals", pa.Table.from_pylist([record]))
        lake.insert("eval_samples", pa.Table.from_pylist(
            [{k: v for k, v in s.items() if k != "choices"} for s in samples], schema=schema.EVAL_SAMPLES))
    return StageResult("eval", wanted=len(rows) * n, written=len(samples), requests=len(requests), value=result,
                       summary=result.line())


def _grade(cfg: EvalConfig, samples: list[dict]) -> None:
    """Fill extracted, correct, reason (and judge) of each sample, by the evaluation's protocol."""
    from vlfactory.verify import grade_many, judge_prompt, judge_verdict

    if cfg.protocol != "judge":
        grades = grade_many([{"completion": s["completion"], "answer": s["answer"], "choices": s["choices"],
                              "question": s["question"]} for s in samples],
                            timeout_s=cfg.verify.timeout_s, rel_tol=cfg.verify.rel_tol, protocol=cfg.protocol)
        for s, g in zip(samples, grades):
            s.update(extracted=g.extracted, correct=g.correct, reason=g.reason, judge=None)
        return
    # The official MathVerse judging: the instruction as the benchmark has it, the gold, and the answer the
    # official extraction read; the judge model's call is a generation like any other.
    judge = cfg.judge
    template = load_template(judge.prompt or "mathverse_judge", fields=JUDGE_FIELDS)
    requests = [Request(str(i), [{"role": "user", "content": judge_prompt(template, s["question"], s["answer"],
                                                                          s["completion"])}], judge.sampling)
                for i, s in enumerate(samples)]
    backend = make_backend_for(judge)
    try:
        for r in backend.generate(requests):
            s = samples[int(r.request.key)]
            s["judge"] = r.completions[0].text if r.ok else None
            g = judge_verdict(s["judge"], s["completion"])
            s.update(extracted=g.extracted, correct=g.correct, reason=g.reason)
    finally:
        backend.close()


def _done_before(lake: Lake, cfg: EvalConfig, done: list[dict], skipped: int) -> StageResult:
    """The recorded result; a new (iteration, stage) of the loop gets its own evals row, without generating."""
    first = done[0]
    if cfg.iteration is not None and (cfg.iteration, cfg.stage) not in {(d["iteration"], d["stage"]) for d in done}:
        row = {k: v for k, v in first.items() if k != "created_at"} | {
            "iteration": cfg.iteration, "stage": cfg.stage, "run_id": lake.run_id, "model_name": cfg.generation.model}
        row["eval_id"] = sha("eval row", first["eval_id"], cfg.iteration, cfg.stage)[:16]
        with lake.transaction(f"eval {cfg.benchmark.name}: iteration {cfg.iteration} {cfg.stage or ''} is "
                              f"{first['model']}, evaluated before"):
            lake.insert("evals", pa.Table.from_pylist([row]))
    result = EvalResult(cfg.benchmark.name, first["model"], first["problems"], first["correct"], skipped,
                        done_before=True, samples_per_problem=first["samples_per_problem"] or 1,
                        pass_at_k=list(first["pass_at_k"] or []))
    return StageResult("eval", wanted=result.problems, cached=result.problems, value=result, summary=result.line())


def evaluate(lake: Lake, cfg: EvalConfig) -> EvalResult:
    return run(lake, cfg).value
