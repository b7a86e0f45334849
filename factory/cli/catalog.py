"""Commands over the catalog itself: sql, versions, diff, tag, gc.

    vlfactory sql "SELECT source, count(*) FROM problems GROUP BY source"
    vlfactory versions --last 10
    vlfactory diff iter1 iter2 --table sft
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vlfactory import sqlout
from vlfactory.cli import main
from vlfactory.cli.common import UserError, db_errors, friendly, lake_options, open_lake


@main.command()
@click.argument("query", required=False)
@lake_options
@click.option("--file", "-f", "file", default=None, metavar="FILE", help="Read the SQL from FILE (- for stdin).")
@click.option("--at", "at", default=None, help="Read every table at this version (tag or snapshot id).")
@click.option("--format", "fmt", type=click.Choice(sqlout.FORMATS), default=None,
              help="Output format [default: from -o's suffix (.csv .tsv .json .jsonl .md .parquet), else table].")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write to FILE (parquet needs one). csv, tsv, json, jsonl and parquet stream, here or to stdout.")
@click.option("--no-header", is_flag=True, help="Leave out the header row (table, csv, tsv, markdown).")
@click.option("--max-width", type=click.IntRange(min=0), default=60, show_default=True,
              help="Cut longer cells in table and markdown output (0: never).")
@friendly
@db_errors
def sql(query: str | None, lake: str | None, data_path: str | None, file: str | None, at: str | None,
        fmt: str | None, output: str | None, no_header: bool, max_width: int) -> None:
    """Run a read-only SQL query against the lake: QUERY, or --file FILE, or piped in (or -: stdin).

    A table at a version is written TABLE@VERSION (a tag or a snapshot id). json is one
    array, jsonl one object per line (DuckDB's -json and -jsonlines); lists and maps are
    JSON in every format.

    \b
    Examples:
        vlfactory sql "SELECT source, count(*) FROM problems GROUP BY source"
        vlfactory sql "SELECT count(*) FROM problems@iter1"
        vlfactory sql -f funnel.sql --format markdown
        echo "SELECT * FROM rl" | vlfactory sql --format jsonl
        vlfactory sql "SELECT * FROM traces@iter1" -o traces.parquet    # streamed, any size
    """
    text = _sql_text(query, file)
    fmt = sqlout.format_for(fmt, output)
    if fmt == "parquet" and not output:
        raise UserError("--format parquet needs --output FILE")
    if no_header and fmt not in sqlout.HEADED:
        raise UserError(f"--no-header applies to {', '.join(sqlout.HEADED)}; {fmt} has no header row")
    import duckdb

    with open_lake(lake, data_path, read_only=True, at=at, check_schema=False) as lk:  # checked if the SQL fails
        rel = lk.query(text)
        try:
            sqlout.write(rel, fmt, output, header=not no_header, max_width=max_width)
        except duckdb.Error as e:  # while reading the rows (a cast that fails on row 15,000): where, in the SQL given
            raise lk.error(e, text) from None
    if output:
        click.echo(f"wrote {output}", err=True)


def _sql_text(query: str | None, file: str | None) -> str:
    """The SQL: the argument, or a file, or stdin (`-`, or neither when stdin is not a terminal, as `duckdb`)."""
    if query is not None and file is not None:
        raise UserError("give the SQL as QUERY, as --file FILE or on stdin: one of them")
    if query is not None and query != "-":
        return query
    if (file or query) == "-" or (file is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
        if not text.strip():
            raise UserError("no SQL: give it as QUERY, as --file FILE or on stdin (one of them)")
        return text
    if file is None:
        raise UserError("give the SQL as QUERY, as --file FILE or on stdin: one of them")
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {file}: {getattr(e, 'strerror', None) or e}") from None


@main.command()
@lake_options
@click.option("--last", type=int, default=20, show_default=True, help="Show the last N snapshots.")
@click.option("--format", "fmt", type=click.Choice([f for f in sqlout.FORMATS if f != "parquet"]), default="table",
              show_default=True, help="As `sql` writes it: tags a list and rows a map in json, JSON text in csv.")
@friendly
def versions(lake: str | None, data_path: str | None, last: int, fmt: str) -> None:
    """List snapshots with tags, the run that wrote them, and the rows in every table.

    \b
    Example:
        vlfactory versions --last 10
        vlfactory versions --format jsonl | jq -c '{snapshot, rows}'
    """
    from vlfactory import api

    rows = [tuple(v.values()) for v in api.versions(lake, last=last, data_path=data_path)]
    if fmt != "table":
        sqlout.write(sqlout.Rows(api.VERSION_FIELDS, rows), fmt, None)
        return
    sqlout.table(["snapshot", "tags", "time (UTC)", "run", "message", "rows"],
                 [(snap, ",".join(names), at.strftime("%m-%d %H:%M:%S"), f"{command or ''} {(run_id or '')[:8]}".strip(),
                   message, " ".join(f"{t}={n}" for t, n in counts.items())) for snap, names, at, command, run_id,
                  message, counts in rows], max_width=0)


@main.command()
@click.argument("a")
@click.argument("b", default="latest")
@click.option("--table", default=None, help="List this table's rows added, removed and changed, by its key.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="With --table: rows listed per kind (added, removed, changed; 0: all). Counts are whole.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@lake_options
@friendly
def diff(a: str, b: str, table: str | None, limit: int, fmt: str, lake: str | None, data_path: str | None) -> None:
    """Rows added, removed and changed per table between versions A and B; with --table, the rows.

    Rows are matched by the table's key (sft: problem_id + from_id, grades: the graded sample, rl:
    problem_id, trainings: training_id, ...): a key on both sides with other content is a changed
    row (an updated status, a recleaned completion), shown with --table with its changed columns
    before and after. run_id and created_at are not compared.

    \b
    Example:
        vlfactory diff iter1 iter2
        vlfactory diff iter1 iter2 --table sft
        vlfactory diff iter1-rl iter2-rl --table rl --format json
        vlfactory diff 12          # from snapshot 12 to the latest
    """
    from vlfactory import api
    from vlfactory.sqlout import terminal

    with open_lake(lake, data_path, read_only=True) as lk:
        if table is None:
            sa, sb = lk.resolve(a), lk.resolve(b)
            counts = api.diff(sa, sb, lake=lk)
            if fmt == "json":
                click.echo(json.dumps({"a": a, "b": b, "snapshot_a": sa, "snapshot_b": sb, "tables": counts}))
                return
            click.echo(terminal(f"{a} (snapshot {sa}) -> {b} (snapshot {sb})"))
            sqlout.table(["table", "added", "removed", "changed"],
                         [(t, f"+{d['added']}", f"-{d['removed']}", f"~{d['changed']}")
                          for t, d in counts.items() if any(d.values())], max_width=80)
            return
        d = api.diff(a, b, table=table, lake=lk, limit=limit or None)
    if fmt == "json":
        import dataclasses

        click.echo(json.dumps(dataclasses.asdict(d), default=str))  # ASCII: C1 controls escaped too
        return
    sqlout.row_diff(d)


@main.command()
@click.argument("name")
@lake_options
@click.option("--at", "at", default=None, help="Tag this version instead of the latest snapshot.")
@click.option("--note", default=None, help="A note stored with the tag.")
@click.option("--force", is_flag=True, help="Move an existing tag.")
@friendly
def tag(name: str, lake: str | None, data_path: str | None, at: str | None, note: str | None, force: bool) -> None:
    """Name the current snapshot (or --at VERSION), e.g. iter1.

    \b
    Example:
        vlfactory tag iter1
        vlfactory sql "SELECT count(*) FROM problems@iter1"
    """
    with open_lake(lake, data_path) as lk:
        snap = lk.tag(name, at, note=note, force=force)
        click.echo(f"{name} -> snapshot {snap}")


def _duration(text: str) -> float:
    """Seconds from '30d', '12h', '90m', '45s' or a plain number of seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise UserError(f"--older-than {text!r}: give a duration like 7d, 12h, 30m or 0s")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


@main.command()
@lake_options
@click.option("--older-than", "older_than", default="7d", show_default=True,
              help="Expire snapshots older than this (7d, 12h, 0s); tagged and trained-on snapshots are kept.")
@click.option("--dry-run", is_flag=True, help="Print what would be merged, expired and deleted; change nothing.")
@friendly
def gc(lake: str | None, data_path: str | None, older_than: str, dry_run: bool) -> None:
    """Maintenance: merge small files, expire old untagged snapshots, delete unused and orphan files.

    Never removes a tagged version: every snapshot a tag names (and every one a training read)
    stays readable with exactly its rows. Runs left `running` by a killed process are marked
    `interrupted`. Orphan Parquet files (a killed batch) go once older than --older-than and an hour.

    \b
    Example:
        vlfactory gc --dry-run
        vlfactory gc --older-than 30d
    """
    seconds = _duration(older_than)
    with open_lake(lake, data_path) as lk:
        lk.gc(seconds, dry_run=dry_run, say=click.echo)
