"""The quickstart's teacher (the rules backend's caption-reasoner) and the captions set that teaches the
base model to see (`loop.pretrain`), with the real verifier and a real lake."""

from __future__ import annotations

import pytest

from conftest import write_recipe
from vlfactory import verify
from vlfactory.sources import synthetic
from vlfactory.backends import Request, Sampling, make_backend
from vlfactory.models import identity
from vlfactory.prompts import load_template
from vlfactory.stores.lake import Lake


def ask(backend, caption: str, question: str, choices=None, n: int = 1) -> list[str]:
    text = load_template("reason").render(caption=caption, question=question, choices=choices)
    result = next(backend.generate([Request("k", [{"role": "user", "content": text}], Sampling(n=n))]))
    assert result.ok and len(result.completions) == n
    return [c.text for c in result.completions]


@pytest.fixture(scope="module")
def reasoner():
    return make_backend({"backend": "rules", "model": "caption-reasoner"})


def test_reasoner_answers_every_shapes_problem_from_its_caption(reasoner):
    problems = [*synthetic.generate(150, seed=0, kinds=["shapes"]), *synthetic.generate(60, seed=1000, kinds=["shapes"])]
    wrong = []
    for p in problems:
        (text,) = ask(reasoner, p["caption"], p["question"], p["choices"])
        if not verify.grade(text, p["answer"], p["choices"], p["question"]).correct:
            wrong.append((p["id"], text))
        assert text.startswith("<think>") and "</think> <answer>" in text
    assert not wrong, wrong[:3]
    assert {p["question"].split()[0] for p in problems} == {"How", "What", "Which"}  # all three question kinds


def test_reasoner_reads_only_the_prompt(reasoner):
    # another colour in the description -> another answer, graded wrong against the picture's answer
    p = next(p for p in synthetic.generate(40, seed=3, kinds=["shapes"]) if p["question"] == "What color is the shape?")
    other = next(c for c in synthetic.SHAPE_COLORS if c != p["answer"])
    (text,) = ask(reasoner, p["caption"].replace(p["answer"], other), p["question"], p["choices"])
    assert verify.extract_answer(text, p["choices"]) == other
    assert not verify.grade(text, p["answer"], p["choices"], p["question"]).correct
    # a description it cannot read: a chain without an answer, which the verifier rejects
    q = next(synthetic.generate(1, seed=0, kinds=["counting"]))
    texts = ask(reasoner, q["caption"], q["question"], q["choices"], n=2)
    assert len(texts) == 2 and all(verify.extract_answer(t, q["choices"]) is None for t in texts)


def test_reasoner_ignores_sampling_and_counts_words(reasoner):
    """As its docstring says: temperature, top_p, seed, max_tokens and stop change nothing, n samples are copies
    of one chain, and token counts are words."""
    p = next(iter(synthetic.generate(1, seed=0, kinds=["shapes"])))
    text = load_template("reason").render(caption=p["caption"], question=p["question"], choices=p["choices"])
    results = [next(reasoner.generate([Request("k", [{"role": "user", "content": text}], sampling)]))
               for sampling in (Sampling(n=3), Sampling(n=3, temperature=1.5, top_p=0.5, seed=7, max_tokens=3,
                                                         stop=("</think>",)))]
    chains = [c.text for r in results for c in r.completions]
    assert len(chains) == 6 and len(set(chains)) == 1 and "<answer>" in chains[0]
    assert results[0].completions[0].completion_tokens == len(chains[0].split())
    assert results[0].prompt_tokens == len(text.split())


def test_reasoner_identity_is_its_code_and_other_models_are_refused():
    ident = identity("caption-reasoner")
    assert ident.startswith("vlfactory/caption-reasoner@sha256:") and ident == identity("Caption-Reasoner")
    with pytest.raises(ValueError, match="caption-reasoner"):
        make_backend({"backend": "rules", "model": "gpt-9"})


def test_captions_set_pairs_each_image_with_its_ground_truth_caption(cli, lake_dir, tmp_path):
    from vlfactory.recipe import SFTSetConfig, load_recipe
    from vlfactory.stages import Scope, run_stage

    recipe = write_recipe(tmp_path / "r.yaml", """
name: see
sources:
  - {name: shapes, format: synthetic, kinds: [shapes], n: 12, seed: 0}
  - {name: other, format: synthetic, kinds: [counting], n: 5, seed: 0}
""")
    cli("run", recipe, "--stage", "ingest", "--stage", "caption")
    r = load_recipe(str(recipe))
    with Lake(lake_dir) as lake:
        result = run_stage(lake, "sft", SFTSetConfig(candidates="captions", prompt="describe", cleaned=False),
                           Scope(("shapes",)))
        rows = lake.query("""SELECT s.prompt, s.completion, s.from_table, s.from_id, p.caption, c.caption_id,
                                    s.image_id = p.image_id
                             FROM sft s JOIN problems p USING (problem_id)
                             JOIN captions c ON c.problem_id = p.problem_id""").fetchall()
    assert r.name == "see" and result.written == 12 and len(rows) == 12   # the scope's source only
    for prompt, completion, from_table, from_id, caption, caption_id, same_image in rows:
        assert prompt == "Describe the image." and completion == caption and same_image
        assert from_table == "captions" and from_id == caption_id
