"""`pioneer run` end to end on the embedded default: real trainer processes, resume, clear failures."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_adaptation, write_manifest
from pioneer.api.validation import parse_resource
from pioneer.cli import main
from pioneer.runner.local import STATE_KEY, LocalRunner, SpecChanged, adaptation_store
from pioneer.store import read_json

pytestmark = pytest.mark.slow


def test_cold_start_runs_to_completion_with_report_and_decisions(write_spec, tmp_path, capsys):
    spec = write_spec(tiny_adaptation(search={"maxAttempts": 4}, gate={"tau": 0.999}))
    assert main(["run", str(spec), "--quiet"]) == 0
    root = tmp_path / "pioneer-artifacts" / "tiny"
    state = json.loads((root / STATE_KEY).read_text())
    names = [a["metadata"]["name"] for a in state["attempts"]]
    assert names[:3] == ["tiny-baseline", "tiny-i1-a", "tiny-i1-b"]
    assert len([n for n in names if "-i2-" in n]) == 2  # a second iteration, derived from the first
    assert state["status"]["phase"] == "Succeeded"
    # the tiny pool makes several data moves rebuild the same training set: those twins reuse an output and do not
    # spend the budget of 4 trainings
    twins = [a["metadata"]["name"] for a in state["attempts"] if (a.get("status") or {}).get("reusedFrom")]
    assert state["status"]["attempts"]["total"] - len(twins) <= 4 and state["status"]["attempts"]["total"] >= 4
    if twins:
        assert "twin" in state["status"]["message"]
    assert state["status"]["bestScore"] >= state["status"]["baselineScore"]
    i2 = next(a for a in state["attempts"] if a["metadata"]["name"] == "tiny-i2-a")
    assert i2["spec"]["parent"].startswith("tiny-i1-") and i2["spec"]["rationale"] and i2["spec"]["evidence"]
    report = (root / "report" / "report.md").read_text()
    for section in ("## Result", "## Search graph", "## Decision log", "## Best model", "## Data curation"):
        assert section in report
    assert "tiny-i2-a" in report and (root / "report" / "report.html").stat().st_size > 10_000
    assert main(["status", str(spec)]) == 0
    assert "tiny-i2-a" in capsys.readouterr().out


def test_rerunning_resumes_instead_of_redoing_finished_attempts(write_spec, tmp_path):
    doc = tiny_adaptation(search={"maxAttempts": 2, "parallelism": 1})
    spec_path = write_spec(doc)
    ma = parse_resource(doc)
    store = adaptation_store(ma, tmp_path)

    class Stop(KeyboardInterrupt):
        pass

    def interrupt_after_first_result(runner):
        if any(a.status.phase == "Succeeded" for a in runner.attempts.values()):
            raise Stop()

    with pytest.raises(Stop):
        LocalRunner(ma, base_dir=tmp_path, store=store).run(on_tick=interrupt_after_first_result, poll_seconds=0.2)
    state = read_json(store, STATE_KEY)
    done = {a["metadata"]["name"] for a in state["attempts"] if a["status"]["phase"] == "Succeeded"}
    interrupted = {a["metadata"]["name"] for a in state["attempts"] if a["status"]["phase"] == "Pending"}
    assert done and interrupted
    finished_marker = store.path(f"attempts/{sorted(done)[0]}/output/_SUCCESS")
    mtime = finished_marker.stat().st_mtime_ns

    assert main(["run", str(spec_path), "--quiet"]) == 0
    state = read_json(store, STATE_KEY)
    assert state["status"]["phase"] == "Succeeded"
    assert finished_marker.stat().st_mtime_ns == mtime  # not retrained
    assert any(e["kind"] == "resume" for e in state["events"])
    # a third run has nothing to do
    assert main(["run", str(spec_path), "--quiet"]) == 0


def test_a_changed_task_or_data_is_not_resumed_silently(write_spec, tmp_path):
    doc = tiny_adaptation(search={"maxAttempts": 1, "parallelism": 1})
    write_spec(doc)
    ma = parse_resource(doc)
    store = adaptation_store(ma, tmp_path)
    store.write_bytes(STATE_KEY, json.dumps({"fingerprint": "something-else", "attempts": []}).encode())
    with pytest.raises(SpecChanged, match="task or data"):
        LocalRunner(ma, base_dir=tmp_path, store=store).run()
    # with the earlier spec recorded, the refusal names each frozen field that changed, and suggests --fresh
    earlier = json.loads(json.dumps(ma.dump()))
    earlier["spec"]["data"]["evaluation"]["size"] = 40
    earlier["spec"]["task"]["labels"] = ["HassTurnOn", "HassTurnOff"]
    store.write_bytes(STATE_KEY, json.dumps({"fingerprint": "something-else", "attempts": [], "adaptation": earlier}).encode())
    with pytest.raises(SpecChanged) as refused:
        LocalRunner(ma, base_dir=tmp_path, store=store).run()
    message = str(refused.value)
    assert "spec.data.evaluation.size 40 -> 15" in message and "spec.task.labels" in message and "--fresh" in message


def test_a_corrupt_data_file_gives_a_clear_error_and_no_model(write_spec, tmp_path, capsys):
    data = tmp_path / "data.csv"
    data.write_text('text,label\n"turn on the light",on\n"turn off the light",off,EXTRA\n')
    doc = tiny_adaptation(data={"sources": [{"path": "data.csv"}]}, task={"labels": None})
    doc["spec"]["task"].pop("labels")
    spec = write_spec(doc)
    assert main(["run", str(spec)]) == 1
    assert "data.csv:3: more fields than the header has" in capsys.readouterr().err
    assert not list((tmp_path / "pioneer-artifacts").rglob("model"))


def test_a_missing_data_file_is_named(write_spec, tmp_path, capsys):
    doc = tiny_adaptation(data={"sources": [{"path": "nope.jsonl"}]})
    assert main(["run", str(write_spec(doc))]) == 1
    assert "nope.jsonl: no such data file" in capsys.readouterr().err


def test_an_attempt_that_would_repeat_a_training_waits_for_it_and_reuses_its_result(tmp_path):
    from pioneer import engine
    from pioneer.core.controller import NewAttempt
    from pioneer.core.planner import initial_pipeline
    from pioneer.store import LocalStore, write_json

    spec = parse_resource(tiny_adaptation()).spec
    store = LocalStore(tmp_path / "art")
    prepared = engine.prepare(spec, store, tmp_path)
    pipeline = initial_pipeline(spec)
    new = lambda name, it, pipe, why: engine.materialize("t", spec, prepared, NewAttempt(name, it, "t-baseline", pipe, why, "why"), store)  # noqa: E731
    first = new("t-i1-a", 1, pipeline, "initial")
    # a sibling whose recipe differs but yields the same training bytes with the same configuration
    twin = new("t-i1-b", 1, pipeline, "more replay")
    assert store.read_bytes("attempts/t-i1-b/train.jsonl") == store.read_bytes("attempts/t-i1-a/train.jsonl")
    siblings = [first, twin]
    assert engine.pending_twin(store, first, siblings) is None  # the earlier one trains
    assert engine.pending_twin(store, twin, siblings) == "t-i1-a"  # the later one waits for it

    write_json(store, "attempts/t-i1-a/output/metrics.json", {"score": 0.8, "eval_sha256": prepared.eval_sha256})
    store.write_bytes("attempts/t-i1-a/output/model/weights.bin", b"trained")
    write_manifest(store, "attempts/t-i1-a/output")
    assert engine.collect(store, first).score == 0.8
    assert engine.pending_twin(store, twin, siblings) is None  # finished: its output is now t-i1-b's too
    reused = engine.collect(store, twin)
    assert reused.phase == "Succeeded" and reused.score == 0.8 and reused.model_uri.endswith("attempts/t-i1-b/output/model")
    assert read_json(store, "attempts/t-i1-b/output/metrics.json")["reused_from"] == "t-i1-a"
    assert store.read_bytes("attempts/t-i1-b/output/model/weights.bin") == b"trained"

    # a different learning rate is a different training: it runs
    faster = pipeline.model_copy(update={"hyperparameters": pipeline.hyperparameters.model_copy(update={"learning_rate": 3e-4})})
    other = new("t-i2-a", 2, faster, "lr x3")
    assert engine.pending_twin(store, other, siblings + [other]) is None and engine.collect(store, other) is None

    # a twin that failed is no reason to wait: the attempt trains itself
    third = new("t-i2-b", 2, pipeline.model_copy(update={"hyperparameters": faster.hyperparameters}), "same as i2-a")
    write_json(store, "attempts/t-i2-a/failure.json", {"error": "OSError", "message": "disk full"})
    assert engine.pending_twin(store, third, siblings + [other, third]) is None and engine.collect(store, third) is None
