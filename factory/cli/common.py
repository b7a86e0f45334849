"""What every command shares: one-line user errors, the --lake/--data-path options, opening the lake.

Kept free of heavy imports: the error classes of recipes, backends and the store are imported when an error
is raised, so `vlfactory sql` starts without them.
"""

from __future__ import annotations

import functools

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
