"""The report's plots: matplotlib figures rendered with Agg to PNG `data:` URIs for a self-contained page.

Each function takes numbers from `reports/stats.py` and returns a `data:image/png;base64,...`
URI, or None when there is nothing to draw (the report then says "no data yet"). Figures are
built with `matplotlib.figure.Figure` directly, never pyplot, so no display or global state is
involved and matplotlib is imported only when a report is drawn.

    from vlfactory.reports import plots
    uri = plots.pass_rates({"policy": [0.0, 0.25, 1.0]}, band=(0.0, 0.75))
"""

from __future__ import annotations

import base64
import io

COLORS = {"accepted": "#2a9d8f", "rejected": "#e76f51", "sft": "#264653", "added": "#2a9d8f", "removed": "#e76f51"}


def _figure(rows: int = 1, cols: int = 1, width: float = 8.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False).ravel()


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # Agg renders PNG
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _integers():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _barh(ax, labels: list[str], values: list[float], color: str | None = None, fmt: str = "{:,.0f}") -> None:
    bars = ax.barh(range(len(labels)), values, color=color)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()  # first label on top
    ax.bar_label(bars, [fmt.format(v) for v in values], padding=2, fontsize=8)
    ax.margins(x=0.15)


def funnel(counts: dict[str, dict[str, int]], stages: tuple[str, ...]) -> str | None:
    """Grouped horizontal bars: per source, problems left at each stage."""
    if not counts:
        return None
    sources = sorted(counts)
    fig, (ax,) = _figure(height=1.2 + 0.25 * len(sources) * len(stages))
    from matplotlib import colormaps

    width = 0.8 / len(stages)
    cmap = colormaps["viridis"]
    for i, stage in enumerate(stages):
        ys = [j + i * width for j in range(len(sources))]
        bars = ax.barh(ys, [counts[s][stage] for s in sources], height=width, label=stage,
                       color=cmap(i / max(1, len(stages) - 1)))
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks([j + 0.4 - width / 2 for j in range(len(sources))], sources)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel("problems")
    ax.set_title("Funnel per source: problems left at each stage")
    ax.legend(loc="lower right", fontsize=8)
    return _uri(fig)


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
    return _uri(fig)


def lengths(values: dict[str, dict[str, list[int]]]) -> str | None:
    """Completion length histograms, accepted vs rejected (and the sft set), in words and tokens."""
    units = [(u, values[u]) for u in ("words", "tokens") if values.get(u)]
    if not units:
        return None
    fig, axes = _figure(1, len(units), width=5.0 * len(units))
    for ax, (unit, groups) in zip(axes, units):
        top = max(max(v) for v in groups.values())
        bins = [top * i / 30 for i in range(31)] if top > 0 else [0, 1]
        for name, v in sorted(groups.items()):
            ax.hist(v, bins=bins, histtype="step", linewidth=1.8, color=COLORS.get(name),
                    label=f"{name} (n={len(v):,}, median {sorted(v)[len(v) // 2]:,})")
        ax.set_xlabel(f"{'words' if unit == 'words' else 'completion tokens'} per completion")
        ax.set_ylabel("completions")
        ax.yaxis.set_major_locator(_integers())
        ax.legend(fontsize=8)
    fig.suptitle("Completion length: accepted vs rejected")
    return _uri(fig)


def pass_rates(rates: dict[str, list[float]], band: tuple[float, float] | None) -> str | None:
    """Per-problem pass rate of the policy's rollouts, with the band the rl set keeps."""
    if not rates:
        return None
    fig, (ax,) = _figure()
    bins = [i / 10 for i in range(11)]
    ax.hist(list(rates.values()), bins=bins, label=[f"{m} ({len(v):,} problems)" for m, v in rates.items()],
            edgecolor="white")
    if band:
        ax.axvspan(band[0] - 0.01, band[1] + 0.01, color="#f4a261", alpha=0.25, label=f"RL band [{band[0]}, {band[1]}]")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("pass rate (correct rollouts / rollouts)")
    ax.set_ylabel("problems")
    ax.yaxis.set_major_locator(_integers())
    ax.set_title("Pass rate of rollouts per problem")
    ax.legend(fontsize=8)
    return _uri(fig)


