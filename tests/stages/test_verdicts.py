"""One verdict per sample, one extraction, stages scoped to their recipe: the rl set follows the current
verifier's grades, a stored answer is what its grade read, and a recipe's stages touch only its sources."""

from __future__ import annotations

import pytest

from answer_server import AnswerServer
from fault_server import FaultServer
from vlfactory.prompts import load_template
from vlfactory.stores.lake import Lake
from vlfactory.verify import grade


def flat(text: str) -> str:
    return " ".join(text.split())


def rollout_recipe(url: str, verify: str = "") -> str:
    return f"""
sources:
  - {{name: synthetic, format: synthetic, n: 12, seed: 7}}
rollout:
  backend: openai
  model: policy
  base_url: {url}
  max_retries: 0
  sampling: {{temperature: 1.0, max_tokens: 64, n: 4, seed: 3}}
rl: {{band: [0.2, 0.3], min_samples: 4}}
{verify}
"""


def near(gold: str) -> str:
    """An answer one more digit off a decimal gold: wrong at the default tolerance, right at rel_tol 0.05."""
    return gold + "4" if "." in gold and gold.replace(".", "").isdigit() else "no idea"


def test_rl_set_follows_the_current_verifier_and_old_sets_stay_at_their_tag(cli, lake_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(rollout_recipe("http://127.0.0.1:9/v1"))
    cli("run", recipe, "--stage", "ingest")
    template = load_template("rollout")
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT problem_id, question, choices, answer FROM problems").fetchall()
    texts = {pid: [f"<answer>{a}</answer>", f"<answer>{near(a)}</answer>", "<answer>no idea</answer>",
                   "<answer>no idea</answer>"] for pid, _, _, a in problems}

    def expected(rel_tol: float) -> dict[str, float]:  # the real verifier, asked directly
        return {pid: sum(grade(t, a, c, q, rel_tol=rel_tol).correct for t in texts[pid]) / 4
                for pid, q, c, a in problems}

    strict, loose = expected(1e-4), expected(0.05)
    assert strict != loose  # the setting matters on this data
    answers = {template.render(question=q, choices=c): texts[pid] for pid, q, c, _ in problems}
    with AnswerServer(answers) as server:
        recipe.write_text(rollout_recipe(server.url))
        out = flat(cli("run", recipe, "--stage", "rollout", "--stage", "verify", "--stage", "rl").output)
    assert "rl: " in out and "of 12 problems" in out, out
    cli("tag", "iter1")

    def rl() -> dict[str, float]:
        with Lake(lake_dir) as lake:
            return dict(lake.query("SELECT problem_id, pass_rate FROM rl").fetchall())

    first = rl()
    assert first == {pid: r for pid, r in strict.items() if 0.2 <= r <= 0.3}

    # new verifier settings: the rl stage refuses stale verdicts...
    recipe.write_text(rollout_recipe(server.url, "verify: {rel_tol: 0.05}"))
    res = cli("run", recipe, "--stage", "rl", ok=False)
    assert res.exit_code == 2 and "run the verify stage first" in res.output
    # ...the verify stage regrades in a new snapshot, and pass rates and the rl set move with it
    out = flat(cli("run", recipe, "--stage", "verify", "--stage", "rl").output)
    assert "48 regraded" in out and "; written" in out, out
    assert rl() == {pid: r for pid, r in loose.items() if 0.2 <= r <= 0.3} != first
    with Lake(lake_dir) as lake:
        rates = dict(lake.query("SELECT problem_id, pass_rate FROM pass_rates").fetchall())
        old = dict(lake.query("SELECT problem_id, pass_rate FROM rl@iter1").fetchall())
        old_grades = lake.query("SELECT count(*) FILTER (WHERE correct) FROM grades@iter1").fetchone()[0]
    assert rates == loose and old == first  # the old set reads unchanged at its tag
    assert old_grades == 4 * sum(strict.values())  # and so do the verdicts it was picked by


def distil_recipe(url: str, sources: str) -> str:
    return f"""
sources:
{sources}
distil:
  backend: openai
  model: reasoner
  base_url: {url}
  max_retries: 0
  sampling: {{temperature: 0.7, max_tokens: 64, n: 3, seed: 1}}
"""


def said(i: int, gold: str, choices: list[str] | None) -> list[str]:
    """Answers in the shapes reasoners write them, letters and option texts among them."""
    letter = f"({'ABCD'[min(1, len(choices) - 1)]}) {choices[-1]}" if choices else f"({gold})"
    return [f"<think>Reading it.</think> <answer>{letter}</answer>",
            f"The total is \\boxed{{{gold}}}. So the answer is {gold}." if i % 2 else "I am not sure.",
            f"<think>Maybe {gold}.</think>\nThe answer is: {choices[0] if choices else gold}"]


@pytest.mark.parametrize("slice_", ["synthetic", "tabmwp"])
def test_a_stored_answer_is_what_its_grade_read(slice_, cli, lake_dir, tmp_path, request):
    if slice_ == "synthetic":
        sources = "  - {name: synthetic, format: synthetic, n: 12, seed: 3}"
    else:  # the real slice: multiple choice with letters and option texts
        data = request.getfixturevalue("shared_data") / "tabmwp-dev1k"
        sources = (f"  - {{name: tabmwp, format: json, path: {data / 'problems.json'}, limit: 60, columns: "
                   "{question: question, answer: answer, image: 'tables/{id}.png', choices: choices, caption: table}}")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(distil_recipe("http://127.0.0.1:9/v1", sources))
    cli("run", recipe, "--stage", "ingest", "--stage", "caption")
    template = load_template("reason")
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT question, choices, caption, answer FROM problems").fetchall()
    answers = {template.render(caption=cap, question=q, choices=c): said(i, a, c)
               for i, (q, c, cap, a) in enumerate(problems)}
    with AnswerServer(answers) as server:
        recipe.write_text(distil_recipe(server.url, sources))
        cli("run", recipe, "--stage", "distil", "--stage", "verify")
    with Lake(lake_dir) as lake:
        rows = lake.query("""SELECT t.answer, g.extracted, g.correct FROM traces t
                             JOIN grades g ON g.ref_table = 'traces' AND g.ref_id = t.trace_id""").fetchall()
    assert len(rows) == 3 * len(problems)
    assert [r for r in rows if r[0] != r[1]] == []
    assert any(r[2] for r in rows) and not all(r[2] for r in rows)  # both verdicts


def test_a_recipes_stages_touch_only_its_sources(cli, lake_dir, tmp_path):
    both = tmp_path / "both.yaml"
    both.write_text("sources:\n  - {name: mine, format: synthetic, n: 8, seed: 1}\n"
                    "  - {name: other, format: synthetic, n: 8, seed: 2}\n")
    cli("run", both, "--stage", "ingest")
    with FaultServer() as server:
        mine = tmp_path / "mine.yaml"
        mine.write_text(distil_recipe(server.url, "  - {name: mine, format: synthetic, n: 8, seed: 1}"))
        out = flat(cli("run", mine, "--limit", "4").output)
        assert "caption: 4 samples" in out and "distil: 12 samples = 0 cached + 12 generated" in out, out
        assert "other" not in out and len(server.hits) == 4
    with Lake(lake_dir) as lake:
        per_source = dict(lake.query("""
            SELECT p.source, count(DISTINCT c.problem_id) || '/' || count(DISTINCT t.problem_id) || '/' ||
                   count(DISTINCT g.problem_id)
            FROM problems p LEFT JOIN captions c USING (problem_id) LEFT JOIN traces t USING (problem_id)
            LEFT JOIN grades g ON g.problem_id = p.problem_id GROUP BY 1""").fetchall())
    assert per_source == {"mine": "4/4/4", "other": "0/0/0"}  # captions/traces/grades, --limit inside the scope
