"""Data is never code (issue 18): names that become paths are slugs (item 2), the card's shell and Markdown
quote what they embed (items 3 and 9), terminal output spells out control characters (item 10), plot labels
are text, never markup or math (item 6), and recipe values that would fail later fail at load (item 14).

Each test renders or loads the real thing (the card's Markdown parsed by markdown-it, the reproduce block
run by bash, the plots' SVG parsed as XML); nothing here needs a lake.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_data_is_never_code.py
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import stat
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from vlfactory.recipe import RecipeError, load_recipe
from vlfactory.reports.card import Config, Split, body, reproduce
from vlfactory.reports.stats import VersionStats

SOURCE = "sources:\n  - {name: syn, format: synthetic, n: 2}\n"


def _load(tmp_path: Path, text: str, name: str = "r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_recipe(path)


def _refused(tmp_path: Path, text: str, *words: str, name: str = "r.yaml") -> str:
    with pytest.raises(RecipeError) as e:
        _load(tmp_path, text, name)
    line = str(e.value)
    assert "\n" not in line and all(w in line for w in words), line
    return line


# ---- item 2: names that become paths are slugs ------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "a b", "a\nb", "a\x00b", ".hidden", "-flag", ""])
def test_a_recipe_name_that_is_not_a_slug_is_one_line(tmp_path, name):
    _refused(tmp_path, f"name: {json.dumps(name)}\n" + SOURCE, "name")


def test_names_of_grpo_stages_and_tracking_projects_are_slugs(tmp_path):
    loop = ("loop: {base_model: tiny-qwen2.5-vl, grpo_stages: [{name: ../../up, band: [0.2, 0.8]}]}\n"
            "rollout: {backend: transformers, model: tiny-qwen2.5-vl}\nrl: {}\n")
    _refused(tmp_path, SOURCE + loop, "grpo_stages[0].name")
    _refused(tmp_path, SOURCE + "tracking: {backend: tensorboard, project: ../../up}\n", "tracking.project")


def test_a_default_name_from_an_odd_file_name_is_a_slug(tmp_path):
    assert _load(tmp_path, SOURCE, name="my recipe (v2)!.yaml").name == "my-recipe-v2"
    assert _load(tmp_path, SOURCE, name="good_name-1.2.yaml").name == "good_name-1.2"


def test_tracking_writes_its_log_folder_inside_its_folder(tmp_path):
    pytest.importorskip("tensorboard")
    from vlfactory import tracking
    from vlfactory.recipe import TrackingConfig

    logs = tmp_path / "logs"
    with tracking.start(TrackingConfig("tensorboard", dir=str(logs)), "../../escape\nx") as t:
        t.log({"a": 1.0})
    made = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert made and all(logs in p.parents for p in made), made


# ---- items 3 and 9: the card's shell and Markdown ---------------------------------------------------------

EVIL = "x\nrm -rf ~; $(touch PWNED) `touch PWNED2` 'q' \"d\""


def hostile_stats() -> VersionStats:
    recipe = {"name": EVIL, "hash": "0123456789abcdef", "text": "name: x\n"}
    run = {"command": "run ingest", "recipe_name": EVIL, "recipe_hash": "0123456789abcdef",
           "argv": f"run recipe.yaml --tag v1 --limit 3 --stage {shlex.quote(EVIL)}", "versions": {"vlfactory": "0.1"}}
    prompt = {"stage": "distil", "name": "/home/someone/private/templates/reason.txt", "prompt_hash": "ab12",
              "text": "Think. ```` not the end\n```\n# Not a heading\n<script>alert(1)</script> {question}"}
    return VersionStats(
        version="v1", snapshot=7, funnel={"syn\r# Injected heading": {"problems": 3}},
        rejected=[{"stage": "ingest", "reason": "bad<img src=x onerror=alert(1)>", "rows": 1}],
        usage=[{"stage": "distil", "model": "m\n$(touch PWNED3)", "calls": 1, "prompt_tokens": 1,
                "completion_tokens": 1}],
        prompts=[prompt], runs=[run], recipes=[recipe],
        licenses={"syn\r# Injected heading": "MIT <b>bold</b>"}, settings={"verify": {"key```": "````"}})


def hostile_configs() -> list[Config]:
    rows = [{"source": "syn", "question": "What is <b>this</b>?\r# Injected heading\r\n| a | b |",
             "answer": "```", "completion": "<think>x</think>\n<answer>`` ` ``</answer>"}]
    return [Config("sft", [Split("train", 1, 10, ["sft/train-00000-of-00001.parquet"])], samples=rows)]


def test_reproduce_block_runs_as_its_words_not_as_code(tmp_path):
    """Every line of the block, run by bash with `hf` and `vlfactory` as stand-ins that record their argv: the
    hostile recipe name is one argument of the commands it belongs to and runs nothing."""
    lines = reproduce(hostile_stats(), "org/set", hostile_configs(), {})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.jsonl"
    for tool in ("hf", "vlfactory"):
        script = bindir / tool
        script.write_text(f"#!/usr/bin/env python3\nimport json, sys\n"
                          f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                          f"if sys.argv[1:2] == ['download']:\n"
                          f"    import os; os.makedirs(sys.argv[sys.argv.index('--local-dir') + 1], exist_ok=True)\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(["bash", "-e", "-c", "\n".join(lines)], cwd=work, capture_output=True, text=True,
                         env={"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert not list(tmp_path.rglob("PWNED*"))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["download", "run", "publish"], calls  # the run's own --tag v1 tags it
    rerun = calls[1]
    assert rerun[1].startswith("recipes/") and "\n" not in rerun[1] and rerun[1].endswith("-0123456789abcdef.yaml")
    assert rerun[2:] == ["--tag", "v1", "--limit", "3", "--stage", EVIL]  # kept options stay one argument each


def test_reproduce_tags_only_what_the_reruns_do_not(tmp_path):
    """Issue 18 item 17: after `vlfactory iterate`, which tags iter1, iter2, ... itself, a `vlfactory tag iter2`
    exits 2 (the tag names another snapshot); a run without --tag still needs it."""
    def block(version: str, argv: str | None, command: str) -> list[str]:
        st = VersionStats(version=version, snapshot=9, recipes=[{"name": "q", "hash": "h" * 16, "text": ""}],
                          runs=[{"command": command, "recipe_name": "q", "recipe_hash": "h" * 16, "argv": argv}])
        return reproduce(st, "org/set", hostile_configs(), {})

    assert not [x for x in block("iter2", None, "iterate") if x.startswith("vlfactory tag")]
    assert not [x for x in block("iter1-sft", "iterate q.yaml", "iterate") if x.startswith("vlfactory tag")]
    assert "vlfactory tag v1" in block("v1", "iterate q.yaml", "iterate")
    assert "vlfactory tag iter2" in block("iter2", "run q.yaml", "run ingest")
    assert not [x for x in block("iter2", "run q.yaml --tag=iter2", "run ingest") if x.startswith("vlfactory tag")]


def markdown_tokens(text: str):
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").parse(text)


def test_card_markdown_keeps_data_as_text():
    text = "\n".join(body(hostile_stats(), "org/set", hostile_configs(), {}))
    tokens = markdown_tokens(text)
    flat = [t for tok in tokens for t in [tok, *(tok.children or [])]]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert not [h for h in headings if "Injected" in h or "Not a heading" in h], headings
    assert not [t for t in flat if t.type in ("html_block", "html_inline")], "raw HTML from data reached the card"
    fences = [t for t in tokens if t.type == "fence"]
    prompt = hostile_stats().prompts[0]["text"]
    assert prompt + "\n" in [f.content for f in fences]  # the whole prompt in one fence, its backticks included
    assert "/home/someone" not in text and "reason.txt" in text
    assert "\r" not in text


def test_card_tables_keep_their_columns():
    from vlfactory.reports.card import _table

    table = _table(["a", "b"], [["x\r# y", "p|q\r\nr"], ["<b>s</b>", "t\u2028u"]])
    lines = table.strip().split("\n")
    assert len(lines) == 4 and all(len(re.findall(r"(?<!\\)\|", line)) == 3 for line in lines), lines
    assert "<b>" not in table and "&lt;b&gt;" in table


# ---- item 10: terminals -----------------------------------------------------------------------------------

ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[H\x9b31m\rover\x08"


def test_terminal_text_spells_out_control_characters():
    from vlfactory.sqlout import terminal

    out = terminal("ok" + ESCAPES + "\ttab\nline")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)
    assert "\\x1b]52" in out and "\ttab\nline" in out


def test_sql_table_and_markdown_print_no_escape_sequences():
    from vlfactory import sqlout

    for render in (sqlout.table, sqlout.markdown):
        buf = io.StringIO()
        render(["col" + ESCAPES], [["ok" + ESCAPES]], buf)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", buf.getvalue().replace("\n", "")), render
        assert "\\x1b]52" in buf.getvalue()


def test_show_prints_no_escape_sequences():
    from rich.console import Console

    from vlfactory.reports.show import render

    buf = io.StringIO()
    row = {"trace_id": "t1" + ESCAPES, "p_question": "Q" + ESCAPES, "p_answer": "A", "model": "m" + ESCAPES,
           "completion": "<answer>1</answer>" + ESCAPES, "answer": "1" + ESCAPES}
    render([row], "traces", Console(file=buf, force_terminal=True, width=120))
    text = buf.getvalue()
    for seq in ("\x1b]52", "\x1b[2J", "\x1b[H", "\x9b", "\x07", "\x08", "\r"):
        assert seq not in text, repr(seq)
    assert "\\x1b]52" in text


def test_keywords_the_report_counts_are_sql_literals():
    import duckdb

    from vlfactory.reports.keywords import _keyword_sql

    words = ["it's", "x') or 'a", "a\\b"]  # through stores.sqltext.literal, as every literal DuckDB cannot bind
    row = duckdb.sql(_keyword_sql(words, "FROM (VALUES ('It''s a\\b; x'') or ''a and it''s')) t(completion)")).fetchone()
    assert row[2:] == (2, 1, 1), row


# ---- item 6: plot labels are text ----------------------------------------------------------------------

def test_labels_from_the_data_are_text_in_the_svg_never_markup_or_math():
    """Answers and reasons come from model output: in a plot each is one text node, exactly as written (control
    characters spelled out), parsed back from the SVG as XML: no element it could open, no math it could set."""
    from xml.etree import ElementTree

    from vlfactory.reports import plots

    raw = [r"$\frac12$", "$5 and $6", '</text><script>', "a & b <c>", "\x02 bell\x07"]
    answers = [{"series": "gold", "answer": a, "rows": 3 + i} for i, a in enumerate(raw)]
    svg = plots.distributions([{"stage": "distil", "finish_reason": "$x$ & <y>", "rows": 1}], answers)
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    texts = {t.text for t in root.iter(f"{ns}text")}
    assert {r"$\frac12$", "$5 and $6", '</text><script>', "a & b <c>", "\\x02 bell\\x07",
            "distil: $x$ & <y>"} <= texts, texts
    assert {e.tag for e in root.iter()} <= {f"{ns}{t}" for t in ("svg", "g", "rect", "line", "text")}
    assert ElementTree.fromstring(plots.funnel({"</svg>$a$": {"problems": 1}}, ("problems",)))


# ---- item 14: values that pass loading and fail later ------------------------------------------------------

DISTIL = "distil: {{backend: openai, model: m, base_url: {url}, sampling: {{max_tokens: {tokens}}}}}\n"


def test_max_tokens_out_of_range_is_one_line(tmp_path):
    _refused(tmp_path, SOURCE + DISTIL.format(url="http://127.0.0.1:8000/v1", tokens=10**20), "max_tokens")
    assert _load(tmp_path, SOURCE + DISTIL.format(url="http://127.0.0.1:8000/v1", tokens=4096))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/v1", "http://", "127.0.0.1:8000/v1",
                                 "[http://a/v1, 'file:///x']"])
def test_a_base_url_that_is_not_http_is_one_line(tmp_path, url):
    _refused(tmp_path, SOURCE + DISTIL.format(url=url, tokens=64), "base_url")


def test_a_symlink_loop_is_one_line(tmp_path):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    _refused(tmp_path, f"sources:\n  - {{name: s, format: jsonl, path: {loop}}}\n", "path")
    _refused(tmp_path, SOURCE + f"lake: {loop}/lake\n", "lake")


def test_duplicate_keys_are_refused(tmp_path):
    _refused(tmp_path, "name: a\nname: b\n" + SOURCE, "duplicate", "name")
    _refused(tmp_path, SOURCE + "verify: {max_words: 10, max_words: 20}\n", "duplicate", "max_words")


def test_a_huge_recipe_is_refused_before_it_is_parsed(tmp_path):
    big = SOURCE + "description: [" + ", ".join(["1"] * 2_500_000) + "]\n"  # 7.5 MB of tiny nodes
    assert len(big) > 5_000_000
    tracemalloc.start()
    try:
        _refused(tmp_path, big, "bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB"