def usage(rows: list[dict]) -> str | None:
    """Tokens (prompt + completion) and summed request time per stage and model."""
    if not rows:
        return None
    labels = [f"{r['stage']}: {r['model']}" for r in rows]
    fig, (tok, sec) = _figure(1, 2, width=10.0, height=1.6 + 0.35 * len(rows))
    prompt = [r["prompt_tokens"] or 0 for r in rows]
    completion = [r["completion_tokens"] or 0 for r in rows]
    y = range(len(rows))
    tok.barh(y, prompt, color="#8ecae6", label="prompt")
    bars = tok.barh(y, completion, left=prompt, color="#219ebc", label="completion")
    tok.bar_label(bars, [f"{p + c:,}" for p, c in zip(prompt, completion)], padding=2, fontsize=8)
    tok.set_yticks(list(y), labels)
    tok.invert_yaxis()
    tok.margins(x=0.2)
    tok.set_xlabel("tokens")
    tok.set_title("Tokens", fontsize=10)
    tok.legend(fontsize=8)
    _barh(sec, labels, [r["latency_s"] or 0.0 for r in rows], "#ffb703", fmt="{:,.1f}")
    sec.set_yticks(list(y), [""] * len(rows))
    sec.set_xlabel("seconds (sum of request latencies)")
    sec.set_title("Time", fontsize=10)
    fig.suptitle("Tokens and time per stage and model")
    return _uri(fig)


def evals(rows: list[dict]) -> str | None:
    """Accuracy per benchmark across the loop's models (base, iter1 sft, iter1 grpo, ...), or across
    evaluations in order."""
    if not rows:
        return None
    from vlfactory.reports.stats import eval_label, eval_order

    fig, (ax,) = _figure()
    labels = sorted({(eval_order(r), eval_label(r)) for r in rows if r.get("iteration") is not None})
    position = {label: i for i, (_, label) in enumerate(labels)}
    by_bench: dict[str, dict[float, float]] = {}
    for i, r in enumerate(rows):
        x = position.get(eval_label(r), len(labels) + i)
        by_bench.setdefault(r["benchmark"], {})[x] = 100 * r["accuracy"]
    for bench, points in sorted(by_bench.items()):
        xs, ys = zip(*sorted(points.items()))
        ax.plot(xs, ys, marker="o", label=bench)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    ticks = sorted({x for p in by_bench.values() for x in p})
    names = {i: label for label, i in position.items()}
    ax.set_xticks(ticks, [names.get(x, "") for x in ticks], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_xlabel("model of the loop")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Eval accuracy per benchmark")
    ax.legend(fontsize=8)
    return _uri(fig)


def diff(changes: dict[str, dict[str, int]], a: str, b: str) -> str | None:
    """Rows added and removed per table between two versions."""
    changed = {t: d for t, d in changes.items() if d["added"] or d["removed"]}
    if not changed:
        return None
    tables = sorted(changed)
    fig, (ax,) = _figure(height=1.4 + 0.45 * len(tables))
    y = range(len(tables))
    for offset, key in ((-0.2, "added"), (0.2, "removed")):
        bars = ax.barh([i + offset for i in y], [changed[t][key] for t in tables], height=0.4, color=COLORS[key],
                       label=key)
        ax.bar_label(bars, fontsize=8, padding=2)
    ax.set_yticks(list(y), tables)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.set_xlabel("rows")
    ax.set_title(f"Rows added and removed per table: {a} -> {b}")
    ax.legend(fontsize=8)
    return _uri(fig)


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
    ax.legend(fontsize=8)
    return _uri(fig)


def keywords(rates: list[dict], words: list[str]) -> str | None:
    """Reflection-keyword frequency per 1k words across the loop, one panel per series (traces and rollouts
    per iteration tag, the answers of each evaluated model), one line per keyword: the paper's figure."""
    series = [s for s in ("traces", "rollouts", "eval samples") if any(r["series"] == s for r in rates)]
    if not series:
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
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Reflection keywords across iterations")
    return _uri(fig)
