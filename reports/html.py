"""The HTML report: one self-contained page (plots as inline SVG, images as data URIs, inline CSS, no scripts).

A version's page shows the funnel from problems to accepted samples per source, the rejection
reasons, completion lengths of accepted vs rejected samples, correct and accepted shares per
source, the rollouts' pass rates with the RL band, finish reasons and answer distributions, a few
example samples with their image (the completion beside its cleaned text), the trainings' loss
and reward curves (`training_logs`), tokens, wall time and throughput per step (from commit
times, not summed request latencies), eval accuracy with 95% intervals, and what changed since
the previous tag. The iterations page puts the loop's tags (`iter1`, `iter2`, ...) side by side:
data per iteration, held-out accuracy across the loop, the reflection keywords' frequency (the
paper's figure), then each iteration's own sections, each counting only the rows that iteration
added (the sets, sft and rl, as they stood). Models go by short names (iter1 sft, the folder's
name), never long local paths. A section with nothing to show says "no data yet".

    vlfactory report iter1 --out report.html
    vlfactory report --iterations --out loop.html

    from vlfactory.reports.html import report
    with Lake("./lake", read_only=True) as lake:
        Path("report.html").write_text(report(lake, "iter1"))
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime

from vlfactory.reports import plots
from vlfactory.reports.evals import eval_examples, eval_label, wilson_interval
from vlfactory.reports.keywords import keyword_rates, tracked_keywords
from vlfactory.reports.reads import iteration_tags, previous_tag
from vlfactory.reports.stats import FUNNEL, PROBLEM_STAGES, VersionStats, funnel, short_name, summary, version_stats
from vlfactory.stores.lake import Lake

EMPTY = '<p class="empty">no data yet</p>'
# What a section lacks, said plainly (each still starts "no data yet").
WHY = {"funnel": "no problems at this version (`vlfactory ingest RECIPE`)",
       "rejections": "nothing was rejected at this version",
       "per-source": "no graded samples (verify has not run)",
       "lengths": "no graded completions (distil or rollout, then verify)",
       "pass-rates": "no graded rollouts (the rollout stage has not run)",
       "distributions": "no model calls at this version",
       "examples": "no traces or rollouts at this version",
       "training": "no trainings at this version (`vlfactory train`, or `vlfactory iterate`)",
       "usage": "no model calls and no recorded steps",
       "evals": "no evaluations (`vlfactory eval`, or `vlfactory iterate`)",
       "by-type": "no answers of the loop's evaluated models (eval_samples)",
       "paired": "fewer than two evaluated models of the loop answered the same problems",
       "pass-at-k": "no evaluation drew more than one sample per problem, so pass@k is pass@1 "
                    "(set eval.sampling.n above 1)",
       "eval-samples": "no answers of the loop's evaluated models (eval_samples)"}


def empty(section: str) -> str:
    return f'<p class="empty">no data yet: {html.escape(WHY[section])}</p>'
# No scripts, nothing fetched: images may only be data: URIs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f5f5f5; } img, svg.plot { max-width: 100%; height: auto; }
figure { margin: .6em 0; } .sample { border: 1px solid #ddd; padding: .6em; margin: .8em 0; }
.sample img { width: 160px; image-rendering: pixelated; float: left; margin: 0 1em .5em 0; }
.texts { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; clear: both; }
.texts pre { white-space: pre-wrap; word-break: break-word; background: #fafafa; padding: .4em; margin: 0;
             max-height: 24em; overflow: auto; font-size: 12px; }
.empty { color: #888; font-style: italic; } .meta { color: #555; } code { background: #f5f5f5; padding: 0 .2em; }
nav.toc { border: 1px solid #ddd; background: #fafafa; padding: .4em 1em; margin: 1em 0; columns: 2; }
nav.toc ol { margin: .2em 0; padding-left: 1.4em; } nav.toc > b { column-span: all; display: block; }
"""


def report(lake: Lake, version: str | int | None = None, iterations: bool = False) -> str:
    """The whole page: one version (default: latest), or the loop's iterations."""
    with lake.one_read():
        if iterations:
            return iterations_page(lake)
        return version_page(lake, "latest" if version is None else version)


