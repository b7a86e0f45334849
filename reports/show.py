"""A quick look at a few rows of a version in the terminal, with what they refer to.

Each sample shows its problem (question, choices, gold answer, source), the image's size,
format and hash, the row's text (the trace, caption or prompt) and, for traces, rollouts and
sft examples, the verifier's verdict from `grades`. Samples are picked by a seeded hash of the
row's id, so the same command shows the same rows.

    vlfactory show iter1 --table traces --sample 5
    vlfactory show latest --table sft --sample 3 --seed 1
"""

from __future__ import annotations

from vlfactory.sqlout import terminal
from vlfactory.stores.lake import Lake, LakeError

TEXT = {"traces": "completion", "rollouts": "completion", "sft": "completion", "captions": "caption", "rl": "prompt",
        "rejected": "detail"}
GRADED_BY = {"traces": "trace_id", "rollouts": "rollout_id", "sft": "from_id"}  # the column grades.ref_id names


def samples(lake: Lake, version: str | int, table: str, n: int = 5, seed: int = 0) -> list[dict]:
    """n rows of a table at a version, joined with their problem, image and latest grade."""
    if table not in lake.tables():
        raise LakeError(f"unknown table {table!r}; tables: {', '.join(lake.tables())}")
    s = lake.resolve(version)
    cols = lake.query(f"SELECT * FROM {table}@{s} LIMIT 0").columns
    key = cols[0]  # every data table leads with its id
    joins, extra = [], []
    if "problem_id" in cols and table != "problems":
        joins.append(f"LEFT JOIN problems@{s} p ON p.problem_id = t.problem_id")
        extra.append("p.question AS p_question, p.answer AS p_answer, p.choices AS p_choices, p.source AS p_source, "
                     "p.source_id AS p_source_id, p.image_id AS p_image_id")
    if "image_id" in cols or joins:
        joins.append(f"LEFT JOIN images@{s} i ON i.image_id = {'t' if 'image_id' in cols else 'p'}.image_id")
        extra.append("i.image_id AS i_image_id, i.width AS i_width, i.height AS i_height, i.format AS i_format, "
                     "i.n_bytes AS i_bytes")
    if table in GRADED_BY:
        joins.append(f"""LEFT JOIN (SELECT * FROM grades@{s} QUALIFY row_number() OVER (
                             PARTITION BY ref_id ORDER BY created_at DESC) = 1) g ON g.ref_id = t.{GRADED_BY[table]}""")
        extra.append("g.correct AS g_correct, g.accepted AS g_accepted, g.grade_reason AS g_reason, "
                     "g.reasons AS g_reasons, g.extracted AS g_extracted")
    sql = f"""SELECT t.* {''.join(', ' + e for e in extra)} FROM {table}@{s} t {' '.join(joins)}
              ORDER BY md5(concat(?, t."{key}")) LIMIT {int(n)}"""
    rel = lake.query(sql, [str(seed)])
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def render(rows: list[dict], table: str, console=None, max_chars: int = 2000) -> None:
    """Print samples as rich panels: text is shown literally (no markup is interpreted) and its control
    characters spelled out (`vlfactory.sqlout.terminal`), so a model's output cannot drive the terminal."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    if not rows:
        console.print(Text(terminal(f"no rows in {table} at this version")))
        return
    for i, r in enumerate(rows, 1):
        r = {k: _safe(v) for k, v in r.items()}
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for name, value in fields(r, table, max_chars):
            if value not in (None, "", []):
                grid.add_row(name, value if isinstance(value, Text) else Text(str(value)))
        title = terminal(f"{table} {i}/{len(rows)}: {next(iter(r.values()))}")
        console.print(Panel(grid, title=Text(title), title_align="left"))


def _safe(v):
    """A value with its text (in lists too) fit for a terminal."""
    if isinstance(v, str):
        return terminal(v)
    if isinstance(v, (list, tuple)):
        return [_safe(x) for x in v]
    return v


def fields(r: dict, table: str, max_chars: int) -> list[tuple[str, object]]:
    """(label, value) pairs of one sample, in display order; empty values are left out by `render`."""
    from rich.text import Text

    source = r.get("p_source") or r.get("source")
    choices = r.get("p_choices") or r.get("choices")
    source_id = r.get("p_source_id") or r.get("source_id")
    out = [("source", " / ".join(str(v) for v in (source, source_id) if v)),
           ("question", r.get("p_question") or r.get("question")),
           ("choices", " | ".join(f"({chr(65 + k)}) {c}" for k, c in enumerate(choices)) if choices else None),
           ("gold answer", r.get("p_answer") if "p_answer" in r else r.get("answer"))]
    if r.get("i_image_id"):
        out.append(("image", f"{r['i_width']}x{r['i_height']} {r['i_format']}, {r['i_bytes']:,} bytes, "
                             f"sha256 {r['i_image_id']}"))
    out.append(("model", r.get("model")))
    text = r.get(TEXT.get(table, ""))
    if text:
        more = len(text) - max_chars
        cut = Text(f" … ({more:,} more characters)", style="dim") if more > 0 else Text("")
        out.append((TEXT[table], Text(text[:max_chars]) + cut))
    if table in ("traces", "rollouts"):
        out.append(("answer", r["answer"] if r.get("answer") is not None else Text("none found", style="dim")))
    if table == "rejected":
        out.append(("reasons", f"{r['stage']}: {', '.join(r.get('reasons') or [r['reason']])}"))
    if table in GRADED_BY:
        out.append(("verdict", verdict(r)))
    return out


def verdict(r: dict):
    from rich.text import Text

    if r.get("g_correct") is None:
        return Text("not graded", style="dim")
    why = ", ".join(r.get("g_reasons") or [])
    taken = "accepted" if r["g_accepted"] else f"rejected{': ' + why if why else ''}"
    return Text(f"{r['g_reason']}; {taken}; extracted {r['g_extracted']!r}",
                style="green" if r["g_accepted"] else "red")
