"""Reports: the HTML page renders in headless Chromium with every plot, legends cover no bar or label, no
text is cut off, small histogram groups stay visible, sample images render; iteration sections count the
rows each iteration added; empty lakes say "no data yet"; `show` prints a sample's question, image, trace
and verdict."""

from __future__ import annotations

import base64
import html
import io
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
from vlfactory.recipe import parse_recipe
from vlfactory.stages import Scope
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake
from vlfactory.verify import verdict_identity

from browser import Browser

RECIPE = """\
name: small
sources:
  - {name: charts, format: synthetic, n: 6, seed: 1, license: CC-BY-4.0}
  - {name: shapes, format: synthetic, n: 4, seed: 2, license: MIT}
verify: {max_words: 300}
sft: {per_problem: 1, cleaned: false}
rl: {band: [0.25, 0.75], model: policy-1, min_samples: 4}
"""
VERSION_SECTIONS = ("funnel", "rejections", "per-source", "lengths", "pass-rates", "distributions", "training",
                    "usage", "evals", "by-type", "pass-at-k", "diff")


def vlf(*args, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok and result.exit_code != 0:
        raise AssertionError(f"vlfactory {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}")
    return result


def build_lake(root: Path, trainings: bool = False) -> Path:
    """Two synthetic sources, then two iterations written as the stages would: captions, traces and their
    grades, rejections, rollouts of a policy with known pass rates, the sft and rl sets, evals, tags."""
    from vlfactory.stages import rl as rlset
    from vlfactory.stages import sft as sftset

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
                        "prompt_hash": "rollout",  # well-formed: iteration 2's sft set is made of these
                        "completion": f"<think>I look.</think><answer>{gold if ok else 'no'}</answer>",
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
            add_evals(lake, it, run)
            if trainings:
                add_trainings(lake, it)
            lake.end_run("ok")
            lake.tag(f"iter{it}")
    return lake_dir


# The loop's evaluations (add_evals): 12 problems of two question types; which each model got right, by index.
EVAL_QUESTIONS = ["Which shape is bigger, the red one or the blue one?"] * 6 + ["How many shapes are there?"] * 6
EVAL_GOLDS = ["red", "blue", "red", "blue", "red", "red", "2", "3", "3", "3", "4", "2"]
RIGHT = {(0, "base"): set(), (1, "sft"): set(range(6)), (1, "grpo"): set(range(8)),
         (2, "sft"): {0, 1, 2, 3, *range(6, 12)}, (2, "grpo"): set(range(12))}


def add_evals(lake: Lake, it: int, run: str) -> None:
    """The evaluations of iteration `it` as the loop stores them: evals rows (with pass@1..4 for iteration 2's
    grpo on a second benchmark) and one answer per problem in eval_samples (base with iteration 1)."""
    evals, samples = [], []
    for (k, stage), right in RIGHT.items():
        if k != it and not (k == 0 and it == 1):
            continue
        key = f"ek-{k}-{stage}"
        evals.append({"eval_id": f"e-{k}-{stage}", "eval_key": key, "model": f"policy-{max(k, 1)}",
                      "benchmark": "shapes-eval", "split": "test", "problems": 12, "correct": len(right),
                      "accuracy": len(right) / 12, "run_id": run, "iteration": k, "stage": stage,
                      "protocol": "vlfactory", "samples_per_problem": 1, "pass_at_k": [len(right) / 12]})
        samples += [{"eval_key": key, "model": f"policy-{max(k, 1)}", "benchmark": "shapes-eval", "source_id": str(i),
                     "sample_index": 0, "question": q, "answer": gold, "prompt": q,
                     "completion": f"<answer>{gold if i in right else 'no'}</answer>",
                     "extracted": gold if i in right else "no", "correct": i in right,
                     "reason": "correct" if i in right else "incorrect", "protocol": "vlfactory", "words": 1,
                     "completion_tokens": 4, "finish_reason": "stop", "run_id": run}
                    for i, (q, gold) in enumerate(zip(EVAL_QUESTIONS, EVAL_GOLDS))]
    if it == 2:
        evals.append({"eval_id": "e-k4", "eval_key": "ek-k4", "model": "policy-2", "benchmark": "shapes-k4",
                      "split": "test", "problems": 12, "correct": 24, "accuracy": 0.5, "run_id": run, "iteration": 2,
                      "stage": "grpo", "protocol": "vlfactory", "samples_per_problem": 4,
                      "pass_at_k": [0.5, 0.7, 0.8, 0.85]})
    with lake.transaction(f"evals {it}"):
        lake.insert("evals", pa.Table.from_pylist(evals))
        lake.insert("eval_samples", pa.Table.from_pylist(samples, schema=schema.EVAL_SAMPLES))


def grade(ref: str, table: str, pid: str, source: str, ok: bool, said: str, reasons: list[str], words: int) -> dict:
    verifier, settings = verdict_identity(parse_recipe(yaml.safe_load(RECIPE)).verify)
    return {"grade_id": f"g-{ref}", "ref_table": table, "ref_id": ref, "problem_id": pid, "source": source,
            "verifier": verifier, "settings_hash": settings,
            "correct": ok, "extracted": said,
            "grade_reason": "correct" if ok else "incorrect", "reasons": reasons, "accepted": ok, "words": words + 1,
            "cleaned": None, "cleaned_words": None, "cleaned_ok": ok}


def add_trainings(lake: Lake, it: int) -> None:
    """An SFT and a GRPO training of iteration `it` with their logged steps, as trainers/run.py stores them
    (tests/e2e/test_training_logs.py stores them from real TRL trainings)."""
    from vlfactory.trainers.run import log_rows

    for kind, metric in (("sft", "loss"), ("grpo", "reward")):
        tid = f"{kind}{it}"
        history = [{metric: (3.0 / step if kind == "sft" else 0.1 * step) + it, "learning_rate": 1e-5 * (5 - step),
                    "grad_norm": 2.0 / step, **({"completions/mean_length": 40.0 + step} if kind == "grpo" else {}),
                    "step": step, "epoch": step / 4} for step in range(1, 5)]
        with lake.transaction(f"train {kind} {tid}: ok"):
            lake.con.execute("INSERT INTO lake.trainings (training_id, kind, dataset, rows, status, base_model, "
                             "iteration, started_at, ended_at) VALUES (?, ?, ?, 8, 'ok', ?, ?, now(), now())",
                             [tid, kind, f"{kind}@iter{it}", "/home/someone/a/long/path/to/base-model", it])
            lake.insert("training_logs", pa.Table.from_pylist(log_rows(tid, history), schema=schema.TRAINING_LOGS))


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory) -> Path:
    return build_lake(tmp_path_factory.mktemp("reports"), trainings=True)