def version_page(lake: Lake, version: str | int) -> str:
    st = version_stats(lake, version)
    title = f"vlfactory report: {st.version} (snapshot {st.snapshot})"
    before = previous_tag(lake, st.snapshot) or ("the empty lake", 0)
    return _page(title, lake, "".join(version_sections(lake, st, compare_to=before)))


def iterations_page(lake: Lake) -> str:
    tags = iteration_tags(lake)
    title = "vlfactory report: iterations"
    if not tags:
        return _page(title, lake, _section("iterations", "Iterations",
                                           '<p class="empty">no data yet: no iteration tags (iter1, iter2, ...); '
                                           "`vlfactory iterate` or `vlfactory tag iter1` makes them</p>"))
    # Each iteration's sections count the rows it added: those at its tag and not at the tag before.
    stats = [version_stats(lake, name, since=tags[i - 1][1] if i else None) for i, (name, _) in enumerate(tags)]
    whole = [funnel(lake, snap) if i else stats[0].funnel for i, (_, snap) in enumerate(tags)]  # totals at each tag
    series = {label: [sum(f[src][label] for src in f) for f in whole]
              for label in ("problems", "solved", "in sft", "in rl", "accepted traces", "correct rollouts")}
    names = [name for name, _ in tags]
    table = _table(["", *names], [[label, *values] for label, values in series.items()])
    body = [_section("iterations", "Data per iteration (totals at each tag)",
                     _figure(plots.iterations(names, series), "Data per iteration") + table),
            *eval_sections(stats[-1]),
            _section("keywords", "Reflection keywords per iteration", *_keywords(lake, stats[-1])),
            _section("eval-samples", "Answers of the evaluated models", _eval_examples(lake))]
    for i, st in enumerate(stats):
        before = tags[i - 1] if i else (previous_tag(lake, st.snapshot) or ("the empty lake", 0))
        scope = (f"rows added after {tags[i - 1][0]} (snapshot {tags[i - 1][1]}); the sft and rl sets as they "
                 f"stood at {st.version}" if i else f"everything up to {st.version}")
        body.append(f'<h1 id="{_id(st.version)}">{html.escape(st.version)} (snapshot {st.snapshot})</h1>'
                    f'<p class="meta">counted: {html.escape(scope)}</p>')
        body.extend(version_sections(lake, st, compare_to=before, prefix=f"{_id(st.version)}-", evals=False))
    return _page(title, lake, "".join(body))


def version_sections(lake: Lake, st: VersionStats, compare_to: tuple[str, int] | None, prefix: str = "",
                     evals: bool = True) -> list[str]:
    sections = [
        _section(prefix + "overview", "What made this version", _overview(st)),
        _section(prefix + "funnel", "Funnel per source",
                 _figure(plots.funnel(st.funnel, PROBLEM_STAGES), "Funnel per source", "funnel"),
                 _table(["source", *FUNNEL], [[src, *st.funnel[src].values()] for src in st.sources])
                 if st.funnel else ""),
        _section(prefix + "rejections", "Rejection reasons",
                 _figure(plots.rejections(st.rejected, st.verdicts), "Rejection reasons", "rejections"),
                 _table(["stage", "reason", "rows"], [r.values() for r in st.rejected]) if st.rejected else "",
                 _table(["graded", "reason (not accepted)", "rows"], [r.values() for r in st.verdicts])
                 if st.verdicts else ""),
        _section(prefix + "per-source", "Correct and accepted per source",
                 _figure(plots.per_source(st.per_source), "Correct and accepted per source", "per-source"),
                 _per_source(st)),
        _section(prefix + "lengths", "Completion lengths",
                 _figure(plots.lengths(st.lengths), "Completion length histograms", "lengths"), _lengths_table(st)),
        _section(prefix + "pass-rates", "Pass rates of rollouts",
                 _figure(plots.pass_rates(st.pass_counts, st.band, st.names), "Pass-rate histogram", "pass-rates"),
                 f'<p class="meta">RL band: [{st.band[0]}, {st.band[1]}] (the rl set keeps problems whose pass rate '
                 "lies in it)</p>" if st.band and st.pass_counts else ""),
        _section(prefix + "distributions", "Finish reasons and answers",
                 _figure(plots.distributions(st.finish, st.answers), "Finish reasons and answers", "distributions")),
        _section(prefix + "examples", "Example samples", _examples(st)),
        _section(prefix + "training", "Training curves",
                 _figure(plots.curves(st.curves), "Training curves", "training"), _trainings_table(st)),
        _section(prefix + "usage", "Tokens, time and throughput per step",
                 _figure(plots.usage(st.usage, st.stage_time), "Tokens and wall time", "usage"),
                 _figure(plots.throughput(st.stage_time), "Throughput") if any(
                     r.get("tokens_per_s") for r in st.stage_time) else "",
                 _throughput_table(st),
                 _table(["stage", "model", "calls", "prompt tokens", "completion tokens",
                         "sum of request latencies (s)"],
                        [[r["stage"], r["name"], r["calls"], r["prompt_tokens"], r["completion_tokens"],
                          r["latency_s"]] for r in st.usage]) if st.usage else "", _runs_table(st)),
    ]
    if evals:
        sections.extend(eval_sections(st, prefix))
    sections.append(_section(prefix + "diff", "Changes since the previous version", *_diff(lake, st, compare_to)))
    return sections


