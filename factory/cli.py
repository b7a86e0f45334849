"""The `vlfactory` command line: a thin layer over the Python API.

    vlfactory run quickstart
    vlfactory sql "SELECT source, count(*) FROM problems GROUP BY source"
    vlfactory --help
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from vlfactory import sqlout

LAKE_HELP = "Lake folder or ducklake: URI [env VLFACTORY_LAKE; default ./lake]."


class UserError(click.ClickException):
    """One clear line for the user, exit code 2; a query's error then shows where, as DuckDB's shell does
    (`LINE 1: ...` over a caret)."""

    exit_code = 2

    def __init__(self, message: str, pointer: str = ""):
        super().__init__(message)
        self.pointer = pointer

    def show(self, file=None) -> None:
        from vlfactory.redact import redact

        click.secho(f"error: {redact(self.message)}", err=True, fg="red")  # a base_url's password, say
        if self.pointer:
            click.echo(f"\n{self.pointer}", err=True)


def friendly(fn):
    """Turn the errors a user can fix into one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # the classes are imported here: `vlfactory sql` starts without recipes and backends
            from vlfactory.backends import EndpointsUnreachable
            from vlfactory.recipe import RecipeError
            from vlfactory.stores.lake import LakeError

            if isinstance(e, (RecipeError, LakeError, EndpointsUnreachable)):
                raise UserError(str(e), sqlout.pointer(e.sql, e.position) if isinstance(e, LakeError) else ""
                                ) from None
            if isinstance(e, OSError):  # a full disk, a folder one may not write: the lake's commits stay whole
                where = f"{e.filename}: " if getattr(e, "filename", None) else ""
                raise UserError(where + (e.strerror or str(e).strip().splitlines()[0] or type(e).__name__)) from None
            raise
    return wrapper


def db_errors(fn):
    """A query the engine refuses or cannot run (a write in read-only SQL, a typo) is one line too,
    with DuckDB's hints ("Did you mean ...")."""
    import duckdb

    from vlfactory.stores.lake import error_line

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except duckdb.Error as e:
            raise UserError(error_line(e)) from None
    return wrapper


def lake_options(fn):
    fn = click.option("--data-path", envvar="VLFACTORY_DATA_PATH", default=None,
                      help="Where a new lake's Parquet files go (folder or s3:// URL) [env VLFACTORY_DATA_PATH].")(fn)
    return click.option("--lake", envvar="VLFACTORY_LAKE", default=None, help=LAKE_HELP)(fn)


