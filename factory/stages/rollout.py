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
from vlfactory.stages.generation import Generation, Prompt, image_part
from vlfactory.recipe import GenerationConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import tables
from vlfactory.stores.lake import Lake
from vlfactory.verify import extract_answer


def problems(lake: Lake, scope: Scope) -> list[tuple]:
    """(problem_id, question, choices, image_id, image format), in the stages' common order."""
    return tables.rows(lake, f"""SELECT p.problem_id, p.question, p.choices, p.image_id, i.format
        FROM {scope.problems()} p LEFT JOIN lake.images i USING (image_id)
        ORDER BY p.source, p.source_id, p.problem_id""")


class Rollout(Generation):
    """The policy sees the image, then the question in the rollout template; each sample is a `rollouts` row."""

    name, table, template_name, needs = "rollout", "rollouts", "rollout", frozenset({"question"})

    def prompt(self, problem: tuple) -> Prompt:
        problem_id, question, choices, image_id, fmt = problem
        text = self.template.render(question=question, choices=choices)
        return Prompt(problem_id, [{"role": "user", "content": [image_part(image_id, None, fmt),
                                                               {"type": "text", "text": text}]}])

    def row(self, prompt: Prompt, key: str, text: str) -> dict:
        return {"rollout_id": key[:16], "reasoning": split_reasoning(text), "answer": extract_answer(text)}


def run(lake: Lake, cfg: GenerationConfig, scope: Scope, progress=None) -> StageResult:
    rows = problems(lake, scope)
    with_image = [r for r in rows if r[3] is not None]
    result = Rollout(cfg).run(lake, with_image, progress)
    if len(with_image) < len(rows):
        result.skipped["no image"] += len(rows) - len(with_image)
    return result