class Sections(HTMLParser):
    """Per <section id>: its plots (inline <svg class="plot">), the src of every <img>, and whether it says
    "no data yet"."""

    def __init__(self, text: str):
        super().__init__()
        self.plots: dict[str, int] = {}
        self.images: dict[str, list[str]] = {}
        self.empty: set[str] = set()
        self.current = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.plots[self.current], self.images[self.current] = 0, []
        elif tag == "svg" and self.current and "plot" in (attrs.get("class") or "").split():
            self.plots[self.current] += 1
        elif tag == "img" and self.current:
            self.images[self.current].append(attrs["src"])

    def handle_data(self, data):
        if self.current and "no data yet" in data:
            self.empty.add(self.current)


def chromium(page: Path) -> tuple[str, list[str]]:
    """The DOM after load and the page's console messages (CSP violations, failed loads), from headless Chromium."""
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


# In the page: per plot, legends that cover a bar or a value label, text outside the figure (cut off),
# and text that runs into other text; per length histogram, each group's drawn height and order.
GEOMETRY = """(() => {
  const hit = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5
                        && b.top < a.bottom - 0.5;
  const box = e => e.getBoundingClientRect();
  const out = {covered: [], cut: [], crowded: [], plots: 0, legends: 0, labels: 0, hist: {}};
  for (const svg of document.querySelectorAll('svg.plot')) {
    const where = svg.closest('section').id, frame = box(svg);
    out.plots++;
    const legends = [...svg.querySelectorAll('.vlf-legend')];
    const marks = [...svg.querySelectorAll('.vlf-bar, .vlf-label')].filter(e => box(e).width * box(e).height > 0);
    out.legends += legends.length;
    out.labels += svg.querySelectorAll('.vlf-label').length;
    for (const l of legends) for (const m of marks)
      if (hit(box(l), box(m))) out.covered.push([where, m.textContent || m.getAttribute('class')]);
    const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim());
    for (const t of texts) {
      const r = box(t);
      if (r.left < frame.left - 0.5 || r.right > frame.right + 0.5 || r.top < frame.top - 0.5
          || r.bottom > frame.bottom + 0.5) out.cut.push([where, t.textContent]);
    }
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++)
      if (hit(box(texts[i]), box(texts[j]))) out.crowded.push([where, texts[i].textContent, texts[j].textContent]);
    const groups = [...svg.querySelectorAll('[class^="vlf-hist-"]')];
    if (groups.length) out.hist[where] = groups.map((g, i) => [g.getAttribute('class').slice(9), box(g).height, i]);
  }
  return out;
})()"""


