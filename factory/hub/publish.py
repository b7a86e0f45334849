"""Publish a version to the Hugging Face Hub as `datasets.Dataset.push_to_hub` would: one config per table.

    vlfactory publish iter1 --repo my-org/vl-reasoning --table sft --table rl --dry-run out/   # the folder only
    vlfactory publish iter1 --repo my-org/vl-reasoning --table sft --table rl                  # build and upload
    vlfactory publish iter1 --repo my-org/vl-reasoning --table sft --create-pr --commit-message "iter1 sft"

The folder is push_to_hub's layout, config by config: `NAME/SPLIT-0000i-of-0000N.parquet` (push_to_hub's
data_dir is the config name), a README.md whose YAML holds `dataset_info` (features, num_bytes and
num_examples per split, download_size, dataset_size) and `configs:` with each split's data files, written
by `datasets`' own DatasetInfosDict and MetadataConfigs; `recipes/NAME-HASH.yaml`, the recipe text of every
run that wrote the version (less its `lake:` key: where to rebuild is the reader's choice); and
`.vlfactory-manifest.json`, the files this publish wrote. The card's text is reports/card.py. An `sft` config
holds only well-formed rows (`<think>...</think> ... <answer>...</answer>`, vlfactory.verify.format_reward):
a set with others is refused, naming how many and the fix.

Splits are the data's own: a problem's `split` (from its source) is the split of every row about that
problem (sft, rl, traces, ...); benchmark rows (evals, eval_samples) are `test`; rows about no problem
are `train`. Shards are cut by size like push_to_hub's `max_shard_size` (default 500MB of Arrow data per
shard) and written by streaming: Arrow record batches from the lake go straight into the shard's
ParquetWriter (push_to_hub's writer settings: content-defined chunking, page index, images uncompressed
and PLAIN), so the table, images included, is never held in memory.

The upload is one `HfApi.upload_folder` call (`--revision` a branch, created if missing, or `refs/pr/N`;
`--create-pr`; `--commit-message`). With hf_xet, which huggingface_hub installs on common platforms,
that is huggingface_hub's streamed multi-commit pipeline: a large folder goes up in batches of commits
and a rerun after an interruption skips what the Hub already holds. It deletes, in the same upload, only
what a publish wrote: the files the repo's previous manifest lists, and (push_to_hub's rule) the shards of
the published configs' splits (`NAME/SPLIT-*`, which would join a split) that the new folder does not
have. A repo holding data of other configs, which the new card would no longer describe, is refused unless
`--replace` says to drop them (those vlfactory wrote are deleted; anything else stays).

The token is huggingface_hub's own: `HF_TOKEN`, else the login cache (`hf auth login`). It is
checked before anything is built, sent only in the Authorization header, and written nowhere.
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vlfactory.hub.export import features_for, inside, outside_lake, read_batches
from vlfactory.redact import redact
from vlfactory.reports.card import Config, Split, dataset_card, model_labels, recipe_file
from vlfactory.reports.stats import version_stats
from vlfactory.stores.lake import Lake, LakeError

MANIFEST = ".vlfactory-manifest.json"        # the files a publish wrote: the only ones a later one deletes
MAX_SHARD_SIZE = "500MB"                    # push_to_hub's default (datasets.config.MAX_SHARD_SIZE)
BENCHMARK_TABLES = ("evals", "eval_samples")  # rows about benchmarks: the test split
SPLIT_ORDER = ("train", "validation", "test")  # then any other split, by name


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
    commit: str | None = None         # the commit's URL on the Hub
    pr_url: str | None = None         # the pull request opened, with --create-pr

    def line(self) -> str:
        sets = ", ".join(f"{c.name} (" + ", ".join(f"{s.name} {s.rows:,}" for s in c.splits) + " rows)"
                         for c in self.configs)
        shards = sum(len(s.files) for c in self.configs for s in c.splits)
        if self.pr_url:
            where = f"opened pull request {self.pr_url}"
        elif self.url:
            where = f"uploaded to {self.url}" + (f" ({self.commit})" if self.commit else "")
        else:
            where = f"wrote {self.folder} (dry run: nothing uploaded)"
        return f"{self.repo} @ snapshot {self.snapshot}: {sets}; {shards} shard(s); {len(self.recipes)} recipe(s); {where}"


def publish(lake: Lake, version: str | int, repo: str, tables: list[str], private: bool = False,
            dry_run: str | Path | None = None, max_shard_size: str | int = MAX_SHARD_SIZE,
            revision: str | None = None, create_pr: bool = False, commit_message: str | None = None,
            replace: bool = False) -> Published:
    """Build the folder for `tables` at `version`; upload it to the dataset repo unless `dry_run` names a folder."""
    check_repo(repo)
    max_bytes = shard_size(max_shard_size)
    if create_pr and revision is not None and revision != "main":
        raise PublishError(f"--create-pr opens a pull request against main: drop --revision {revision}")
    if dry_run is not None:
        return build(lake, version, repo, tables, Path(dry_run), max_bytes)
    api = login()  # a missing or rejected token fails before minutes of building
    with tempfile.TemporaryDirectory(prefix="vlfactory-publish-") as tmp:
        done = build(lake, version, repo, tables, Path(tmp) / "set", max_bytes)
        message = commit_message or f"vlfactory publish {version} (snapshot {done.snapshot})"
        done.url, done.commit, done.pr_url = upload(api, done.folder, repo, private, message, revision, create_pr,
                                                    replace)
    done.folder = None
    return done


def shard_size(value: str | int) -> int:
    """Bytes of a size such as 500MB, 1GB, 20KB or a plain number, read as `datasets` reads max_shard_size."""
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        size = convert_file_size_to_int(value)
    except (ValueError, TypeError):
        size = 0
    if size <= 0:
        raise PublishError(f"--max-shard-size {value!r}: expected a size such as 500MB, 1GB or 20KB")
    return size


def build(lake: Lake, version: str | int, repo: str, tables: list[str], out: Path,
          max_bytes: int | None = None) -> Published:
    """Write the exact folder that `publish` uploads."""
    if out.exists() and any(out.iterdir()):
        raise PublishError(f"{out} is not empty: give a new or empty folder")
    outside_lake(lake, out, "--dry-run")
    snapshot = lake.resolve(version)
    tables = list(dict.fromkeys(tables))
    for table in tables:
        if table not in lake.tables():
            raise LakeError(f"unknown table {table!r}; tables: {', '.join(lake.tables())}")
        if lake.count(table, snapshot) == 0:
            raise PublishError(f"--table {table}: no rows at {version} (snapshot {snapshot}); nothing to publish")
    if "sft" in tables:
        well_formed(lake, version, snapshot)
    # Built in a hidden folder beside `out` and renamed into place once complete: a killed
    # build leaves no half-written `out` for the rerun to refuse, and the rerun clears its debris.
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    final, out = out, Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        done = _write(lake, version, repo, tables, snapshot, out, max_bytes or shard_size(MAX_SHARD_SIZE))
        if final.exists():
            final.rmdir()  # empty, checked above
        out.rename(final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    done.folder = final
    return done


def _write(lake: Lake, version: str | int, repo: str, tables: list[str], snapshot: int, out: Path,
           max_bytes: int) -> Published:
    done = Published(repo, snapshot)
    for table in tables:
        done.configs.append(write_config(lake, table, snapshot, out, max_bytes))
    stats = version_stats(lake, version)
    for recipe in stats.recipes:
        path = inside(out, out / "recipes" / recipe_file(recipe))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(without_lake(redact(recipe["text"])))  # masked when stored; again for older runs
        done.recipes.append(str(path.relative_to(out)))
    (out / "README.md").write_text(dataset_card(stats, repo, done.configs, model_labels(lake, snapshot)))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    (out / MANIFEST).write_text(json.dumps({"repo": repo, "snapshot": snapshot, "files": written}, indent=1) + "\n")
    return done


def without_lake(text: str) -> str:
    """A recipe's text less its top-level `lake:` key (and the lines under it): a published copy must not choose
    the reader's lake (a `lake:` can name any path or catalog), and `--lake` picks it when rebuilding."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if re.match(r"lake\s*:", line):
            skipping = True
            out.append("# lake: left out by vlfactory publish (rebuild with --lake, or $VLFACTORY_LAKE)\n")
            continue
        if skipping and (not line.strip() or line[:1] in " \t#"):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


