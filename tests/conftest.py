"""Shared fixtures: tiny real specs, a moto S3 server, the shared datasets folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PIONEER_RECONCILE_SECONDS", "1")  # the operator reconciles every second in tests
os.environ.setdefault("PIONEER_IMPROVEMENT_SECONDS", "2")  # ... and looks at improvement triggers every 2 s (read at import)
# two pytest workers each start trainers with one OpenMP thread per core: idle OpenMP threads sleep instead of spinning
# against the other worker's (a GLiNER2 training of 164 s alone took over 600 s beside another training)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# The files that take longest, slowest first (seconds in a full `make test` on this machine kind, 2026-12-07: 387, 232,
# 177, 155, 124, 118, 117, 89, 86, 73, 71, 57, 52, 52, 49, 47). `--dist loadfile` hands a worker one whole file at a
# time; given longest first (with `--no-loadscope-reorder`: by default pytest-xdist orders files by their number of tests,
# which leaves the slow one-test files for the end, one worker busy and the other idle), the two workers finish close together.
SLOWEST_FILES = ["test_operator_production.py", "test_reliability.py", "test_operator.py", "test_continual_loop.py",
                 "test_triage_fdr.py", "test_gliner2.py", "test_gliner2_repair.py", "test_synthesis.py", "test_s3.py",
                 "test_runner.py", "test_trainer.py", "test_preservation.py", "test_gliner2_classifier.py",
                 "test_repair_workflow.py", "test_ner_repair.py", "test_claude_planner.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests, and the other files, keep their order


def tiny_adaptation(name: str = "tiny", **spec_overrides) -> dict:
    """A ModelAdaptation small enough to train in seconds on one CPU core (3 smart-home intents)."""
    spec = {
        "task": {"description": "route smart-home commands", "metric": "accuracy",
                 "labels": ["HassTurnOn", "HassTurnOff", "HassLightSet"]},
        "data": {"sources": [{"builtin": "home-assistant-intents", "limitPerLabel": 24}],
                 "evaluation": {"size": 15}},
        "hyperparameters": {"epochs": 1, "maxLength": 24, "batchSize": 16, "learningRate": 1e-4},
        "search": {"maxAttempts": 2, "parallelism": 2},
    }
    for key, value in spec_overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def write_spec(tmp_path):
    def _write(doc: dict, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return _write


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not present at {SHARED_DATASETS}")
    return SHARED_DATASETS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto in server mode) on a loopback port; boto3 in this process and children reach it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_server, request):
    import boto3

    name = "pioneer-" + request.node.name.lower().replace("_", "-")[:40]
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def python() -> str:
    return sys.executable


def write_manifest(store, output_key: str) -> None:
    """Finish an output folder written by a test the way the trainer does: _SUCCESS with every file's sha256."""
    import json

    from pioneer.revisions import output_manifest

    store.write_bytes(f"{output_key}/_SUCCESS", json.dumps(output_manifest(store.path(output_key))).encode())


def _pg_bin() -> Path | None:
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    path = found[-1] if found else shutil.which("pg_ctl")
    return Path(path).parent if path else None


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on a loopback port for the session (Debian's package, installed by `make tools`).

    Yields the SQLAlchemy URL of a superuser ``pioneer``; the server runs as the ``postgres`` system user when the
    tests run as root (PostgreSQL refuses to run as root)."""
    import pwd
    import subprocess

    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; `make tools` installs it)")
    import shutil
    import tempfile

    # not under pytest's tmp folders: those are private to root, and the server runs as another user
    data = Path(tempfile.mkdtemp(prefix="pioneer-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    run = lambda *argv: subprocess.run([*as_user, *argv], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "pioneer", "-A", "trust", "--no-sync")
    port = free_port()
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "60", "start",
        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        yield f"postgresql+psycopg://pioneer@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False,
                       capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def pg_database(postgres, request):
    """A fresh database on the session's server, named after the test."""
    import hashlib

    import sqlalchemy as sa

    # unique per test, parametrized ones included (PostgreSQL names stop at 63 bytes)
    name = ("t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40] + "_"
            + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8])
    admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return postgres.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def cluster(tmp_path, s3_server, monkeypatch):
    import kubernetes

    from kube_emulator import Emulator
    from pioneer.kube import client

    with Emulator() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("PIONEER_SCANNING", "off")
        port = free_port()
        monkeypatch.setenv("PIONEER_METRICS_PORT", str(port))
        client.reset()
        kubernetes.config.load_kube_config(str(kubeconfig))
        api.custom = kubernetes.client.CustomObjectsApi()
        api.batch = kubernetes.client.BatchV1Api()
        api.core = kubernetes.client.CoreV1Api()
        api.metrics_port = port
        yield api
        client.reset()


def start_server(python: str, folder: Path, artifacts: Path, name: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """A real `pioneer serve` process for DeployedModel ``name`` (traces in folder/traces.db), once it is ready."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([python, "-m", "pioneer.cli", "serve", name, "--artifacts", str(artifacts),
                             "--db", str(folder / "traces.db"), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not become ready: {proc.stdout.read()}")
        time.sleep(0.3)


@pytest.fixture
def messages_api():
    """A loopback server speaking Anthropic's Messages API with scripted answers (tests/messages_api.py)."""
    from messages_api import MessagesApi

    server = MessagesApi()
    yield server
    server.close()


TEMPLATE = ("{% for m in messages %}<{{ m.role }}> {{ m.content }}{% if m.role == 'assistant' %} [SEP]{% endif %}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant> {% endif %}")


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    """A tiny randomly initialised Llama with the bundled MiniLM tokenizer (given a chat template): a decoder in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pioneer.trainer.base_models import resolve

    folder = tmp_path_factory.mktemp("tiny-decoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm"))
    tokenizer.chat_template = TEMPLATE
    tokenizer.eos_token = "[SEP]"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
