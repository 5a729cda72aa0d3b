"""Hostile input is refused cleanly or treated as data: markup, path traversal, YAML bombs, bad trace rows and
SQL that tries to write. None of these needs a model."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from conftest import tiny_adaptation, write_manifest
from pioneer import engine
from pioneer.api.validation import SpecError, load_resources, parse_resource
from pioneer.cli import main
from pioneer.core.lifecycle import Progress
from pioneer.revisions import CorruptOutput, ModelTampered, publish_model, verify_model_dir
from pioneer.runner.local import STATE_KEY, clear_adaptation
from pioneer.store import LocalStore
from pioneer.traces import store as traces

MARKUP = "turn on [/x] the [bold]light[/bold] :x: now"


# --------------------------------------------------------------------------- markup is data


def test_trace_text_with_markup_is_printed_as_it_is(tmp_path, capsys):
    db = tmp_path / "t.db"
    traces.add(traces.connect(db), [{"id": "m1", "input": MARKUP, "prediction": "[/red]"}])
    assert main(["traces", "query", "select input, prediction from traces", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "[bold]light[/bold]" in out and ":x:" in out and "[/red]" in out


def test_an_import_error_quoting_markup_is_printed_as_it_is(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": MARKUP, "verdict": "[/maybe]"}) + "\n")
    assert main(["traces", "import", str(bad), "--db", str(tmp_path / "t.db")]) == 1
    assert "[/maybe]" in capsys.readouterr().err


def test_a_run_error_quoting_a_csv_header_with_markup_is_printed_as_it_is(write_spec, tmp_path, capsys):
    (tmp_path / "data.csv").write_text("[/x],label\nturn on,on\n")
    doc = tiny_adaptation(data={"sources": [{"path": "data.csv"}]})
    assert main(["run", str(write_spec(doc))]) == 1
    assert "[/x]" in capsys.readouterr().err


# --------------------------------------------------------------------------- names and paths


@pytest.mark.parametrize("name", ["../../../../../elsewhere/PWNED", "Intents", "a/b", "x" * 64])
def test_a_deployed_model_name_must_be_dns_1123(name):
    with pytest.raises(SpecError, match="deployedModel"):
        parse_resource(tiny_adaptation(deployedModel=name))


def test_artifact_keys_cannot_leave_the_store(tmp_path):
    store = LocalStore(tmp_path / "root")
    for key in ("../outside.json", "a/../../outside.json", "/etc/passwd"):
        with pytest.raises(ValueError, match="leaves the store root"):
            store.write_bytes(key, b"x")
    assert not (tmp_path / "outside.json").exists()


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "gs://bucket/x"])
def test_an_artifacts_uri_without_a_bucket_is_refused(uri, write_spec, capsys):
    with pytest.raises(SpecError, match="artifacts.uri"):
        parse_resource(tiny_adaptation(artifacts={"uri": uri}))
    assert main(["run", str(write_spec(tiny_adaptation())), "--artifacts", uri]) == 2
    assert "--artifacts" in capsys.readouterr().err


def test_fresh_deletes_only_what_pioneer_wrote(tmp_path):
    store = LocalStore(tmp_path / "art" / "tiny")
    store.write_bytes("notes.txt", b"the user's own file")
    assert clear_adaptation(store) == [] and store.exists("notes.txt")  # not a Pioneer folder: nothing removed
    store.write_bytes(".pioneer-adaptation", b"pioneer adaptation tiny\n")
    store.write_bytes(STATE_KEY, b"{}")
    store.write_bytes("attempts/tiny-i1-a/attempt.json", b"{}")
    assert sorted(clear_adaptation(store)) == sorted([STATE_KEY, "attempts", ".pioneer-adaptation"])
    assert store.read_bytes("notes.txt") == b"the user's own file"


# --------------------------------------------------------------------------- safe YAML


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path, capsys):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, 10)]
    doc = "apiVersion: pioneer.dev/v1alpha1\nkind: ModelAdaptation\nmetadata:\n  name: bomb\n  labels:\n" + \
          "".join(f"    {line}\n" for line in lines) + "spec: {}\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(doc)
    start = time.monotonic()
    assert main(["validate", str(path)]) == 2
    assert time.monotonic() - start < 5
    assert "aliases" in capsys.readouterr().err
    assert main(["run", str(path)]) == 2


def test_deep_nesting_is_refused_with_a_reason_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("apiVersion: pioneer.dev/v1alpha1\nkind: ModelAdaptation\nmetadata: {name: deep}\nspec: " + "[" * 20000 + "]" * 20000 + "\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nested deeper than 64 levels" in err and "Traceback" not in err


def test_an_ordinary_spec_still_loads():
    assert load_resources("examples/quickstart.yaml")


# --------------------------------------------------------------------------- trace import, row by row


def test_a_mixed_batch_keeps_its_good_rows_and_names_each_bad_one(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"id": "g1", "input": "lights on", "verdict": "pass"},
            {"id": "b1", "input": "x", "meta": 5},
            {"id": "g2", "input": "lights off", "verdict": "FAIL", "corrected": "off"},
            {"id": "b2", "input": "y", "prediction": {"a": 1}},
            {"id": "b3", "input": 7},
            {"id": "g3", "input": "dim the lamp", "score": 0.3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine_ = traces.connect(tmp_path / "t.db")
    rep = traces.import_file(engine_, path)
    assert rep.added == 3
    assert [line for line, _ in rep.bad_rows] == [2, 4, 5]
    assert "meta" in rep.bad_rows[0][1] and "prediction" in rep.bad_rows[1][1] and "input" in rep.bad_rows[2][1]
    _, got = traces.query(engine_, "select id, verdict, meta from traces order by id")
    assert [(r[0], r[1]) for r in got] == [("g1", "pass"), ("g2", "fail"), ("g3", None)]
    assert json.loads(got[2][2]) == {"score": 0.3}  # an unknown column is kept as metadata


def test_an_unterminated_csv_quote_is_a_named_bad_row_not_a_garbage_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,input,verdict\nc1,lights on,pass\nc2,"lights off,fail\nc3,dim,pass\n')
    rep = traces.import_file(traces.connect(tmp_path / "t.db"), path)
    assert rep.added == 1 and len(rep.bad_rows) == 1
    line, problem = rep.bad_rows[0]
    assert line == 3 and "quote" in problem


def test_non_utf8_lines_are_named_and_the_rest_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"id": "u1", "input": "ok"}\n{"id": "u2", "input": "caf\xe9"}\n{"id": "u3", "input": "fine"}\n')
    rep = traces.import_file(traces.connect(tmp_path / "t.db"), path)
    assert rep.added == 2 and rep.bad_rows == [(2, "not UTF-8 (byte 0xe9 at column 27)")]


# --------------------------------------------------------------------------- queries cannot write or run away


@pytest.fixture
def trace_db(tmp_path):
    db = tmp_path / "t.db"
    traces.add(traces.connect(db), [{"id": "q1", "input": "lights on", "verdict": "pass"}])
    return db


@pytest.mark.parametrize("sql", ["VACUUM INTO '{dir}/copy.db'", "ATTACH '{dir}/new.db' AS n", "PRAGMA writable_schema = ON",
                                 "DELETE FROM traces", "SELECT load_extension('x')"])
def test_queries_that_write_or_attach_are_refused_and_create_no_file(sql, trace_db, tmp_path):
    with pytest.raises(traces.ReadOnlyQuery):
        traces.query(traces.connect(trace_db), sql.format(dir=tmp_path))
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "new.db").exists()
    assert sqlite3.connect(trace_db).execute("select count(*) from traces").fetchone() == (1,)


def test_a_runaway_recursive_query_is_stopped(trace_db):
    start = time.monotonic()
    with pytest.raises(traces.ReadOnlyQuery, match="statement timeout"):
        traces.query(traces.connect(trace_db), "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                                               "SELECT count(*) FROM r", timeout=1.0)
    assert time.monotonic() - start < 10


def test_a_query_on_a_missing_database_is_an_error_not_a_new_file(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    assert main(["traces", "query", "select 1", "--db", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()


# --------------------------------------------------------------------------- verified outputs and revisions


def _finished_output(store: LocalStore, name: str = "t-i1-a") -> str:
    out = f"attempts/{name}/output"
    store.write_bytes(f"{out}/metrics.json", json.dumps({"score": 0.9, "eval_sha256": "e"}).encode())
    store.write_bytes(f"{out}/model/config.json", b'{"id2label": {}}')
    store.write_bytes(f"{out}/model/model.safetensors", b"weights" * 1000)
    write_manifest(store, out)
    return out


@pytest.mark.parametrize("damage, named", [
    (lambda s, out: s.write_bytes(f"{out}/metrics.json", b'{"score": 0.'), "metrics.json"),
    (lambda s, out: s.write_bytes(f"{out}/model/model.safetensors", b"weights"), "model.safetensors"),
    (lambda s, out: s.path(f"{out}/_SUCCESS").unlink(), "_SUCCESS"),
    (lambda s, out: s.write_bytes(f"{out}/_SUCCESS", b""), "_SUCCESS"),
])
def test_a_damaged_output_is_rejected_naming_the_file(damage, named, tmp_path):
    store = LocalStore(tmp_path / "a")
    out = _finished_output(store)
    damage(store, out)
    with pytest.raises(CorruptOutput, match=named):
        engine.verify_attempt(store, "t-i1-a")
    with pytest.raises(CorruptOutput, match=named):
        publish_model(store, out, LocalStore(tmp_path / "registry"))


def test_a_published_model_is_content_addressed_and_verified_when_loaded(tmp_path):
    store, registry = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "registry")
    out = _finished_output(store)
    uri, sha = publish_model(store, out, registry)
    assert uri.endswith(f"models/sha256-{sha}") and publish_model(store, out, registry) == (uri, sha)
    store.write_bytes(f"{out}/model/model.safetensors", b"retrained in place")  # a later run rewrites its own folder
    verify_model_dir(uri, sha)  # the revision's copy is untouched
    (registry.path(f"models/sha256-{sha}") / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelTampered, match="refusing to load it"):
        verify_model_dir(uri, sha)


def test_a_corrupt_chosen_output_makes_the_gate_refuse(tmp_path):
    from pioneer.core import lifecycle
    from pioneer.core.controller import Completion
    from pioneer.deploy import FileRegistry

    spec = parse_resource(tiny_adaptation(deployedModel="intents", gate={"tau": 0.5})).spec
    store = LocalStore(tmp_path / "art" / "tiny")
    out = _finished_output(store, "tiny-i1-a")
    store.write_bytes(f"{out}/model/model.safetensors", b"truncated")
    from pioneer.api.models import TrainingAttempt

    attempt = TrainingAttempt.model_validate({"metadata": {"name": "tiny-i1-a"}, "spec": {
        "adaptation": "tiny", "iteration": 1, "modification": "m", "rationale": "r", "task": spec.task.model_dump(by_alias=True),
        "pipeline": {"data": {"maxExamples": 10, "hardNegativeShare": 0.3, "maxLabelRatio": 3, "nearDuplicateSimilarity": 0.9},
                     "hyperparameters": {}}, "inputs": {"evalUri": "e", "evalSha256": "e"}, "outputUri": store.uri("attempts/tiny-i1-a")},
        "status": {"phase": "Succeeded", "score": 0.9}})
    events = []
    ports = lifecycle.Ports(registry=FileRegistry(LocalStore(tmp_path / "art")), store=store,
                            emit=lambda r, m, w: events.append((r, m)), write_report=lambda p: "report.md",
                            save=lambda p: None, now=lambda: "t")
    done = lifecycle.advance(spec, "tiny", [attempt], Progress(completion=Completion(True, "TargetReached", "", "tiny-i1-a")),
                             ports, "e")
    assert not done.verdict.passed and [c.name for c in done.verdict.checks] == ["outputVerified"]
    assert "model.safetensors" in done.verdict.reason and done.applied and done.report_uri == "report.md"
    assert events[0][0] == "GateFailed"
    assert FileRegistry(LocalStore(tmp_path / "art")).load("intents").current_revision is None


def test_the_html_report_shows_hostile_text_as_text():
    from pioneer.report import to_html

    body = to_html("## Gate\n\n- `<b>code</b>`\n- <script>alert(1)</script> <img src=x onerror=alert(1)>\n"
                   "- [click](javascript:alert(1)) [docs](https://example.org/x) [local](report.md)\n\n<div>raw block</div>\n")
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<img" not in body and "<div>" not in body and "&lt;div&gt;raw block&lt;/div&gt;" in body
    assert 'href="javascript' not in body and 'href="https://example.org/x"' in body and 'href="report.md"' in body


@pytest.mark.parametrize("sources, root, problem", [
    ([{"path": "../../../etc/passwd"}], None, "is a local file, which the operator does not read"),
    ([{"path": "../../../etc/passwd"}], "/srv/data", "outside the operator's data root"),
    ([{"path": "intents/train.jsonl"}], "/srv/data", None),
    ([{"s3": "s3://bucket/train.jsonl"}], None, None),
    ([{"traces": "traces.db"}], None, "spec.data.sources[0].traces"),
    ([{"traces": "postgresql+psycopg://reader@db/traces"}], None, None),
])
def test_the_operator_reads_only_uris_and_files_under_its_data_root(sources, root, problem):
    from pioneer.kube.handlers import cluster_data_problem

    mode = {"mode": "production", "deployedModel": "intents"} if "traces" in sources[0] else {}
    ma = parse_resource(tiny_adaptation(data={"sources": sources}, **mode))
    found = cluster_data_problem(ma, root)
    assert (found is None) if problem is None else (problem in found)
