"""Evaluate a model on a benchmark source: answer from the image, verify, record accuracy.

Benchmarks are ordinary sources (the recipe's `benchmarks:` list, or any of its
`sources:`): MathVista, MathVerse or MathVision from the hub on a real
machine, the real slices in ../shared/data here. The model sees the image and
the question through the rollout template, decodes near-greedily
(OpenVLThinker: temperature ~0, up to 2,048 new tokens), and the verifier
grades each answer. Accuracy per benchmark lands in `evals`.

    vlfactory eval --model runs/iter1/grpo --benchmark dynamath --recipe recipes/quickstart.yaml
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

from vlfactory.backends import Request
from vlfactory.generation import image_part, make_backend_for, record_model, sha
from vlfactory.grading import settings_hash, verifier
from vlfactory.ingest import Reject, _images_root, column_map, load_image, map_row, read_source
from vlfactory.prompts import load_template
from vlfactory.recipe import EvalConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores.lake import Lake


@dataclass
class EvalResult:
    benchmark: str
    model: str
    problems: int
    correct: int
    skipped: int
    done_before: bool = False

    @property
    def accuracy(self) -> float:
        return self.correct / self.problems if self.problems else 0.0

    def line(self) -> str:
        before = "done before: " if self.done_before else ""
        return (f"eval {self.benchmark}: {before}{self.correct}/{self.problems} correct = {100 * self.accuracy:.1f}% "
                f"({self.model}){f'; {self.skipped} rows without an image or answer skipped' if self.skipped else ''}")


def benchmark_rows(cfg: EvalConfig) -> tuple[list, int]:
    """The benchmark's first `limit` usable rows (mapped, image checked), and how many were skipped."""
    src = cfg.benchmark
    mapping, root = column_map(src), _images_root(src)
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


def run(lake: Lake, cfg: EvalConfig, scope: Scope | None = None, progress=None) -> StageResult:
    """Evaluate once per eval key: the model's identity, the benchmark rows, the prompt, the decoding and
    the verifier. The same key again reads the recorded result instead of generating."""
    from vlfactory.verify import grade_many

    gen, src = cfg.generation, cfg.benchmark
    template = load_template(gen.prompt or "rollout", needs={"question"})
    rows, skipped = benchmark_rows(cfg)
    identity = gen.identity
    current = (verifier(), settings_hash(cfg.verify))
    key = sha("eval", identity, src.name, [(row.question, row.answer, row.choices, image.image_id) for row, image in rows], template.hash,
              dataclasses.asdict(gen.sampling), current)[:16]
    rel = lake.con.execute("SELECT * FROM lake.evals WHERE eval_key = ? ORDER BY created_at", [key])
    done = [dict(zip([d[0] for d in rel.description], r)) for r in rel.fetchall()]
    if done:
        if cfg.iteration is not None and cfg.iteration not in {d["iteration"] for d in done}:
            # the same model again in a later iteration: its score is recorded for that iteration, not recomputed
            row = {k: v for k, v in done[0].items() if k != "created_at"} | {
                "iteration": cfg.iteration, "run_id": lake.run_id, "model_name": gen.model}
            row["eval_id"] = sha("eval row", row["eval_id"], cfg.iteration)[:16]
            with lake.transaction(f"eval {src.name}: iteration {cfg.iteration} is {identity}, evaluated before"):
                lake.insert("evals", pa.Table.from_pylist([row]))
        result = EvalResult(src.name, identity, done[0]["problems"], done[0]["correct"], skipped, done_before=True)
        return StageResult("eval", wanted=result.problems, cached=result.problems, value=result,
                           summary=result.line())
    requests = [Request(str(i), [{"role": "user", "content": [
        image_part(image.image_id, image.data, image.format),
        {"type": "text", "text": template.render(question=row.question, choices=row.choices)}]}], gen.sampling)
        for i, (row, image) in enumerate(rows)]
    record_model(lake, gen, identity)
    backend = make_backend_for(gen)
    try:
        answers = {r.request.key: (r.completions[0].text if r.ok else "") for r in backend.generate(requests)}
    finally:
        backend.close()
    grades = grade_many([{"completion": answers[str(i)], "answer": row.answer, "choices": row.choices,
                          "question": row.question} for i, (row, _) in enumerate(rows)],
                        timeout_s=cfg.verify.timeout_s, rel_tol=cfg.verify.rel_tol)
    result = EvalResult(src.name, identity, len(rows), sum(g.correct for g in grades), skipped)
    record = {"model": identity, "model_name": gen.model, "benchmark": src.name, "split": src.split,
              "problems": result.problems, "correct": result.correct, "accuracy": result.accuracy,
              "snapshot_id": lake.current_snapshot(), "sampling": json.dumps(dataclasses.asdict(gen.sampling)),
              "run_id": lake.run_id, "iteration": cfg.iteration, "eval_key": key}
    record["eval_id"] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
    with lake.transaction(f"eval {src.name}: {result.correct}/{result.problems} ({identity})"):
        lake.insert("evals", pa.Table.from_pylist([record]))
    return StageResult("eval", wanted=len(rows), written=1, requests=len(requests), value=result,
                       summary=result.line())


def evaluate(lake: Lake, cfg: EvalConfig) -> EvalResult:
    return run(lake, cfg).value