def eval_sections(st: VersionStats, prefix: str = "") -> list[str]:
    """The questions asked of a loop's evaluations: how accurate each model is (95% intervals), on which kinds of
    question and (with more than one) on which source against what answering without the image scores, whether
    each step helped on the same problems, and pass@k where several samples were drawn."""
    return [_section(prefix + "evals", "Held-out accuracy across the loop", *_evals(st.evals, st.names)),
            _section(prefix + "by-type", "Accuracy by question type", *_by_type(st.by_type)),
            *([_section(prefix + "by-source", "Accuracy by source", *_by_source(st.by_source))]
              if len({g["benchmark"] for g in st.by_source}) > 1 else []),
            _section(prefix + "paired", "Did each step help? Consecutive models on the same problems",
                     _paired(st.paired)),
            _section(prefix + "pass-at-k", "pass@k",
                     _figure(plots.pass_at_k(st.evals), "pass@k", "pass-at-k" if st.evals else "evals"))]


# ---- pieces ----------------------------------------------------------------------------

def _overview(st: VersionStats) -> str:
    recipes = ", ".join(f"{html.escape(r['name'] or '?')} <code>{html.escape(str(r['hash']))}</code>"
                        for r in st.recipes) or "none"
    return (f'<p class="meta">version <b>{html.escape(st.version)}</b> = snapshot {st.snapshot}; '
            f"recipes: {recipes}; sources: {html.escape(', '.join(st.sources)) or 'none'}</p>")


def _lengths_table(st: VersionStats) -> str:
    rows = []
    for unit, groups in st.lengths.items():
        for group, values in sorted(groups.items()):
            s = summary(values)
            rows.append([unit, group, s["count"], s["mean"], s["median"], s["p90"], s["max"]])
    return _table(["unit", "samples", "count", "mean", "median", "p90", "max"], rows) if rows else ""


def _runs_table(st: VersionStats) -> str:
    if not st.runs:
        return ""
    rows = [[r["command"], r["argv"] or "", r["status"], r["started_at"], _seconds(r["started_at"], r["ended_at"])]
            for r in st.runs]
    return "<h3>Runs</h3>" + _table(["command", "arguments", "status", "started", "wall seconds"], rows)


def _per_source(st: VersionStats) -> str:
    if not st.per_source:
        return ""
    pct = lambda n, d: 100 * n / d if d else None  # noqa: E731
    return _table(["source", "graded", "samples", "correct", "correct %", "accepted", "accepted %"],
                  [[r["source"], r["ref_table"], r["graded"], r["correct"], pct(r["correct"], r["graded"]),
                    r["accepted"], pct(r["accepted"], r["graded"])] for r in st.per_source])


