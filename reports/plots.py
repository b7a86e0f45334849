"""The report's plots: matplotlib figures rendered with Agg to inline SVG for a self-contained page.

Each function takes numbers from `reports/stats.py` and returns an `<svg>` element, or None when
there is nothing to draw (the report then says "no data yet"). Text stays text (`svg.fonttype`
none), so a browser lays it out, it can be searched and copied, and its boxes can be measured: the
parts a reader must see carry classes (`vlf-legend`, `vlf-bar`, `vlf-label`, `vlf-hist`) that the
tests use to check, in a real browser, that legends cover no bar or label and no label is cut off.
Legends sit outside the axes. Figures are built with `matplotlib.figure.Figure` directly, never
pyplot, so no display or global state is involved and matplotlib is imported only when a report
is drawn.

    from vlfactory.reports import plots
    svg = plots.pass_rates({"policy": [(0, 4), (1, 4), (4, 4)]}, band=(0.25, 0.75))
"""

from __future__ import annotations

from vlfactory.reports.figures import (
    COLORS,
    _bar_labels,
    _barh,
    _fig_legend,
    _figure,
    _grouped,
    _integers,
    _legend,
    _mark,
    _printable,
    _short,
    _svg,
    cached,
)


@cached
def funnel(counts: dict[str, dict[str, int]], stages: tuple[str, ...]) -> str | None:
    """Grouped horizontal bars: per source, problems left at each stage."""
    if not counts:
        return None
    from matplotlib import colormaps

    sources = sorted(counts)
    cmap = colormaps["viridis"]
    return _grouped(sources, [{"label": stage, "values": [counts[s][stage] for s in sources],
                               "color": cmap(i / max(1, len(stages) - 1))} for i, stage in enumerate(stages)],
                    "problems", "Funnel per source: problems left at each stage", row=0.25)


@cached
def rejections(rejected: list[dict], verdicts: list[dict]) -> str | None:
    """Rejected rows by stage and reason; the verifier's reasons for graded samples not accepted."""
    panels = [(f"rejected rows ({sum(r['rows'] for r in rejected):,})",
               [f"{r['stage']}: {r['reason']}" for r in rejected], [r["rows"] for r in rejected]),
              (f"graded samples not accepted ({sum(r['rows'] for r in verdicts):,} reasons)",
               [f"{r['ref_table']}: {r['reason']}" for r in verdicts], [r["rows"] for r in verdicts])]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = _figure(1, len(panels), width=5.0 * len(panels),
                        height=1.4 + 0.3 * max(len(p[1]) for p in panels))
    for ax, (title, labels, values) in zip(axes, panels):
        _barh(ax, labels, values, COLORS["rejected"])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("rows")
    fig.suptitle("Rejection reasons")
    return _svg(fig)


@cached
def lengths(values: dict[str, dict[str, list[int]]]) -> str | None:
    """Completion length histograms, accepted vs rejected (and the sft set), in words and tokens. Each group
    is drawn as its share of its own completions, the smallest on top, so a group of 7 beside one of 600
    stays visible."""
    units = [(u, values[u]) for u in ("words", "tokens") if values.get(u)]
    if not units:
        return None
    fig, axes = _figure(1, len(units), width=5.5 * len(units) + 1.5)
    for ax, (unit, groups) in zip(axes, units):
        top = max(max(v) for v in groups.values())
        bins = [top * i / 30 for i in range(31)] if top > 0 else [0, 1]
        ordered = sorted(groups.items(), key=lambda g: -len(g[1]))  # larger groups first, under the smaller
        for z, (name, v) in enumerate(ordered):
            color = COLORS.get(name)
            _, _, patches = ax.hist(v, bins=bins, weights=[100 / len(v)] * len(v), histtype="stepfilled",
                                    alpha=0.25, color=color, zorder=2 + z)
            _, _, edges = ax.hist(v, bins=bins, weights=[100 / len(v)] * len(v), histtype="step", linewidth=1.8,
                                  color=color, zorder=2 + z, label=f"{name} (n={len(v):,})")
            _mark([*patches, *edges], f"hist-{unit}-{name}")
        ax.set_xlabel(f"{'words' if unit == 'words' else 'completion tokens'} per completion")
        ax.set_ylabel("% of the group's completions")
    _fig_legend(fig, axes)
    fig.suptitle("Completion length: accepted vs rejected (each group as a share of itself)")
    return _svg(fig)


