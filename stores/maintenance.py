"""Catalog maintenance: `vlfactory gc` compacts, expires and cleans up through DuckLake's own functions,
never touching a version anyone named or anyone is reading.

Readers hold leases: a read-only Lake on a lake folder (sql, show, report, view, export, publish, a notebook)
writes `lake/.readers/HOST-PID-ID.json` naming the snapshot it is pinned to, and removes it when it closes.
gc keeps every leased snapshot whose reader is alive: on this host, while its process (pid and start time)
exists; from another host, for VLFACTORY_READER_LEASE_S (a day) after the lease was taken. A lease left by a
killed reader on this host is removed. A catalog that is not a folder (PostgreSQL) has nowhere to hold
leases, so gc keeps every snapshot there that stopped being the latest less than VLFACTORY_READER_GRACE_S
(an hour) ago: a reader that opened it as the latest within that hour keeps reading.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

from vlfactory.stores.lake import DB, Lake

ORPHAN_GRACE_S = 3600.0  # an unadopted file younger than this may be a writer's batch in flight
READERS = ".readers"      # a lake folder's reader leases
READER_LEASE_S = float(os.environ.get("VLFACTORY_READER_LEASE_S", 86400))  # another host's lease lasts this long
READER_GRACE_S = float(os.environ.get("VLFACTORY_READER_GRACE_S", 3600))   # a shared catalog: no leases, a grace


def lease(lake: Lake, snapshot: int) -> Path | None:
    """Record that this process reads `snapshot` of a lake folder (until `release`); None where no lease can be
    written (not a folder, a read-only mount: no gc runs through that mount either)."""
    from vlfactory.stores.runs import _process_started

    if lake.spec.root is None:
        return None
    path = lake.spec.root / READERS / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
    try:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"snapshot": int(snapshot), "host": socket.gethostname(), "pid": os.getpid(),
                                    "pid_started": _process_started(os.getpid()), "at": time.time()}))
    except OSError:
        return None
    return path


def release(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def held(lake: Lake, dry_run: bool = False) -> set[int]:
    """The snapshots live readers hold: leases of a lake folder, else (a shared catalog) every snapshot that was
    the latest within READER_GRACE_S."""
    from vlfactory.stores.runs import _process_started

    if lake.spec.root is None:
        rows = lake.con.execute(f"""SELECT snapshot_id FROM (
            SELECT snapshot_id, lead(snapshot_time) OVER (ORDER BY snapshot_id) AS superseded FROM {DB}.snapshots())
            WHERE superseded > now() - to_seconds(?::DOUBLE)""", [READER_GRACE_S]).fetchall()
        return {r[0] for r in rows}
    out, host = set(), socket.gethostname()
    for path in (lake.spec.root / READERS).glob("*.json"):
        try:
            held_by = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            continue  # removed meanwhile, or being written: a new reader, of the latest snapshot
        if held_by.get("host") == host:
            started = _process_started(int(held_by.get("pid") or 0))
            alive = started is not None and (held_by.get("pid_started") is None or started == 0.0
                                             or abs(started - held_by["pid_started"]) <= 1)
        else:
            alive = age < READER_LEASE_S
        if alive:
            out.add(int(held_by["snapshot"]))
        elif not dry_run:
            release(path)
    return out


def gc(lake: Lake, older_than_s: float, dry_run: bool = False, say: Callable[[str], None] = print) -> dict[str, int]:
    """Compact, expire and clean up, never touching a version anyone named.

    1. merge adjacent small files (DuckLake's merge_adjacent_files; old snapshots keep reading
       the files they had until those snapshots expire);
    2. expire the snapshots older than `older_than_s`, except the latest, every tagged one, every
       one a training read (`trainings.snapshot_id`) and every one a live reader holds (`held`): a
       kept snapshot keeps every file it reads, so tags, trainings and open readers read exactly
       their rows after gc;
    3. delete the files no snapshot reads any more (cleanup_old_files), and the Parquet files
       the catalog never adopted (a killed batch) once older than `older_than_s` and an hour,
       so a writer's file that is not committed yet is never taken.
    """
    if not dry_run:
        lake.mark_interrupted()
    keep = set(lake.tags().values()) | {lake.current_snapshot()}
    keep |= {r[0] for r in lake.con.execute(f"SELECT DISTINCT snapshot_id FROM {DB}.trainings "
                                            "WHERE snapshot_id IS NOT NULL").fetchall()}
    reading = held(lake, dry_run)
    keep |= reading
    cutoff = f"now() - to_seconds({float(older_than_s)})"
    expire = [r[0] for r in lake.con.execute(f"""SELECT snapshot_id FROM {DB}.snapshots()
        WHERE snapshot_time < {cutoff} ORDER BY 1""").fetchall() if r[0] not in keep]
    orphan_cutoff = f"now() - to_seconds({max(float(older_than_s), ORPHAN_GRACE_S)})"
    counts = {"snapshots_expired": len(expire)}
    if dry_run:
        files = lake.con.execute(f"""SELECT count(*), coalesce(sum(n), 0) FROM (
            SELECT table_id, count(*) AS n FROM __ducklake_metadata_{DB}.ducklake_data_file
            WHERE end_snapshot IS NULL GROUP BY 1 HAVING n > 1)""").fetchone()
        say(f"would merge the small files of {files[0]} table(s) ({files[1]} files)")
    else:
        merged = lake.con.execute(f"SELECT count(*) FROM ducklake_merge_adjacent_files('{DB}')").fetchone()[0]
        counts["files_merged"] = merged
        say(f"merged {merged} files")
    if expire:
        lake.con.execute(f"SELECT * FROM ducklake_expire_snapshots('{DB}', versions => ?, dry_run => ?)",
                         [expire, dry_run]).fetchall()
    say(f"{'would expire' if dry_run else 'expired'} {len(expire)} snapshot(s) older than {older_than_s:g} s "
        f"(kept: the latest, {len(keep) - 1} tagged, trained-on or held by {len(reading)} open reader(s))")
    old = lake.con.execute(f"SELECT path FROM ducklake_cleanup_old_files('{DB}', cleanup_all => true, "
                           f"dry_run => ?)", [dry_run]).fetchall()
    orphans = lake.con.execute(f"SELECT path FROM ducklake_delete_orphaned_files('{DB}', older_than => "
                               f"{orphan_cutoff}, dry_run => ?)", [dry_run]).fetchall()
    counts |= {"old_files_deleted": len(old), "orphans_deleted": len(orphans)}
    verb = "would delete" if dry_run else "deleted"
    say(f"{verb} {len(old)} file(s) no snapshot reads and {len(orphans)} orphan file(s)")
    for (path,) in orphans[:20]:
        say(f"  orphan: {path}")
    return counts

