"""Labelled examples and their identity."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class DataError(ValueError):
    """Bad input data: the message names the source and, where known, the line."""


def example_id(text: str) -> str:
    """Stable id of an input text (two rows with the same text share an id)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    id: str = ""
    role: str = "gold"  # gold | hard_negative | augment | replay (training sets); positive | negative | boundary (eval set)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", example_id(self.text))

    def with_role(self, role: str, **meta: Any) -> Example:
        return Example(self.text, self.label, self.id, role, {**self.meta, **meta})

    def to_row(self) -> dict[str, Any]:
        """The example as a JSON row (``meta`` only when it holds something). Built field by field: a preparation
        writes a million of these, and ``dataclasses.asdict`` deep-copies each one on the way."""
        row = {"text": self.text, "label": self.label, "id": self.id, "role": self.role}
        if self.meta:
            row["meta"] = dict(self.meta)
        return row

    @staticmethod
    def rows(pairs: Iterable[tuple[str, str]], role: str) -> list[dict[str, Any]]:
        """``Example(text, label, role=role).to_row()`` of each (text, label) pair, without building the examples, each
        distinct text hashed once (a preparation writes a row per passing trace, and a log repeats its inputs)."""
        ids: dict[str, str] = {}
        return [{"text": text, "label": label, "id": ids.get(text) or ids.setdefault(text, example_id(text)), "role": role}
                for text, label in pairs]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Example:
        return cls(row["text"], row["label"], row.get("id", ""), row.get("role", "gold"), row.get("meta") or {})
