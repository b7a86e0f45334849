"""Progress without a terminal (issue 12 item 10): with its output piped, `vlfactory run` prints a
plain progress line per stage every VLFACTORY_PROGRESS_S seconds, even while nothing finishes, and
one per update with VLFACTORY_PROGRESS_S=0.

    .venv/bin/pytest tests/cli/test_progress_lines.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from fault_server import FaultServer

LINE = re.compile(r"^(\w+): (\d+)(?:/(\d+) \(\d+%\))?(?: done)?, ([\d.]+)/s(?:, ETA (\S+))?.*"
                  r"cached (\d+), failed (\d+), rejected (\d+); (\S+) elapsed$")


def vlf(*args, interval: str) -> subprocess.CompletedProcess:
    """`vlfactory` in its own process, stdout and stderr pipes (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VLFACTORY_API_KEY", "OPENAI_API_KEY")}
    return subprocess.run([sys.executable, "-m", "vlfactory.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env | {"VLFACTORY_PROGRESS_S": interval})


def progress_lines(text: str, stage: str) -> list[tuple]:
    return [m.groups() for m in map(LINE.match, text.splitlines()) if m and m[1] == stage]


def test_piped_runs_print_progress_lines(tmp_path):
    with FaultServer(default="slow:0.6") as server:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"""
batch_rows: 4
sources:
  - {{name: synthetic, format: synthetic, n: 6, seed: 2}}
distil:
  backend: openai
  model: reasoner
  base_url: {server.url}
  concurrency: 1             # one request at a time: about 0.6 s each, 3.6 s for the stage
  max_retries: 0
  sampling: {{max_tokens: 16, n: 2}}
""")
        lake = tmp_path / "lake"
        res = vlf("run", recipe, "--stage", "ingest", "--stage", "caption", "--stage", "distil", "--lake", lake,
                  interval="0.5")
        assert res.returncode == 0, res.stderr
        assert len(server.hits) == 6
    distil = progress_lines(res.stderr, "distil")
    # about 3.6 s at one line per 0.5 s; a slow machine only adds lines
    assert len(distil) >= 4, res.stderr
    done = [int(d[1]) for d in distil]
    assert done == sorted(done) and all(d[2] == "12" for d in distil if d[2]), res.stderr
    # the first answer takes 0.6 s: the line at 0.5 s says the stage is alive with nothing done yet
    assert "distil: running for 1s, nothing finished yet" in res.stderr
    assert any(d[4] not in (None, "unknown") for d in distil), res.stderr  # an ETA once something finished
    assert all(d[6] == "0" for d in distil)  # no failures
    assert "\r" not in res.stderr and "\x1b[" not in res.stderr  # no bar redraws or colours in a log

    # 0: a line at every update (each batch of ingest, each graded batch of verify)
    res = vlf("run", recipe, "--stage", "ingest", "--stage", "verify", "--lake", lake, interval="0")
    assert res.returncode == 0, res.stderr
    ingest, verify = progress_lines(res.stderr, "ingest"), progress_lines(res.stderr, "verify")
    assert [int(d[1]) for d in ingest] == [3, 6], res.stderr  # batches of 4 rows, 4 + 2 evened out to 3 + 3
    assert verify and verify[-1][1] == verify[-1][2] == "12", res.stderr
