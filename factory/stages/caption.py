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

from vlfactory.stages.generation import Prompt, common_row, hydrate_images, image_part, run_prompts, sha
from vlfactory.prompts import load_template
from vlfactory.recipe import CaptionConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

SOURCE_COLUMNS = ("caption_id", "problem_id", "image_id", "model", "caption", "origin", "request_key", "run_id")


def problems(lake: Lake, scope: Scope) -> list[tuple]:
    return lake.con.execute(f"""SELECT p.problem_id, p.image_id, p.caption, p.source, i.format
        FROM {scope.problems()} p LEFT JOIN lake.images i USING (image_id)
        ORDER BY p.source, p.source_id, p.problem_id""").fetchall()


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

    template = load_template(cfg.prompt or "caption")
    text = template.render()
    identity = cfg.identity

    def prompts():
        for problem_id, image_id, _, _, fmt in todo:
            yield Prompt(problem_id, [{"role": "user", "content": [image_part(image_id, None, fmt),
                                                                   {"type": "text", "text": text}]}],
                         {"image_id": image_id})

    def build(prompt: Prompt, res, indices: list[int], keys: list[str]) -> list[dict]:
        out = []
        for j, (i, key) in enumerate(zip(indices, keys)):
            row = common_row(prompt, res, j, key, identity, template.hash, lake.run_id)
            out.append({k: row[k] for k in ("model", "prompt_hash", "prompt_tokens", "completion_tokens",
                                             "finish_reason", "latency_s", "request_key", "run_id")}
                       | {"caption_id": key[:16], "problem_id": prompt.ref, "image_id": prompt.context["image_id"],
                          "caption": res.completions[j].text.strip(), "origin": "model"})
        return out

    model = run_prompts(lake, "caption", "captions", cfg, identity, template, prompts(), build, progress,
                        hydrate=lambda ps: hydrate_images(lake, ps))
    for name in ("wanted", "cached", "written", "failed", "requests", "prompt_tokens", "completion_tokens",
                 "seconds"):
        setattr(result, name, getattr(result, name) + getattr(model, name))
    result.rejected.update(model.rejected)
    return result