def open_lake(lake: str | None, data_path: str | None, recipe=None, **kwargs):
    from vlfactory.api import lake_spec
    from vlfactory.stores.lake import Lake

    return Lake(lake_spec(lake, data_path, recipe), **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vlfactory")
def main() -> None:
    """vlfactory: versioned visual-reasoning datasets in a DuckLake catalog.

    \b
    Example, the whole main job on the embedded defaults:
        vlfactory run quickstart
        vlfactory sql "SELECT source, split, count(*) FROM problems GROUP BY ALL"
    """


# ---- ingest / run --------------------------------------------------------------

@main.command()
@click.argument("recipe")
@lake_options
@click.option("--limit", type=int, default=None, help="Read at most N rows per source.")
@friendly
def ingest(recipe: str, lake: str | None, data_path: str | None, limit: int | None) -> None:
    """Ingest a recipe's sources into the lake.

    \b
    Example:
        vlfactory ingest recipes/tabmwp.yaml --lake ./lake
    """
    _run(recipe, lake, data_path, ["ingest"], limit)


STAGE_NAMES = ("ingest", "caption", "distil", "rollout", "verify", "sft", "rl")  # vlfactory.stages.STAGES
REPORT_TO = click.option("--report-to", type=click.Choice(["wandb", "trackio", "tensorboard", "none"]), default=None,
                         help="Track the run's numbers, trainings included (default: the recipe's tracking: block, "
                              "else none).")


@main.command()
@click.argument("recipe")
@lake_options
@click.option("--stage", type=click.Choice(STAGE_NAMES), multiple=True, help="Run only this stage (repeatable).")
@click.option("--limit", type=int, default=None,
              help="Work on the first N problems of the recipe's sources (rows per source for ingest).")
@click.option("--tag", "tag_name", default=None, help="Tag the snapshot the run ends on (e.g. iter1).")
@REPORT_TO
@friendly
def run(recipe: str, lake: str | None, data_path: str | None, stage: tuple[str, ...], limit: int | None,
        tag_name: str | None, report_to: str | None) -> None:
    """Run a recipe's stages in order: ingest, caption, distil, rollout, verify, sft, rl.

    Stages work on the recipe's own sources only. Stages the recipe does not configure
    (distil, sft, rollout, rl) are skipped.

    RECIPE is a YAML file or the name of a shipped recipe (quickstart, tabmwp, dynamath).

    \b
    Example:
        vlfactory run quickstart
        vlfactory run recipes/tabmwp.yaml --stage ingest --limit 100
        vlfactory run my.yaml --stage verify --stage sft --tag iter1
        vlfactory run quickstart --report-to tensorboard    # then: tensorboard --logdir runs
    """
    _run(recipe, lake, data_path, list(stage) or None, limit, tag_name, report_to)


def _run(recipe_ref: str, lake_spec, data_path, stages: list[str] | None, limit: int | None,
         tag_name: str | None = None, report_to: str | None = None) -> None:
    """`vlfactory.run` (every stage the recipe configures when `stages` is None), printing as it goes."""
    from rich.console import Console

    from vlfactory import api

    console = Console(stderr=True)
    api.run(recipe_ref, stages, lake=lake_spec, data_path=data_path, limit=limit, tag=tag_name, say=console.print,
            progress=lambda name: sqlout.progress(console, name), argv=" ".join(sys.argv[1:]), report_to=report_to)


# ---- inspection ------------------------------------------------------------------

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
@click.argument("version", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets the network read the lake (SQL included).")
@click.option("--port", type=int, default=8765, show_default=True, help="Port to listen on (0: any free port).")
@lake_options
@friendly
def view(version: str | None, host: str, port: int, lake: str | None, data_path: str | None) -> None:
    """Browse a version in the browser: traces with their images, captions, verdicts; read-only.

    Filter problems, captions, traces, rollouts, grades, rejected rows and the sets by source,
    verdict, reason, model, iteration or any SQL WHERE; open a sample to see its image, the
    caption the reasoner saw, the completion beside its cleaned version, and how it stood at
    every tagged version. It shows the lake as it was when it started: restart it to see later writes.

    \b
    Example:
        vlfactory view iter1                 # then open http://127.0.0.1:8765/
        vlfactory view --port 0              # any free port
    """
    from vlfactory.viewer import server

    with open_lake(lake, data_path, read_only=True) as lk:
        try:
            httpd = server(lk, version, host, port)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"viewing {lk.spec.display} at http://{shown}:{httpd.server_port}/ (read-only; Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            httpd.server_close()


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


@main.command()
@click.argument("recipe")
@lake_options
@click.option("--iterations", type=int, default=None, help="Override the recipe's loop.iterations.")
@click.option("--limit", type=int, default=None, help="Work on the first N problems in every stage.")
@REPORT_TO
@friendly
def iterate(recipe: str, lake: str | None, data_path: str | None, iterations: int | None, limit: int | None,
            report_to: str | None) -> None:
    """Run the OpenVLThinker loop: distil -> SFT -> rollouts -> RL set -> GRPO -> eval, repeated.

    Every step is resumable: rerun after a crash and it continues from the first unfinished step.

    \b
    Example:
        vlfactory iterate quickstart
        vlfactory iterate quickstart --report-to wandb
        vlfactory sql "SELECT iteration, benchmark, accuracy FROM evals ORDER BY iteration"
    """
    from rich.console import Console

    from vlfactory import api

    console = Console(stderr=True)
    api.iterate(recipe, lake=lake, data_path=data_path, iterations=iterations, limit=limit,
                say=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
                progress=lambda name: sqlout.progress(console, name), report_to=report_to)


@main.command("eval")
@click.option("--model", required=True, help="The model to evaluate: a folder or hub id.")
@click.option("--benchmark", "benchmarks", required=True, multiple=True,
              help="A source of the recipe (its benchmarks: or sources:); repeatable.")
@click.option("--recipe", "recipe_ref", default="quickstart", show_default=True,
              help="The recipe naming the benchmark sources and the rollout backend.")
@click.option("--backend", type=click.Choice(["transformers", "vllm", "openai"]), default=None,
              help="Override the recipe's rollout backend.")
@click.option("--max-tokens", type=int, default=None, help="New tokens per answer (default: the recipe's).")
@click.option("--limit", type=int, default=None, help="Evaluate the first N problems.")
@lake_options
@friendly
def eval_(model: str, benchmarks: tuple[str, ...], recipe_ref: str, backend: str | None, max_tokens: int | None,
          limit: int | None, lake: str | None, data_path: str | None) -> None:
    """Answer a benchmark from its images, verify, store accuracy in `evals`.

    \b
    Example:
        vlfactory eval --model runs/quickstart/iter1/grpo --benchmark dynamath --recipe recipes/quickstart.yaml
        vlfactory sql "SELECT model, benchmark, accuracy FROM evals ORDER BY created_at"
    """
    from vlfactory import api

    api.evaluate(model, benchmarks, recipe_ref, lake=lake, data_path=data_path, backend=backend, max_tokens=max_tokens,
                 limit=limit, say=lambda line: click.echo(line, err=True), argv=" ".join(sys.argv[1:]))


@main.command()
@click.argument("version")
@click.option("--table", default=None, help="The table to export (or write VERSION as TABLE@VERSION).")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "hf"]), default="parquet",
              help="parquet: shards that load with datasets.load_dataset('parquet'); hf: Dataset.save_to_disk.")