def geometry(page: Path, screenshot_images: bool = False) -> dict:
    with Browser(width=1280, height=1000) as b:
        b.open(page.as_uri())
        found = b.eval(GEOMETRY)
        found["images"] = []
        if screenshot_images:
            for i in range(b.eval("document.querySelectorAll('img.sample-image').length")):
                b.eval(f"document.querySelectorAll('img.sample-image')[{i}].scrollIntoView()")
                r = b.eval(f"""(() => {{ const img = document.querySelectorAll('img.sample-image')[{i}];
                               const r = img.getBoundingClientRect();
                               return [r.left, r.top, r.right, r.bottom, img.naturalWidth, img.src]; }})()""")
                shot = b.screenshot().crop(tuple(round(v) for v in r[:4]))
                found["images"].append((shot, r[4], r[5]))
    return found


def test_version_report_renders_in_chromium_with_every_plot(small_lake, tmp_path):
    from PIL import Image, ImageStat

    from vlfactory.reports.stats import version_stats

    out = tmp_path / "report.html"
    assert "wrote" in vlf("report", "iter2", "--out", out, "--lake", small_lake).output
    text = out.read_text()
    sections = Sections(text)
    for name in VERSION_SECTIONS:
        assert sections.plots[name], f"section {name} has no plot"
    assert sections.images["examples"] and all(src.startswith("data:image/") for src in sections.images["examples"])
    assert not sections.empty
    assert "compared with iter1" in text and "http" not in text.replace("http-equiv", "").replace(
        "http://www.w3.org", "")  # self-contained: nothing fetched (SVG namespaces are names, not fetches)
    assert "/home/someone" not in text and "iter2 sft" in text  # models by short names, never local paths
    found = geometry(out, screenshot_images=True)
    assert found["plots"] >= len(VERSION_SECTIONS) and found["legends"] >= 5 and found["labels"] >= 20
    assert found["covered"] == [], found["covered"]    # no legend over a bar or a value label
    assert found["cut"] == [], found["cut"]            # no text past the figure's edge ("13,53")
    assert found["crowded"] == [], found["crowded"]    # no text over other text (tick labels, value labels)
    # Length histograms, per panel: every group visible, the smaller groups drawn later (on top).
    with Lake(small_lake, read_only=True) as lake:
        lengths = version_stats(lake, "iter2").lengths
    (drawn,) = found["hist"].values()
    for unit, groups in lengths.items():
        parts = [(cls.split("-", 1)[1], h) for cls, h, _ in drawn if cls.split("-", 1)[0] == unit]
        assert {name for name, _ in parts} == set(groups) and min(h for _, h in parts) > 4, (unit, parts)
        order = list(dict.fromkeys(name for name, _ in parts))
        assert order == sorted(groups, key=lambda g: -len(groups[g])), (unit, order)
    # Sample images render: the screenshot of each shows the image's own colours, not a blank box.
    assert found["images"]
    for shot, natural_width, src in found["images"]:
        original = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert natural_width == original.width and shot.width > 50
        seen, expected = ImageStat.Stat(shot).mean, ImageStat.Stat(original.convert("RGB")).mean
        assert max(abs(a - b) for a, b in zip(seen, expected)) < 12, (seen, expected)
        assert max(ImageStat.Stat(shot).stddev) > 5  # not a uniform box
    # The unmodified page logs nothing (no CSP violation, no failed load).
    assert chromium(out)[1] == []


