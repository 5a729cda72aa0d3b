"""Artifacts and data on S3, against a moto server speaking the real S3 API (boto3 end to end)."""

from __future__ import annotations

import os

import boto3
import pytest

from pioneer.api.models import DataSource
from pioneer.data.examples import DataError
from pioneer.data.sources import load_source
from pioneer.store import S3Store, open_store, read_json, write_json


def test_stores_share_one_client_per_environment_and_a_changed_endpoint_gets_its_own(bucket, monkeypatch):
    a, b = open_store(f"s3://{bucket}/a"), open_store(f"s3://{bucket}/b")
    assert a.client is b.client  # an operator reconciling every few seconds builds no new client, and reuses its connections
    write_json(a, "x.json", {"n": 1})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # another endpoint (nothing listens there)
    c = open_store(f"s3://{bucket}/a")
    assert c.client is not a.client and c.client.meta.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.undo()
    assert open_store(f"s3://{bucket}/a").client is a.client and read_json(a, "x.json") == {"n": 1}


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


class ToggledProxy:
    """A TCP proxy on loopback in front of the S3 server. ``down()`` stops listening and cuts the connections it
    carries (new ones are refused, pooled ones break, as during an outage), ``up()`` listens again on the same port."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.listener = None
        self.lock = threading.Lock()
        self.open: list = []  # the sockets of the connections it carries
        self.up()

    def up(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        import socket

        listener, self.listener = self.listener, None
        listener.close()
        with self.lock:
            carried, self.open = self.open, []
        for sock in carried:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.mark.slow
def test_a_25_second_s3_outage_mid_run_loses_nothing(bucket, write_spec, tmp_path, monkeypatch):
    import threading
    import time

    import boto3

    from conftest import tiny_adaptation
    from pioneer.api.validation import parse_resource
    from pioneer.runner.local import LocalRunner

    target = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    proxy = ToggledProxy(target)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")  # the runner and its trainers go through it
    doc = tiny_adaptation(search={"maxAttempts": 2, "parallelism": 1}, artifacts={"uri": f"s3://{bucket}/pioneer"})
    outage = {}

    def cut_after_first_result(runner):
        if "start" not in outage and any(a.status.phase == "Succeeded" and a.spec.iteration >= 1 for a in runner.attempts.values()):
            outage["start"] = time.monotonic()
            proxy.down()
            threading.Timer(25, proxy.up).start()

    status = LocalRunner(parse_resource(doc), base_dir=tmp_path).run(on_tick=cut_after_first_result, poll_seconds=0.2)
    assert "start" in outage and time.monotonic() - outage["start"] >= 25  # the run went on through the outage
    assert status.phase == "Succeeded" and status.attempts.total == 2 and status.attempts.failed == 0
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=f"http://127.0.0.1:{target}").list_objects_v2(
        Bucket=bucket, Prefix="pioneer/tiny/")["Contents"]}
    assert {"pioneer/tiny/attempts/tiny-i1-a/output/_SUCCESS", "pioneer/tiny/attempts/tiny-i1-b/output/_SUCCESS",
            "pioneer/tiny/report/report.html"} <= keys
