"""Commands that read a version out of the lake: show (terminal), view (browser), report (HTML), export (files),
publish (the Hub), track export (a tracker).

    vlfactory show iter1 --table traces --sample 5
    vlfactory view iter1
    vlfactory export sft@iter1 --to out/
"""

from __future__ import annotations

from pathlib import Path

import click

from vlfactory.cli import main
from vlfactory.cli.common import UserError, friendly, lake_options, open_lake


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
    with open_lake(lake, data_path, read_only=True, threads=1) as lk:  # a hundred small queries: one thread
        Path(out).write_text(page(lk, version, iterations))
    click.echo(f"wrote {out}")


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