@cached
def pass_rates(counts: dict[str, list[tuple[int, int]]], band: tuple[float, float] | None,
               names: dict[str, str] | None = None) -> str | None:
    """Per-problem pass rate of the policy's rollouts, one bar per value a rate can take (k correct of n: k/n,
    never 0.1-wide bins that put a bar at 0.2 for rates of 1/4), with the band the rl set keeps shaded over
    the bars it takes."""
    if not counts:
        return None
    from collections import Counter
    from fractions import Fraction
    from itertools import pairwise

    from vlfactory.reports.stats import short_name

    fig, (ax,) = _figure()
    values = sorted({Fraction(c, n) for v in counts.values() for c, n in v if n})
    gap = min((b - a for a, b in pairwise(values)), default=Fraction(1, 4))
    width = float(gap) * 0.8 / len(counts)
    for i, (model, v) in enumerate(counts.items()):
        seen = Counter(Fraction(c, n) for c, n in v if n)
        xs = [float(x) + (i - (len(counts) - 1) / 2) * width for x in values]
        bars = ax.bar(xs, [seen[x] for x in values], width=width,
                      label=f"{short_name(model, names or {})} ({len(v):,} problems)")
        _mark(bars, "bar")
    if band:
        half = float(gap) * 0.45
        span = ax.axvspan(band[0] - half, band[1] + half, color="#f4a261", alpha=0.25, zorder=0,
                          label=f"RL band [{band[0]}, {band[1]}]")
        span.set_gid("vlf.band")
    ax.set_xticks([float(x) for x in values], [f"{x.numerator}/{x.denominator}" if 0 < x < 1 else str(x)
                                                for x in values], fontsize=8 if len(values) < 12 else 6)
    ax.set_xlim(-float(gap), 1 + float(gap))
    ax.set_xlabel("pass rate (correct rollouts / rollouts)")
    ax.set_ylabel("problems")
    ax.yaxis.set_major_locator(_integers())
    ax.set_title("Pass rate of rollouts per problem")
    _legend(ax)
    return _svg(fig)


@cached
def usage(rows: list[dict], stage_time: list[dict]) -> str | None:
    """Tokens (prompt + completion) per stage and model, and wall seconds per step of the runs (from commit
    times, not summed request latencies: requests run concurrently)."""
    if not rows and not stage_time:
        return None
    panels = (1 if rows else 0) + (1 if stage_time else 0)
    height = 1.6 + 0.35 * max(len(rows), len(stage_time))
    fig, axes = _figure(1, panels, width=5.5 * panels + 1.0, height=height)
    if rows:
        tok = axes[0]
        labels = [f"{r['stage']}: {r.get('name') or r['model']}" for r in rows]
        prompt = [r["prompt_tokens"] or 0 for r in rows]
        completion = [r["completion_tokens"] or 0 for r in rows]
        y = range(len(rows))
        first = tok.barh(y, prompt, color="#8ecae6", label="prompt")
        bars = tok.barh(y, completion, left=prompt, color="#219ebc", label="completion")
        _mark(first, "bar")
        _bar_labels(tok, bars, [f"{p + c:,}" for p, c in zip(prompt, completion)])
        tok.set_yticks(list(y), labels)
        tok.invert_yaxis()
        tok.set_xlabel("tokens")
        tok.set_title("Tokens per stage and model", fontsize=10)
        _legend(tok)
    if stage_time:
        _barh(axes[-1], [r["stage"] for r in stage_time], [r["wall_s"] for r in stage_time], "#ffb703",
              fmt="{:,.1f} s")
        axes[-1].set_xlabel("wall seconds")
        axes[-1].set_title("Wall time per step", fontsize=10)
    fig.suptitle("Tokens and time")
    return _svg(fig)