def test_plots_on_hard_numbers_keep_legends_labels_and_small_groups_visible(tmp_path):
    """Long labels, numbers in the millions, a group of 7 beside one of 600: what cut "13,53" off, hid the
    accepted histogram under the rejected one and put legends over bars."""
    import random

    from vlfactory.reports import plots
    from vlfactory.reports.html import CSS

    rng = random.Random(0)
    stages = ("problems", "captioned", "distilled", "solved", "in sft", "in rl")
    figures = {
        "funnel": plots.funnel({f"source-{i}": dict(zip(stages, (13_535 - i, 13_000, 12_000, 7, 5, 0)))
                                for i in range(3)}, stages),
        "usage": plots.usage([{"stage": "distil", "model": "sha256:0123456789abcdef", "name": "smollm2-135m-instruct",
                               "prompt_tokens": 9_000_000, "completion_tokens": 4_535_353},
                              {"stage": "rollout", "model": "x", "name": "iter1 sft", "prompt_tokens": 13_535,
                               "completion_tokens": 1}],
                             [{"stage": "distil", "wall_s": 3249.5}, {"stage": "rollout", "wall_s": 147.25}]),
        "lengths": plots.lengths({"words": {"accepted": [rng.randint(5, 40) for _ in range(7)],
                                            "rejected": [rng.randint(1, 400) for _ in range(600)]}}),
        "diff": plots.diff({"traces": {"added": 135_353, "removed": 0}, "rl": {"added": 24, "removed": 24}},
                           "iter1", "iter2"),
        "per-source": plots.per_source([{"source": "a-rather-long-source-name", "ref_table": "traces",
                                         "graded": 13_535, "correct": 13_000, "accepted": 12_000}]),
        "distributions": plots.distributions(  # model output as labels: control characters, long answers
            [{"stage": "distil", "finish_reason": "length", "rows": 1_353_535}],
            [{"series": "traces (extracted)", "answer": a, "rows": n}
             for a, n in (("\x02", 9), ("The answer is 42 because " * 4, 7), ("(none)", 1))]),
    }
    page = tmp_path / "plots.html"
    page.write_text(f"<!doctype html><html><head><meta charset=utf-8><style>{CSS}</style></head><body>"
                    + "".join(f'<section id="{k}">{svg}</section>' for k, svg in figures.items()) + "</body></html>")
    found = geometry(page)
    assert found["plots"] == len(figures) and found["legends"] >= 4 and "\x02" not in page.read_text()
    assert found["covered"] == [] and found["cut"] == [] and found["crowded"] == [], found
    height = {cls: h for cls, h, _ in found["hist"]["lengths"]}
    assert height["words-accepted"] > 0.2 * max(height.values()), height  # the 7 accepted ones are not flattened
    assert [c for c, _, _ in found["hist"]["lengths"]][-1] == "words-accepted"  # and drawn on top


