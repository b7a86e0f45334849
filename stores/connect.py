"""Opening a lake: where it is (`LakeSpec`: a folder or a DuckLake URI, the data path) and the DuckDB
extensions it needs, loaded offline from their registry packages."""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from vlfactory.redact import redact
from vlfactory.stores.sqltext import literal

DEFAULT_LAKE = "./lake"


@dataclass(frozen=True)


class LakeSpec:
    catalog: str            # the full ducklake: URI
    data_path: str | None   # where Parquet files go (None: the catalog's own setting)
    display: str            # what to show the user: no passwords
    root: Path | None = None  # a lake folder: its data path is `root/data/` wherever the folder is now

    @classmethod
    def resolve(cls, spec: str | os.PathLike | None = None, data_path: str | None = None) -> "LakeSpec":
        spec = str(spec or os.environ.get("VLFACTORY_LAKE") or DEFAULT_LAKE)
        data_path = data_path or os.environ.get("VLFACTORY_DATA_PATH")
        for what, value in (("lake", spec), ("data path", data_path)):
            if "\x00" in (value or ""):  # no file name holds one, and DuckDB strings cannot
                from vlfactory.stores.lake import LakeError

                raise LakeError(f"the {what} {redact(value)!r} holds a NUL character: give the path of a folder")
        if spec.startswith("ducklake:"):
            if data_path and "://" not in data_path:
                data_path = str(Path(data_path).resolve()) + "/"
            return cls(spec, data_path, redact(spec))
        root = Path(spec).expanduser().resolve()
        # A folder made before the SQLite default keeps its DuckDB catalog file.
        catalog = root / "catalog.ducklake"
        catalog = f"ducklake:{catalog}" if catalog.exists() else f"ducklake:sqlite:{root / 'catalog.sqlite'}"
        if data_path:  # data elsewhere: the folder holds the catalog only, and the catalog names the data
            return cls(catalog, data_path, str(root))
        return cls(catalog, str(root / "data") + "/", str(root), root)

    @property
    def catalog_file(self) -> Path | None:
        """The catalog's file for a local (DuckDB or SQLite) catalog, else None."""
        rest = self.catalog.removeprefix("ducklake:")
        if rest.startswith(("postgres:", "mysql:")):
            return None
        return Path(rest.removeprefix("sqlite:").removeprefix("duckdb:"))


_LOADED: set[str] = set()


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load a DuckDB extension, offline from its registry package when installed.

    `duckdb-extension-<name>` wheels ship the signed extension file; installing
    from that file works without network access. Elsewhere DuckDB's normal
    `INSTALL <name>` downloads it.
    """
    try:
        con.execute(f"LOAD {name}")
        return
    except duckdb.Error:
        pass
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    files = []
    if spec and spec.submodule_search_locations:
        pkg = list(spec.submodule_search_locations)[0]
        files = glob.glob(f"{pkg}/extensions/v{duckdb.__version__}/{name}.duckdb_extension")
    con.execute(f"INSTALL {literal(files[0])}" if files else f"INSTALL {name}")
    con.execute(f"LOAD {name}")


def _s3_secret(con: duckdb.DuckDBPyConnection) -> None:
    """Create an S3 secret from the standard AWS environment variables."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not key and not endpoint:
        return
    opts = {"TYPE": "s3", "REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if key:
        opts |= {"KEY_ID": key, "SECRET": secret or ""}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        opts |= {"ENDPOINT": host.rstrip("/") or scheme, "URL_STYLE": "path", "USE_SSL": str(scheme == "https").lower()}
    body = ", ".join(f"{k} {v}" if k in ("TYPE", "USE_SSL") else f"{k} {literal(v)}" for k, v in opts.items())
    con.execute(f"CREATE OR REPLACE SECRET vlfactory_s3 ({body})")

