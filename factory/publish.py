"""Publish a version to the Hugging Face Hub: one Parquet config per table, a dataset card, the recipes.

    vlfactory publish iter1 --repo my-org/vl-reasoning --table sft --table rl --dry-run out/   # the folder only
    vlfactory publish iter1 --repo my-org/vl-reasoning --table sft --table rl                  # build and upload

The folder: `README.md`, the dataset card (reports/card.py); `NAME/NAME-0000i-of-0000n.parquet`
per table, written by `vlfactory.export` (catalog columns kept, images as a `datasets` Image
column, so `load_dataset("parquet", data_dir="out/sft")` and the Hub's viewer read it); and
`recipes/NAME-HASH.yaml`, the recipe text of every run that wrote the version.

The upload is one `HfApi.upload_folder` call. With hf_xet, which huggingface_hub installs on
common platforms, that is huggingface_hub's streamed multi-commit pipeline: a large folder goes
up in batches of commits and a rerun after an interruption skips what the Hub already holds. It
superseded `upload_large_folder` (gone from huggingface_hub 2), so one call serves small and
large sets. Parquet files of the repo that are not in the new folder are deleted in the same
upload, so a config's `NAME/*.parquet` never picks up stale shards of an earlier version.

The token is huggingface_hub's own: `HF_TOKEN`, else the login cache (`hf auth login`). It is
checked before anything is built, sent only in the Authorization header, and written nowhere.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vlfactory.export import export
from vlfactory.redact import redact
from vlfactory.reports.card import Config, dataset_card, recipe_file
from vlfactory.reports.stats import version_stats
from vlfactory.stores.lake import Lake, LakeError

DELETE_STALE = ["*.parquet", "recipes/*"]  # repo files an upload replaces (fnmatch: `*` spans folders)


class PublishError(Exception):
    """A publish that cannot go ahead; the message is one line for the user."""


@dataclass
class Published:
    repo: str
    snapshot: int
    configs: list[Config] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)
    folder: Path | None = None        # the dry run's folder (an upload's folder is temporary)
    url: str | None = None            # the repo on the Hub, once uploaded

    def line(self) -> str:
        sets = ", ".join(f"{c.name} ({c.rows:,} rows)" for c in self.configs)
        where = f"uploaded to {self.url}" if self.url else f"wrote {self.folder} (dry run: nothing uploaded)"
        return f"{self.repo} @ snapshot {self.snapshot}: {sets}; {len(self.recipes)} recipe(s); {where}"


def publish(lake: Lake, version: str | int, repo: str, tables: list[str], private: bool = False,
            dry_run: str | Path | None = None) -> Published:
    """Build the folder for `tables` at `version`; upload it to the dataset repo unless `dry_run` names a folder."""
    check_repo(repo)
    if dry_run is not None:
        return build(lake, version, repo, tables, Path(dry_run))
    api = login()  # a missing or rejected token fails before minutes of building
    with tempfile.TemporaryDirectory(prefix="vlfactory-publish-") as tmp:
        done = build(lake, version, repo, tables, Path(tmp) / "set")
        done.url = upload(api, done.folder, repo, private, f"vlfactory publish {version} (snapshot {done.snapshot})")
    done.folder = None
    return done


def build(lake: Lake, version: str | int, repo: str, tables: list[str], out: Path) -> Published:
    """Write the exact folder that `publish` uploads."""
    if out.exists() and any(out.iterdir()):
        raise PublishError(f"{out} is not empty: give a new or empty folder")
    snapshot = lake.resolve(version)
    tables = list(dict.fromkeys(tables))
    for table in tables:
        if table not in lake.tables():
            raise LakeError(f"unknown table {table!r}; tables: {', '.join(lake.tables())}")
        if lake.count(table, snapshot) == 0:
            raise PublishError(f"--table {table}: no rows at {version} (snapshot {snapshot}); nothing to publish")
    # Built in a hidden folder beside `out` and renamed into place once complete: a killed
    # build leaves no half-written `out` for the rerun to refuse, and the rerun clears its debris.
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    final, out = out, Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        done = _write(lake, version, repo, tables, snapshot, out)
        if final.exists():
            final.rmdir()  # empty, checked above
        out.rename(final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    done.folder = final
    return done


def _write(lake: Lake, version: str | int, repo: str, tables: list[str], snapshot: int, out: Path) -> Published:
    import pyarrow.parquet as pq

    done = Published(repo, snapshot)
    for table in tables:
        paths = export(lake, table, snapshot, out)
        done.configs.append(Config(table, sum(pq.ParquetFile(p).metadata.num_rows for p in paths),
                                   pq.read_schema(paths[0]).names))
    stats = version_stats(lake, version)
    for recipe in stats.recipes:
        path = out / "recipes" / recipe_file(recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact(recipe["text"]))  # masked when stored; again for runs recorded before that
        done.recipes.append(str(path.relative_to(out)))
    (out / "README.md").write_text(dataset_card(stats, repo, done.configs))
    return done


def check_repo(repo: str) -> None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise PublishError(f"--repo {repo!r}: expected ORG/NAME, e.g. my-org/vl-reasoning")


def login():
    """An HfApi holding the user's token, once the Hub has accepted it."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token needs write access)")
    api = HfApi(token=token)
    try:
        api.whoami()
    except HfHubHTTPError as e:
        raise PublishError(hub_error(e)) from None
    return api


def upload(api, folder: Path, repo: str, private: bool, message: str) -> str:
    """Create the dataset repo if needed and upload the folder; the repo's URL."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        # private=None leaves a new repo at the account's default visibility (public unless set otherwise).
        url = api.create_repo(repo, repo_type="dataset", private=True if private else None, exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=folder, commit_message=message,
                          delete_patterns=DELETE_STALE)
    except HfHubHTTPError as e:
        raise PublishError(hub_error(e, repo)) from None
    return str(url)


def hub_error(e, repo: str | None = None) -> str:
    status = e.response.status_code if e.response is not None else None
    if status == 401:
        return ("the Hub rejected the Hugging Face token (401 Unauthorized): set a valid HF_TOKEN or run "
                "`hf auth login --force`")
    if status == 403:
        return f"the token may not write to {repo} (403 Forbidden): use a token with write access to it"
    return f"the Hub refused the upload ({status}): {str(e).strip().splitlines()[0]}"