def test_iterations_report(small_lake, tmp_path):
    out = tmp_path / "loop.html"
    vlf("report", "--iterations", "--out", out, "--lake", small_lake)
    text = out.read_text()
    sections = Sections(text)
    assert sections.plots["iterations"] and sections.plots["evals"]
    for it in ("iter1", "iter2"):
        for name in ("funnel", "rejections", "per-source", "lengths", "pass-rates", "distributions", "training",
                     "usage", "diff"):
            assert sections.plots[f"{it}-{name}"], f"{it}: {name}"
    assert "compared with the empty lake (snapshot 0)" in text  # iter1 has something before it
    assert "rows added after iter1" in text
    found = geometry(out)
    assert found["covered"] == [] and found["cut"] == [] and found["crowded"] == [], found
    _, console = chromium(out)
    assert console == []
    assert vlf("report", "iter1", "--iterations", "--lake", small_lake, ok=False).exit_code == 2


def test_iteration_sections_count_the_rows_each_iteration_added(small_lake):
    from vlfactory.reports.stats import version_stats

    with Lake(small_lake, read_only=True) as lake:
        tags = lake.tags()
        whole, own = version_stats(lake, "iter2"), version_stats(lake, "iter2", since=tags["iter1"])
        added = {t: lake.query(f"SELECT count(*) FROM {t}@iter2 WHERE {k} NOT IN (SELECT {k} FROM {t}@iter1)"
                               ).fetchone()[0] for t, k in (("traces", "trace_id"), ("rollouts", "rollout_id"))}
    total = lambda st, label: sum(f[label] for f in st.funnel.values())  # noqa: E731
    assert total(whole, "traces") == 20 and total(own, "traces") == added["traces"] == 0  # iter2 distilled nothing
    assert total(whole, "rollouts") == 80 and total(own, "rollouts") == added["rollouts"] == 40
    assert set(whole.pass_rates) == {"policy-1", "policy-2"} and set(own.pass_rates) == {"policy-2"}
    assert {t["label"] for t in own.trainings} == {"iter2 sft", "iter2 grpo"}
    assert {t["label"] for t in whole.trainings} == {"iter1 sft", "iter1 grpo", "iter2 sft", "iter2 grpo"}
    assert [v for _, v in own.curves["iter2 sft"]["loss"]] == [3.0 / s + 2 for s in range(1, 5)]
    assert all(not e["ref_table"] == "traces" for e in own.examples) and own.examples
    # wall time per step comes from the commits, and iter2's steps are only its own
    assert {r["stage"] for r in whole.stage_time} >= {"ingest", "train sft"}
    assert "ingest" not in {r["stage"] for r in own.stage_time}
    assert all(r["wall_s"] >= 0 for r in whole.stage_time)


def test_empty_lake_says_no_data_yet(cli, lake_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: s, format: synthetic, n: 3}\n")
    cli("ingest", recipe)
    out = tmp_path / "r.html"
    cli("report", "--out", out)
    sections = Sections(out.read_text())
    assert sections.plots["funnel"] and sections.plots["diff"]  # three problems, added since the empty lake
    assert {"rejections", "lengths", "pass-rates", "examples", "training", "evals", "by-type", "paired",
            "pass-at-k"} <= sections.empty
    text = out.read_text()  # each says what is missing, not just that something is
    assert "no data yet: no graded rollouts (the rollout stage has not run)" in text
    assert "no data yet: no trainings at this version" in text and "pass@k is pass@1" not in text
    cli("report", "--iterations", "--out", out)
    assert "no data yet" in out.read_text()


