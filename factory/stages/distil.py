"""The distil stage (the R1 step): a text reasoner answers from caption + question.

Each problem's caption (the ground truth where its source has one, unless
the recipe overwrites captions; else the recipe's caption model's) and
question fill the reasoning template; the reasoner writes `sampling.n`
samples. Each sample is a `traces` row with the whole completion, the
reasoning part, the final answer as the verifier reads it
(`vlfactory.verify.extract_answer`, the same extraction its grade records),
token counts, finish reason, model identity, sampling settings and the
template's hash.

    vlfactory run recipes/quickstart.yaml --stage distil
"""

from __future__ import annotations

import re

from vlfactory.stages.generation import Generation, Prompt
from vlfactory.recipe import DistilConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import tables
from vlfactory.stores.lake import Lake
from vlfactory.verify import extract_answer

_THINK_OPEN = re.compile(r"^\s*<think>\s*", re.I)


def split_reasoning(completion: str) -> str:
    """The thinking part of a completion: inside <think>...</think>, else before <answer>."""
    end = completion.find("</think>")
    if end != -1:
        return _THINK_OPEN.sub("", completion[:end]).strip()
    cut = completion.find("<answer>")
    return _THINK_OPEN.sub("", completion if cut == -1 else completion[:cut]).strip()


def problems_with_captions(lake: Lake, cfg: DistilConfig, scope: Scope) -> tuple[list[tuple], int]:
    """(problem_id, question, choices, caption_id, caption) per problem, and how many lack a caption."""
    cap = cfg.captions
    prefer_source = not (cap and cap.overwrite)
    where, params = "", []
    if cap is not None:  # model captions count only when made by the recipe's caption model
        where, params = "WHERE origin = 'source' OR model = ?", [cap.identity]
    sql = f"""
        WITH chosen AS (
            SELECT problem_id, caption_id, caption, row_number() OVER (
                PARTITION BY problem_id ORDER BY (origin = 'source') = ? DESC, created_at DESC) AS rank
            FROM lake.captions {where}),
        todo AS {scope.problems()}
        SELECT t.problem_id, t.question, t.choices, c.caption_id, c.caption
        FROM todo t LEFT JOIN chosen c ON c.problem_id = t.problem_id AND c.rank = 1
        ORDER BY t.source, t.source_id, t.problem_id"""
    rows = tables.rows(lake, sql, [prefer_source, *params])
    return [r for r in rows if r[4] is not None], sum(r[4] is None for r in rows)


class Distil(Generation):
    """The reasoner reads the caption and the question in the reasoning template; each sample is a `traces` row."""

    name, table, template_name, needs = "distil", "traces", "reason", frozenset({"caption", "question"})

    def prompt(self, problem: tuple) -> Prompt:
        problem_id, question, choices, caption_id, caption = problem
        text = self.template.render(caption=caption, question=question, choices=choices)
        return Prompt(problem_id, [{"role": "user", "content": text}], {"caption_id": caption_id})

    def row(self, prompt: Prompt, key: str, text: str) -> dict:
        return {"trace_id": key[:16], "reasoning": split_reasoning(text), "answer": extract_answer(text),
                "caption_id": prompt.context["caption_id"]}


def run(lake: Lake, cfg: DistilConfig, scope: Scope, progress=None) -> StageResult:
    rows, uncaptioned = problems_with_captions(lake, cfg, scope)
    result = Distil(cfg).run(lake, rows, progress)
    if uncaptioned:
        result.skipped["no caption yet: run the caption stage"] += uncaptioned
    return result
