"""The `rules` backend: `caption-reasoner`, a text reasoner written as rules, for the quickstart on a CPU.

OpenVLThinker's teacher is a strong text reasoner (DeepSeek-R1) that never sees
the image: it reads a caption and the question and writes a reasoning chain.
On a machine with no GPU and no model hub, no real model can play that part
for the quickstart: SmolLM2-135M-Instruct (the one real instruction model that
installs offline, Q4_1) answers the quickstart's shape questions from their
true captions at 23.3% (90 problems, chance 33.3%; `python bench/teachers.py`),
so distillation from it teaches nothing. `caption-reasoner` stands in for the text reasoner: it reads
only the rendered prompt (the caption and the question, exactly what a model
would get), parses the description grammar of vlfactory.synthetic's `shapes`
kind, and writes a short chain and an answer in the R1 tags. Anything it
cannot parse gets a completion without an answer, which the verifier rejects
(`no_answer`), as it would a confused model's.

It is a teacher, not a shortcut: the verifier still grades every chain, the
sets, trainings and the loop are the same as with a model, and a recipe
switches to a real reasoner by changing two lines:

    distil: {backend: openai, model: deepseek-ai/DeepSeek-R1, base_url: ...}

Its identity (`models.identity("caption-reasoner")`) is a digest of this
file, so editing the rules regenerates the traces they wrote.

Where it differs from a model (tests/unit/test_teacher.py::
test_reasoner_ignores_sampling_and_counts_words):
- Sampling is ignored: `temperature`, `top_p`, `seed`, `max_tokens` and `stop`
  change nothing, and the `n` samples of a request are n copies of one chain.
  Pass rates over its samples are 0 or 1, and its traces are as diverse as
  the captions, not as a sampled model's.
- Token counts are words: a trace's prompt and completion token counts are
  whitespace-separated words, not a tokenizer's tokens, so throughput, cost and
  length figures from this backend are in words.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from vlfactory.backends import Completion, Request, Result

NAME = "caption-reasoner"

_DESCRIPTION = re.compile(r"(?:Image description|Description):\s*(?P<caption>.+?)\n\s*\n\s*Question:\s*"
                          r"(?P<question>.+?)(?:\nChoices:|\n\s*\n|$)", re.S)
_SHAPE = re.compile(r"an? (?P<size>big|small) (?P<color>\w+) (?P<kind>circle|square|triangle)"
                    r"(?: of radius (?P<radius>\d+))?")
_BIGGER = re.compile(r"Which shape is bigger, the (\w+) one or the (\w+) one\?")


@dataclass
class RulesConfig:
    model: str = NAME


def _extent(shape: dict) -> tuple[int, int]:
    return (shape["size"] == "big", int(shape["radius"] or 0))


def _listing(shapes: list[dict]) -> str:
    names = [f"a {s['size']} {s['color']} {s['kind']}" for s in shapes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def reason(caption: str, question: str) -> str:
    """A chain and an answer for a `shapes` description; a chain without an answer for anything else."""
    shapes = [m.groupdict() for m in _SHAPE.finditer(caption)]
    unsure = "<think>The description does not say enough to answer this.</think>"
    if not shapes:
        return unsure
    if question.startswith("How many shapes"):
        k = len(shapes)
        return (f"<think>I see {_listing(shapes)}: {k} shape{'s' if k > 1 else ''}.</think> "
                f"<answer>{k}</answer>")
    if question.startswith("What color is the shape") and len(shapes) == 1:
        s = shapes[0]
        return f"<think>The shape is a {s['size']} {s['color']} {s['kind']}.</think> <answer>{s['color']}</answer>"
    asked = _BIGGER.match(question)
    if asked:
        by_color = {s["color"]: s for s in shapes}
        a, b = (by_color.get(c) for c in asked.groups())
        if a is None or b is None or _extent(a) == _extent(b):
            return unsure
        big, small = (a, b) if _extent(a) > _extent(b) else (b, a)
        return (f"<think>The {big['color']} one is a {big['size']} {big['kind']} and the {small['color']} one is a "
                f"{small['size']} {small['kind']}, so the {big['color']} one is bigger.</think> "
                f"<answer>{big['color']}</answer>")
    return unsure


def _prompt_text(messages: list[dict]) -> str:
    parts = []
    for m in messages:
        content = m["content"]
        parts += [content] if isinstance(content, str) else [p.get("text") or "" for p in content]
    return "\n".join(parts)


class RulesBackend:
    def __init__(self, cfg: RulesConfig):
        if cfg.model != NAME:
            raise ValueError(f"backend rules: model {cfg.model!r} is unknown; the rules backend has {NAME!r}")
        self.model = cfg.model

    def __repr__(self) -> str:
        return f"RulesBackend(model={self.model!r})"

    def generate(self, requests: Iterable[Request]) -> Iterator[Result]:
        for r in requests:
            start = time.perf_counter()
            text = _prompt_text(r.messages)
            m = _DESCRIPTION.search(text)
            out = reason(m["caption"], m["question"].strip()) if m else \
                "<think>There is no image description in the prompt.</think>"
            completions = [Completion(out, len(out.split()), "stop") for _ in range(r.sampling.n)]
            yield Result(r, completions, prompt_tokens=len(text.split()), latency_s=time.perf_counter() - start)

    def close(self) -> None:
        pass
