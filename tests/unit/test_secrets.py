"""Secrets never land in the catalog, recipes, cards, publish folders or log lines (issue 12 item 7):
keys that look like a secret are refused at any depth, in recipes and in trainers YAML, without
refusing the many harmless keys that contain "token" or "key"; credentials written inside values
(a base_url's user:password@, password= in a lake URI) are masked wherever text is stored or shown,
while the run still uses them.

    .venv/bin/pytest tests/unit/test_secrets.py
"""

from __future__ import annotations

import base64
import dataclasses
import glob
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from conftest import fresh_database
from fault_server import FaultServer

from vlfactory.recipe import RecipeError, load_recipe
from vlfactory.redact import redact, secret_key
from vlfactory.stores.lake import Lake, LakeSpec

SECRET = "Pa55-w0rd-S3cr3t"

REFUSED = ["hub_token", "access_token", "openai_api_key", "api_key", "apiKey", "token", "HF_TOKEN", "auth_token",
           "use_auth_token", "password", "db_password", "passwd", "client_secret", "secret_key",
           "aws_secret_access_key", "AWS_ACCESS_KEY_ID", "credentials", "private_key", "authorization"]
ALLOWED = ["max_tokens", "max_completion_length", "pad_token", "eos_token", "bos_token", "image_token",
           "pad_token_id", "tokenizer", "tokenizer_name", "max_new_tokens", "include_num_input_tokens_seen",
           "average_tokens_across_devices", "api_key_env", "sort_key", "key", "keep_traces", "passes"]


def test_secret_keys_by_their_word_parts():
    assert [k for k in REFUSED if not secret_key(k)] == []
    assert [k for k in ALLOWED if secret_key(k)] == []


def test_no_field_of_ours_or_of_trl_looks_secret_but_hub_token():
    """Every key a recipe or a trainers YAML may legitimately hold passes; TRL's one credential does not."""
    from vlfactory import recipe as r
    from vlfactory.backends import backend_config_class

    ours = [r.Recipe, r.Source, r.CaptionConfig, r.DistilConfig, r.VerifyConfig, r.SFTSetConfig, r.RLSetConfig,
            r.LoopConfig, r.LakeConfig, r.IngestConfig, r.EvalConfig,
            *(backend_config_class(b) for b in ("openai", "vllm", "transformers"))]
    assert [f.name for c in ours for f in dataclasses.fields(c) if secret_key(f.name)] == []
    trl = pytest.importorskip("trl", reason="trl is not installed (the `cpu` or `train` extra)")
    flagged = {f.name for c in (trl.SFTConfig, trl.GRPOConfig) for f in dataclasses.fields(c) if secret_key(f.name)}
    assert flagged == {"hub_token"}


SYNTH = "sources:\n  - {name: a, format: synthetic, n: 2}\n"


@pytest.mark.parametrize("text, where", [
    ("openai_api_key: sk-x\n" + SYNTH, "openai_api_key"),
    ("loop:\n  base_model: m\n  sft: {learning_rate: 1.0e-5, hub_token: hf_x}\n" + SYNTH, "loop.sft.hub_token"),
    ("caption: {backend: openai, model: m, base_url: 'http://h/v1', access_token: t}\n" + SYNTH, "caption.access_token"),
    ("sources:\n  - {name: a, format: synthetic, columns: {}, extra: [{db: {password: x}}]}\n",
     "sources.0.extra.0.db.password"),
])
def test_recipes_refuse_secret_keys_at_any_depth(tmp_path, text, where):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=f": {where}: secrets do not belong in recipes"):
        load_recipe(path)


