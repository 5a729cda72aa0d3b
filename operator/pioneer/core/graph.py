"""The search graph over training pipelines (paper §2.2, appendix A): pure functions over attempts.

A node is a TrainingAttempt (pipeline pi and its score); an edge goes from an attempt's parent to it
and carries the modification and the rationale. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from pioneer import defaults as d
from pioneer.api.models import Phase, Pipeline, TrainingAttempt

TERMINAL = {Phase.succeeded.value, Phase.failed.value}


def pipeline_key(pipeline: Pipeline) -> str:
    """Identity of a pipeline: two attempts with the same key would train the same model."""
    blob = json.dumps(pipeline.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def phase(a: TrainingAttempt) -> str:
    return (a.status.phase if a.status and a.status.phase else Phase.pending.value)


def score(a: TrainingAttempt) -> float | None:
    return a.status.score if a.status and phase(a) == Phase.succeeded.value else None


def is_trained(a: TrainingAttempt) -> bool:
    return a.spec.iteration >= 1


@dataclass(frozen=True)
class Graph:
    attempts: tuple[TrainingAttempt, ...]

    @classmethod
    def of(cls, attempts: list[TrainingAttempt]) -> Graph:
        return cls(tuple(sorted(attempts, key=lambda a: (a.spec.iteration, a.metadata.name))))

    def get(self, name: str | None) -> TrainingAttempt | None:
        return next((a for a in self.attempts if a.metadata.name == name), None)

    @property
    def baseline(self) -> TrainingAttempt | None:
        return next((a for a in self.attempts if a.spec.iteration == 0), None)

    @property
    def trained(self) -> list[TrainingAttempt]:
        return [a for a in self.attempts if is_trained(a)]

    @property
    def distinct_trainings(self) -> list[TrainingAttempt]:
        """Trained attempts less the twins that reused an earlier attempt's output (the same data and configuration)."""
        return [a for a in self.trained if not (a.status and a.status.reused_from)]

    @property
    def scored(self) -> list[TrainingAttempt]:
        return [a for a in self.trained if score(a) is not None]

    @property
    def latest_iteration(self) -> int:
        return max((a.spec.iteration for a in self.attempts), default=0)

    def iteration(self, i: int) -> list[TrainingAttempt]:
        return [a for a in self.attempts if a.spec.iteration == i]

    def children(self, name: str) -> list[TrainingAttempt]:
        return [a for a in self.attempts if a.spec.parent == name]

    def descendants(self, name: str) -> list[TrainingAttempt]:
        out, frontier = [], [name]
        while frontier:
            kids = [c for n in frontier for c in self.children(n)]
            out += kids
            frontier = [k.metadata.name for k in kids]
        return out

    def lineage(self, name: str) -> list[TrainingAttempt]:
        """The attempt and its ancestors, root first."""
        chain, node = [], self.get(name)
        while node is not None:
            chain.append(node)
            node = self.get(node.spec.parent)
        return chain[::-1]

    def branch_root(self, name: str) -> str:
        """The first trained ancestor: attempts with the same branch root share a line of descent."""
        trained = [a for a in self.lineage(name) if is_trained(a)]
        return trained[0].metadata.name if trained else name

    def best(self, among: list[TrainingAttempt] | None = None) -> TrainingAttempt | None:
        """Highest score; among equal scores the one that broke the fewest previously passing examples (production:
        regressions on both gate sets), then the earlier (simpler) attempt."""
        pool = [a for a in (among if among is not None else self.trained) if score(a) is not None]
        if not pool:
            return None

        def broken(a: TrainingAttempt) -> int:
            return (a.status.regressions or 0) + (a.status.cross_checkpoint_regressions or 0) if a.status else 0
        return max(pool, key=lambda a: (score(a), -broken(a), -a.spec.iteration, [-ord(c) for c in a.metadata.name]))

    def keys(self) -> set[str]:
        return {pipeline_key(a.spec.pipeline) for a in self.attempts}

    def uct(self, name: str, iteration: int, c0: float = d.UCT_C0) -> float:
        """UCT(v) = mean reward over v and its descendants + c(t) sqrt(ln N / n_v), c(t) = c0 / sqrt(1 + t)."""
        node = self.get(name)
        rewards = [score(a) for a in [node, *self.descendants(name)] if score(a) is not None]
        n_total = max(1, len(self.scored))
        n_visits = max(1, len(rewards))
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        c = c0 / math.sqrt(1 + iteration)
        return mean + c * math.sqrt(math.log(max(n_total, 1)) / n_visits) if n_total > 1 else mean

    def select(self, iteration: int) -> tuple[TrainingAttempt | None, dict[str, float]]:
        """The scored attempt with the highest UCT value, and every candidate's value (the evidence)."""
        values = {a.metadata.name: round(self.uct(a.metadata.name, iteration), 4) for a in self.scored}
        if not values:
            return None, values
        best_name = max(values, key=lambda n: (values[n], score(self.get(n)), n))
        return self.get(best_name), values
