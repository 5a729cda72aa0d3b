"""pass@1 runs model-written code in a limited process: runaway code is stopped and scored as a failure."""

import time

from pioneer.trainer.sandbox import pass_at_1, run_program

ADD = "def add(a, b):\n    return a + b\n"


def test_correct_code_passes_and_wrong_code_fails():
    assert run_program(ADD + "assert add(2, 3) == 5\n").status == "passed"
    wrong = run_program("def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n")
    assert wrong.status == "failed" and "AssertionError" in wrong.detail


def test_an_infinite_loop_is_stopped():
    started = time.monotonic()
    res = run_program("while True:\n    pass\n", timeout=2)
    assert res.status == "timeout" and not res.passed
    assert time.monotonic() - started < 6


def test_allocating_10_gb_is_refused():
    res = run_program("x = bytearray(10 * 1024 ** 3)\n", memory_mb=256)
    assert res.status == "memory" and not res.passed


def test_no_network_and_no_child_processes():
    sock = run_program("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n")
    assert sock.status == "blocked" and "socket" in sock.detail
    assert run_program("import subprocess\nsubprocess.run(['ls'])\n").status == "blocked"
    assert run_program("import os\nos.system('echo hi')\n").status == "blocked"
    assert run_program("import ctypes\n").status == "blocked"


def test_the_run_continues_after_each_failure():
    programs = ["while True:\n    pass\n", "x = bytearray(10 * 1024 ** 3)\n",
                "import socket\nsocket.create_connection(('example.com', 80))\n", ADD + "assert add(1, 1) == 2\n"]
    score, results = pass_at_1(programs, timeout=2, memory_mb=256)
    assert [r.status for r in results] == ["timeout", "memory", "blocked", "passed"]
    assert score == 0.25
