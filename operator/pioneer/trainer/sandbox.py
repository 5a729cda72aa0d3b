"""pass@1 execution: run model-written code with its tests in a separate, limited process.

Each program runs in a fresh ``python -I`` process, in an empty temporary directory, with a minimal
environment and:
    * wall-clock and CPU-time limits (the whole process group is killed on timeout),
    * an address-space limit (allocating beyond it raises MemoryError inside the sandbox),
    * a file-size limit and no core dumps,
    * no network and no child processes: an audit hook (PEP 578) refuses sockets, subprocesses, exec,
      fork and ctypes before they happen; audit hooks cannot be removed from inside the process.

This is process-level isolation for benchmark code on a development machine. In a cluster the trainer
Job adds the pod's own isolation (a NetworkPolicy with no egress, a read-only root filesystem).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# runs inside the sandboxed interpreter before the program; the program arrives on stdin
_BOOTSTRAP = r'''
import sys
_BLOCKED = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "pty.spawn", "ctypes.", "os.kill", "os.killpg", "shutil.rmtree")
class SandboxViolation(BaseException):
    pass
def _audit(event, args):
    if event.startswith(_BLOCKED) or (event == "import" and args and args[0] in ("ctypes", "_ctypes")):
        raise SandboxViolation(f"blocked by the sandbox: {event}")
source = sys.stdin.read()
code = compile(source, "<program>", "exec")
sys.addaudithook(_audit)
namespace = {"__name__": "__main__"}
exec(code, namespace)
'''


@dataclass(frozen=True)
class ExecutionResult:
    passed: bool
    status: str  # passed | failed | timeout | memory | blocked
    detail: str
    seconds: float


def _limits(cpu_seconds: int, memory_bytes: int, file_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_program(program: str, timeout: float = 5.0, memory_mb: int = 512, file_mb: int = 16) -> ExecutionResult:
    """Run ``program`` (code followed by its tests, e.g. asserts); passed = it exits 0 within the limits."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pioneer-sandbox-") as cwd:
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "HOME": cwd, "LANG": "C.UTF-8"}
        proc = subprocess.Popen([sys.executable, "-I", "-c", _BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
                                preexec_fn=_limits(max(1, int(timeout) + 1), memory_mb * 2**20, file_mb * 2**20))
        try:
            _, err = proc.communicate(program.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return ExecutionResult(False, "timeout", f"killed after {timeout:g} s wall time", time.monotonic() - started)
    seconds = time.monotonic() - started
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if proc.returncode == 0:
        return ExecutionResult(True, "passed", "", seconds)
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not tail[0]:
        return ExecutionResult(False, "timeout", f"CPU-time limit ({proc.returncode})", seconds)
    if "MemoryError" in tail[0]:
        return ExecutionResult(False, "memory", f"memory limit {memory_mb} MiB: {tail[0]}", seconds)
    if "SandboxViolation" in tail[0]:
        return ExecutionResult(False, "blocked", tail[0], seconds)
    return ExecutionResult(False, "failed", tail[0] or f"exit code {proc.returncode}", seconds)


def pass_at_1(programs: list[str], timeout: float = 5.0, memory_mb: int = 512) -> tuple[float, list[ExecutionResult]]:
    """Fraction of programs (one sample per problem, completion + tests) that pass, and each result."""
    results = [run_program(p, timeout=timeout, memory_mb=memory_mb) for p in programs]
    return (sum(r.passed for r in results) / len(results) if results else 0.0), results