def well_formed(lake: Lake, version: str | int, snapshot: int) -> None:
    """Refuse an sft set holding completions that are not `<think>...</think> ... <answer>...</answer>`: trained on,
    they teach a model to skip its reasoning or its answer tags (the quickstart's iteration 2 held 41 of 563)."""
    from vlfactory.verify.rewards import format_reward

    rel = lake.query(f"SELECT problem_id, completion FROM sft@{int(snapshot)} ORDER BY example_id")
    total, bad, first = 0, 0, None
    while rows := rel.fetchmany(4096):
        marks = format_reward([r[1] or "" for r in rows])
        total += len(rows)
        for r, ok in zip(rows, marks):
            if not ok:
                bad += 1
                first = first or r
    if bad:
        sample = first[1] if len(first[1] or "") <= 60 else first[1][:59] + "…"
        raise PublishError(f"--table sft: {bad:,} of {total:,} rows at {version} are not <think>...</think> "
                           f"<answer>...</answer> (problem {first[0]}: {sample!r}); rebuild the set with "
                           "verify: {require_format: true} so only well-formed answers are accepted")


def split_of(lake: Lake, table: str, snapshot: int) -> str:
    """SQL for the split of a row `t` of the table: its problem's split, test for benchmark rows, else train."""
    cols = lake.query(f"SELECT * FROM {table}@{snapshot} LIMIT 0").columns
    if table in BENCHMARK_TABLES:
        return "'test'"
    if "split" in cols:
        return "coalesce(nullif(t.split, ''), 'train')"
    if "problem_id" in cols:
        return (f"coalesce((SELECT nullif(max(p.split), '') FROM problems@{snapshot} p "
                f"WHERE p.problem_id = t.problem_id), 'train')")
    return "'train'"


