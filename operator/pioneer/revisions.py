"""Verified artifacts and immutable, content-addressed model revisions.

* A trainer's ``output/_SUCCESS`` holds the sha256 of every output file (:func:`output_manifest`);
  :func:`verify_output` checks it before a result is trusted.
* A promoted model is copied to ``models/sha256-<hash>/`` in the registry's store, a folder named by its
  content that no run writes into afterwards (:func:`publish_model`). The revision records the hash, and
  whoever loads the model (``pioneer serve``, a trainer starting from the parent) checks it
  (:func:`verify_model_dir`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pioneer.store import ArtifactStore, S3Store

SUCCESS = "_SUCCESS"
MODELS_PREFIX = "models"
MODEL_DIR = "model"
CHUNK = 1 << 20


class CorruptOutput(RuntimeError):
    """An attempt's output does not match its own manifest (truncated, edited, or half written)."""


class ModelTampered(RuntimeError):
    """A model folder does not hash to the revision's recorded content hash."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def output_manifest(folder: Path) -> dict:
    """The ``_SUCCESS`` content for a finished output folder: every file's sha256 and size."""
    files = {str(p.relative_to(folder)): {"sha256": file_sha256(p), "size": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != SUCCESS}
    return {"files": files}


def tree_sha256(files: dict[str, str]) -> str:
    """Content hash of a folder from its files' hashes (relative path -> sha256), independent of where it lies."""
    lines = "".join(f"{path}\0{digest}\n" for path, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def read_manifest(store: ArtifactStore, output_key: str) -> dict[str, dict]:
    """The files listed in ``<output_key>/_SUCCESS``; CorruptOutput when it is missing or unreadable."""
    key = f"{output_key}/{SUCCESS}"
    if not store.exists(key):
        raise CorruptOutput(f"{store.uri(key)} is missing: the output was never completed or was tampered with")
    try:
        files = json.loads(store.read_bytes(key))["files"]
        assert isinstance(files, dict)
        return files
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CorruptOutput(f"{store.uri(key)} is not a file manifest (truncated, or written by an older trainer)") from None


def verify_output(store: ArtifactStore, output_key: str, deep: bool | None = None) -> dict[str, dict]:
    """Check an output folder against its manifest. ``deep`` hashes every file (models included); otherwise
    only the small files (metrics, predictions) are hashed and the others' presence checked. By default a local
    store is checked deeply and S3 is not (that would download every model; S3 writes are whole objects)."""
    deep = not isinstance(store, S3Store) if deep is None else deep
    files = read_manifest(store, output_key)
    for rel, fact in files.items():
        key = f"{output_key}/{rel}"
        if not store.exists(key):
            raise CorruptOutput(f"{store.uri(key)} is listed in {SUCCESS} but missing")
        if not deep and rel.startswith(f"{MODEL_DIR}/"):
            continue
        digest = hashlib.sha256(store.read_bytes(key)).hexdigest()
        if digest != fact.get("sha256"):
            raise CorruptOutput(f"{store.uri(key)} does not match its sha256 in {SUCCESS} (truncated or edited)")
    return files


def model_sha256(files: dict[str, dict]) -> str:
    """The content hash of the ``model/`` folder of a verified output manifest."""
    prefix = f"{MODEL_DIR}/"
    return tree_sha256({rel[len(prefix):]: f["sha256"] for rel, f in files.items() if rel.startswith(prefix)})


def published_key(sha: str) -> str:
    return f"{MODELS_PREFIX}/sha256-{sha}"


def publish_model(source: ArtifactStore, output_key: str, registry: ArtifactStore) -> tuple[str, str]:
    """Copy a verified attempt's model to its content-addressed folder in ``registry``; return (uri, sha256).

    The copy is checked file by file against the manifest; a folder already published under the same hash
    is left as it is (same content), so publishing twice is harmless."""
    files = verify_output(source, output_key)
    sha = model_sha256(files)
    dest = published_key(sha)
    done = f"{dest}/{SUCCESS}"
    if not registry.exists(done):
        prefix = f"{MODEL_DIR}/"
        for rel in sorted(r for r in files if r.startswith(prefix)):
            _copy(source, f"{output_key}/{rel}", registry, f"{dest}/{rel[len(prefix):]}")
        registry.write_bytes(done, json.dumps({"sha256": sha, "files": {rel[len(prefix):]: files[rel] for rel in files
                                                                        if rel.startswith(prefix)}}).encode())
    return registry.uri(dest), sha


def _copy(src: ArtifactStore, src_key: str, dst: ArtifactStore, dst_key: str) -> None:
    if isinstance(src, S3Store) and isinstance(dst, S3Store):  # server-side: the operator moves no model bytes
        dst.client.copy({"Bucket": src.bucket, "Key": src._key(src_key)}, dst.bucket, dst._key(dst_key))
    else:
        dst.write_bytes(dst_key, src.read_bytes(src_key))


def folder_sha256(folder: Path) -> str:
    return tree_sha256({str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*"))
                        if p.is_file() and p.name != SUCCESS})


def verify_model_dir(folder: str | Path, expected: str | None, what: str = "model") -> None:
    """Refuse a model folder whose content does not hash to ``expected`` (no check when nothing was recorded)."""
    if not expected:
        return
    got = folder_sha256(Path(folder))
    if got != expected:
        raise ModelTampered(f"{what} at {folder} has content hash {got[:16]}, but its revision records {expected[:16]}: "
                            "the files were changed after promotion; refusing to load it")
