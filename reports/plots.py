"""The report's plots: each function takes numbers from `reports/stats.py` and returns an inline `<svg>`
element, or None when there is nothing to draw (the report then says "no data yet").

The SVG is written by reports/figures.py (no plotting library): text stays text, so a browser lays it out, it
can be searched and copied, and its boxes can be measured: the parts a reader must see carry classes
(`vlf-legend`, `vlf-bar`, `vlf-label`, `vlf-hist-*`) that the tests use to check, in a real browser, that
legends cover no bar or label and no label is cut off. Legends sit outside the axes.

    from vlfactory.reports import plots
    svg = plots.pass_rates({"policy": [(0, 4), (1, 4), (4, 4)]}, band=(0.25, 0.75))
"""

from __future__ import annotations

from vlfactory.reports.figures import (
    COLORS,
    TAB10,
    HBars,
    Hist,
    Lines,
    VBars,
    figure,
    shorten,
    viridis,
)


def funnel(counts: dict[str, dict[str, int]], stages: tuple[str, ...]) -> str | None:
    """Grouped horizontal bars: per source, problems left at each stage."""
    if not counts:
        return None
    sources = sorted(counts)
    series = [{"label": stage, "values": [counts[s][stage] for s in sources],
               "color": viridis(i / max(1, len(stages) - 1))} for i, stage in enumerate(stages)]
    return figure([HBars(sources, series, xlabel="problems", legend=True)],
                  title="Funnel per source: problems left at each stage")


def rejections(rejected: list[dict], verdicts: list[dict]) -> str | None:
    """Rejected rows by stage and reason; the verifier's reasons for graded samples not accepted."""
    panels = [(f"rejected rows ({sum(r['rows'] for r in rejected):,})",
               [f"{r['stage']}: {r['reason']}" for r in rejected], [r["rows"] for r in rejected]),
              (f"graded samples not accepted ({sum(r['rows'] for r in verdicts):,} reasons)",
               [f"{r['ref_table']}: {r['reason']}" for r in verdicts], [r["rows"] for r in verdicts])]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    return figure([HBars(labels, [{"label": "rows", "values": values, "color": COLORS["rejected"]}], title=title,
                         xlabel="rows") for title, labels, values in panels],
                  cols=len(panels), wide=480 * len(panels), title="Rejection reasons")


def lengths(values: dict[str, dict[str, list[int]]]) -> str | None:
    """Completion length histograms, accepted vs rejected (and the sft set), in words and tokens. Each group
    is drawn as its share of its own completions, the smallest on top, so a group of 7 beside one of 600
    stays visible."""
    units = [(u, values[u]) for u in ("words", "tokens") if values.get(u)]
    if not units:
        return None
    panels, legend = [], {}
    for unit, groups in units:
        ordered = sorted(groups.items(), key=lambda g: -len(g[1]))  # larger groups first, under the smaller
        drawn = [{"name": name, "values": v, "color": COLORS.get(name, TAB10[i % 10])}
                 for i, (name, v) in enumerate(ordered)]
        for g in drawn:
            legend.setdefault(f"{g['name']} (n={len(g['values']):,})", g["color"])
        panels.append(Hist(drawn, cls=unit, ylabel="% of the group's completions",
                           xlabel=f"{'words' if unit == 'words' else 'completion tokens'} per completion"))
    return figure(panels, cols=len(panels), wide=560 * len(panels),
                  title="Completion length: accepted vs rejected (each group as a share of itself)",
                  legend=[{"label": label, "color": color} for label, color in legend.items()])


def pass_rates(counts: dict[str, list[tuple[int, int]]], band: tuple[float, float] | None,
               names: dict[str, str] | None = None) -> str | None:
    """Per-problem pass rate of the policy's rollouts, one bar per value a rate can take (k correct of n: k/n,
    never 0.1-wide bins that put a bar at 0.2 for rates of 1/4), with the band the rl set keeps shaded over
    the bars it takes."""
    if not counts:
        return None
    from collections import Counter
    from fractions import Fraction

    from vlfactory.reports.stats import short_name

    pairs = {model: Counter(v) for model, v in counts.items()}  # a rate per distinct (correct, samples), not per row
    values = sorted({Fraction(c, n) for p in pairs.values() for c, n in p if n})
    series = []
    for i, (model, v) in enumerate(counts.items()):
        seen = Counter()
        for (c, n), k in pairs[model].items():
            if n:
                seen[Fraction(c, n)] += k
        series.append({"label": f"{short_name(model, names or {})} ({len(v):,} problems)",
                       "values": [seen[x] for x in values], "color": TAB10[i % 10]})
    inside = [j for j, x in enumerate(values) if band and band[0] <= x <= band[1]]
    labels = [f"{x.numerator}/{x.denominator}" if 0 < x < 1 else str(x) for x in values]
    return figure([VBars(labels, series, xlabel="pass rate (correct rollouts / rollouts)", ylabel="problems",
                         band=(inside[0], inside[-1]) if inside else None,
                         band_label=f"RL band [{band[0]}, {band[1]}]" if band else "")],
                  title="Pass rate of rollouts per problem")


