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

from pathlib import Path

import pyarrow as pa

from vlfactory.generation import (Prompt, Stats, common_row, hydrate_images, image_part, make_backend_for,
                                  run_prompts, sha)
from vlfactory.prompts import load_template
from vlfactory.recipe import Recipe
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake


def problems(lake: Lake, limit: int | None) -> list[tuple]:
    return lake.con.execute(f"""SELECT p.problem_id, p.image_id, p.caption, p.source, i.format
        FROM {lake.problems_in_scope(limit)} p LEFT JOIN images i USING (image_id)
        ORDER BY p.source, p.source_id, p.problem_id""").fetchall()


def run(lake: Lake, recipe: Recipe, limit: int | None = None, progress=None) -> Stats:
    stage = recipe.caption
    overwrite = bool(stage and stage.overwrite)
    rows = problems(lake, limit)
    stats = Stats("caption")

    # Ground-truth captions: no model, keyed by their text so a changed caption is stored again.
    truth = [r for r in rows if r[2] is not None and not overwrite]
    table = pa.table({
        "caption_id": [sha("caption", r[0], r[2])[:16] for r in truth],
        "problem_id": [r[0] for r in truth], "image_id": [r[1] for r in truth],
        "model": [f"source:{r[3]}" for r in truth], "caption": [r[2] for r in truth],
        "origin": ["source"] * len(truth), "request_key": [sha("source-caption", r[0], r[2]) for r in truth],
        "run_id": [lake.run_id] * len(truth)},
        schema=pa.schema([schema.CAPTIONS.field(n) for n in ("caption_id", "problem_id", "image_id", "model",
                                                             "caption", "origin", "request_key", "run_id")]))
    if truth:
        with lake.transaction(f"caption: {len(truth)} ground-truth captions"):
            added = lake.insert("captions", table, key="request_key")
        stats.samples += len(truth)
        stats.cached += len(truth) - added
        stats.done += added

    todo = [r for r in rows if r[2] is None or overwrite]
    need_image = [r for r in todo if r[1] is None]
    if need_image:
        stats.skipped["no image"] += len(need_image)
    todo = [r for r in todo if r[1] is not None]
    if not todo:
        return stats
    if stage is None:
        stats.skipped["no caption model in the recipe"] += len(todo)
        return stats

    template = load_template(stage.prompt or "caption", Path(recipe.path).parent if recipe.path else None)
    text = template.render()

    def prompts():
        for problem_id, image_id, _, _, fmt in todo:
            yield Prompt(problem_id, [{"role": "user", "content": [image_part(image_id, None, fmt),
                                                                   {"type": "text", "text": text}]}],
                         {"image_id": image_id})

    def build(prompt: Prompt, result, indices: list[int], keys: list[str]) -> list[dict]:
        out = []
        for j, (i, key) in enumerate(zip(indices, keys)):
            row = common_row(prompt, result, j, key, stage, template.hash, lake.run_id)
            out.append({k: row[k] for k in ("model", "prompt_hash", "prompt_tokens", "completion_tokens",
                                             "finish_reason", "latency_s", "request_key", "run_id")}
                       | {"caption_id": key[:16], "problem_id": prompt.ref, "image_id": prompt.context["image_id"],
                          "caption": result.completions[j].text.strip(), "origin": "model"})
        return out

    model_stats = run_prompts(lake, "caption", "captions", stage, template, prompts(), build,
                              lambda: make_backend_for(stage), progress,
                              hydrate=lambda ps: hydrate_images(lake, ps))
    for name in ("prompts", "samples", "cached", "requested", "done", "failed", "prompt_tokens",
                 "completion_tokens", "seconds"):
        setattr(stats, name, getattr(stats, name) + getattr(model_stats, name))
    return stats
