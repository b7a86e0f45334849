"""The rollout stage: the current policy answers each problem from its image.

The policy model (the recipe's `rollout:` block: any backend, `sampling.n`
samples per problem) sees what the trained model will see: the image, then
the rollout template (question, choices, OpenVLThinker's think/answer
instruction); no caption. Each sample is a `rollouts` row: what the model
said, with the final answer as the verifier reads it. Verdicts live in one
place, `grades`: the verify stage grades rollouts like traces, and a
problem's pass rate (the `pass_rates` view) reads those grades, so a new
verifier or new settings move pass rates and the rl set with them. Requests
go through the same cached loop as distil, keyed by the model's identity (its
content): a rerun sends nothing, a retrained model generates anew, `kill -9`
loses at most one uncommitted batch. Problems without an image are skipped.

    vlfactory run RECIPE --stage rollout --stage verify
    vlfactory sql "SELECT model, avg(pass_rate), count(*) FROM pass_rates GROUP BY model"
"""

from __future__ import annotations

from vlfactory.stages.distil import split_reasoning
from vlfactory.stages.generation import Prompt, common_row, hydrate_images, image_part, run_prompts
from vlfactory.prompts import load_template
from vlfactory.recipe import GenerationConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores.lake import Lake
from vlfactory.verify import extract_answer


def problems(lake: Lake, scope: Scope) -> list[tuple]:
    """(problem_id, question, choices, image_id, image format), in the stages' common order."""
    return lake.con.execute(f"""SELECT p.problem_id, p.question, p.choices, p.image_id, i.format
        FROM {scope.problems()} p LEFT JOIN lake.images i USING (image_id)
        ORDER BY p.source, p.source_id, p.problem_id""").fetchall()


def run(lake: Lake, cfg: GenerationConfig, scope: Scope, progress=None) -> StageResult:
    rows = problems(lake, scope)
    template = load_template(cfg.prompt or "rollout", needs={"question"})
    with_image = [r for r in rows if r[3] is not None]
    identity = cfg.identity

    def prompts():
        for problem_id, question, choices, image_id, fmt in with_image:
            text = template.render(question=question, choices=choices)
            yield Prompt(problem_id, [{"role": "user", "content": [image_part(image_id, None, fmt),
                                                                   {"type": "text", "text": text}]}])

    def build(prompt: Prompt, result, indices: list[int], keys: list[str]) -> list[dict]:
        texts = [c.text for c in result.completions]
        return [common_row(prompt, result, j, key, identity, template.hash, lake.run_id) | {
            "rollout_id": key[:16], "problem_id": prompt.ref, "sample_index": i, "completion": texts[j],
            "reasoning": split_reasoning(texts[j]), "answer": extract_answer(texts[j]), "backend": cfg.backend}
            for j, (i, key) in enumerate(zip(indices, keys))]

    result = run_prompts(lake, "rollout", "rollouts", cfg, identity, template, prompts(), build, progress,
                         hydrate=lambda ps: hydrate_images(lake, ps))
    if len(with_image) < len(rows):
        result.skipped["no image"] += len(rows) - len(with_image)
    return result