@cached
def throughput(stage_time: list[dict]) -> str | None:
    """Completion tokens per wall second, per generating step."""
    rated = [r for r in stage_time if r.get("tokens_per_s")]
    if not rated:
        return None
    fig, (ax,) = _figure(width=7.0, height=1.4 + 0.35 * len(rated))
    _barh(ax, [r["stage"] for r in rated], [r["tokens_per_s"] for r in rated], "#219ebc", fmt="{:,.1f}")
    ax.set_xlabel("completion tokens per wall second")
    ax.set_title("Throughput per step")
    return _svg(fig)


@cached
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
    return _grouped([f"{r['source']}: {r['ref_table']}" for r in rates], series,
                    "% of graded samples (95% interval)", "Correct and accepted per source", row=0.5)


@cached
def distributions(finish: list[dict], answers: list[dict]) -> str | None:
    """Finish reasons per stage; the most frequent extracted answers beside the gold answers' own."""
    panels = []
    if finish:
        panels.append(("Finish reasons", [f"{r['stage']}: {r['finish_reason']}" for r in finish],
                       [r["rows"] for r in finish], "#8d99ae"))
    for series in dict.fromkeys(r["series"] for r in answers):
        picked = [r for r in answers if r["series"] == series]
        panels.append((f"Answers: {series}", [_short(_printable(str(r["answer"])), 24) for r in picked],
                       [r["rows"] for r in picked],
                       "#e9c46a" if "gold" in series else "#219ebc"))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows_ = -(-len(panels) // cols)
    tall = max(len(p[1]) for p in panels)
    fig, axes = _figure(rows_, cols, width=4.2 * cols, height=rows_ * (1.0 + 0.28 * tall))
    for ax, (title, labels, values, color) in zip(axes, panels):
        _barh(ax, labels, values, color)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("rows")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Finish reasons and answers")
    return _svg(fig)


# What a training's curves show, in order: (title, the names TRL logs it under; the first one logged is drawn).
CURVES = (("loss", ("loss",)), ("reward", ("reward",)), ("reward std", ("reward_std",)),
          ("completion length", ("completions/mean_length", "completion_length")), ("KL", ("kl",)),
          ("learning rate", ("learning_rate",)), ("grad norm", ("grad_norm",)))


@cached
def curves(logged: dict[str, dict[str, list[tuple[int, float]]]]) -> str | None:
    """Per training, its logged curves against the step: loss (SFT), reward, its group standard deviation,
    completion length and KL (GRPO), learning rate and gradient norm (both): each panel one metric, each
    training one colour, panels only for what was logged."""
    panels = []
    for title, names in CURVES:
        picked = {label: next((series[n] for n in names if n in series), None) for label, series in logged.items()}
        if any(picked.values()):
            panels.append((title, {label: v for label, v in picked.items() if v}))
    if not panels:
        return None
    from matplotlib import colormaps

    cols = min(4, len(panels))
    rows_ = -(-len(panels) // cols)
    fig, axes = _figure(rows_, cols, width=3.6 * cols + 1.0, height=2.9 * rows_ + 0.6)
    color = {label: colormaps["tab10"](i % 10) for i, label in enumerate(logged)}  # one colour per training
    for ax, (title, series) in zip(axes, panels):
        for label, points in series.items():
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label,
                    color=color[label])
        ax.set_xlabel("step")
        ax.set_xlim(left=0)
        ax.set_title(title, fontsize=10)
        ax.xaxis.set_major_locator(_integers())
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _fig_legend(fig, axes[:len(panels)])
    fig.suptitle("Training curves (training_logs)")
    return _svg(fig)


@cached
def evals(rows: list[dict]) -> str | None:
    """Held-out accuracy per benchmark across the loop's models (base, iter1 sft, iter1 grpo, ...), with 95%
    intervals, or across evaluations in order."""
    if not rows:
        return None
    from vlfactory.reports.evals import eval_label, eval_order, wilson_interval

    fig, (ax,) = _figure(width=8.5)
    labels = sorted({(eval_order(r), eval_label(r)) for r in rows if r.get("iteration") is not None})
    position = {label: i for i, (_, label) in enumerate(labels)}
    by_bench: dict[str, dict[float, tuple[float, float, float]]] = {}
    for i, r in enumerate(rows):
        x = position.get(eval_label(r), len(labels) + i)
        lo, hi = wilson_interval(r["accuracy"], r["problems"]) if r["problems"] else (r["accuracy"],) * 2
        by_bench.setdefault(r["benchmark"], {})[x] = (100 * r["accuracy"], 100 * lo, 100 * hi)
    for k, (bench, points) in enumerate(sorted(by_bench.items())):
        xs = sorted(points)
        shift = 0.06 * (k - (len(by_bench) - 1) / 2)  # benchmarks side by side, intervals apart
        ys = [points[x][0] for x in xs]
        err = [[points[x][0] - points[x][1] for x in xs], [points[x][2] - points[x][0] for x in xs]]
        ax.errorbar([x + shift for x in xs], ys, yerr=err, marker="o", capsize=3, label=bench)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.1f}", (x + shift, y), textcoords="offset points", xytext=(6, 0), va="center",
                        fontsize=8)
    ticks = sorted({x for p in by_bench.values() for x in p})
    names = {i: label for label, i in position.items()}
    ax.set_xticks(ticks, [names.get(x, "") for x in ticks], fontsize=8)
    ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
    ax.set_ylim(0, 105)
    ax.set_xlabel("model of the loop")
    ax.set_ylabel("accuracy (%), 95% interval")
    ax.set_title("Held-out accuracy across the loop")
    _legend(ax)
    return _svg(fig)