def usage(rows: list[dict], stage_time: list[dict]) -> str | None:
    """Tokens (prompt + completion) per stage and model, and wall seconds per step of the runs (from commit
    times, not summed request latencies: requests run concurrently)."""
    if not rows and not stage_time:
        return None
    panels = []
    if rows:
        prompt = [r["prompt_tokens"] or 0 for r in rows]
        completion = [r["completion_tokens"] or 0 for r in rows]
        panels.append(HBars([f"{r['stage']}: {r.get('name') or r['model']}" for r in rows],
                            [{"label": "prompt", "values": prompt, "color": "#8ecae6"},
                             {"label": "completion", "values": completion, "color": "#219ebc", "base": prompt,
                              "texts": [f"{p + c:,}" for p, c in zip(prompt, completion)]}],
                            stacked=True, legend=True, xlabel="tokens", title="Tokens per stage and model"))
    if stage_time:
        panels.append(HBars([r["stage"] for r in stage_time],
                            [{"label": "wall", "values": [r["wall_s"] for r in stage_time], "color": "#ffb703"}],
                            fmt="{:,.1f} s", xlabel="wall seconds", title="Wall time per step"))
    return figure(panels, cols=len(panels), wide=520 * len(panels), title="Tokens and time")


def throughput(stage_time: list[dict]) -> str | None:
    """Completion tokens per wall second, per generating step."""
    rated = [r for r in stage_time if r.get("tokens_per_s")]
    if not rated:
        return None
    return figure([HBars([r["stage"] for r in rated],
                         [{"label": "tokens/s", "values": [r["tokens_per_s"] for r in rated], "color": "#219ebc"}],
                         fmt="{:,.1f}", xlabel="completion tokens per wall second")],
                  wide=700, title="Throughput per step")


def per_source(rates: list[dict]) -> str | None:
    """Per source: the share of graded traces and rollouts that were correct, and accepted, with 95% intervals."""
    if not rates:
        return None
    from vlfactory.reports.evals import wilson_interval

    series = []
    for key, color in (("correct", "#2a9d8f"), ("accepted", "#264653")):
        values = [100 * r[key] / r["graded"] if r["graded"] else 0.0 for r in rates]
        bounds = [wilson_interval(v / 100, r["graded"]) if r["graded"] else (0.0, 0.0) for r, v in zip(rates, values)]
        series.append({"label": f"{key} %", "values": values, "color": color, "texts": [f"{v:.1f}%" for v in values],
                       "xerr": [[max(0.0, v - 100 * lo) for v, (lo, _) in zip(values, bounds)],
                                [max(0.0, 100 * hi - v) for v, (_, hi) in zip(values, bounds)]]})
    return figure([HBars([f"{r['source']}: {r['ref_table']}" for r in rates], series, legend=True, xmax=100,
                         xlabel="% of graded samples (95% interval)")], title="Correct and accepted per source")


def distributions(finish: list[dict], answers: list[dict]) -> str | None:
    """Finish reasons per stage; the most frequent extracted answers beside the gold answers' own."""
    panels = []
    if finish:
        panels.append(("Finish reasons", [f"{r['stage']}: {r['finish_reason']}" for r in finish],
                       [r["rows"] for r in finish], "#8d99ae"))
    for series in dict.fromkeys(r["series"] for r in answers):
        picked = [r for r in answers if r["series"] == series]
        panels.append((f"Answers: {series}", [shorten(str(r["answer"]), 150) for r in picked],
                       [r["rows"] for r in picked], "#e9c46a" if "gold" in series else "#219ebc"))
    if not panels:
        return None
    cols = min(3, len(panels))
    return figure([HBars(labels, [{"label": "rows", "values": values, "color": color}], title=title, xlabel="rows")
                   for title, labels, values, color in panels],
                  cols=cols, wide=max(500, 330 * cols), title="Finish reasons and answers")


