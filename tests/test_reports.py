"""Reports: the HTML page renders in headless Chromium with every plot, empty lakes say "no data yet",
and `show` prints a sample's question, image, trace and verdict."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner

from vlfactory.cli import main
from vlfactory.grading import settings_hash, verifier
from vlfactory.recipe import parse_recipe
from vlfactory.stages import Scope
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

RECIPE = """\
name: small
sources:
  - {name: charts, format: synthetic, n: 6, seed: 1, license: CC-BY-4.0}
  - {name: shapes, format: synthetic, n: 4, seed: 2, license: MIT}
verify: {max_words: 300}
sft: {per_problem: 1, cleaned: false}
rl: {band: [0.25, 0.75], model: policy-1, min_samples: 4}
"""
VERSION_SECTIONS = ("funnel", "rejections", "lengths", "pass-rates", "usage", "evals", "diff")


def vlf(*args, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok and result.exit_code != 0:
        raise AssertionError(f"vlfactory {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}")
    return result


def build_lake(root: Path) -> Path:
    """Two synthetic sources, then two iterations written as the stages would: captions, traces and their
    grades, rejections, rollouts of a policy with known pass rates, the sft and rl sets, evals, tags."""
    from vlfactory import rlset, sftset

    lake_dir, recipe_path = root / "lake", root / "small.yaml"
    recipe_path.write_text(RECIPE)
    vlf("ingest", recipe_path, "--lake", lake_dir)
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT problem_id, source, answer, image_id FROM problems "
                              "ORDER BY source, source_id").fetchall()
        for it in (1, 2):
            policy = f"policy-{it}"
            recipe = parse_recipe(yaml.safe_load(RECIPE.replace("policy-1", policy)), text=RECIPE,
                                  path=str(recipe_path))
            if it == 2:
                recipe.sft.candidates, recipe.sft.model = "rollouts", "policy-1"
            run = lake.start_run(f"test iteration {it}", RECIPE, "small", f"iterate {recipe_path}")
            rows = {t: [] for t in ("captions", "traces", "rollouts", "grades", "rejected", "prompts")}
            rows["prompts"] += [{"prompt_hash": f"reason-{it}", "name": "reason", "text": "Think. {question}",
                                 "run_id": run}]
            for n, (pid, source, gold, image_id) in enumerate(problems):
                if it == 1:
                    rows["captions"].append({"caption_id": f"c{n}", "problem_id": pid, "image_id": image_id,
                                             "model": "captioner", "caption": "A chart.", "origin": "model",
                                             "prompt_hash": "caption", "request_key": f"c{n}", "prompt_tokens": 50,
                                             "completion_tokens": 20, "latency_s": 0.5, "run_id": run})
                    for i in range(2):
                        ok, words, tid = (n + i) % 3 != 0, 20 + 25 * i + n, f"t{n}-{i}"
                        said = gold if ok else "wrong"
                        rows["traces"].append({
                            "trace_id": tid, "problem_id": pid, "sample_index": i, "model": "reasoner",
                            "prompt_hash": "reason-1", "completion": f"<think>{'step ' * words}</think>"
                                                                     f"<answer>{said}</answer>",
                            "answer": said, "prompt_tokens": 80, "completion_tokens": 2 * words, "temperature": 0.6,
                            "top_p": 0.95, "max_tokens": 512, "seed": 0, "request_key": tid, "latency_s": 1.5,
                            "finish_reason": "stop", "run_id": run})
                        reasons = [] if ok else ["incorrect"] + (["too_long"] if words > 40 else [])
                        rows["grades"].append(grade(tid, "traces", pid, source, ok, said, reasons, words))
                        if not ok:
                            rows["rejected"].append({"rejected_id": f"r{tid}", "stage": "verify", "reason": reasons[0],
                                                     "reasons": reasons, "detail": f"trace {tid}", "ref_id": tid,
                                                     "source": source, "run_id": run})
                for i in range(4):  # pass rates 0, 1/4, ... by problem; the second policy does better
                    ok, rid = i < (n + it - 1) % 5, f"{policy}-{n}-{i}"
                    rows["rollouts"].append({
                        "rollout_id": rid, "problem_id": pid, "sample_index": i, "model": policy,
                        "prompt_hash": "rollout", "completion": f"<answer>{gold if ok else 'no'}</answer>",
                        "answer": gold if ok else "no", "prompt_tokens": 30, "completion_tokens": 12,
                        "temperature": 1.0, "top_p": 0.99, "max_tokens": 24, "seed": 0, "request_key": rid,
                        "latency_s": 0.2, "finish_reason": "stop", "run_id": run})
                    rows["grades"].append(grade(rid, "rollouts", pid, source, ok, gold if ok else "no",
                                                [] if ok else ["incorrect"], 1))
            rows["rejected"].append({"rejected_id": f"bad{it}", "stage": "ingest", "reason": "bad_image",
                                     "detail": "row 7: truncated PNG", "source": "charts", "run_id": run})
            arrow = {"captions": schema.CAPTIONS, "traces": schema.TRACES, "rollouts": schema.ROLLOUTS,
                     "grades": schema.GRADES, "rejected": schema.REJECTED, "prompts": schema.PROMPTS}
            with lake.transaction(f"test iteration {it}"):
                for table, items in rows.items():
                    lake.insert(table, pa.Table.from_pylist(items, schema=arrow[table]))
            sftset.run(lake, recipe.stage_config("sft"), Scope.of(recipe))
            rlset.run(lake, recipe.stage_config("rl"), Scope.of(recipe))
            evals = [{"eval_id": f"e{it}{b}", "model": policy, "benchmark": b, "split": "test", "problems": 20,
                      "correct": c, "accuracy": c / 20, "run_id": run, "iteration": it}
                     for b, c in (("mathvista", 8 + 3 * it), ("dynamath", 4 + it))]
            with lake.transaction(f"evals {it}"):
                lake.insert("evals", pa.Table.from_pylist(evals))
            lake.end_run("ok")
            lake.tag(f"iter{it}")
    return lake_dir


def grade(ref: str, table: str, pid: str, source: str, ok: bool, said: str, reasons: list[str], words: int) -> dict:
    return {"grade_id": f"g-{ref}", "ref_table": table, "ref_id": ref, "problem_id": pid, "source": source,
            "verifier": verifier(), "settings_hash": settings_hash(parse_recipe(yaml.safe_load(RECIPE)).verify),
            "correct": ok, "extracted": said,
            "grade_reason": "correct" if ok else "incorrect", "reasons": reasons, "accepted": ok, "words": words + 1,
            "cleaned": None, "cleaned_words": None, "cleaned_ok": ok}


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory) -> Path:
    return build_lake(tmp_path_factory.mktemp("reports"))


class Sections(HTMLParser):
    """Per <section id>: the src of every <img>, and whether it says "no data yet"."""

    def __init__(self, text: str):
        super().__init__()
        self.images: dict[str, list[str]] = {}
        self.empty: set[str] = set()
        self.current = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.images[self.current] = []
        elif tag == "img" and self.current:
            self.images[self.current].append(attrs["src"])

    def handle_data(self, data):
        if self.current and "no data yet" in data:
            self.empty.add(self.current)


def chromium(page: Path) -> tuple[str, list[str]]:
    """The DOM after load and the page's console messages, from headless Chromium."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


