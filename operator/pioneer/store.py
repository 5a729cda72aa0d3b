"""Artifact stores: a local directory or an S3 prefix, behind one small interface.

Keys are '/'-separated paths relative to the store root. ``uri(key)`` gives the absolute
location (a filesystem path or ``s3://bucket/prefix/key``) that can be handed to another
process, which reopens it with :func:`open_store`.

S3 uses boto3's standard configuration (credentials chain, ``AWS_ENDPOINT_URL`` for MinIO
or a test server).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import msgspec


class ArtifactStore(Protocol):
    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def download(self, key: str, dest: Path) -> Path: ...
    def upload_dir(self, src: Path, key: str) -> None: ...
    def download_dir(self, key: str, dest: Path) -> Path: ...
    def delete_prefix(self, prefix: str) -> None: ...


class LocalStore:
    """Artifacts in a directory. Writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file for a key, which must stay inside the store's root (no '..' escapes, no absolute keys)."""
        target = Path(os.path.normpath(self.root / key))
        if target != self.root and self.root not in target.parents:
            raise ValueError(f"artifact key {key!r} leaves the store root {self.root}")
        return target

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), dest)
        return dest

    def upload_dir(self, src: Path, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # a temp folder of this writer's own: two writers never share one
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def download_dir(self, key: str, dest: Path) -> Path:
        return self.path(key)  # already local: no copy

    def delete_prefix(self, prefix: str) -> None:
        target = self.path(prefix)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def s3_config():
    """botocore's own retries, adaptive mode (backoff plus client-side rate limiting): an S3 outage shorter than
    the retry budget is ridden out instead of failing the run. PIONEER_S3_MAX_ATTEMPTS overrides the budget."""
    from botocore.config import Config

    from pioneer import defaults as d

    attempts = int(os.environ.get("PIONEER_S3_MAX_ATTEMPTS", d.S3_MAX_ATTEMPTS))
    return Config(retries={"mode": "adaptive", "total_max_attempts": attempts},
                  connect_timeout=d.S3_CONNECT_TIMEOUT_SECONDS, read_timeout=d.S3_READ_TIMEOUT_SECONDS)


# what boto3 reads from the environment when it builds a client: a change of any of them builds a new one
_CLIENT_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                       "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                       "AWS_CA_BUNDLE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                       "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "PIONEER_S3_MAX_ATTEMPTS")
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def s3_client() -> Any:
    """One S3 client per process and environment. boto3 clients are thread-safe and keep a connection pool; building
    one costs tens of milliseconds and a new connection, which an operator reconciling every few seconds would pay
    each time. Credentials that expire (web identity, assumed roles) are refreshed by the client itself."""
    import boto3

    key = tuple(os.environ.get(name) for name in _CLIENT_ENVIRONMENT)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client("s3", config=s3_config())
        return _clients[key]


class S3Store:
    """Artifacts under ``s3://bucket/prefix``."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or s3_client()

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"artifact key {key!r} leaves the store prefix s3://{self.bucket}/{self.prefix}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def read_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[strip:] for k in self._iter_keys(prefix))

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(key), str(dest))
        return dest

    def upload_dir(self, src: Path, key: str) -> None:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            self.client.upload_file(str(path), self.bucket, self._key(f"{key}/{path.relative_to(src)}"))

    def download_dir(self, key: str, dest: Path) -> Path:
        for rel in self.list(key):
            self.download(rel, dest / Path(rel).relative_to(key))
        return dest

    def delete_prefix(self, prefix: str) -> None:
        keys = [{"Key": k} for k in self._iter_keys(prefix)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[i : i + 1000]})


def open_store(uri: str, base_dir: str | Path | None = None) -> LocalStore | S3Store:
    """A store for ``s3://bucket/prefix`` or a local directory (relative paths resolve against base_dir)."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ValueError(f"S3 URI without a bucket: {uri!r}")
        return S3Store(parsed.netloc, parsed.path)
    path = Path(uri).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return LocalStore(path)


def split_uri(uri: str) -> tuple[LocalStore | S3Store, str]:
    """Store and key for one object URI: ``s3://b/p/k`` -> (S3Store(b), 'p/k'); '/a/b' -> (LocalStore('/a'), 'b')."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        return S3Store(parsed.netloc, ""), parsed.path.lstrip("/")
    path = Path(uri).expanduser().resolve()
    return LocalStore(path.parent), path.name


def _is_uri_key(key: Any) -> bool:
    """A field that holds a location: ``...Uri``, or a base model (a path when it is a published parent)."""
    return isinstance(key, str) and (key.lower().endswith("uri") or key in ("baseModel", "base_model"))


def portable(value: Any, root: Path) -> Any:
    """``value`` (JSON) with every location path inside ``root`` made relative to it (``./models/...``), for records
    kept in a local store: the folder can then be moved, copied or synced and still resolve (:func:`located`)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if _is_uri_key(k) and isinstance(v, str) and v.startswith("/"):
                path = Path(os.path.normpath(v))
                out[k] = f"./{path.relative_to(root)}" if root in path.parents else v
            else:
                out[k] = portable(v, root)
        return out
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    return value


def located(value: Any, root: Path) -> Any:
    """The inverse of :func:`portable`: relative ``...Uri`` paths resolved against ``root`` where the record now lies."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if _is_uri_key(k) and isinstance(v, str) and v.startswith("./") and (k.lower().endswith("uri") or v.startswith("./models/")):
                out[k] = str(root / v[2:])  # a base model is only ever recorded relative when it is a published revision
            else:
                out[k] = located(v, root)
        return out
    if isinstance(value, list):
        return [located(v, root) for v in value]
    return value


def read_json(store: ArtifactStore, key: str) -> Any:
    return json.loads(store.read_bytes(key))


def write_json(store: ArtifactStore, key: str, value: Any) -> None:
    store.write_bytes(key, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


def read_jsonl(store: ArtifactStore, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.read_bytes(key).decode().splitlines() if line.strip()]


def _json_scalar(value: Any) -> Any:
    """What msgspec has no JSON type for: a NumPy scalar becomes its Python number."""
    if hasattr(value, "item"):
        return value.item()
    raise NotImplementedError(f"{type(value).__name__} has no JSON form")


_JSON_LINES = msgspec.json.Encoder(enc_hook=_json_scalar)


def write_jsonl(store: ArtifactStore, key: str, rows: list[dict[str, Any]]) -> None:
    """Rows as JSON lines: UTF-8, compact, encoded in C (a preparation writes a row per trace, a million of them).
    A float that is not a number is written as null, which every JSON reader accepts."""
    store.write_bytes(key, _JSON_LINES.encode_lines(rows))