def _throughput_table(st: VersionStats) -> str:
    if not st.stage_time:
        return ""
    total = sum(r["wall_s"] for r in st.stage_time)
    return ('<p class="meta">wall time of each step from the commit times of its snapshots (requests run '
            "concurrently, so the sum of their latencies is not time spent); share: of all steps' wall time</p>"
            + _table(["step", "commits", "wall seconds", "share %", "calls", "completion tokens", "tokens/s"],
                     [[r["stage"], r["commits"], r["wall_s"], 100 * r["wall_s"] / total if total else None,
                       r["calls"], r["completion_tokens"], r["tokens_per_s"]] for r in st.stage_time]))


def _trainings_table(st: VersionStats) -> str:
    if not st.trainings:
        return ""
    last = lambda t, m: (st.curves.get(t["label"], {}).get(m) or [(None, None)])[-1][1]  # noqa: E731
    return _table(["training", "kind", "set", "rows", "base model", "status", "logged steps", "last loss",
                   "last reward", "wall seconds"],
                  [[t["label"], t["kind"], t["dataset"], t["rows"], t["base"], t["status"],
                    len(st.curves.get(t["label"], {}).get("loss") or st.curves.get(t["label"], {}).get("reward") or []),
                    last(t, "loss"), last(t, "reward"), _seconds(t["started_at"], t["ended_at"])]
                   for t in st.trainings])


def _by_type(groups: list[dict]) -> tuple[str, ...]:
    if not groups:
        return (empty("by-type"),)
    note = ('<p class="meta">question type: the question\'s first three words. Question-only baseline: the expected '
            "accuracy of answering each problem with the most common gold answer among the other problems asking the "
            "same question (one choice at random where none does): what a model reaches without looking at the "
            "image. A model at its baseline has learned the question's prior, not the picture.</p>")
    table = _table(["benchmark", "question type", "model of the loop", "problems", "accuracy %", "95% CI",
                    "question-only baseline %"],
                   [[g["benchmark"], g["type"], g["model"], g["problems"], 100 * g["accuracy"],
                     _ci(g["accuracy"], g["problems"]),
                     100 * g["baseline"]] for g in groups])
    return note, _figure(plots.by_type(groups), "Accuracy by question type", "by-type"), table


def _ci(accuracy: float, n: int) -> str:
    """The 95% interval of an accuracy on n problems, in percent."""
    return "[{:.1f}, {:.1f}]".format(*(100 * x for x in wilson_interval(accuracy, n)))


def _by_source(groups: list[dict]) -> tuple[str, ...]:
    note = ('<p class="meta">source: the benchmark the evaluated rows come from. Question-only baseline as for '
            "question types: the expected accuracy of answering each problem with the most common gold answer among "
            "the source's other problems asking the same question (one choice at random where none does).</p>")
    table = _table(["source", "model of the loop", "problems", "accuracy %", "95% CI", "question-only baseline %"],
                   [[g["benchmark"], g["model"], g["problems"], 100 * g["accuracy"],
                     _ci(g["accuracy"], g["problems"]),
                     100 * g["baseline"]] for g in groups])
    return note, _figure(plots.by_source(groups), "Accuracy by source"), table


def _paired(pairs: list[dict]) -> str:
    if not pairs:
        return empty("paired")
    return ('<p class="meta">each model against the one before it in the loop, on the problems both answered: '
            "the problems only one of them got right decide the test (exact McNemar with one sample per problem, a "
            "paired bootstrap of per-problem accuracy with several). A p-value above 0.05 means the step's change "
            "is within what chance moves on this many problems.</p>"
            + _table(["benchmark", "from", "to", "problems", "accuracy before %", "accuracy after %", "change (points)",
                      "right only before", "right only after", "test", "p-value"],
                     [[r["benchmark"], r["a"], r["b"], r["problems"], 100 * r["accuracy_a"], 100 * r["accuracy_b"],
                       100 * (r["accuracy_b"] - r["accuracy_a"]), r["better_a"], r["better_b"], r["test"],
                       f"{r['p']:.3g}"] for r in pairs]))