def test_version_report_renders_in_chromium_with_every_plot(small_lake, tmp_path):
    out = tmp_path / "report.html"
    assert "wrote" in vlf("report", "iter2", "--out", out, "--lake", small_lake).output
    text = out.read_text()
    sections = Sections(text)
    for name in VERSION_SECTIONS:
        assert sections.images[name], f"section {name} has no plot"
        assert all(src.startswith("data:image/png;base64,") for src in sections.images[name])
    assert not sections.empty
    assert "compared with iter1" in text and "http" not in text.replace("http-equiv", "")  # self-contained
    # The page has no scripts; a probe added to a copy reports each image's decoded width, and
    # proves that console messages reach the log. Any other console line is an error of the page.
    probe = ("<script>addEventListener('load', () => { const out = {}; "
             "for (const s of document.querySelectorAll('section')) "
             "out[s.id] = [...s.querySelectorAll('img')].map(i => i.naturalWidth); "
             "document.body.dataset.images = JSON.stringify(out); console.log('vlfactory-probe'); });</script>")
    copy = tmp_path / "probed.html"
    copy.write_text(text.replace("img-src data:;", "img-src data:; script-src 'unsafe-inline';")
                    .replace("</body>", probe + "</body>"))
    dom, console = chromium(copy)
    assert len(console) == 1 and "vlfactory-probe" in console[0], console
    widths = json.loads(re.search(r'data-images="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    for name in VERSION_SECTIONS:
        assert widths[name] and all(w > 100 for w in widths[name]), (name, widths[name])
    # The unmodified page logs nothing either (no CSP violation, no failed load).
    assert chromium(out)[1] == []


def test_iterations_report(small_lake, tmp_path):
    out = tmp_path / "loop.html"
    vlf("report", "--iterations", "--out", out, "--lake", small_lake)
    sections = Sections(out.read_text())
    assert sections.images["iterations"] and sections.images["evals"]
    for it in ("iter1", "iter2"):
        for name in ("funnel", "rejections", "lengths", "pass-rates", "usage"):
            assert sections.images[f"{it}-{name}"], f"{it}: {name}"
    assert sections.images["iter2-diff"] and "iter1-diff" in sections.empty  # nothing before iter1
    _, console = chromium(out)
    assert console == []
    assert vlf("report", "iter1", "--iterations", "--lake", small_lake, ok=False).exit_code == 2


def test_empty_lake_says_no_data_yet(cli, lake_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: s, format: synthetic, n: 3}\n")
    cli("ingest", recipe)
    out = tmp_path / "r.html"
    cli("report", "--out", out)
    sections = Sections(out.read_text())
    assert sections.images["funnel"]  # three problems, nothing else yet
    assert {"rejections", "lengths", "pass-rates", "usage", "evals", "diff"} <= sections.empty
    cli("report", "--iterations", "--out", out)
    assert "no data yet" in out.read_text()


def test_version_stats_counts(small_lake):
    from vlfactory.reports.stats import version_stats

    with Lake(small_lake, read_only=True) as lake:
        one, two = version_stats(lake, "iter1"), version_stats(lake, "iter2")
    assert {s: f["problems"] for s, f in one.funnel.items()} == {"charts": 6, "shapes": 4}
    assert sum(f["traces"] for f in one.funnel.values()) == 20
    assert one.licenses == {"charts": "CC-BY-4.0", "shapes": "MIT"} and one.band == (0.25, 0.75)
    assert sum(f["rollouts"] for f in two.funnel.values()) == 80  # both policies' rollouts by iter2
    assert set(two.pass_rates) == {"policy-1", "policy-2"} and len(one.evals) == 2 and len(two.evals) == 4
    assert {(r["stage"], r["reason"]) for r in one.rejected} >= {("verify", "incorrect"), ("ingest", "bad_image")}
    assert {"accepted", "rejected", "sft"} <= set(one.lengths["words"])


def test_show_prints_question_image_trace_and_verdict(small_lake, monkeypatch):
    from vlfactory.reports.show import samples

    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: hashes stay on one line
    out = vlf("show", "iter1", "--table", "traces", "--sample", "3", "--lake", small_lake).output
    with Lake(small_lake, read_only=True) as lake:
        picked = samples(lake, "iter1", "traces", 3)
        question, image = lake.query("SELECT question, image_id FROM problems WHERE problem_id = ?",
                                     [picked[0]["problem_id"]]).fetchone()
    assert len(picked) == 3 and out.count("traces ") >= 3
    assert question.splitlines()[0] in out and f"sha256 {image}" in out and "PNG" in out
    assert picked[0]["completion"][:40] in out
    assert all(r["trace_id"] in out for r in picked)
    assert "verdict" in out and ("accepted" in out or "rejected" in out)
    # other tables, and the same rows for the same seed
    assert "verdict" in vlf("show", "iter2", "--table", "sft", "--sample", "2", "--lake", small_lake).output
    assert "prompt" in vlf("show", "iter2", "--table", "rl", "--lake", small_lake).output
    assert vlf("show", "iter1", "--table", "traces", "--sample", "3", "--lake", small_lake).output == out
    bad = vlf("show", "iter1", "--table", "nope", "--lake", small_lake, ok=False)
    assert bad.exit_code == 2 and "unknown table" in bad.output
