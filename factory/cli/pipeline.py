"""Commands that make the data and the models: ingest, run, iterate, eval, train sft|grpo, recipe schema.

    vlfactory run quickstart
    vlfactory iterate quickstart
    vlfactory train sft --dataset sft@iter1 --model tiny-qwen2.5-vl --output runs/sft-iter1
"""

from __future__ import annotations

import json
import sys

import click

from vlfactory import sqlout
from vlfactory.cli import main
from vlfactory.cli.common import friendly, lake_options


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
