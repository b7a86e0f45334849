"""The shared-lake path for real: a PostgreSQL catalog with data on an S3-compatible store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_postgres_catalog_with_s3_data_round_trip(postgres, s3_server, shared_data, tmp_path, monkeypatch):
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
           "AWS_ENDPOINT_URL": s3_server, "AWS_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="vlf-lake")

    from click.testing import CliRunner

    from vlfactory.cli import main
    from vlfactory.stores.lake import Lake

    spec = f"ducklake:postgres:{postgres}"
    runner = CliRunner()
    args = ["--lake", spec, "--data-path", "s3://vlf-lake/data/"]
    res = runner.invoke(main, ["ingest", str(REPO / "tests" / "support" / "recipes" / "tabmwp.yaml"), "--limit", "60", *args])
    assert res.exit_code == 0, res.output
    assert runner.invoke(main, ["tag", "small", *args]).exit_code == 0
    res = runner.invoke(main, ["ingest", str(REPO / "tests" / "support" / "recipes" / "dynamath.yaml"), "--limit", "30", *args])
    assert res.exit_code == 0, res.output

    # Parquet files really landed in the bucket; the catalog lives in PostgreSQL.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vlf-lake").get("Contents", [])]
    assert any(k.endswith(".parquet") for k in keys), keys

    tab = json.loads((shared_data / "tabmwp-dev1k" / "problems.json").read_text())
    with Lake(spec) as lake:  # reopened without a data path: the catalog remembers it
        assert lake.count("problems") == 90
        rows = lake.query("SELECT source_id, sha256(i.bytes) FROM problems JOIN images i USING (image_id) "
                          "WHERE source = 'tabmwp'").fetchall()
        assert len(rows) == 60
        for pid, digest in rows:
            assert digest == hashlib.sha256((shared_data / "tabmwp-dev1k" / "tables" / f"{pid}.png").read_bytes()).hexdigest()
            assert pid in tab
        assert lake.query("SELECT count(*) FROM problems@small").fetchone()[0] == 60
    # the credentials never reach the catalog
    with Lake(spec) as lake:
        dump = json.dumps(lake.query("SELECT * FROM runs").fetchall(), default=str)
    assert "testing-secret" not in dump
    res = runner.invoke(main, ["sql", "SELECT count(*) AS n FROM problems", "--format", "jsonl", "--at", "small", *args])
    assert json.loads(res.output)["n"] == 60