# What a training's curves show, in order: (title, the names TRL logs it under; the first one logged is drawn).
CURVES = (("loss", ("loss",)), ("reward", ("reward",)), ("reward std", ("reward_std",)),
          ("completion length", ("completions/mean_length", "completion_length")), ("KL", ("kl",)),
          ("learning rate", ("learning_rate",)), ("grad norm", ("grad_norm",)))


def curves(logged: dict[str, dict[str, list[tuple[int, float]]]]) -> str | None:
    """Per training, its logged curves against the step: loss (SFT), reward, its group standard deviation,
    completion length and KL (GRPO), learning rate and gradient norm (both): each panel one metric, each
    training one colour, panels only for what was logged."""
    panels = []
    color = {label: TAB10[i % 10] for i, label in enumerate(logged)}  # one colour per training
    for title, names in CURVES:
        picked = {label: next((series[n] for n in names if n in series), None) for label, series in logged.items()}
        series = [{"label": label, "points": points, "color": color[label]} for label, points in picked.items()
                  if points]
        if series:
            panels.append(Lines(series, title=title, xlabel="step", integer_x=True, legend=False, zero=False,
                                height=150, markers=True))
    if not panels:
        return None
    cols = min(4, len(panels))
    return figure(panels, cols=cols, wide=250 * cols, title="Training curves (training_logs)",
                  legend=[{"label": label, "color": c, "kind": "marker"} for label, c in color.items()])


def evals(rows: list[dict]) -> str | None:
    """Held-out accuracy per benchmark across the loop's models (base, iter1 sft, iter1 grpo, ...), with 95%
    intervals, or across evaluations in order."""
    if not rows:
        return None
    from vlfactory.reports.evals import eval_label, eval_order, wilson_interval

    labels = sorted({(eval_order(r), eval_label(r)) for r in rows if r.get("iteration") is not None})
    position = {label: i for i, (_, label) in enumerate(labels)}
    # an evaluation outside the loop (`vlfactory eval` of one of its models) sits at that model's place
    loop = {r["model"]: position[eval_label(r)] for r in rows if r.get("iteration") is not None}
    by_bench: dict[str, dict[float, tuple[float, float, float]]] = {}
    for i, r in enumerate(rows):
        x = position[eval_label(r)] if r.get("iteration") is not None else loop.get(r["model"], len(labels) + i)
        lo, hi = wilson_interval(r["accuracy"], r["problems"]) if r["problems"] else (r["accuracy"],) * 2
        by_bench.setdefault(r["benchmark"], {})[x] = (100 * r["accuracy"], 100 * lo, 100 * hi)
    last = max(x for p in by_bench.values() for x in p)
    categories = [label for _, label in labels] + [""] * (last + 1 - len(labels))
    series = []
    for k, (bench, points) in enumerate(sorted(by_bench.items())):
        xs = sorted(points)
        shift = 0.06 * (k - (len(by_bench) - 1) / 2)  # benchmarks side by side, intervals apart
        series.append({"label": bench, "color": TAB10[k % 10], "points": [(x + shift, points[x][0]) for x in xs],
                       "yerr": [(points[x][0] - points[x][1], points[x][2] - points[x][0]) for x in xs],
                       # the values, while two benchmarks can show theirs on either side of the points
                       "values": [f"{points[x][0]:.1f}" for x in xs] if len(by_bench) <= 2 else [],
                       "side": 1 if k == 0 else -1})
    return figure([Lines(series, categories=categories, ylim=(0, 105), xlabel="model of the loop",
                         ylabel="accuracy (%), 95% interval", height=240)],
                  wide=850, title="Held-out accuracy across the loop")


def by_type(groups: list[dict]) -> str | None:
    """Eval accuracy per benchmark and question type, one bar per model of the loop, and each group's
    question-only baseline (what answering without the image scores) as a dashed line across its bars."""
    return _accuracy_bars(groups, "type", "Accuracy by question type")


def by_source(groups: list[dict]) -> str | None:
    """Eval accuracy per source (the benchmark its rows name), one bar per model of the loop, each source's
    question-only baseline a dashed line across its bars."""
    return _accuracy_bars(groups, None, "Accuracy by source")