class Tables(HTMLParser):
    """Per <section id>: the text of each cell of each table row (header rows left out), and the contents' links."""

    def __init__(self, text: str):
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.current, self.row, self.cell, self.nav = None, None, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.rows[self.current] = []
        elif tag == "nav":
            self.nav = True
        elif tag == "a" and self.nav:
            self.links.append(attrs["href"])
        elif tag == "tr" and self.current:
            self.row = []
        elif tag == "td" and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "nav":
            self.nav = False
        elif tag == "td" and self.cell is not None:
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.row:
                self.rows[self.current].append(self.row)
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_report_answers_the_loops_questions(small_lake, tmp_path):
    """Contents link every section; accuracy by question type beside what the question alone scores; each model
    against the one before on the same problems (exact McNemar: counts each way and p); pass@k; every curve
    TRL logged; pass rates at k/n with the RL band over exactly the bars it keeps."""
    out = tmp_path / "report.html"
    vlf("report", "iter2", "--out", out, "--lake", small_lake)
    text = out.read_text()
    found = Tables(text)
    assert sorted(found.links) == sorted(f"#{s}" for s in found.rows)  # every section, once
    by_type = {(r[1], r[2]): (float(r[4]), float(r[6])) for r in found.rows["by-type"]}
    # question-only baseline, leaving each problem out: bigger: 4 red of 6 -> the reds right; counts: 1.5 of 6
    assert {t: b for (t, _), (_, b) in by_type.items()} == {"which shape is": 66.67, "how many shapes": 25.0}
    assert by_type["which shape is", "iter1 sft"][0] == 100.0 and by_type["how many shapes", "iter1 sft"][0] == 0.0
    paired = [(r[1], r[2], int(r[3]), int(r[7]), int(r[8]), r[9], float(r[10])) for r in found.rows["paired"]]
    assert paired == [("base", "iter1 sft", 12, 0, 6, "exact McNemar", 0.0312),
                      ("iter1 sft", "iter1 grpo", 12, 0, 2, "exact McNemar", 0.5),
                      ("iter1 grpo", "iter2 sft", 12, 2, 4, "exact McNemar", 0.688),
                      ("iter2 sft", "iter2 grpo", 12, 0, 2, "exact McNemar", 0.5)]
    assert "by-source" not in found.rows  # the loop's answers come from one source: its accuracy is the evals'
    sections = Sections(text)
    assert sections.plots["pass-at-k"] and sections.plots["by-type"] and not sections.empty
    training = text[text.index('<section id="training">'):text.index('<section id="usage">')]
    for title in ("loss", "reward", "completion length", "learning rate", "grad norm"):
        assert f">{title}<" in training, title
    rates = text[text.index('<section id="pass-rates">'):text.index('<section id="distributions">')]
    assert all(f">{x}<" in rates for x in ("0", "1/4", "1/2", "3/4", "1"))  # the values a rate of 4 can take
    with Browser() as b:  # the band covers the bars of rates inside it (1/4, 1/2, 3/4), no bar outside it
        b.open(out.as_uri())
        inside = b.eval("""(() => { const s = document.querySelector('#pass-rates');
            const band = s.querySelector('.vlf-band').getBoundingClientRect();
            return [...s.querySelectorAll('.vlf-bar')].map(e => e.getBoundingClientRect()).filter(r => r.width > 0)
              .map(r => [Math.round(r.left), r.left >= band.left - 0.5 && r.right <= band.right + 0.5]); })()""")
    lefts = sorted({x for x, _ in inside})
    assert len(lefts) == 2 * 5  # two policies x five values
    assert [ok for x, ok in sorted(inside)] == [False] * 2 + [True] * 6 + [False] * 2, inside


