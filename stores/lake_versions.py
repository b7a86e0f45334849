"""Snapshots and versions of a lake, a part of `Lake` (stores/lake.py): transactions that are one snapshot each,
with the writer lock and the retry on a conflicting commit; the current snapshot; tags and what a version
names. Every method works on the open connection `self.con` of the Lake it is part of."""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import duckdb

from vlfactory.stores.base import DB, TAG_COMMIT, LakeError, WriteConflict
from vlfactory.stores.sqltext import _first_line

T = TypeVar("T")


class Versions:
    @contextlib.contextmanager
    def transaction(self, message: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """One snapshot: everything inside commits together, with a commit message naming the run.

        A commit that conflicts with another writer's (two keyed inserts into one table, see
        `insert`) rolls back and raises WriteConflict; `write` runs a block again until it commits.
        """
        with self._writer_lock():
            yield from self._transaction(message)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """On a lake folder, one transaction at a time across processes (readers never wait).

        SQLite lets one writer commit at a time and fails a transaction whose snapshot another
        commit overtook ("database is locked"); taking turns before BEGIN avoids both.
        """
        if self.spec.root is None or self._locked:
            yield
            return
        import fcntl

        with open(self.spec.root / ".writer.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._locked = True
            try:
                yield
            finally:
                self._locked = False
                fcntl.flock(f, fcntl.LOCK_UN)

    def _transaction(self, message: str) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN")
        try:
            extra = json.dumps({"run_id": self.run_id}) if self.run_id else None
            self.con.execute(f"CALL {DB}.set_commit_message('vlfactory', ?, extra_info => ?)", [message, extra])
            yield self.con
            try:
                self.con.execute("COMMIT")
            except duckdb.TransactionException as e:
                if not any(w in str(e).lower() for w in ("conflict", "database is locked")):
                    raise
                raise WriteConflict(_first_line(e)) from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.con.execute("ROLLBACK")
            raise

    def write(self, message: str, body: Callable[[], T], attempts: int = 20) -> T:
        """Run `body` in one transaction, from the start again while a concurrent commit conflicts with it.

        The body must read what it depends on inside the transaction (a keyed `insert` does),
        so its second run sees the rows the other writer committed.
        """
        for attempt in range(attempts):
            try:
                with self.transaction(message):
                    return body()
            except WriteConflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * min(2 ** attempt, 20))
        raise AssertionError("unreachable")

    def current_snapshot(self) -> int:
        return self.con.execute(f"SELECT id FROM {DB}.current_snapshot()").fetchone()[0]

    def data_snapshot(self) -> int:
        """The latest snapshot, not counting the ones that only wrote tags."""
        row = self.con.execute(f"""SELECT max(snapshot_id) FROM {DB}.snapshots()
                                   WHERE commit_message IS NULL OR NOT starts_with(commit_message, ?)""",
                               [TAG_COMMIT]).fetchone()
        return row[0]

    def _cached(self, name: str, make: Callable[[], T]) -> T:
        """`make()`, kept per pinned snapshot: a read-only Lake reads one snapshot, which never changes, so a
        report's hundred queries look its tables and tags up once (each lookup is a catalog query). A
        writable Lake sees its own commits: nothing is kept."""
        if self.pinned is None:
            return make()
        key = (name, self.pinned)
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def tags(self) -> dict[str, int]:
        return dict(self._cached("tags", lambda: dict(self.con.execute(
            f"SELECT name, arg_max(snapshot_id, created_at) FROM {DB}.tags GROUP BY name").fetchall())))

    def versions(self, last: int | None = None) -> list[tuple]:
        """The last `last` snapshots (None: all) up to the pinned one, oldest first, each as (snapshot id, its
        tags, time, command and run_id of the run that wrote it, commit message, {table: rows} of the tables
        holding any): `vlfactory versions`. Snapshots after the one this Lake opened on are left out: their
        files are not readable here."""
        tags: dict[int, list[str]] = {}
        for name, snap in self.tags().items():
            tags.setdefault(snap, []).append(name)
        commands = dict(self.con.execute(f"SELECT run_id, command FROM {DB}.runs").fetchall())
        pinned = self.current_snapshot()
        snapshots = [s for s in self.snapshots() if s["snapshot_id"] <= pinned]
        snapshots = snapshots[-last:] if last is not None else snapshots
        counted = self.row_counts([s["snapshot_id"] for s in snapshots])
        out = []
        for s in snapshots:
            run_id = (json.loads(s["commit_extra_info"]) if s["commit_extra_info"] else {}).get("run_id")
            out.append((s["snapshot_id"], tags.get(s["snapshot_id"], []), s["snapshot_time"], commands.get(run_id),
                        run_id, s["commit_message"] or "",
                        {t: n for t, n in sorted(counted[s["snapshot_id"]].items()) if n}))
        return out

    def resolve(self, version: int | str) -> int:
        """A snapshot id from a tag name, a snapshot number, or `latest`."""
        v = str(version).strip()
        if v == "latest":
            return self.current_snapshot()
        if v.isascii() and v.isdigit():  # not '²', which isdigit() but int() refuses
            snap = int(v)
            if self.pinned is not None:  # looked up once per pinned Lake (a report resolves TABLE@N 80 times)
                known = snap in self._cached("snapshots", lambda: {r[0] for r in self.con.execute(
                    f"SELECT snapshot_id FROM {DB}.snapshots()").fetchall()})
            else:
                known = self.con.execute(f"SELECT count(*) FROM {DB}.snapshots() WHERE snapshot_id = {snap}"
                                         ).fetchone()[0]
            if not known:
                raise LakeError(f"no snapshot {snap} in {self.spec.display} (see `vlfactory versions`)")
            return snap
        tags = self.tags()
        if v not in tags:
            hint = f"; known tags: {', '.join(sorted(tags))}" if tags else "; no tags yet (`vlfactory tag NAME`)"
            raise LakeError(f"unknown version {v!r}: not a snapshot number or tag{hint}")
        return tags[v]

    def tag(self, name: str, version: int | str | None = None, note: str | None = None, force: bool = False) -> int:
        """Name a snapshot (the current one by default)."""
        if not re.fullmatch(r"[A-Za-z][\w.-]*", name) or name == "latest":
            raise LakeError(f"bad tag name {name!r}: use letters, digits, '_', '-', '.', starting with a letter")
        snap = self.resolve(version) if version is not None else self.data_snapshot()
        old = self.tags().get(name)
        if old is not None and old != snap and not force:
            raise LakeError(f"tag {name!r} already names snapshot {old}; pass --force to move it to {snap}")
        if old != snap:
            with self.transaction(f"{TAG_COMMIT}{name} -> {snap}"):
                self.con.execute(f"INSERT INTO {DB}.tags (name, snapshot_id, run_id, note) VALUES (?, ?, ?, ?)",
                                 [name, snap, self.run_id, note])
        return snap

    def tag_if_changed(self, name: str, table: str) -> tuple[int, bool]:
        """Tag the current snapshot `name` unless the tag already names the same rows of `table` (`differs`):
        (the snapshot it names, whether it moved). A set rewritten with the same rows keeps its tag where it
        was: a rerun of the loop moves no tag."""
        old = self.tags().get(name)
        if old is not None and not self.differs(table, f"{DB}.{table} AT (VERSION => {int(old)})"):
            return old, False
        return self.tag(name, force=True), True
