"""Artifacts and data on S3, against a moto server speaking the real S3 API (boto3 end to end)."""

from __future__ import annotations

import boto3
import pytest

from pioneer.api.models import DataSource
from pioneer.data.examples import DataError
from pioneer.data.sources import load_source
from pioneer.store import S3Store, open_store, read_json, write_json


def test_store_round_trip_list_and_delete(bucket, tmp_path):
    store = open_store(f"s3://{bucket}/runs/a")
    assert isinstance(store, S3Store)
    write_json(store, "x/metrics.json", {"score": 0.9})
    assert store.exists("x/metrics.json") and not store.exists("x/nope.json")
    assert read_json(store, "x/metrics.json") == {"score": 0.9}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    store.upload_dir(tmp_path / "model", "x/model")
    assert store.list("x") == ["x/metrics.json", "x/model/config.json"]
    assert store.uri("x/model") == f"s3://{bucket}/runs/a/x/model"
    store.delete_prefix("x")
    assert store.list("x") == []


def test_a_data_source_on_s3_is_read_and_its_errors_name_the_uri(bucket):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="data/train.jsonl", Body=b'{"text": "hi", "label": "a"}\n{"text": "yo", "label": "b"}\n')
    examples = load_source(DataSource(s3=f"s3://{bucket}/data/train.jsonl"))
    assert [(e.text, e.label) for e in examples] == [("hi", "a"), ("yo", "b")]
    with pytest.raises(DataError, match=f"s3://{bucket}/data/missing.jsonl"):
        load_source(DataSource(s3=f"s3://{bucket}/data/missing.jsonl"))


@pytest.mark.slow
def test_a_whole_run_keeps_its_artifacts_on_s3(bucket, write_spec, tmp_path):
    from conftest import tiny_adaptation
    from pioneer.cli import main

    spec = write_spec(tiny_adaptation(search={"maxAttempts": 1, "parallelism": 2}, artifacts={"uri": f"s3://{bucket}/pioneer"}))
    assert main(["run", str(spec), "--quiet"]) == 0
    store = open_store(f"s3://{bucket}/pioneer/tiny")
    keys = store.list("")
    assert "state.json" in keys and "eval/manifest.json" in keys and "report/report.html" in keys
    assert "attempts/tiny-i1-a/output/_SUCCESS" in keys
    assert "attempts/tiny-i1-a/output/model/config.json" in keys
    state = read_json(store, "state.json")
    assert state["status"]["phase"] == "Succeeded"
    assert state["status"]["bestAttempt"] == "tiny-i1-a"
    assert not list(tmp_path.glob("pioneer-artifacts"))  # nothing written locally