@cached
def by_type(groups: list[dict]) -> str | None:
    """Eval accuracy per benchmark and question type, one bar per model of the loop, and each group's
    question-only baseline (what answering without the image scores) as a dashed line across its bars."""
    return _accuracy_bars(groups, "type", "Accuracy by question type")


@cached
def by_source(groups: list[dict]) -> str | None:
    """Eval accuracy per source (the benchmark its rows name), one bar per model of the loop, each source's
    question-only baseline a dashed line across its bars."""
    return _accuracy_bars(groups, None, "Accuracy by source")


def _accuracy_bars(groups: list[dict], key: str | None, title: str) -> str | None:
    """Bars of accuracy per (benchmark, `key`) and model (`accuracy_by`'s groups), the baseline across each."""
    if not groups:
        return None
    from matplotlib import colormaps

    category = lambda g: (g["benchmark"], g[key] if key else None)
    categories = list(dict.fromkeys(category(g) for g in groups))
    models = [m for _, m in sorted({(g["order"], g["model"]) for g in groups})]
    at = {(*category(g), g["model"]): g for g in groups}
    fig, (ax,) = _figure(width=9.0, height=1.6 + 0.3 * len(categories) * max(2, len(models)))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        ys = [j + (i - (len(models) - 1) / 2) * width for j in range(len(categories))]
        values = [100 * at[(b, t, model)]["accuracy"] if (b, t, model) in at else 0.0 for b, t in categories]
        bars = ax.barh(ys, values, height=width, color=colormaps["viridis"](i / max(1, len(models) - 1)),
                       label=model)
        _bar_labels(ax, bars, [f"{v:.1f}%" if (b, t, model) in at else "" for v, (b, t) in zip(values, categories)],
                    fontsize=7)
    for j, cat in enumerate(categories):
        base = next(g["baseline"] for g in groups if category(g) == cat)
        line = ax.plot([100 * base] * 2, [j - 0.45, j + 0.45], color="#d62828", linestyle="--", linewidth=1.5,
                       label="question-only baseline" if j == 0 else None)
        _mark(line, "baseline")
    benches = {b for b, _ in categories}
    ax.set_yticks(range(len(categories)), [b if not key else t if len(benches) == 1 else f"{b}: {t}"
                                           for b, t in categories])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title + (f" ({next(iter(benches))})" if key and len(benches) == 1 else ""))
    _legend(ax)
    return _svg(fig)