@click.option("--shard-rows", type=int, default=5000, show_default=True)
@lake_options
@friendly
def export(version: str, table: str | None, to: str, fmt: str, shard_rows: int, lake: str | None,
           data_path: str | None) -> None:
    """Export a table at a version, images embedded as a datasets Image feature.

    \b
    Examples:
        vlfactory export sft@iter1 --to out/
        vlfactory export iter1 --table sft --to out/ --format hf
        python -c "import datasets; print(datasets.load_dataset('parquet', data_dir='out/sft'))"
    """
    from vlfactory.hub.export import export as do_export

    if "@" in version:
        named, version = version.split("@", 1)
        if table and table != named:
            raise UserError(f"two tables: {named}@{version} and --table {table}; give one")
        table = named
    if not table:
        raise UserError("name the table: --table NAME, or VERSION as TABLE@VERSION (e.g. sft@iter1)")
    with open_lake(lake, data_path, read_only=True) as lk:
        paths = do_export(lk, table, version, Path(to), fmt, shard_rows)
    click.echo(f"wrote {len(paths)} {'shard' if fmt == 'parquet' else 'dataset'}{'s' if len(paths) > 1 else ''} "
               f"to {paths[0].parent if fmt == 'parquet' else paths[0]}")


# ---- train ---------------------------------------------------------------------

@main.group()
def train() -> None:
    """Train a VLM on a set version with TRL; every run is a row in `trainings`.

    \b
    Example:
        vlfactory train sft --dataset sft@iter1 --model tiny-qwen2.5-vl --output runs/sft-iter1
        vlfactory sql "SELECT kind, dataset, snapshot_id, rows, status, metrics['train_loss'] FROM trainings"
    """


def train_options(fn):
    fn = lake_options(fn)
    for option in reversed([
        click.option("--dataset", required=True, help="The set version: TABLE@TAG, TABLE@SNAPSHOT, or a tag."),
        click.option("--model", required=True, help="Base model: a folder, a hub id, or tiny-qwen2.5-vl."),
        click.option("--output", required=True, type=click.Path(file_okay=False), help="Checkpoint folder."),
        click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Trainers YAML: TRL config fields (default: a few tiny steps on any CPU)."),
        click.option("--overwrite", is_flag=True,
                     help="Train into --output even when it holds a different finished training."),
    ]):
        fn = option(fn)
    return fn


