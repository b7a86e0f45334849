"""The HTML report: one self-contained page (plots as PNG data URIs, inline CSS, no scripts).

A version's page shows the funnel from problems to accepted samples per source, the rejection
reasons, completion lengths of accepted vs rejected samples, the rollouts' pass rates with the
RL band, tokens and time per stage and model, eval accuracy per benchmark, and what changed
since the previous tag. The iterations page puts the loop's tags (`iter1`, `iter2`, ...) side by
side, with the reflection keywords' frequency across iterations (the paper's figure), then each
iteration's own sections. A section with nothing to show says "no data yet".

    vlfactory report iter1 --out report.html
    vlfactory report --iterations --out loop.html

    from vlfactory.reports.html import report
    with Lake("./lake", read_only=True) as lake:
        Path("report.html").write_text(report(lake, "iter1"))
"""

from __future__ import annotations

import html
from datetime import datetime

from vlfactory.reports import plots
from vlfactory.evaluate import wilson_interval
from vlfactory.reports.stats import (FUNNEL, PROBLEM_STAGES, VersionStats, eval_examples, eval_label, iteration_tags,
                                     keyword_rates, previous_tag, summary, tracked_keywords, version_stats)
from vlfactory.stores.lake import Lake

EMPTY = '<p class="empty">no data yet</p>'
# No scripts, nothing fetched: images may only be data: URIs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f5f5f5; } img { max-width: 100%; height: auto; }
.empty { color: #888; font-style: italic; } .meta { color: #555; } code { background: #f5f5f5; padding: 0 .2em; }
"""


def report(lake: Lake, version: str | int | None = None, iterations: bool = False) -> str:
    """The whole page: one version (default: latest), or the loop's iterations."""
    if iterations:
        return iterations_page(lake)
    return version_page(lake, "latest" if version is None else version)


def version_page(lake: Lake, version: str | int) -> str:
    st = version_stats(lake, version)
    title = f"vlfactory report: {st.version} (snapshot {st.snapshot})"
    return _page(title, lake, "".join(version_sections(lake, st, compare_to=previous_tag(lake, st.snapshot))))


def iterations_page(lake: Lake) -> str:
    tags = iteration_tags(lake)
    title = "vlfactory report: iterations"
    if not tags:
        return _page(title, lake, _section("iterations", "Iterations",
                                           '<p class="empty">no data yet: no iteration tags (iter1, iter2, ...); '
                                           "`vlfactory iterate` or `vlfactory tag iter1` makes them</p>"))
    stats = [version_stats(lake, name) for name, _ in tags]
    series = {label: [sum(s.funnel[src][label] for src in s.funnel) for s in stats]
              for label in ("problems", "solved", "in sft", "in rl", "accepted traces", "correct rollouts")}
    names = [name for name, _ in tags]
    table = _table(["", *names], [[label, *values] for label, values in series.items()])
    body = [_section("iterations", "Data per iteration", _figure(plots.iterations(names, series), "Data per iteration")
                     + table),
            _section("evals", "Eval accuracy per iteration", *_evals(stats[-1].evals)),
            _section("keywords", "Reflection keywords per iteration", *_keywords(lake, stats[-1])),
            _section("eval-samples", "Answers of the evaluated models", _eval_examples(lake))]
    for i, st in enumerate(stats):
        before = tags[i - 1] if i else None
        body.append(f'<h1 id="{_id(st.version)}">{html.escape(st.version)} (snapshot {st.snapshot})</h1>')
        body.extend(version_sections(lake, st, compare_to=before, prefix=f"{_id(st.version)}-", evals=False))
    return _page(title, lake, "".join(body))


def version_sections(lake: Lake, st: VersionStats, compare_to: tuple[str, int] | None, prefix: str = "",
                     evals: bool = True) -> list[str]:
    sections = [
        _section(prefix + "overview", "What made this version", _overview(st)),
        _section(prefix + "funnel", "Funnel per source",
                 _figure(plots.funnel(st.funnel, PROBLEM_STAGES), "Funnel per source"),
                 _table(["source", *FUNNEL], [[src, *st.funnel[src].values()] for src in st.sources])
                 if st.funnel else ""),
        _section(prefix + "rejections", "Rejection reasons",
                 _figure(plots.rejections(st.rejected, st.verdicts), "Rejection reasons"),
                 _table(["stage", "reason", "rows"], [r.values() for r in st.rejected]) if st.rejected else "",
                 _table(["graded", "reason (not accepted)", "rows"], [r.values() for r in st.verdicts])
                 if st.verdicts else ""),
        _section(prefix + "lengths", "Completion lengths",
                 _figure(plots.lengths(st.lengths), "Completion length histograms"), _lengths_table(st)),
        _section(prefix + "pass-rates", "Pass rates of rollouts",
                 _figure(plots.pass_rates(st.pass_rates, st.band), "Pass-rate histogram"),
                 f'<p class="meta">RL band: [{st.band[0]}, {st.band[1]}] (the rl set keeps problems whose pass rate '
                 "lies in it)</p>" if st.band and st.pass_rates else ""),
        _section(prefix + "usage", "Tokens and time per stage and model",
                 _figure(plots.usage(st.usage), "Tokens and time per stage and model"),
                 _table(["stage", "model", "calls", "prompt tokens", "completion tokens", "seconds"],
                        [r.values() for r in st.usage]) if st.usage else "", _runs_table(st)),
    ]
    if evals:
        sections.append(_section(prefix + "evals", "Eval accuracy", *_evals(st.evals)))
    sections.append(_section(prefix + "diff", "Changes since the previous version", *_diff(lake, st, compare_to)))
    return sections


# ---- pieces ----------------------------------------------------------------------------

def _overview(st: VersionStats) -> str:
    recipes = ", ".join(f"{html.escape(r['name'] or '?')} <code>{r['hash']}</code>" for r in st.recipes) or "none"
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


def _evals(rows: list[dict]) -> tuple[str, str]:
    if not rows:
        return EMPTY, ""
    def passes(r: dict) -> str:
        return ", ".join(f"@{k} {100 * p:.1f}" for k, p in enumerate(r["pass_at_k"] or [], 1)) \
            if (r["samples_per_problem"] or 1) > 1 else ""

    table = _table(["model of the loop", "benchmark", "model", "split", "problems", "correct", "accuracy %",
                    "95% CI", "protocol", "pass@k %"],
                   [[eval_label(r), r["benchmark"], r["model"], r["split"], r["problems"], r["correct"],
                     100 * r["accuracy"], "[{:.1f}, {:.1f}]".format(*(100 * x for x in wilson_interval(
                         r["accuracy"], r["problems"]))), r["protocol"], passes(r)] for r in rows])
    return _figure(plots.evals(rows), "Eval accuracy per benchmark"), table


def _eval_examples(lake: Lake) -> str:
    found = eval_examples(lake)
    if not found:
        return EMPTY
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
        return (EMPTY,)
    table = _table(["samples of", "at", "samples", "words", *[f"{w} /1k" for w in words]],
                   [[r["series"], r["point"], r["samples"], r["words"], *[r["per_1k"][w] for w in words]]
                    for r in rates])
    note = (f'<p class="meta">occurrences per 1,000 words, whole words in any case, of: '
            f'{html.escape(", ".join(words))} (the recipe\'s loop.track_keywords); traces and rollouts: the rows '
            "each iteration tag added; eval samples: the answers of each evaluated model</p>")
    return note, _figure(plots.keywords(rates, words), "Reflection keywords across iterations"), table


def _diff(lake: Lake, st: VersionStats, before: tuple[str, int] | None) -> tuple[str, ...]:
    if before is None:
        return ('<p class="empty">no data yet: no earlier tagged version to compare with</p>',)
    name, snap = before
    changes = lake.diff(snap, st.snapshot)
    label = f"{name} (snapshot {snap})"
    rows = [[t, d["added"], d["removed"]] for t, d in changes.items() if d["added"] or d["removed"]]
    return (f'<p class="meta">compared with {html.escape(label)}</p>',
            _figure(plots.diff(changes, name, st.version), f"Changes since {label}"),
            _table(["table", "rows added", "rows removed"], rows) if rows else "")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _section(ident: str, title: str, *parts: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(title)}</h2>{"".join(parts)}</section>\n'


def _figure(uri: str | None, alt: str) -> str:
    if uri is None:
        return EMPTY
    return f'<figure><img alt="{html.escape(alt)}" src="{uri}"></figure>'


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


def _page(title: str, lake: Lake, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">lake {html.escape(lake.spec.display)}; written {datetime.now():%Y-%m-%d %H:%M}</p>
{body}</body></html>
"""
