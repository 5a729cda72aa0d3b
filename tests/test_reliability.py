"""Nothing lost, nothing bypassed: real runs on the embedded default, interrupted, killed and tampered with.

Each test states a guarantee from the README's reliability section."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_adaptation
from pioneer import deploy, engine, report
from pioneer.api.validation import parse_resource
from pioneer.cli import main
from pioneer.core import gate, lifecycle
from pioneer.revisions import folder_sha256, verify_model_dir
from pioneer.runner import ownership
from pioneer.runner.local import STATE_KEY, LocalRunner, adaptation_store
from pioneer.store import LocalStore, read_json

pytestmark = pytest.mark.slow


def _served(root: Path, name: str = "intents"):
    status = deploy.load(LocalStore(root), name)
    return status, gate.current(status)


def test_a_fresh_rerun_that_the_gate_refuses_never_touches_the_served_revision(write_spec, tmp_path):
    root = tmp_path / "pioneer-artifacts"
    first = tiny_adaptation(search={"maxAttempts": 1, "parallelism": 1}, gate={"tau": 0.05}, deployedModel="intents")
    assert main(["run", str(write_spec(first)), "--quiet"]) == 0
    status, rev = _served(root)
    assert status.current_revision == 1 and rev.model_sha256 and "/models/sha256-" in rev.model_uri
    served_bytes = folder_sha256(Path(rev.model_uri))
    assert served_bytes == rev.model_sha256

    # the same adaptation again from scratch, trained differently, with a target it cannot reach
    again = tiny_adaptation(search={"maxAttempts": 1, "parallelism": 1}, gate={"tau": 0.999}, deployedModel="intents",
                            hyperparameters={"learningRate": 3e-5})
    main(["run", str(write_spec(again)), "--quiet", "--fresh"])
    after, rev_after = _served(root)
    assert after.current_revision == 1 and rev_after.model_uri == rev.model_uri
    assert not after.last_verdict.passed and "tau 0.999" in after.last_verdict.reason
    # the attempt folder was rewritten by the new run, the served copy was not
    rewritten = root / "tiny" / "attempts" / "tiny-i1-a" / "output" / "model"
    assert folder_sha256(rewritten) != rev.model_sha256
    verify_model_dir(rev_after.model_uri, rev_after.model_sha256)  # a restarted server loads exactly revision 1
    # and a rollback to revision 1 restores exactly the recorded bytes
    restored = deploy.rollback(LocalStore(root), "intents", 1, "t")
    assert folder_sha256(Path(restored.model_uri)) == rev.model_sha256


def _trainers(root: Path) -> dict[str, int]:
    """Live trainer processes per attempt folder under ``root`` (read from /proc)."""
    counts: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if (proc / "stat").read_text().split(") ")[1].startswith("Z"):
                continue  # a zombie trains nothing
        except OSError:
            continue
        if b"pioneer.trainer" in argv:
            for arg in argv:
                text = arg.decode(errors="replace")
                if text.startswith(str(root)) and text.endswith("attempt.json"):
                    counts[text] = counts.get(text, 0) + 1
    return counts


def test_after_kill_9_of_the_runner_a_resume_trains_each_attempt_exactly_once_at_a_time(write_spec, tmp_path):
    spec = write_spec(tiny_adaptation(search={"maxAttempts": 2, "parallelism": 2}, hyperparameters={"epochs": 3}))
    root = tmp_path / "pioneer-artifacts" / "tiny"
    cmd = [sys.executable, "-m", "pioneer.cli", "run", str(spec), "--quiet"]
    runner = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while not any(p.exists() for p in root.glob("attempts/*-i1-*/progress.json")):  # a trainer is under way
        assert runner.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()

    resume = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    most: dict[str, int] = {}
    while resume.poll() is None:
        for attempt, n in _trainers(root).items():
            most[attempt] = max(most.get(attempt, 0), n)
        time.sleep(0.1)
    output = resume.stdout.read()
    assert resume.returncode == 0, output
    assert most and max(most.values()) == 1, most
    state = read_json(LocalStore(root), STATE_KEY)
    assert state["status"]["phase"] == "Succeeded"
    assert not _trainers(root)


def test_an_orphaned_trainer_is_stopped_before_a_second_one_starts(tmp_path):
    lock = tmp_path / "attempt" / ownership.LOCK_NAME
    orphan = subprocess.Popen([sys.executable, "-c", f"from pioneer.runner import ownership; import time; "
                                                     f"h = ownership.hold({str(lock)!r}); print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert orphan.stdout.readline().strip() == "held"
    assert ownership.holder(lock) == orphan.pid and ownership.hold(lock) is None  # a second owner is refused
    said = []
    ownership.reclaim(lock, said.append)
    assert orphan.wait(timeout=10) != 0 and ownership.holder(lock) is None
    assert f"pid {orphan.pid}" in said[0]


@pytest.mark.parametrize("crash_in", ["promote", "report"])
def test_a_crash_after_the_search_is_finished_by_the_next_run(crash_in, write_spec, tmp_path, monkeypatch):
    doc = tiny_adaptation(search={"maxAttempts": 1, "parallelism": 1}, gate={"tau": 0.05}, deployedModel="intents")
    spec = write_spec(doc)
    ma = parse_resource(doc)
    store = adaptation_store(ma, tmp_path)

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed()

    target = (lifecycle, "_promote") if crash_in == "promote" else (report, "write")
    with monkeypatch.context() as m:
        m.setattr(*target, die)
        with pytest.raises(Killed):
            LocalRunner(ma, base_dir=tmp_path, store=store).run(poll_seconds=0.2)
    state = read_json(store, STATE_KEY)
    assert state["completion"] and state["lifecycle"]["verdict"]["passed"]
    assert not store.exists("report/report.md")

    assert main(["run", str(spec), "--quiet"]) == 0
    state = read_json(store, STATE_KEY)
    assert store.exists("report/report.md") and state["lifecycle"]["applied"]
    status, rev = _served(tmp_path / "pioneer-artifacts")
    assert [r.revision for r in status.revisions] == [1] and rev.attempt == "tiny-i1-a"
    assert any("finishing the" in e["message"] for e in state["events"])
    assert main(["run", str(spec), "--quiet"]) == 0  # and then there is nothing left to do
    assert [r.revision for r in _served(tmp_path / "pioneer-artifacts")[0].revisions] == [1]


def interrupt(base: Path, max_attempts: int, stop_when: int):
    """Run an adaptation and stop it once ``stop_when`` trained attempts have finished (state.json, a frozen set,
    finished outputs and at least one attempt still to run are left)."""
    doc = tiny_adaptation(search={"maxAttempts": max_attempts, "parallelism": 2})
    (base / "spec.yaml").write_text(json.dumps(doc))
    ma = parse_resource(doc)
    store = adaptation_store(ma, base)

    class Stop(KeyboardInterrupt):
        pass

    def stop(runner):
        if sum(a.status.phase == "Succeeded" and a.spec.iteration >= 1 for a in runner.attempts.values()) >= stop_when:
            raise Stop()

    with pytest.raises(Stop):
        LocalRunner(ma, base_dir=base, store=store).run(on_tick=stop, poll_seconds=0.2)
    return store


def test_damaged_finished_attempts_are_trained_again_not_trusted(tmp_path, capsys):
    store = interrupt(tmp_path, max_attempts=3, stop_when=2)
    outputs = {name: store.path(f"attempts/{name}/output") for name in ("tiny-baseline", "tiny-i1-a", "tiny-i1-b")}
    (outputs["tiny-i1-a"] / "metrics.json").write_text('{"score": 0.')  # truncated metrics
    weights = outputs["tiny-i1-b"] / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated model
    (outputs["tiny-baseline"] / "_SUCCESS").unlink()  # a deleted completion marker
    assert main(["run", str(tmp_path / "spec.yaml"), "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    state = read_json(store, STATE_KEY)
    for name in outputs:
        assert any(e["message"].startswith(f"{name}: its output failed verification") for e in state["events"]), name
        attempt = next(a for a in state["attempts"] if a["metadata"]["name"] == name)
        assert attempt["status"]["phase"] == "Succeeded"
        engine.verify_attempt(store, name)  # whole again: retrained, manifest and files agree


def test_an_evaluation_set_edited_together_with_its_manifest_is_refused(tmp_path, capsys):
    interrupt(tmp_path, max_attempts=2, stop_when=1)
    run = tmp_path
    frozen = run / "pioneer-artifacts" / "tiny" / "eval"
    lines = (frozen / "evalset.jsonl").read_text().splitlines(keepends=True)
    (frozen / "evalset.jsonl").write_text("".join(lines[1:]))  # an easier set
    import hashlib

    manifest = json.loads((frozen / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256((frozen / "evalset.jsonl").read_bytes()).hexdigest()
    (frozen / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", str(run / "spec.yaml"), "--quiet"]) == 1
    assert "edited after freezing" in capsys.readouterr().err


def test_a_changed_gate_is_applied_again_without_retraining(write_spec, tmp_path, capsys):
    doc = tiny_adaptation(search={"maxAttempts": 1, "parallelism": 1}, gate={"tau": 0.999}, deployedModel="intents")
    spec = write_spec(doc)
    main(["run", str(spec), "--quiet"])
    root = tmp_path / "pioneer-artifacts"
    refused = deploy.load(LocalStore(root), "intents")
    assert refused.current_revision is None and not refused.last_verdict.passed
    marker = root / "tiny" / "attempts" / "tiny-i1-a" / "output" / "_SUCCESS"
    trained_at = marker.stat().st_mtime_ns

    doc["spec"]["gate"]["tau"] = 0.05
    assert main(["run", str(write_spec(doc)), "--quiet"]) == 0
    promoted = deploy.load(LocalStore(root), "intents")
    assert promoted.current_revision == 1 and promoted.last_verdict.passed and promoted.revisions[0].attempt == "tiny-i1-a"
    assert marker.stat().st_mtime_ns == trained_at  # nothing retrained
    state = read_json(LocalStore(root / "tiny"), STATE_KEY)
    assert any("the gate changed (tau 0.999 -> 0.05)" in e["message"] for e in state["events"])
    capsys.readouterr()
    assert main(["status", str(spec)]) == 0
    shown = capsys.readouterr().out
    assert "gate promoted" in shown and "pass  score" in shown and "notBelowBaseline" in shown