def test_accuracy_by_source_beside_its_question_only_baseline(small_lake, tmp_path):
    """With answers from a second source, the report shows each model's accuracy per source with the source's
    question-only baseline, in the table and as one dashed line per source across its bars."""
    lake_dir = tmp_path / "lake"
    shutil.copytree(small_lake, lake_dir)
    golds, right = ["red", "red", "red", "blue"], {(1, "sft"): {0, 1}, (2, "grpo"): {0, 1, 2, 3}}
    with Lake(lake_dir) as lake:
        with lake.transaction("a second benchmark"):
            lake.insert("evals", pa.Table.from_pylist(
                [{"eval_id": f"c-{k}-{stage}", "eval_key": f"c-{k}-{stage}", "model": f"policy-{k}",
                  "benchmark": "charts-eval", "split": "test", "problems": 4, "correct": len(ok),
                  "accuracy": len(ok) / 4, "iteration": k, "stage": stage, "samples_per_problem": 1}
                 for (k, stage), ok in right.items()]))
            lake.insert("eval_samples", pa.Table.from_pylist(
                [{"eval_key": f"c-{k}-{stage}", "model": f"policy-{k}", "benchmark": "charts-eval", "source_id": str(i),
                  "sample_index": 0, "question": "What colour is the bar?", "answer": gold, "correct": i in ok}
                 for (k, stage), ok in right.items() for i, gold in enumerate(golds)], schema=schema.EVAL_SAMPLES))
    out = tmp_path / "report.html"
    vlf("report", "--out", out, "--lake", lake_dir)
    text = out.read_text()
    got = {(r[0], r[1]): (int(r[2]), float(r[3]), float(r[5])) for r in Tables(text).rows["by-source"]}
    # shapes-eval: 12 problems, baselines 66.67 (6 problems) and 25 (6); charts-eval: the other golds of a red bar
    # are 2 red and 1 blue (right), of the blue bar 3 red (wrong): 3 of 4
    assert got == {("charts-eval", "iter1 sft"): (4, 50.0, 75.0), ("charts-eval", "iter2 grpo"): (4, 100.0, 75.0),
                   ("shapes-eval", "base"): (12, 0.0, 45.83), ("shapes-eval", "iter1 sft"): (12, 50.0, 45.83),
                   ("shapes-eval", "iter1 grpo"): (12, 66.67, 45.83), ("shapes-eval", "iter2 sft"): (12, 83.33, 45.83),
                   ("shapes-eval", "iter2 grpo"): (12, 100.0, 45.83)}
    section = text[text.index('<section id="by-source">'):text.index('<section id="paired">')]
    assert section.count("<svg") == 1 and section.count('class="vlf-baseline"') == 2  # a chance line per source


def test_bars_are_drawn_to_scale_with_round_ticks():
    """A bar's length is its value times one scale for the whole axes, the ticks are round numbers inside the
    axes, and a label past 45% of the panel is cut with an ellipsis, never left to run off the figure."""
    from vlfactory.reports import figures

    svg = figures.figure([figures.HBars(["a", "b" * 200, "c"], [{"label": "rows", "values": [10, 20, 35],
                                                                  "color": "#000"}])])
    widths = [float(w) for w in re.findall(r'class="vlf-bar" x="[^"]+" y="[^"]+" width="([^"]+)"', svg)]
    assert len(widths) == 3 and abs(widths[1] / widths[0] - 2) < 0.02 and abs(widths[2] / widths[0] - 3.5) < 0.02
    assert "b" * 200 not in svg and "b…<" in svg
    assert figures.ticks(0, 1234) == [0, 250, 500, 750, 1000] and figures.ticks(0, 105) == [0, 25, 50, 75, 100]
    assert figures.ticks(0, 13_535_353) == [0, 5e6, 10e6] and figures.ticks(0.3, 0.71) == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert [figures.short_number(x) for x in (0, 0.25, 1500, 2_500_000, 2.5e-5)] == ["0", "0.25", "1.5k", "2.5M",
                                                                                        "2.5e-5"]


def test_an_evaluation_outside_the_loop_sits_at_its_models_place():
    """`vlfactory eval` of a loop's model (no iteration on the row) is drawn at that model's place on the loop's
    axis, beside the loop's own evaluation of it, not at a place of its own past the loop."""
    from vlfactory.reports import plots

    loop = [{"benchmark": "a-val", "model": m, "iteration": i, "stage": stage, "accuracy": acc, "problems": 100}
            for m, i, stage, acc in (("m0", 0, "base", 0.1), ("m1", 1, "sft", 0.6), ("m2", 1, "grpo", 0.62))]
    outside = {"benchmark": "b-eval", "model": "m1", "iteration": None, "stage": None, "accuracy": 0.5,
               "problems": 100}
    svg = plots.evals([*loop, outside])
    cx = [float(x) for x in re.findall(r'<circle cx="([^"]+)"', svg)]
    assert len(cx) == 4 + 2, cx  # a-val's three points, b-eval's one, a marker in the legend for each
    assert abs(cx[3] - cx[1]) < 15 and abs(cx[3] - cx[1]) < abs(cx[3] - cx[2]) / 4, cx
    assert svg.count(">iter1 sft<") == 1 and ">-<" not in svg