@cached
def pass_at_k(rows: list[dict]) -> str | None:
    """pass@k against k for each evaluation that drew several samples per problem (`evals.pass_at_k`)."""
    from vlfactory.reports.evals import eval_label

    drawn = [r for r in rows if (r.get("samples_per_problem") or 1) > 1 and r.get("pass_at_k")]
    if not drawn:
        return None
    fig, (ax,) = _figure(width=7.5)
    for r in drawn:
        ks = range(1, len(r["pass_at_k"]) + 1)
        ax.plot(ks, [100 * p for p in r["pass_at_k"]], marker="o", label=f"{eval_label(r)} ({r['benchmark']})")
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k (%)")
    ax.set_ylim(0, 105)
    ax.xaxis.set_major_locator(_integers())
    ax.set_title("pass@k")
    _legend(ax)
    return _svg(fig)


@cached
def diff(changes: dict[str, dict[str, int]], a: str, b: str) -> str | None:
    """Rows added, removed and changed (by key: updated in place) per table between two versions."""
    kinds = ("added", "removed", "changed")
    touched = {t: d for t, d in changes.items() if any(d.get(k) for k in kinds)}
    if not touched:
        return None
    tables = sorted(touched)
    return _grouped(tables, [{"label": key, "values": [touched[t].get(key, 0) for t in tables], "color": COLORS[key]}
                             for key in kinds], "rows", f"Rows added, removed and changed per table: {a} -> {b}")


@cached
def iterations(names: list[str], series: dict[str, list[int]]) -> str | None:
    """Totals per iteration tag (problems solved, set sizes, ...) as lines."""
    if not names:
        return None
    fig, (ax,) = _figure()
    for label, values in series.items():
        ax.plot(names, values, marker="o", label=label)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("iteration (tag)")
    ax.set_ylabel("rows")
    ax.set_title("Data per iteration")
    _legend(ax)
    return _svg(fig)


@cached
def keywords(rates: list[dict], words: list[str]) -> str | None:
    """Reflection-keyword frequency per 1k words across the loop, one panel per series (traces and rollouts
    per iteration tag, the answers of each evaluated model), one line per keyword that occurs at all (the
    paper's figure); None when none does (the report then says so instead of drawing zeros)."""
    words = [w for w in words if any(r["counts"].get(w) for r in rates)]
    series = [s for s in ("traces", "rollouts", "eval samples") if any(r["series"] == s for r in rates)]
    if not series or not words:
        return None
    fig, axes = _figure(1, len(series), width=4.6 * len(series) + 1.5, height=3.8)
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for ax, name in zip(axes, series):
        points = [r for r in rates if r["series"] == name]
        labels = [r["point"] for r in points]
        for i, word in enumerate(words):
            ax.plot(range(len(points)), [r["per_1k"][word] for r in points], marker="o", color=cmap(i % 10),
                    label=word)
        ax.set_xticks(range(len(points)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{name} ({sum(r['samples'] for r in points):,} samples)", fontsize=10)
        ax.set_ylabel("occurrences per 1k words")
    _legend(axes[-1])
    fig.suptitle("Reflection keywords across iterations")
    return _svg(fig)