def _examples(st: VersionStats) -> str:
    if not st.examples:
        return empty("examples")
    out = ['<p class="meta">a few samples of this version, accepted and not; every one is in '
           "<code>vlfactory view</code></p>"]
    for r in st.examples:
        verdict = "accepted" if r["accepted"] else f"not accepted: {', '.join(r['reasons'] or [r['grade_reason'] or '-'])}"
        image = _image(r["image"], r["image_format"])
        meta = (f"{r['ref_table']} <code>{html.escape(r['ref_id'])}</code>, {html.escape(str(r['source']))}, "
                f"by {html.escape(short_name(r['model'], st.names))}; {html.escape(verdict)}; extracted "
                f"<b>{html.escape(str(r['extracted']))}</b>, gold <b>{html.escape(str(r['gold']))}</b>; "
                f"{r['completion_tokens'] or 0:,} tokens, finish {html.escape(str(r['finish_reason']))}")
        caption = f"<p><b>caption the reasoner saw:</b> {html.escape(r['caption'])}</p>" if r["caption"] else (
            "<p class=\"meta\">the policy saw the image and the question, no caption</p>"
            if r["ref_table"] == "rollouts" else "")
        cleaned = r["cleaned"] if r["cleaned"] is not None else "(not cleaned: only accepted samples are)"
        out.append(f'<div class="sample">{image}<p class="meta">{meta}</p><p><b>question:</b> '
                   f"{html.escape(r['question'] or '')}</p>{caption}<div class=\"texts\"><div><b>completion</b>"
                   f"<pre>{html.escape(r['completion'] or '')}</pre></div><div><b>cleaned for SFT</b>"
                   f"<pre>{html.escape(cleaned)}</pre></div></div></div>")
    return "".join(out)


def _image(data: bytes | None, fmt: str | None, largest: int = 320) -> str:
    """An image as a data URI, made smaller when large (PNG keeps it exact)."""
    if not data:
        return ""
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}.get(fmt or "")
    if mime is None or len(data) > 200_000:
        from PIL import Image

        img = Image.open(io.BytesIO(data))
        img.thumbnail((largest, largest))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
        data, mime = buf.getvalue(), "image/png"
    return f'<img class="sample-image" alt="the problem\'s image" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def _evals(rows: list[dict], names: dict[str, str]) -> tuple[str, str]:
    if not rows:
        return empty("evals"), ""
    def passes(r: dict) -> str:
        return ", ".join(f"@{k} {100 * p:.1f}" for k, p in enumerate(r["pass_at_k"] or [], 1)) \
            if (r["samples_per_problem"] or 1) > 1 else ""

    table = _table(["model of the loop", "benchmark", "model", "split", "problems", "correct", "accuracy %",
                    "95% CI", "protocol", "pass@k %"],
                   [[eval_label(r), r["benchmark"], short_name(r["model"], names), r["split"], r["problems"], r["correct"],
                     100 * r["accuracy"], _ci(r["accuracy"], r["problems"]), r["protocol"], passes(r)] for r in rows])
    return _figure(plots.evals(rows), "Held-out accuracy across the loop", "evals"), table


def _eval_examples(lake: Lake) -> str:
    found = eval_examples(lake)
    if not found:
        return empty("eval-samples")
    short = lambda s: s if s is None or len(s) <= 400 else f"{s[:200]} [...] {s[-200:]}"  # noqa: E731
    return ('<p class="meta">the first answers of each model per benchmark; every answer is in eval_samples '
            '(<code>vlfactory sql "SELECT * FROM eval_samples"</code>)</p>'
            + _table(["model of the loop", "benchmark", "row", "sample", "prompt", "completion", "extracted", "gold",
                      "verdict"],
                     [[eval_label(r), r["benchmark"], r["source_id"], r["sample_index"], short(r["prompt"]),
                       short(r["completion"]), r["extracted"], r["answer"], r["reason"]] for r in found]))