def test_a_diverged_training_nan_and_inf_is_drawn_without_them():
    """TRL logs nan or inf when a training diverges: the curves leave those points out (the SVG parses, no nan
    coordinate) and draw the rest; a metric logged only as nan gets its panel, empty."""
    from xml.etree import ElementTree

    from vlfactory.reports import plots

    nan, inf = float("nan"), float("inf")
    svg = plots.curves({"iter1 sft": {"loss": [(1, 0.5), (2, nan), (3, inf), (4, 0.3)], "grad_norm": [(1, nan)]}})
    ElementTree.fromstring(svg)
    assert "nan" not in svg.lower() and "inf" not in svg.replace("info", "")
    assert ">loss<" in svg and ">grad norm<" in svg and svg.count('<circle cx=') == 2 + 1  # 2 points, the legend's


def test_text_widths_are_never_underestimated(tmp_path):
    """Every position in a plot rests on `figures.width`: in Chromium, each string (every printable ASCII
    character, words, digits, bold, a non-ASCII one) is at most as wide as it says."""
    from vlfactory.reports import figures

    strings = [chr(c) * 10 for c in range(32, 127)] + ["synthetic-more: rollouts", "13,535,353", "WWWWmmmm",
                                                       "rollout: iter1 grpo", "réponse 答案", "iter2 sft (1,500)"]
    cases = [(s, size, bold) for s in strings for size, bold in ((10, False), (13, True))]
    texts = "".join(f'<text x="5" y="{20 + 20 * i}" font-size="{size}" font-weight="{"bold" if bold else "normal"}">'
                    f"{html.escape(s)}</text>" for i, (s, size, bold) in enumerate(cases))
    page = tmp_path / "widths.html"
    page.write_text(f'<!doctype html><html><body><svg class="plot" width="2000" height="{40 * len(strings) + 40}" '
                    f'font-family="{figures.FONT}">{texts}</svg></body></html>')
    with Browser() as b:
        b.open(page.as_uri())
        measured = b.eval("[...document.querySelectorAll('text')].map(t => t.getBBox().width)")
    expected = [figures.width(s, size, bold) for s, size, bold in cases]
    over = [(case, m, e) for case, m, e in zip(cases, measured, expected) if m > e + 0.01]
    assert len(measured) == len(expected) and over == [], over


def test_keywords_never_found_are_said_not_drawn(small_lake, tmp_path):
    out = tmp_path / "loop.html"
    vlf("report", "--iterations", "--out", out, "--lake", small_lake)
    text = out.read_text()
    section = text[text.index('<section id="keywords">'):text.index('<section id="eval-samples">')]
    assert "none of the tracked keywords (identify" in section and "svg" not in section  # the traces say "step"


def test_version_stats_counts(small_lake):
    from vlfactory.reports.stats import version_stats

    with Lake(small_lake, read_only=True) as lake:
        one, two = version_stats(lake, "iter1"), version_stats(lake, "iter2")
    assert {s: f["problems"] for s, f in one.funnel.items()} == {"charts": 6, "shapes": 4}
    assert sum(f["traces"] for f in one.funnel.values()) == 20
    assert one.licenses == {"charts": "CC-BY-4.0", "shapes": "MIT"} and one.band == (0.25, 0.75)
    assert sum(f["rollouts"] for f in two.funnel.values()) == 80  # both policies' rollouts by iter2
    assert set(two.pass_rates) == {"policy-1", "policy-2"} and len(one.evals) == 3 and len(two.evals) == 6
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
