"""The store's operations for the factory's code (vlfactory.stores.tables) on a real lake: reads as tuples and
dicts, an Arrow table registered for a block only, deletes by key inside a transaction, a row inserted and
updated with its values bound, the engine's threads set for a block and restored."""

from __future__ import annotations

import pyarrow as pa
import pytest

from vlfactory.stores import schema, tables
from vlfactory.stores.lake import Lake


def test_reads_deletes_and_rows_written_with_bound_values(lake_dir):
    hostile = "x'); DROP TABLE lake.problems; --"
    rows = [{"problem_id": f"p{i}", "source": "s", "source_id": str(i), "split": "train", "question": f"{i}?",
             "answer": str(i)} for i in range(4)]
    with Lake(lake_dir) as lake:
        with lake.transaction("problems"):
            lake.insert("problems", pa.Table.from_pylist(rows, schema=schema.PROBLEMS))
        sql = "SELECT problem_id, answer FROM lake.problems WHERE source = ? ORDER BY problem_id"
        assert tables.rows(lake, sql, ["s"])[0] == ("p0", "0")
        assert tables.dicts(lake, sql, ["s"])[3] == {"problem_id": "p3", "answer": "3"}
        assert tables.one(lake, "SELECT count(*) FROM lake.problems") == (4,)

        with tables.registered(lake, "_ids", pa.table({"v": ["p1", "p2"]})):
            assert tables.rows(lake, "SELECT count(*) FROM _ids") == [(2,)]
        with pytest.raises(Exception, match="_ids"):  # gone after the block
            tables.rows(lake, "SELECT count(*) FROM _ids")

        with lake.transaction("delete"):
            assert tables.delete_in(lake, "problems", "problem_id", ["p1", "p2", hostile], "answer <> ?", ["2"]) == 1
            assert tables.delete_in(lake, "problems", "problem_id", []) == 0
        assert [r[0] for r in tables.rows(lake, sql, ["s"])] == ["p0", "p2", "p3"]

        with lake.transaction("a run"):
            tables.insert_row(lake, "runs", {"run_id": hostile, "command": "run", "status": "running"})
        with lake.transaction("its end"):
            assert tables.update(lake, "runs", "run_id", hostile, {"status": "ok", "error": hostile}) == 1
        assert tables.one(lake, "SELECT status, error FROM lake.runs WHERE run_id = ?", [hostile]) == ("ok", hostile)
        assert tables.columns(lake, sql.replace("?", "'s'")) == {"problem_id": "VARCHAR", "answer": "VARCHAR"}

        before = tables.one(lake, "SELECT current_setting('threads')")[0]
        with tables.threads(lake, 1):
            assert tables.one(lake, "SELECT current_setting('threads')") == (1,)
        assert tables.one(lake, "SELECT current_setting('threads')")[0] == before