def _keywords(lake: Lake, st: VersionStats) -> tuple[str, ...]:
    words = tracked_keywords(st)
    rates = keyword_rates(lake, words)
    if not rates:
        return (('<p class="empty">no data yet: no traces or rollouts added at an iteration tag, and no answers of '
                 "the loop's evaluated models</p>"),)
    samples, total = sum(r["samples"] for r in rates), sum(r["words"] for r in rates)
    never = [w for w in words if not any(r["counts"][w] for r in rates)]
    if len(never) == len(words):
        return ((f'<p class="empty">none of the tracked keywords ({html.escape(", ".join(words))}) occurs in the '
                 f"{samples:,} samples ({total:,} words) of the loop's traces, rollouts and evaluated answers</p>"),)
    table = _table(["samples of", "at", "samples", "words", *[f"{w} /1k" for w in words]],
                   [[r["series"], r["point"], r["samples"], r["words"], *[r["per_1k"][w] for w in words]]
                    for r in rates])
    note = (f'<p class="meta">occurrences per 1,000 words, whole words in any case, of: '
            f'{html.escape(", ".join(words))} (the recipe\'s loop.track_keywords); traces and rollouts: the rows '
            "each iteration tag added; eval samples: the answers of each evaluated model"
            + (f"; never found, so not drawn: {html.escape(', '.join(never))}" if never else "") + "</p>")
    return note, _figure(plots.keywords(rates, words), "Reflection keywords across iterations"), table


def _diff(lake: Lake, st: VersionStats, before: tuple[str, int] | None) -> tuple[str, ...]:
    if before is None:
        return ('<p class="empty">no data yet: no earlier tagged version to compare with</p>',)
    name, snap = before
    changes = lake.diff(snap, st.snapshot)
    label = f"{name} (snapshot {snap})"
    rows = [[t, d["added"], d["removed"], d["changed"]] for t, d in changes.items() if any(d.values())]
    if not rows:
        return (f'<p class="empty">no rows were added, removed or changed since {html.escape(label)}</p>',)
    return ((f'<p class="meta">compared with {html.escape(label)}; a row whose key is in both with other '
             'content (an updated status) is changed</p>'),
            _figure(plots.diff(changes, name, st.version), f"Changes since {label}"),
            _table(["table", "rows added", "rows removed", "rows changed"], rows) if rows else "")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _section(ident: str, title: str, *parts: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(title)}</h2>{"".join(parts)}</section>\n'


def _figure(svg: str | None, alt: str, why: str | None = None) -> str:
    if svg is None:
        return empty(why) if why else EMPTY
    return f'<figure aria-label="{html.escape(alt)}">{svg}</figure>'


def _cell(v) -> str:
    if v is None:
        return "<td></td>"
    if isinstance(v, bool):
        return f"<td>{v}</td>"
    if isinstance(v, int):
        return f'<td class="n">{v:,}</td>'
    if isinstance(v, float):
        return f'<td class="n">{v:,.2f}</td>'
    if isinstance(v, datetime):
        return f"<td>{v:%Y-%m-%d %H:%M:%S}</td>"
    return f"<td>{html.escape(str(v))}</td>"


def _table(headers: list[str], rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(_cell(v) for v in row)}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _id(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _toc(body: str) -> str:
    """Contents: a link to every section, those of an iteration (an <h1>) listed under it. Titles are taken
    from the page as written, so they are escaped already."""
    import re

    out, open_h1 = [], False
    for m in re.finditer(r'<h1 id="([^"]+)">([^<]*)</h1>|<section id="([^"]+)"><h2>([^<]*)</h2>', body):
        if m.group(1):
            out.append(("</ol></li>" if open_h1 else "") + f'<li><a href="#{m.group(1)}">{m.group(2)}</a><ol>')
            open_h1 = True
        else:
            out.append(f'<li><a href="#{m.group(3)}">{m.group(4)}</a></li>')
    return (f'<nav class="toc" aria-label="contents"><b>Contents</b><ol>{"".join(out)}'
            f'{"</ol></li>" if open_h1 else ""}</ol></nav>')


def _page(title: str, lake: Lake, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">lake {html.escape(lake.spec.display)}; written {datetime.now():%Y-%m-%d %H:%M}</p>
{_toc(body)}
{body}</body></html>
"""