def split_name(raw: str) -> str:
    """A stored split as a `datasets` split name (word characters and dots: push_to_hub's rule)."""
    return re.sub(r"\W+", "_", raw).strip("_") or "train"


def write_config(lake: Lake, table: str, snapshot: int, out: Path, max_bytes: int) -> Config:
    """The table's rows at the snapshot as `out/TABLE/SPLIT-0000i-of-0000N.parquet`, split by split."""
    expr = split_of(lake, table, snapshot)
    found = [r[0] for r in lake.query(f"SELECT DISTINCT {expr} FROM {table}@{snapshot} t").fetchall()]
    raws: dict[str, list[str]] = {}
    for raw in found:
        raws.setdefault(split_name(raw), []).append(raw)
    order = sorted(raws, key=lambda n: (SPLIT_ORDER.index(n) if n in SPLIT_ORDER else len(SPLIT_ORDER), n))
    config = Config(table)
    for name in order:
        reader = read_batches(lake, table, snapshot, where=f"list_contains(?, {expr})", params=[raws[name]])
        if config.features is None:
            config.features = features_for(reader.schema)
        split, samples = write_split(reader, out, table, name, config.features, max_bytes,
                                     want_samples=0 if config.samples else SAMPLES)
        config.splits.append(split)
        config.samples += samples
    config.download_size = sum((out / f).stat().st_size for s in config.splits for f in s.files)
    return config


SAMPLES = 3  # rows shown in the card, per config


