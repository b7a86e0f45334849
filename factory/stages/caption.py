"""The caption stage: a description of each problem's image, for a text-only reasoner.

A problem whose source supplies a ground-truth caption (a `caption` column:
TabMWP's table text, the synthetic source's programmatic description) gets
that caption, with no model call, unless the recipe says
`caption: {overwrite: true}`. Every other problem's image goes to the caption
model with the OpenVLThinker captioning prompt. Both land in `captions`
(`origin` = "source" or "model").

    vlfactory run recipes/quickstart.yaml --stage caption
"""

from __future__ import annotations

import pyarrow as pa

from vlfactory.stages.generation import Generation, Prompt, image_part, sha
from vlfactory.recipe import CaptionConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema, tables
from vlfactory.stores.lake import Lake

SOURCE_COLUMNS = ("caption_id", "problem_id", "image_id", "model", "caption", "origin", "request_key", "run_id")


def problems(lake: Lake, scope: Scope) -> list[tuple]:
    return tables.rows(lake, f"""SELECT p.problem_id, p.image_id, p.caption, p.source, i.format
        FROM {scope.problems()} p LEFT JOIN lake.images i USING (image_id)
        ORDER BY p.source, p.source_id, p.problem_id""")


class Caption(Generation):
    """The caption model sees the image and the captioning prompt; each sample is a `captions` row."""

    name, table, template_name = "caption", "captions", "caption"

    def prompt(self, problem: tuple) -> Prompt:
        problem_id, image_id, _, _, fmt = problem
        return Prompt(problem_id, [{"role": "user", "content": [image_part(image_id, None, fmt),
                                                               {"type": "text", "text": self.template.render()}]}],
                      {"image_id": image_id})

    def row(self, prompt: Prompt, key: str, text: str) -> dict:
        return {"caption_id": key[:16], "image_id": prompt.context["image_id"], "caption": text.strip(),
                "origin": "model"}


def run(lake: Lake, cfg: CaptionConfig | None, scope: Scope, progress=None) -> StageResult:
    """Without a caption block (cfg None), ground-truth captions only."""
    rows = problems(lake, scope)
    result = StageResult("caption")

    # Ground-truth captions: no model, keyed by their text so a changed caption is stored again.
    truth = [r for r in rows if r[2] is not None and (cfg is None or not cfg.overwrite)]
    table = pa.table({
        "caption_id": [sha("caption", r[0], r[2])[:16] for r in truth],
        "problem_id": [r[0] for r in truth], "image_id": [r[1] for r in truth],
        "model": [f"source:{r[3]}" for r in truth], "caption": [r[2] for r in truth],
        "origin": ["source"] * len(truth), "request_key": [sha("source-caption", r[0], r[2]) for r in truth],
        "run_id": [lake.run_id] * len(truth)},
        schema=pa.schema([schema.CAPTIONS.field(n) for n in SOURCE_COLUMNS]))
    if truth:
        with lake.transaction(f"caption: {len(truth)} ground-truth captions"):
            added = lake.insert("captions", table, key="request_key")
        result.wanted += len(truth)
        result.cached += len(truth) - added
        result.written += added

    todo = [r for r in rows if r[2] is None or (cfg is not None and cfg.overwrite)]
    if need_image := sum(r[1] is None for r in todo):
        result.skipped["no image"] += need_image
    todo = [r for r in todo if r[1] is not None]
    if not todo:
        return result
    if cfg is None:
        result.skipped["no caption model in the recipe"] += len(todo)
        return result

    model = Caption(cfg).run(lake, todo, progress)
    for name in ("wanted", "cached", "written", "failed", "requests", "prompt_tokens", "completion_tokens",
                 "seconds"):
        setattr(result, name, getattr(result, name) + getattr(model, name))
    result.rejected.update(model.rejected)
    return result