def test_trainers_yaml_refuses_secret_keys(tmp_path):
    (tmp_path / "sft.yaml").write_text("learning_rate: 1.0e-5\nhub_token: hf_abc\n")
    (tmp_path / "r.yaml").write_text(f"loop: {{base_model: m, sft: sft.yaml}}\n{SYNTH}")
    with pytest.raises(RecipeError, match="sft.yaml: hub_token: secrets do not belong"):
        load_recipe(tmp_path / "r.yaml")  # at load time, before a loop spends hours on the stages before SFT
    pytest.importorskip("trl", reason="trl is not installed (the `cpu` or `train` extra)")
    from vlfactory.trainers.config import load_config

    with pytest.raises(RecipeError, match="hub_token: secrets do not belong in trainer settings"):
        load_config("sft", tmp_path / "sft.yaml", tmp_path / "out")
    with pytest.raises(RecipeError, match="model_init_kwargs.token: secrets"):
        load_config("sft", {"model_init_kwargs": {"token": "hf_abc"}}, tmp_path / "out")
    args, _ = load_config("sft", {"pad_token": "<pad>", "eos_token": "</s>", "use_cpu": True}, tmp_path / "out")
    assert args.pad_token == "<pad>"


def test_credentials_inside_values_are_masked():
    cases = {
        "base_url: http://user:" + SECRET + "@host:8000/v1": "base_url: http://user:***@host:8000/v1",
        "ducklake:postgres:dbname=lake host=db user=f password=" + SECRET: "ducklake:postgres:dbname=lake host=db user=f password=***",
        "ducklake:postgres:dbname=lake password='" + SECRET + " x' port=5": "ducklake:postgres:dbname=lake password='***' port=5",
        "ducklake:postgres:postgresql://f:" + SECRET + "@db/lake": "ducklake:postgres:postgresql://f:***@db/lake",
        "https://" + SECRET + "@github.com/org/repo": "https://***@github.com/org/repo",
        "GET /v1?api_key=" + SECRET + "&n=1": "GET /v1?api_key=***&n=1",
        '{"hub_token": "' + SECRET + '", "max_tokens": 5}': '{"hub_token": "***", "max_tokens": 5}',
        "Authorization: Bearer " + SECRET: "Authorization: Bearer ***",
        "token hf_" + "a1B2" * 9: "token ***",
    }
    assert {text: redact(text) for text in cases} == cases
    harmless = "sampling: {temperature: 0.0, max_tokens: 1024}\npad_token: <pad>\napi_key_env: MY_KEY\nurl: http://h:80/v1"
    assert redact(harmless) == harmless
    assert SECRET not in LakeSpec.resolve(f"ducklake:postgres:dbname=x host=h user=u password={SECRET}").display
    assert SECRET not in LakeSpec.resolve(f"ducklake:postgres:postgresql://u:{SECRET}@h/x").display


def _every_text(lake_dir: Path) -> str:
    """Every value of every table the catalog database holds (DuckLake's own and inlined rows included),
    then every table of the lake as vlfactory reads it."""
    parts = []
    if (lake_dir / "catalog.sqlite").exists():
        import sqlite3

        with sqlite3.connect(lake_dir / "catalog.sqlite") as con:
            parts += list(con.iterdump())
    else:
        con = duckdb.connect(str(lake_dir / "catalog.ducklake"), read_only=True)
        for schema, table in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall():
            parts.append(f"{schema}.{table}: " + repr(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()))
        con.close()
    assert any("ducklake_snapshot" in p for p in parts)  # the catalog's own tables were read
    with Lake(lake_dir, read_only=True) as lake:
        for table in lake.tables():
            parts.append(repr(lake.query(f"SELECT * FROM {table}").fetchall()))
    return "\n".join(parts)