def write_split(batches, out: Path, data_dir: str, split: str, features, max_bytes: int,
                want_samples: int = 0) -> tuple[Split, list[dict]]:
    """Stream record batches into shards of at most `max_bytes` Arrow bytes each (one row may exceed it),
    named as push_to_hub names them; row groups of at most datasets' MAX_ROW_GROUP_SIZE."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import config as ds_config
    from datasets.arrow_writer import get_parquet_column_options
    from datasets.utils.py_utils import convert_file_size_to_int

    schema = features.arrow_schema  # carries the `huggingface` features metadata that load_dataset reads
    options = get_parquet_column_options(features, schema)
    cdc = ds_config.DEFAULT_CDC_OPTIONS
    group_bytes = convert_file_size_to_int(ds_config.MAX_ROW_GROUP_SIZE)
    folder = out / data_dir
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    writer, group, in_group, in_shard = None, [], 0, 0
    rows = nbytes = 0
    samples: list[dict] = []

    def flush() -> None:
        nonlocal group, in_group
        if group:
            writer.write_table(pa.Table.from_batches(group, schema=schema))
        group, in_group = [], 0

    def close() -> None:
        nonlocal writer, in_shard
        flush()
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(cdc)})
        writer.close()
        writer, in_shard = None, 0

    for batch in batches:
        batch = batch.cast(schema)  # DuckDB's Arrow types as the features store them
        if len(samples) < want_samples:
            samples += batch.slice(0, want_samples - len(samples)).to_pylist()
        while batch.num_rows:
            room = max_bytes - in_shard
            if batch.nbytes <= room:
                take = batch.num_rows
            else:  # as many rows as fit, by the batch's mean row size; a lone oversize row gets its own shard
                take = min(batch.num_rows, int(room // max(1, batch.nbytes / batch.num_rows)))
                take = take or (1 if in_shard == 0 else 0)
            if take == 0:
                close()
                continue
            piece, batch = batch.slice(0, take), batch.slice(take)
            if writer is None:
                parts.append(folder / f".{split}-part{len(parts):05d}.parquet")
                writer = pq.ParquetWriter(parts[-1], schema, use_content_defined_chunking=cdc,
                                          write_page_index=True, **options)
            group.append(piece)
            size = piece.nbytes
            in_group, in_shard, rows, nbytes = in_group + size, in_shard + size, rows + take, nbytes + size
            if in_group >= group_bytes:
                flush()
    if writer is not None:
        close()
    files = []
    for i, part in enumerate(parts):
        final = folder / f"{split}-{i:05d}-of-{len(parts):05d}.parquet"
        part.rename(final)
        files.append(final.relative_to(out).as_posix())
    return Split(split, rows, nbytes, files), samples


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


def upload(api, folder: Path, repo: str, private: bool, message: str, revision: str | None = None,
           create_pr: bool = False, replace: bool = False) -> tuple[str, str | None, str | None]:
    """Create the dataset repo (and the branch `revision`) if needed and upload the folder as one commit (or a
    pull request), deleting only what `stale` allows; the repo's URL, the commit's URL and the pull request's."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        # private=None leaves a new repo at the account's default visibility (public unless set otherwise).
        url = api.create_repo(repo, repo_type="dataset", private=True if private else None, exist_ok=True)
        if revision is not None and not revision.startswith("refs/pr/"):  # as push_to_hub: a PR ref is not a branch
            api.create_branch(repo, branch=revision, repo_type="dataset", exist_ok=True)
        gone = stale(api, folder, repo, revision, replace)
        info = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=folder, commit_message=message,
                                 delete_patterns=[glob.escape(p) for p in gone] or None, revision=revision,
                                 create_pr=create_pr or None)
    except HfHubHTTPError as e:
        raise PublishError(hub_error(e, repo)) from None
    return str(url), getattr(info, "commit_url", None), getattr(info, "pr_url", None)


def stale(api, folder: Path, repo: str, revision: str | None, replace: bool) -> list[str]:
    """The repo files this upload deletes: those the previous publish's manifest lists, and the shards of the
    published configs' splits (`NAME/SPLIT-*`), that the new folder does not have. Other data in the repo (a config
    this publish leaves out) is refused unless `replace`."""
    import fnmatch

    from huggingface_hub.errors import EntryNotFoundError

    new = json.loads((folder / MANIFEST).read_text())["files"] + [MANIFEST]
    configs = {f.split("/")[0] for f in new if f.endswith(".parquet")}
    have = api.list_repo_files(repo, repo_type="dataset", revision=revision)
    before: list[str] = []
    if MANIFEST in have:
        try:
            path = api.hf_hub_download(repo, MANIFEST, repo_type="dataset", revision=revision,
                                       local_dir=folder.parent / ".previous")
            before = json.loads(Path(path).read_text()).get("files") or []
        except (EntryNotFoundError, OSError, ValueError):
            before = []
    others = sorted({f.split("/")[0] for f in have if f.endswith(".parquet") and f.split("/")[0] not in configs})
    if others and not replace:
        raise PublishError(f"{repo} holds data this publish leaves out ({', '.join(others)}), which its new card "
                           f"would not describe: publish it too (--table {others[0]} ...), or pass --replace to "
                           "drop it (files vlfactory wrote are deleted, anything else stays)")
    splits = [f"{f.split('/')[0]}/{f.split('/')[1].split('-')[0]}-*" for f in new if f.endswith(".parquet")]
    return sorted(f for f in have if f not in new and (f in before or any(fnmatch.fnmatch(f, s) for s in splits)))


def hub_error(e, repo: str | None = None) -> str:
    status = e.response.status_code if e.response is not None else None
    if status == 401:
        return ("the Hub rejected the Hugging Face token (401 Unauthorized): set a valid HF_TOKEN or run "
                "`hf auth login --force`")
    if status == 403:
        return f"the token may not write to {repo} (403 Forbidden): use a token with write access to it"
    return f"the Hub refused the upload ({status}): {str(e).strip().splitlines()[0]}"
