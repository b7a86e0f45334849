"""The `vlfactory` command line: a thin layer over the Python API.

    vlfactory run quickstart
    vlfactory sql "SELECT source, count(*) FROM problems GROUP BY source"
    vlfactory --help

The commands live by what they do: cli/pipeline.py (ingest, run, iterate, eval, train, recipe),
cli/catalog.py (sql, versions, diff, tag, gc), cli/outputs.py (show, view, report, export, publish, track);
cli/common.py holds what they share.
"""

from __future__ import annotations

import os

import click

from vlfactory.cli.common import UserError

__all__ = ["UserError", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vlfactory")
def main() -> None:
    """vlfactory: versioned visual-reasoning datasets in a DuckLake catalog.

    \b
    Example, the whole main job on the embedded defaults:
        vlfactory run quickstart
        vlfactory sql "SELECT source, split, count(*) FROM problems GROUP BY ALL"
    """
    # Before torch loads (its commands import it lazily; launched trainings inherit the environment): OpenMP
    # threads that wait by spinning lose to anything else on a core. Measured on 2 cores, 40 steps of the
    # quickstart's iteration-1 SFT: idle 19.3 s by default, 20.8 s passive; beside one busy process 93.7 s by
    # default, 23.1 s passive (20.7 s on one thread).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# Imported after `main` exists: their @main.command() decorators register the commands.
from vlfactory.cli import catalog, outputs, pipeline  # noqa: F401
