"""The rollout stage: the current policy answers each problem from its image, and every sample is graded.

The policy model (the recipe's `rollout:` block: any backend, `sampling.n`
samples per problem) sees what the trained model will see: the image, then
the rollout template (question, choices, OpenVLThinker's think/answer
instruction); no caption. Each sample is graded on the spot by the verifier
(`vlfactory.verify.grade`, the GRPO reward too) and stored in `rollouts` with
its verdict, so a problem's pass rate is one query on the `pass_rates` view,
and the `rl` stage picks the problems the policy finds hard. Requests go
through the same cached loop as distil: a rerun sends nothing, `kill -9`
loses at most one uncommitted batch. Problems without an image are skipped.

    vlfactory run RECIPE --stage rollout
    vlfactory sql "SELECT model, avg(pass_rate), count(*) FROM pass_rates GROUP BY model"
"""

from __future__ import annotations

from pathlib import Path

from vlfactory.distil import split_reasoning
from vlfactory.generation import (Prompt, Stats, common_row, hydrate_images, image_part, make_backend_for,
                                  run_prompts)
from vlfactory.prompts import load_template
from vlfactory.recipe import Recipe
from vlfactory.stores.lake import Lake
from vlfactory.verify import extract_answer, grade_many


def problems(lake: Lake, limit: int | None) -> list[tuple]:
    """(problem_id, question, choices, answer, image_id, image format), in the stages' common order."""
    return lake.con.execute(f"""SELECT p.problem_id, p.question, p.choices, p.answer, p.image_id, i.format
        FROM {lake.problems_in_scope(limit)} p LEFT JOIN images i USING (image_id)
        ORDER BY p.source, p.source_id, p.problem_id""").fetchall()


def run(lake: Lake, recipe: Recipe, limit: int | None = None, progress=None) -> Stats:
    stage = recipe.rollout
    rows = problems(lake, limit)
    if stage is None:
        stats = Stats("rollout")
        stats.skipped["no rollout model in the recipe"] += len(rows)
        return stats
    template = load_template(stage.prompt or "rollout", Path(recipe.path).parent if recipe.path else None,
                             needs={"question"})
    with_image = [r for r in rows if r[4] is not None]

    def prompts():
        for problem_id, question, choices, answer, image_id, fmt in with_image:
            text = template.render(question=question, choices=choices)
            yield Prompt(problem_id, [{"role": "user", "content": [image_part(image_id, None, fmt),
                                                                   {"type": "text", "text": text}]}],
                         {"question": question, "choices": choices, "answer": answer})

    def build(prompt: Prompt, result, indices: list[int], keys: list[str]) -> list[dict]:
        ctx = prompt.context
        texts = [c.text for c in result.completions]
        grades = grade_many([(t, ctx["answer"], ctx["choices"], ctx["question"]) for t in texts],
                            timeout_s=recipe.verify.timeout_s, rel_tol=recipe.verify.rel_tol)
        return [common_row(prompt, result, j, key, stage, template.hash, lake.run_id) | {
            "rollout_id": key[:16], "problem_id": prompt.ref, "sample_index": i, "completion": texts[j],
            "reasoning": split_reasoning(texts[j]), "answer": extract_answer(texts[j], ctx["choices"]),
            "backend": stage.backend, "correct": grades[j].correct, "grade_reason": grades[j].reason}
            for j, (i, key) in enumerate(zip(indices, keys))]

    stats = run_prompts(lake, "rollout", "rollouts", stage, template, prompts(), build,
                        lambda: make_backend_for(stage), progress, hydrate=lambda ps: hydrate_images(lake, ps))
    if len(with_image) < len(rows):
        stats.skipped["no image"] += len(rows) - len(with_image)
    return stats
