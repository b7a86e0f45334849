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
from pathlib import Path

import pyarrow as pa

from vlfactory.backends import Request, Sampling
from vlfactory.generation import image_part, make_backend_for
from vlfactory.ingest import Reject, _images_root, column_map, load_image, map_row, read_source
from vlfactory.prompts import load_template
from vlfactory.recipe import Recipe, RecipeError, StageConfig


@dataclass
class EvalResult:
    benchmark: str
    model: str
    problems: int
    correct: int
    skipped: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.problems if self.problems else 0.0

    def line(self) -> str:
        return (f"eval {self.benchmark}: {self.correct}/{self.problems} correct = {100 * self.accuracy:.1f}% "
                f"({self.model}){f'; {self.skipped} rows without an image or answer skipped' if self.skipped else ''}")


def benchmark_source(recipe: Recipe, name: str):
    for src in recipe.benchmarks + recipe.sources:
        if src.name == name:
            return src
    known = ", ".join(s.name for s in recipe.benchmarks + recipe.sources)
    raise RecipeError(f"--benchmark {name!r} is not a source of the recipe (known: {known})")


def evaluate(lake, recipe: Recipe, model: str, benchmark: str, limit: int | None = None,
             stage: StageConfig | None = None, iteration: int | None = None) -> EvalResult:
    from vlfactory.verify import grade_many

    src = benchmark_source(recipe, benchmark)
    base = stage or recipe.rollout or StageConfig(model=model, backend="transformers")
    # Near-greedy decoding, one sample: the paper's evaluation setting.
    stage = dataclasses.replace(base, model=model, model_id=None,
                                sampling=dataclasses.replace(base.sampling, temperature=0.0, top_p=1.0, n=1))
    template = load_template((recipe.rollout.prompt if recipe.rollout else None) or "rollout",
                             Path(recipe.path).parent if recipe.path else None)
    mapping, root = column_map(src), _images_root(src)
    rows, skipped = [], 0
    for i, raw in enumerate(read_source(src)):
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = map_row(src, mapping, raw, i)
            image = load_image(row.image, root)
        except Reject:
            skipped += 1
            continue
        rows.append((row, image))
    sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=stage.sampling.max_tokens, n=1,
                        seed=stage.sampling.seed, stop=tuple(stage.sampling.stop))
    requests = [Request(str(i), [{"role": "user", "content": [
        image_part(image.image_id, image.data, image.format),
        {"type": "text", "text": template.render(question=row.question, choices=row.choices)}]}], sampling)
        for i, (row, image) in enumerate(rows)]
    backend = make_backend_for(stage)
    try:
        answers = {r.request.key: (r.completions[0].text if r.ok else "") for r in backend.generate(requests)}
    finally:
        backend.close()
    grades = grade_many([{"completion": answers[str(i)], "answer": row.answer, "choices": row.choices,
                          "question": row.question} for i, (row, _) in enumerate(rows)])
    result = EvalResult(benchmark, stage.identity, len(rows), sum(g.correct for g in grades), skipped)
    record = {"model": result.model, "benchmark": benchmark, "split": src.split, "problems": result.problems,
              "correct": result.correct, "accuracy": result.accuracy, "snapshot_id": lake.current_snapshot(),
              "sampling": json.dumps(dataclasses.asdict(sampling)), "run_id": lake.run_id, "iteration": iteration}
    record["eval_id"] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
    with lake.transaction(f"eval {benchmark}: {result.correct}/{result.problems} ({result.model})"):
        lake.insert("evals", pa.Table.from_pylist([record]))
    return result