def train_command(kind: str, doc: str):
    """`vlfactory train KIND` (sft, grpo): the trainer's train_KIND on the flags, printing the training's line."""

    def command(dataset: str, model: str, output: str, config_path: str | None, overwrite: bool, lake: str | None,
                data_path: str | None) -> None:
        from vlfactory.trainers import grpo, sft

        fit = {"sft": sft.train_sft, "grpo": grpo.train_grpo}[kind]
        click.echo(fit(dataset, model, output, config=config_path, lake=lake, data_path=data_path,
                       overwrite=overwrite).line())
    command.__doc__ = doc
    return train.command(kind)(train_options(friendly(command)))


train_command("sft", """Supervised fine-tuning on an sft set version (TRL's SFTTrainer).

    \b
    Example:
        vlfactory train sft --dataset sft@iter1 --model tiny-qwen2.5-vl --output runs/sft-iter1
    On GPUs, the same through accelerate (python -m vlfactory.trainers.sft --help):
        accelerate launch --num_processes 8 -m vlfactory.trainers.sft --dataset sft@iter1 \\
            --model Qwen/Qwen2.5-VL-7B-Instruct --output runs/sft-iter1 --config sft.yaml
    """)
train_command("grpo", """GRPO on an rl set version (TRL's GRPOTrainer, the factory's verifier as reward).

    \b
    Example:
        vlfactory train grpo --dataset rl@iter1 --model runs/sft-iter1 --output runs/grpo-iter1
    On GPUs, the same through accelerate (python -m vlfactory.trainers.grpo --help):
        accelerate launch --num_processes 8 -m vlfactory.trainers.grpo --dataset rl@iter1 \\
            --model runs/sft-iter1 --output runs/grpo-iter1 --config grpo.yaml
    """)


# ---- publish, report, show -------------------------------------------------------

@main.command()
@click.argument("version")
@click.option("--repo", required=True, help="The dataset repo on the Hugging Face Hub: ORG/NAME.")
@click.option("--table", "tables", multiple=True, required=True,
              help="A table to publish as a config (repeatable): problems, sft, rl, traces, rejected, ...")
@click.option("--private", is_flag=True, help="Create the repo private (default: the account's default visibility).")
@click.option("--dry-run", "dry_run", type=click.Path(file_okay=False), default=None,
              help="Write the exact folder here and upload nothing.")
@click.option("--max-shard-size", default="500MB", show_default=True,
              help="Largest shard, in Arrow bytes as push_to_hub counts them (e.g. 1GB, 200MB).")
@click.option("--revision", default=None, help="Upload to this branch (created if missing) or refs/pr/N.")
@click.option("--create-pr", is_flag=True, help="Open a pull request against main instead of committing to it.")
@click.option("--commit-message", default=None, help="The commit's title (default: vlfactory publish VERSION ...).")
@click.option("--replace", is_flag=True,
              help="Drop the repo's other configs (those a publish wrote) instead of refusing to leave them out.")
@lake_options
@friendly
def publish(version: str, repo: str, tables: tuple[str, ...], private: bool, dry_run: str | None,
            max_shard_size: str, revision: str | None, create_pr: bool, commit_message: str | None,
            replace: bool, lake: str | None, data_path: str | None) -> None:
    """Publish a version to the Hugging Face Hub as push_to_hub lays it out: a config per table, real splits.

    Each table is a config NAME with files NAME/SPLIT-0000i-of-0000N.parquet, shards cut by
    size; the card holds dataset_info, sample rows and the commands that reproduce the version;
    the recipes go along. The token comes from HF_TOKEN or `hf auth login`. The upload deletes
    only what an earlier publish wrote and this one replaces; a repo with other configs, which
    the new card would not describe, is refused unless --replace.

    \b
    Example:
        vlfactory publish iter1 --repo my-org/vl-reasoning --table sft --table rl --dry-run out/
        vlfactory publish iter1 --repo my-org/vl-reasoning --table sft --table rl
        vlfactory publish iter2 --repo my-org/vl-reasoning --table sft --create-pr --commit-message "iter2 sft"
    """
    from vlfactory.hub.publish import PublishError
    from vlfactory.hub.publish import publish as do_publish

    with open_lake(lake, data_path, read_only=True) as lk:
        try:
            click.echo(do_publish(lk, version, repo, list(tables), private, dry_run, max_shard_size, revision,
                                  create_pr, commit_message, replace).line())
        except PublishError as e:
            raise UserError(str(e)) from None


