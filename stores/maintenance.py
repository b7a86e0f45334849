"""Catalog maintenance: `vlfactory gc` compacts, expires and cleans up through DuckLake's own functions,
never touching a version anyone named."""

from __future__ import annotations

from typing import Callable

from vlfactory.stores.lake import DB, Lake

ORPHAN_GRACE_S = 3600.0  # an unadopted file younger than this may be a writer's batch in flight


def gc(lake: Lake, older_than_s: float, dry_run: bool = False, say: Callable[[str], None] = print) -> dict[str, int]:
    """Compact, expire and clean up, never touching a version anyone named.

    1. merge adjacent small files (DuckLake's merge_adjacent_files; old snapshots keep reading
       the files they had until those snapshots expire);
    2. expire the snapshots older than `older_than_s`, except the latest, every tagged one and
       every one a training read (`trainings.snapshot_id`): a kept snapshot keeps every file
       it reads, so tags read exactly their rows after gc;
    3. delete the files no snapshot reads any more (cleanup_old_files), and the Parquet files
       the catalog never adopted (a killed batch) once older than `older_than_s` and an hour,
       so a writer's file that is not committed yet is never taken.
    """
    if not dry_run:
        lake.mark_interrupted()
    keep = set(lake.tags().values()) | {lake.current_snapshot()}
    keep |= {r[0] for r in lake.con.execute(f"SELECT DISTINCT snapshot_id FROM {DB}.trainings "
                                            "WHERE snapshot_id IS NOT NULL").fetchall()}
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
        f"(kept: the latest, {len(keep) - 1} tagged or trained-on)")
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

