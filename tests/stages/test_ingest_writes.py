"""Ingest's writes: image batches as Parquet files the lake adopts, one snapshot per batch,
a crash that loses one batch, another writer committing between batches, and a
PostgreSQL catalog with a local data path."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import vlfactory.stages.ingest as ingest_mod
from vlfactory.stages.ingest import ingest
from vlfactory.recipe import load_recipe
from vlfactory.stores.lake import Lake


def _recipe(tmp_path: Path, shared_data: Path, limit: int, batch_rows: int = 20) -> Path:
    path = tmp_path / "tabmwp.yaml"
    path.write_text(f"""
batch_rows: {batch_rows}
sources:
  - name: tabmwp
    format: json
    path: {shared_data / 'tabmwp-dev1k' / 'problems.json'}
    limit: {limit}
    columns: {{question: question, answer: answer, image: "tables/{{id}}.png", choices: choices, caption: table}}
""")
    return path


def _image_files(lake_dir: Path) -> set[str]:
    return set(glob.glob(str(lake_dir / "data" / "main" / "images" / "*.parquet")))


def test_image_batches_are_files_the_lake_owns(cli, lake_dir, tmp_path, shared_data):
    recipe = _recipe(tmp_path, shared_data, limit=60)
    assert "read 60 = ingested 60" in cli("ingest", recipe).output
    out = cli("ingest", recipe).output
    assert "ingested 0 + already in lake 60" in out and "nothing new" in out
    tables = shared_data / "tabmwp-dev1k" / "tables"
    with Lake(lake_dir) as lake:
        batches = [s["snapshot_id"] for s in lake.snapshots() if (s["commit_message"] or "").startswith("ingest tabmwp")]
        assert len(batches) == 3  # 20 rows a batch, one snapshot each; the rerun wrote none
        listed = {r[0] for r in lake.con.execute("SELECT data_file FROM ducklake_list_files('lake', 'images')").fetchall()}
        assert listed == _image_files(lake_dir) and len(listed) == 3
        for f in listed:  # written with the table's own setting: image bytes stay uncompressed
            assert {c["compression"] for c in pq.ParquetFile(f).metadata.row_group(0).to_dict()["columns"]} == {"UNCOMPRESSED"}
        rows = lake.query("SELECT p.source_id, i.image_id, sha256(i.bytes), i.n_bytes FROM problems p "
                          "JOIN images i USING (image_id)").fetchall()
        assert len(rows) == 60
        for pid, image_id, stored, n in rows:
            data = (tables / f"{pid}.png").read_bytes()
            assert image_id == stored == hashlib.sha256(data).hexdigest() and n == len(data)
        # time travel: a batch's snapshot holds its images and the earlier ones, not the later ones
        n_images = lake.count("images")
        assert 0 < lake.count("images", batches[0]) < lake.count("images", batches[1]) < n_images
        # deletes work on adopted files, and time travel still sees the deleted row
        gone = rows[0][1]
        with lake.transaction("delete one image"):
            lake.con.execute("DELETE FROM lake.images WHERE image_id = ?", [gone])
        assert lake.count("images") == n_images - 1
        assert lake.query(f"SELECT count(*) FROM images@{batches[-1]} WHERE image_id = ?", [gone]).fetchone()[0] == 1
        # DuckLake owns the files: compaction merges them and cleanup deletes the originals
        before = _image_files(lake_dir)
        lake.con.execute("CALL ducklake_rewrite_data_files('lake', 'images', delete_threshold => 0)")
        lake.con.execute("CALL ducklake_merge_adjacent_files('lake', 'images')")
        lake.con.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
        lake.con.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
        assert before and not before & _image_files(lake_dir)
        assert lake.query("SELECT count(*) FROM images WHERE sha256(bytes) = image_id").fetchone()[0] == n_images - 1


def test_a_crash_loses_one_batch_and_a_rerun_finishes(lake_dir, tmp_path, shared_data, monkeypatch):
    recipe = load_recipe(_recipe(tmp_path, shared_data, limit=60))
    calls = []
    real_insert = Lake.insert

    def crash_on_second_batch(self, table, rows, key=None):
        if table == "problems":
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the process dies in the middle of the second batch
        return real_insert(self, table, rows, key)

    monkeypatch.setattr(Lake, "insert", crash_on_second_batch)
    with Lake(lake_dir) as lake, pytest.raises(KeyboardInterrupt):
        ingest(lake, recipe)
    monkeypatch.setattr(Lake, "insert", real_insert)
    with Lake(lake_dir) as lake:
        assert lake.count("problems") == 20  # the first batch, whole; the second rolled back
        first_images = lake.count("images")
        # the rolled-back batch's image file is an orphan DuckLake knows how to remove
        orphans = _image_files(lake_dir) - {r[0] for r in lake.con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'images')").fetchall()}
        assert len(orphans) == 1
        lake.con.execute("CALL ducklake_delete_orphaned_files('lake', cleanup_all => true)")
        assert not orphans & _image_files(lake_dir)
        tally = ingest(lake, recipe)[0]
        assert (tally.read, tally.present, tally.ingested) == (60, 20, 40)
        assert tally.new_images == lake.count("images") - first_images
        assert lake.query("SELECT count(*), count(DISTINCT problem_id) FROM problems").fetchone() == (60, 60)
        assert lake.query("SELECT count(*) = count(DISTINCT image_id) FROM images").fetchone()[0]


def test_another_writer_between_batches(lake_dir, tmp_path, shared_data, monkeypatch):
    """A writer that commits after ingest read the lake's ids: the next batch sees it and skips its rows."""
    other_lake = tmp_path / "other"
    with Lake(other_lake) as lake:  # what the other writer commits: the first 5 rows of the same source
        ingest(lake, load_recipe(_recipe(tmp_path, shared_data, limit=5)))
    recipe = load_recipe(_recipe(tmp_path, shared_data, limit=40))
    real_read = ingest_mod.LakeKeys.read
    reads = []

    def read_then_another_writer_commits(self, lake):
        real_read(self, lake)
        reads.append(self.snapshot)
        if len(reads) == 1:
            other = lake.con.cursor()  # its own connection and transaction
            other.execute(f"ATTACH 'ducklake:sqlite:{other_lake / 'catalog.sqlite'}' AS other (READ_ONLY)")
            other.execute("BEGIN")
            for table in ("images", "problems"):
                other.execute(f"INSERT INTO lake.{table} SELECT * FROM other.{table}")
            other.execute("COMMIT")
            other.execute("DETACH other")
        return self

    monkeypatch.setattr(ingest_mod.LakeKeys, "read", read_then_another_writer_commits)
    with Lake(lake_dir) as lake:
        tally = ingest(lake, recipe)[0]
        assert len(reads) == 2 and reads[1] == reads[0] + 1  # read again once, after the other commit
        assert (tally.read, tally.present, tally.ingested) == (40, 5, 35)
        assert lake.query("SELECT count(*), count(DISTINCT problem_id) FROM problems").fetchone() == (40, 40)
        assert lake.query("SELECT count(*) = count(DISTINCT image_id) FROM images").fetchone()[0]


