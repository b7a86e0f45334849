"""A launched training never outlives the loop that launched it: killing the loop's process, even with SIGKILL,
ends the child (trainers/launch.py run_child asks the kernel for it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = """
import sys
from pathlib import Path
from vlfactory.trainers.launch import run_child
run_child([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(120)"], Path(sys.argv[1]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_loop_takes_its_training_with_it(tmp_path):
    log = tmp_path / "child.log"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(log)], stderr=subprocess.PIPE, text=True)
    child = int(parent.stderr.readline())   # the child's output reaches the parent's stderr as it comes
    os.kill(child, 0)                       # running
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as f:   # a zombie waits for its reaper: gone all the same
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_commands_and_their_trainings_wait_passively_unless_told(given, expected):
    """Every command sets OpenMP's passive wait policy before torch can load (a training that spins loses ~10x
    to anything else on the core) and its launched children inherit it; a user's own setting wins."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env |= {"OMP_WAIT_POLICY": given} if given else {}
    probe = ("import os, sys, subprocess\n"
             "from vlfactory.cli import main\n"
             "try:\n    main(['recipe', 'schema'], standalone_mode=False)\n"
             "except SystemExit:\n    pass\n"
             "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"OMP_WAIT_POLICY\"))'],"
             " capture_output=True, text=True).stdout.strip(), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == expected