def _accuracy_bars(groups: list[dict], key: str | None, title: str) -> str | None:
    """Bars of accuracy per (benchmark, `key`) and model (`accuracy_by`'s groups), the baseline across each."""
    if not groups:
        return None
    category = lambda g: (g["benchmark"], g[key] if key else None)
    categories = list(dict.fromkeys(category(g) for g in groups))
    models = [m for _, m in sorted({(g["order"], g["model"]) for g in groups})]
    at = {(*category(g), g["model"]): g for g in groups}
    series = []
    for i, model in enumerate(models):
        values = [100 * at[(b, t, model)]["accuracy"] if (b, t, model) in at else 0.0 for b, t in categories]
        series.append({"label": model, "values": values, "color": viridis(i / max(1, len(models) - 1)),
                       "texts": [f"{v:.1f}%" if (b, t, model) in at else "" for v, (b, t) in zip(values, categories)]})
    baselines = [100 * next(g["baseline"] for g in groups if category(g) == cat) for cat in categories]
    benches = {b for b, _ in categories}
    labels = [b if not key else t if len(benches) == 1 else f"{b}: {t}" for b, t in categories]
    return figure([HBars(labels, series, legend=True, xmax=100, baselines=baselines,
                         baseline_label="question-only baseline", xlabel="accuracy (%)")], wide=900,
                  title=title + (f" ({next(iter(benches))})" if key and len(benches) == 1 else ""))


def pass_at_k(rows: list[dict]) -> str | None:
    """pass@k against k for each evaluation that drew several samples per problem (`evals.pass_at_k`)."""
    from vlfactory.reports.evals import eval_label

    drawn = [r for r in rows if (r.get("samples_per_problem") or 1) > 1 and r.get("pass_at_k")]
    if not drawn:
        return None
    series = [{"label": f"{eval_label(r)} ({r['benchmark']})", "color": TAB10[i % 10],
               "points": [(k, 100 * p) for k, p in enumerate(r["pass_at_k"], 1)]} for i, r in enumerate(drawn)]
    return figure([Lines(series, ylim=(0, 105), integer_x=True, xlabel="k (samples per problem)",
                         ylabel="pass@k (%)")], wide=750, title="pass@k")


def diff(changes: dict[str, dict[str, int]], a: str, b: str) -> str | None:
    """Rows added, removed and changed (by key: updated in place) per table between two versions."""
    kinds = ("added", "removed", "changed")
    touched = {t: d for t, d in changes.items() if any(d.get(k) for k in kinds)}
    if not touched:
        return None
    tables = sorted(touched)
    return figure([HBars(tables, [{"label": key, "values": [touched[t].get(key, 0) for t in tables],
                                   "color": COLORS[key]} for key in kinds], legend=True, xlabel="rows")],
                  title=f"Rows added, removed and changed per table: {a} -> {b}")


def iterations(names: list[str], series: dict[str, list[int]]) -> str | None:
    """Totals per iteration tag (problems solved, set sizes, ...) as lines."""
    if not names:
        return None
    lines = [{"label": label, "color": TAB10[i % 10], "points": list(enumerate(values))}
             for i, (label, values) in enumerate(series.items())]
    return figure([Lines(lines, categories=names, xlabel="iteration (tag)", ylabel="rows")],
                  title="Data per iteration")


def keywords(rates: list[dict], words: list[str]) -> str | None:
    """Reflection-keyword frequency per 1k words across the loop, one panel per series (traces and rollouts
    per iteration tag, the answers of each evaluated model), one line per keyword that occurs at all (the
    paper's figure); None when none does (the report then says so instead of drawing zeros)."""
    words = [w for w in words if any(r["counts"].get(w) for r in rates)]
    series = [s for s in ("traces", "rollouts", "eval samples") if any(r["series"] == s for r in rates)]
    if not series or not words:
        return None
    color = {w: TAB10[i % 10] for i, w in enumerate(words)}
    panels = []
    for name in series:
        points = [r for r in rates if r["series"] == name]
        panels.append(Lines([{"label": w, "color": color[w], "points": [(i, r["per_1k"][w]) for i, r in
                                                                        enumerate(points)]} for w in words],
                            categories=[r["point"] for r in points], legend=False, height=220,
                            title=f"{name} ({sum(r['samples'] for r in points):,} samples)",
                            ylabel="occurrences per 1k words"))
    return figure(panels, cols=len(panels), wide=min(1000, 330 * len(panels)),
                  title="Reflection keywords across iterations",
                  legend=[{"label": w, "color": c, "kind": "marker"} for w, c in color.items()])