def test_postgres_catalog_with_local_data_path(postgres, tmp_path, shared_data):
    """Adopted files on a shared catalog: the table's folder comes from the catalog, not a guess."""
    import duckdb

    from vlfactory.stores.lake import load_extension

    con = duckdb.connect()  # a database of its own in the session's cluster
    load_extension(con, "postgres")
    con.execute(f"ATTACH '{postgres}' AS pg (TYPE postgres)")
    con.execute("CALL postgres_execute('pg', 'CREATE DATABASE local_data', use_transaction => false)")
    con.close()
    spec = "ducklake:postgres:" + postgres.replace("dbname=postgres", "dbname=local_data")
    data = tmp_path / "data"
    recipe = load_recipe(_recipe(tmp_path, shared_data, limit=60))
    with Lake(spec, data_path=str(data)) as lake:
        first = ingest(lake, recipe)[0]
        again = ingest(lake, recipe)[0]
        listed = {r[0] for r in lake.con.execute("SELECT data_file FROM ducklake_list_files('lake', 'images')").fetchall()}
        rows = lake.query("SELECT count(*), count(DISTINCT image_id), count(*) FILTER (WHERE sha256(bytes) = image_id) "
                          "FROM images").fetchone()
    assert (first.ingested, again.ingested, again.present) == (60, 0, 60)
    assert listed and all(Path(f).parent == data / "main" / "images" for f in listed)
    assert rows[0] == rows[1] == rows[2] == first.new_images