def test_a_password_in_a_base_url_is_used_and_stored_nowhere(cli, lake_dir, tmp_path, monkeypatch):
    for var in ("VLFACTORY_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with FaultServer() as captioner, FaultServer(default="500") as reasoner:
        auth = lambda url: url.replace("http://", f"http://reader:{SECRET}@")  # noqa: E731
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"""
description: "sources mirrored at https://reader:{SECRET}@example.org/data"
sources:
  - {{name: synthetic, format: synthetic, n: 3, seed: 4}}
caption:
  backend: openai
  model: captioner
  base_url: {auth(captioner.url)}
  overwrite: true
distil:
  backend: openai
  model: reasoner
  base_url: {auth(reasoner.url)}
  max_retries: 0
  sampling: {{max_tokens: 16, n: 1}}
""")
        out = cli("run", recipe, "--stage", "ingest", "--stage", "caption", "--stage", "distil").output
        # the credentials were used: every request carried them as basic auth
        basic = "Basic " + base64.b64encode(f"reader:{SECRET}".encode()).decode()
        assert len(captioner.hits) == len(reasoner.hits) == 3
        assert {h.headers["Authorization"] for h in captioner.hits + reasoner.hits} == {basic}
        # a run that fails names the server, not its password
        dead = tmp_path / "dead.yaml"
        dead.write_text(recipe.read_text().replace(auth(reasoner.url), f"http://reader:{SECRET}@127.0.0.1:9/v1")
                        .replace("max_retries: 0", "fail_fast_after_s: 0.5"))
        failed = cli("run", dead, "--stage", "distil", ok=False)
    assert failed.exit_code == 2 and "no server answers at http://reader:***@127.0.0.1:9/v1" in failed.output
    assert SECRET not in out + failed.output

    text = _every_text(lake_dir)
    assert SECRET not in text
    with Lake(lake_dir, read_only=True) as lake:
        recipes = [r[0] for r in lake.query("SELECT recipe FROM runs ORDER BY started_at").fetchall()]
        errors = [r[0] for r in lake.query("SELECT error FROM runs WHERE status = 'failed'").fetchall()]
        failures = lake.query("SELECT detail, payload FROM rejected WHERE reason = 'request_failed'").fetchall()
    assert f"base_url: http://reader:***@127.0.0.1:{captioner.port}/v1" in recipes[0]  # masked, not dropped
    assert errors and "http://reader:***@127.0.0.1:9/v1" in errors[0]
    assert len(failures) == 3 and all(json.loads(p)["endpoint"] == f"http://reader:***@127.0.0.1:{reasoner.port}/v1"
                                      for _, p in failures)

    folder = tmp_path / "published"
    cli("publish", "latest", "--repo", "org/set", "--table", "problems", "--table", "captions", "--table",
        "rejected", "--dry-run", folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.parent.name == "recipes" for p in files)
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    card = (folder / "README.md").read_text()
    assert "## Reproduce it" in card and SECRET not in card


def test_a_password_in_a_lake_uri_is_stored_nowhere(postgres, tmp_path, monkeypatch):
    """The real shared-catalog path: a PostgreSQL catalog whose connection string carries a password (the
    test cluster trusts loopback, so any password connects): neither the command line stored with the run
    nor any table of the catalog database holds it."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SYNTH)
    postgres = fresh_database(postgres, "secret_uri")
    spec = f"ducklake:postgres:{postgres} password={SECRET}"
    res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "ingest", str(recipe), "--lake", spec,
                          "--data-path", str(tmp_path / "data")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout + res.stderr and "password=***" in res.stderr  # the `lake:` line
    with Lake(spec) as lake:
        argv = lake.query("SELECT argv FROM runs").fetchall()
    assert "password=***" in argv[-1][0]
    pg_dump = (sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump")) or [shutil.which("pg_dump") or "pg_dump"])[-1]
    dump = subprocess.run([pg_dump, *(f"--{k}={v}" for k, v in (kv.split("=") for kv in postgres.split())
                                       if k in ("dbname", "host", "port")), "--username=postgres"],
                          capture_output=True, text=True)
    if dump.returncode != 0:
        pytest.skip(f"pg_dump: {dump.stderr.strip()}")
    assert "ducklake_snapshot" in dump.stdout and SECRET not in dump.stdout
