"""Worker processes for the slow rules (math-verify, mathruler), each job with a time limit: a worker that
overruns is killed and replaced (see vlfactory.verify)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import lru_cache
from typing import Any

from vlfactory.verify.rules import Grade, Job, _close, _is_text, _Num, _number

log = logging.getLogger("vlfactory.verify")

TIMEOUT_S = 5.0
WORKER_MEMORY = 2 << 30     # bytes of address space per worker: 9^{9^{9}} fails there, not in the machine
WORKER_START_S = 120.0
CHUNK = 32                  # math-verify jobs per message to a worker (grade_many)


def _finish_all(results: list, workers: int | None, timeout_s: float) -> list[Grade]:
    """Send the jobs among `results` to the worker processes; Grades stay as they are."""
    pending = [i for i, r in enumerate(results) if not isinstance(r, Grade)]
    if pending:
        n = min(len(pending), workers or os.cpu_count() or 1)
        # Jobs go out in chunks, so a worker moves on to its next job without a round trip to us;
        # at least 4 chunks per worker keep the load even when some jobs are slow.
        size = max(1, min(CHUNK, len(pending) // (4 * n)))
        chunks = [pending[k:k + size] for k in range(0, len(pending), size)]
        with ThreadPoolExecutor(n) as pool:
            for chunk, graded in zip(chunks, pool.map(lambda c: _finish([results[i] for i in c], timeout_s), chunks)):
                for i, g in zip(chunk, graded):
                    results[i] = g
    return results


def _finish(jobs: list[Job], timeout_s: float) -> list[Grade]:
    try:
        verdicts = _WORKERS.run(jobs, timeout_s)
    except Exception:
        log.warning("a math-verify worker failed", exc_info=True)
        verdicts = [(False, "error")] * len(jobs)
    return [Grade(correct, job[0], reason) for job, (correct, reason) in zip(jobs, verdicts)]


def _mathruler_grade(given: str, truth: str) -> tuple[bool, str]:
    from mathruler.grader import grade_answer

    ok = bool(grade_answer(given, truth))
    return ok, "correct" if ok else "incorrect"


def _mathruler_any(gold: str, candidates: list[str], wrong: str) -> tuple[bool, str]:
    """grade_answer(gold, c) for any candidate c (the Qwen baseline's check_correctness); `wrong` is the reason
    when none is."""
    from mathruler.grader import grade_answer

    ok = any(grade_answer(gold, c) for c in candidates)
    return ok, "correct" if ok else wrong


# ---- math-verify, in worker processes --------------------------------------------------------


@lru_cache(maxsize=4096)


def _parse_gold(gold: str) -> list:
    from math_verify import parse

    return parse(f"${gold}$", fallback_mode="no_fallback", parsing_timeout=None)


def _sympy_grade(gold: str, pred: str, decimals: int | None, rel_tol: str) -> tuple[bool, str]:
    from math_verify import parse, verify

    g = _parse_gold(gold)
    if not g:
        return False, "unparsable_gold"
    # Prose goes in as it is (math-verify finds its last number); anything else is read as LaTeX.
    p = parse(pred if _is_text(pred) else f"${pred}$", fallback_mode="no_fallback", parsing_timeout=None)
    if not p:
        return False, "incorrect"
    g_num, p_num = _real(gold, g[0]), _real(pred, p[0])
    if g_num is not None and p_num is not None:
        ok = _close(g_num, p_num, decimals, Fraction(rel_tol))
    else:
        ok = verify(g, p, timeout_seconds=None)
    return ok, "correct" if ok else "incorrect"


def _real(text: str, expr: Any) -> _Num | None:
    """A real number as rule 4 compares it: as written if plain, else sympy's exact or 30-digit value."""
    if (written := _number(text)) is not None:
        return written
    from sympy import Expr

    if not isinstance(expr, Expr) or not expr.is_number:
        return None
    if expr.is_Rational:
        return _Num(Fraction(int(expr.p), int(expr.q)))
    value = expr.evalf(30)
    digits = str(value)
    if not value.is_Float or abs(int(digits.partition("e")[2] or 0)) > 10000:   # 10^(10^10): no Fraction
        return None
    exact = Fraction(digits)
    # Good to ~30 digits: equivalent forms (sqrt(8), 2*sqrt(2)) agree, different numbers do not.
    return _Num(exact, max(abs(exact), Fraction(1)) * Fraction(1, 10 ** 25))


def _serve(fd: int) -> None:
    """A worker's loop: read lists of jobs from the socket `fd`, answer a verdict per job as it is
    done, until the parent goes."""
    import resource
    from multiprocessing.connection import Connection

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    # math-verify warns that its signal timeout is off; the parent enforces the limit instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (imported before "ready": the first job's time is its own)
    import mathruler.grader  # noqa: F401

    conn = Connection(fd)
    conn.send("ready")
    while True:
        try:
            jobs = conn.recv()
        except EOFError:
            return
        for job in jobs:
            try:
                verdict = _WORK[job[1]](*job[2:])
            except Exception:   # MemoryError under the limit above, RecursionError, a bug
                log.warning("%s failed on %r", job[1], job[2:4], exc_info=True)
                verdict = False, "error"
            conn.send(verdict)


class _Workers:
    """Worker processes for math-verify: one per concurrent caller, kept for the next job.

    A worker that overruns a job's time limit is killed, not waited for; the next job starts
    a fresh one. Workers are plain subprocesses (`python -c`), so nothing of the caller's
    program is imported into them; each exits when the caller goes away.
    """

    def __init__(self) -> None:
        self._idle: list[tuple[subprocess.Popen, Any]] = []
        self._lock = threading.Lock()

    def forget(self) -> None:
        """In a forked child: the parent's workers are not ours."""
        self._idle, self._lock = [], threading.Lock()

    def run(self, jobs: list[Job], timeout_s: float) -> list[tuple[bool, str]]:
        """Verdicts for `jobs`, in order, each within `timeout_s` of the one before.

        The worker gets them all at once and answers each as it finishes; one that overruns or
        dies is replaced, and the jobs after the one it failed on go to the new worker.
        """
        verdicts: list[tuple[bool, str]] = []
        while len(verdicts) < len(jobs):
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            proc, conn = worker or self._start()
            todo = jobs[len(verdicts):]
            reason = None
            try:
                conn.send(todo)
                for _ in todo:
                    if not conn.poll(timeout_s):
                        reason = "timeout"
                        break
                    verdicts.append(conn.recv())
            except (EOFError, OSError):   # it died: out of memory, or killed from outside
                reason = "error"
            if reason is None:
                with self._lock:
                    self._idle.append((proc, conn))
                break
            proc.kill()
            proc.wait()
            conn.close()
            verdicts.append((False, reason))
        return verdicts

    @staticmethod
    def _start() -> tuple[subprocess.Popen, Any]:
        from multiprocessing import Pipe

        ours, theirs = Pipe()
        fd = theirs.fileno()
        proc = subprocess.Popen([sys.executable, "-c", f"from vlfactory.verify.pool import _serve; _serve({fd})"],
                                pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        try:
            if not ours.poll(WORKER_START_S):
                raise TimeoutError(f"a math-verify worker did not start in {WORKER_START_S:.0f}s")
            ours.recv()
        except BaseException:
            proc.kill()
            proc.wait()
            ours.close()
            raise
        return proc, ours


_WORK = {"math_verify": _sympy_grade, "mathruler": _mathruler_grade,   # what a worker runs, by name
         "mathruler_any": _mathruler_any}
_WORKERS = _Workers()
os.register_at_fork(after_in_child=_WORKERS.forget)
