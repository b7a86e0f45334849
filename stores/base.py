"""What every part of the store shares: the catalog's name in SQL, its bookkeeping tables, the commit-message
prefix of tag-only snapshots, and the store's two errors. `vlfactory.stores.lake` re-exports them."""

DB = "lake"
TAG_COMMIT = "tag "  # commit-message prefix of snapshots that only record a tag
INTERNAL = ("schema_migrations", "write_guards", "run_heartbeats")  # bookkeeping, not data


class LakeError(Exception):
    """A problem the user can fix (bad spec, unknown version, refused SQL). A query's error also says where in
    the query DuckDB pointed: `sql` and `position` (a character offset), else None."""

    sql: str | None = None
    position: int | None = None


class WriteConflict(Exception):
    """Another writer committed a change this transaction conflicts with; nothing of it was written."""


def _under(base: str, path: str, relative: bool) -> str:
    """A DuckLake catalog path: relative to its parent's (a folder's paths end in '/'), or absolute."""
    return base.rstrip("/") + "/" + path if relative else path