@main.command()
@click.argument("version", required=False)
@click.option("--iterations", is_flag=True, help="Compare the loop's tags iter1, iter2, ... instead of one version.")
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="The HTML file to write.")
@lake_options
@friendly
def report(version: str | None, iterations: bool, out: str, lake: str | None, data_path: str | None) -> None:
    """Write a self-contained HTML report of a version (default: latest) or of the loop's iterations.

    \b
    Example:
        vlfactory report iter1 --out report.html
        vlfactory report --iterations --out loop.html
    """
    from vlfactory.reports.html import report as page

    if version and iterations:
        raise UserError("give VERSION or --iterations, not both")
    with open_lake(lake, data_path, read_only=True) as lk:
        Path(out).write_text(page(lk, version, iterations))
    click.echo(f"wrote {out}")


@main.command()
@click.argument("version")
@click.option("--table", default="traces", show_default=True, help="traces, rollouts, sft, rl, captions, rejected, ...")
@click.option("--sample", "n", type=int, default=5, show_default=True, help="How many rows to show.")
@click.option("--seed", type=int, default=0, show_default=True, help="Another seed shows other rows.")
@click.option("--max-chars", type=int, default=2000, show_default=True, help="Cut longer texts.")
@lake_options
@friendly
def show(version: str, table: str, n: int, seed: int, max_chars: int, lake: str | None, data_path: str | None) -> None:
    """Print a few rows of a table at a version, with their question, image and verdict.

    \b
    Example:
        vlfactory show iter1 --table traces --sample 5
    """
    from vlfactory.reports.show import render, samples

    with open_lake(lake, data_path, read_only=True) as lk:
        render(samples(lk, version, table, n, seed), table, max_chars=max_chars)


@main.group()
def recipe() -> None:
    """Recipes as editors see them.

    \b
    Example:
        vlfactory recipe schema > recipe.schema.json
    """


@recipe.command("schema")
def recipe_schema() -> None:
    """Print the JSON Schema of a recipe: editors complete and check recipe YAML against it.

    \b
    Example:
        vlfactory recipe schema > recipe.schema.json
        # and as a recipe's first line: # yaml-language-server: $schema=recipe.schema.json
    """
    from vlfactory.recipe import schema

    click.echo(json.dumps(schema(), indent=2))


@main.group()
def track() -> None:
    """Experiment tracking after the fact.

    \b
    Example:
        vlfactory track export iter2 --to tensorboard --dir runs/tracking
    """


@track.command("export")
@click.argument("version")
@click.option("--to", "backend", required=True, help="The tracker: tensorboard, wandb, trackio, mlflow, comet_ml, "
              "aim, clearml, dvclive or swanlab (accelerate's trackers).")
@click.option("--project", default=None, help="The project (default: the recipe's name, as live tracking names it).")
@click.option("--dir", "folder", default=None, help="Local files: TensorBoard's log folder, wandb's dir, ...")
@lake_options
@friendly
def track_export(version: str, backend: str, project: str | None, folder: str | None, lake: str | None,
                 data_path: str | None) -> None:
    """Replay a version's trainings (training_logs) and the loop's evaluations (evals) into a tracker, each in
    the run live tracking would have made: a run tracked after the fact shows its curves.

    \b
    Example:
        vlfactory track export iter2 --to tensorboard --dir runs/tracking && tensorboard --logdir runs/tracking
    """
    from vlfactory import tracking

    with open_lake(lake, data_path, read_only=True) as lk:
        runs = tracking.export(lk, version, backend, project, folder, say=lambda line: click.echo(line, err=True))
    click.echo(f"exported {len(runs)} runs to {backend}", err=True)


if __name__ == "__main__":
    main()
