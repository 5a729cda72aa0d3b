"""One owner per attempt: an fcntl lock that a trainer holds for as long as it runs.

* The local runner hands each trainer the path of its attempt's lock (``PIONEER_ATTEMPT_LOCK``); the
  trainer takes it before touching the attempt's folder and exits with :data:`LOCKED_EXIT` when another
  process holds it (:func:`hold`). The kernel frees the lock when its holder dies, however it dies.
* Trainers die with the runner (``PR_SET_PDEATHSIG``), and on resume the runner kills any trainer still
  holding a lock (an orphan of a runner killed with SIGKILL before it could stop them) before it starts
  a new one (:func:`reclaim`), so an attempt is never trained by two processes at once.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

LOCK_NAME = ".owner.lock"
LOCK_ENV = "PIONEER_ATTEMPT_LOCK"
LOCKED_EXIT = 3
_PR_SET_PDEATHSIG = 1


PARENT_ENV = "PIONEER_PARENT_PID"


def die_with_parent() -> None:
    """Called by the trainer at start (not as a preexec_fn, which can deadlock a threaded parent): the kernel sends
    SIGTERM to this process when the runner that started it dies; if it died already, exit now."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the lock and the resume's reclaim still hold
        return
    if os.getppid() != int(parent):
        raise SystemExit(f"pioneer-trainer: the runner (pid {parent}) that started this trainer is gone")


def hold(path: str | Path) -> TextIO | None:
    """Take the attempt's lock for this process (kept until exit) and record the pid; None when another holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def holder(path: str | Path) -> int | None:
    """The pid holding the lock, or None when it is free."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


def reclaim(path: str | Path, say: Callable[[str], None], wait_seconds: float = 15.0) -> None:
    """Kill an orphaned trainer that still owns this attempt, and wait until its lock is free."""
    pid = holder(path)
    if pid is None:
        return
    say(f"an orphaned trainer (pid {pid}) still owns this attempt; stopping it before training again")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if pid > 0:
            try:
                os.killpg(pid, sig)  # trainers lead their own session: the whole group goes
            except ProcessLookupError:
                pass
            except PermissionError:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_seconds / 2
        while time.monotonic() < deadline:
            if holder(path) is None:
                return
            time.sleep(0.1)
    raise RuntimeError(f"attempt lock {path} is still held by pid {pid}; stop that process and run again")
