"""The regression gate and DeployedModel revisions: pure functions.

A DeployedModel changes only through a passing gate (or an explicit user rollback). The gate is one
function, :func:`assess`, returning named checks, each with its own limit; the verdict passes only when
every check passes (the worst check wins, as in an Argo Rollouts analysis):

    modelProduced            an attempt produced a model at all
    score                    score on the (failure) evaluation set >= tau
    notBelowBaseline         score >= the reference scored on the same set (cold start: the untrained
                             base model; production: the deployed parent on its own failure set)
    notBelowCurrentRevision  score >= the served revision's score, when it was scored on the same set
    regressions              previously passing traces the candidate gets wrong <= epsilon (production)
    crossCheckpoint          regressions on the previous checkpoint's evaluation set <= epsilon
    heldOut                  score on a held-out set >= the parent's there (when the caller measured both)

The controller's completion rule and both adapters' promotion call the same function.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pioneer import defaults as d
from pioneer.api.models import Condition, DeployedModelStatus, GateCheck, GateVerdict, PendingRevision, Revision
from pioneer.conditions import set_condition


@dataclass(frozen=True)
class Candidate:
    """What the gate knows of one candidate. Counts are None where a set was not measured."""

    attempt: str | None
    score: float | None
    regressions: int | None = None
    cross_checkpoint_regressions: int | None = None
    regressed_examples: tuple[str, ...] = ()
    heldout_score: float | None = None


@dataclass(frozen=True)
class References:
    """What a candidate is compared with, each scored on the same set as the candidate."""

    baseline: float | None = None  # untrained base model (cold start) or the deployed parent (production)
    baseline_name: str = "the baseline"
    current_revision: int | None = None
    current_score: float | None = None  # the served revision's score on this evaluation set (same hash only)
    heldout_parent: float | None = None


@dataclass(frozen=True)
class Limits:
    tau: float
    epsilon: int
    production: bool
    cross_checkpoint: bool = True
    examples_cap: int = d.GATE_EXAMPLES_CAP


def _check(name: str, value: float | None, limit: float | None, passed: bool, message: str) -> GateCheck:
    return GateCheck(name=name, value=value, limit=limit, passed=passed, message=message)


def checks(candidate: Candidate, limits: Limits, refs: References) -> list[GateCheck]:
    """Every check that applies to this candidate, in a fixed order."""
    if candidate.score is None:
        return [_check("modelProduced", None, None, False, "no attempt produced a model")]
    s, tau, eps = candidate.score, limits.tau, limits.epsilon
    who = candidate.attempt or "the candidate"
    out = [_check("score", s, tau, s >= tau,
                  (f"{who} scored {s:.4f} >= tau {tau}" if s >= tau else f"{who} scored {s:.4f} < tau {tau}")
                  + (" on the failure set" if limits.production else ""))]
    if refs.baseline is not None:
        ok = s >= refs.baseline
        out.append(_check("notBelowBaseline", s, refs.baseline, ok,
                          f"score {s:.4f} {'>=' if ok else '<'} {refs.baseline_name} {refs.baseline:.4f}"))
    if refs.current_score is not None:
        ok = s >= refs.current_score
        out.append(_check("notBelowCurrentRevision", s, refs.current_score, ok,
                          f"score {s:.4f} {'>=' if ok else '<'} the served revision {refs.current_revision}'s "
                          f"{refs.current_score:.4f} on the same evaluation set"))
    if limits.production:
        r = candidate.regressions or 0
        out.append(_check("regressions", r, eps, r <= eps,
                          f"{r} regressions on previously passing traces {'<=' if r <= eps else '>'} epsilon {eps}"))
        if limits.cross_checkpoint and candidate.cross_checkpoint_regressions is not None:
            c = candidate.cross_checkpoint_regressions
            out.append(_check("crossCheckpoint", c, eps, c <= eps,
                              f"{c} regressions on the previous checkpoint's evaluation set {'<=' if c <= eps else '>'} epsilon {eps}"))
    if candidate.heldout_score is not None and refs.heldout_parent is not None:
        h, p = candidate.heldout_score, refs.heldout_parent
        out.append(_check("heldOut", h, p, h >= p, f"held-out score {h:.4f} {'>=' if h >= p else '<'} the parent's {p:.4f}"))
    return out


def assess(candidate: Candidate, limits: Limits, refs: References = References(), decided_at: str | None = None,
           adaptation: str | None = None) -> GateVerdict:
    """The verdict: every check with its value and limit; passed only when all passed."""
    found = checks(candidate, limits, refs)
    passed = all(c.passed for c in found)
    reason = "; ".join(c.message for c in found if passed or not c.passed)
    examples = list(candidate.regressed_examples)
    return GateVerdict(passed=passed, attempt=candidate.attempt, adaptation=adaptation, score=candidate.score,
                       regressions=candidate.regressions if limits.production else None,
                       cross_checkpoint_regressions=candidate.cross_checkpoint_regressions if limits.production else None,
                       checks=found, reason=reason, regressed_examples=examples[: limits.examples_cap],
                       regressed_examples_total=len(examples) if limits.production else None, decided_at=decided_at)


def promote(status: DeployedModelStatus | None, verdict: GateVerdict, candidate: Revision | None,
            manual: bool = False) -> DeployedModelStatus:
    """The DeployedModel status after a verdict: a new revision only when the gate passed.

    With ``manual`` promotion a passing candidate is not served: it waits in ``pendingRevision`` for
    :func:`approve`. Idempotent, keyed by the attempt: applying the same verdict again (a crash between
    the decision and the write, a re-run) adds no second revision and no second pending candidate."""
    st = (status or DeployedModelStatus()).model_copy(deep=True)
    if verdict.passed and candidate is not None and manual:
        if _revision_of(st, candidate) is None:
            st.last_verdict = verdict
            st.pending_revision = PendingRevision(candidate=candidate, verdict=verdict, based_on_revision=st.current_revision,
                                                  since=verdict.decided_at or candidate.promoted_at or "")
            st.conditions = set_condition(st.conditions, Condition(
                type="PendingApproval", status="True", reason="AwaitingApproval",
                message=f"{candidate.attempt} passed the gate and waits for an approval: {verdict.reason}"[:1000]))
        return st
    st.last_verdict = verdict
    promoted = verdict.passed and candidate is not None
    st.conditions = set_condition(st.conditions, Condition(
        type="GatePassed", status="True" if promoted else "False", reason="Promoted" if promoted else "GateFailed",
        message=(verdict.reason if promoted else f"revision {st.current_revision} kept: {verdict.reason}")[:1000]))
    if not promoted:
        return st
    if _revision_of(st, candidate) is not None:
        return st
    number = max((r.revision for r in st.revisions), default=0) + 1
    rev = candidate.model_copy(update={"revision": number})
    st.revisions = [*st.revisions, rev]
    st.current_revision, st.model_uri = number, rev.model_uri
    return st


def _revision_of(status: DeployedModelStatus, candidate: Revision) -> Revision | None:
    return next((r for r in status.revisions if candidate.attempt and r.attempt == candidate.attempt
                 and r.adaptation == candidate.adaptation and r.model_sha256 == candidate.model_sha256), None)


def approve(status: DeployedModelStatus, attempt: str | None, at: str, by: str) -> DeployedModelStatus:
    """Serve the candidate waiting for an approval. Refused (ValueError) when none waits, when ``attempt`` names
    another one, or when the served revision changed since its verdict (it was gated against another model).
    Approving a candidate already promoted changes nothing."""
    pending = status.pending_revision
    if pending is None:
        if attempt and any(r.attempt == attempt for r in status.revisions):
            return status
        raise ValueError("no candidate waits for an approval")
    if attempt and pending.candidate.attempt != attempt:
        raise ValueError(f"the candidate waiting is {pending.candidate.attempt}, not {attempt}")
    if pending.based_on_revision != status.current_revision:
        raise ValueError(f"{pending.candidate.attempt} was gated against revision {pending.based_on_revision}, but revision "
                         f"{status.current_revision} is served now: run the repair again")
    verdict = pending.verdict.model_copy(update={"reason": f"{pending.verdict.reason} (approved by {by} at {at})"})
    st = promote(status, verdict, pending.candidate.model_copy(update={"promoted_at": at, "reason": verdict.reason}))
    st.pending_revision = None
    st.conditions = set_condition(st.conditions, Condition(type="PendingApproval", status="False", reason="Approved",
                                                           message=f"{pending.candidate.attempt} approved by {by}"[:1000]))
    return st


def current(status: DeployedModelStatus) -> Revision | None:
    return next((r for r in status.revisions if r.revision == status.current_revision), None)


def rollback(status: DeployedModelStatus, to: int, at: str, reason: str | None = None) -> DeployedModelStatus:
    """Serve an earlier revision again (history is kept; the rollback and its reason are recorded)."""
    target = next((r for r in status.revisions if r.revision == to), None)
    if target is None:
        known = [r.revision for r in status.revisions]
        raise ValueError(f"no revision {to}; known revisions: {known}")
    st = status.model_copy(deep=True)
    st.current_revision, st.model_uri = target.revision, target.model_uri
    st.last_verdict = GateVerdict(passed=True, reason=reason or f"explicit rollback to revision {to}", decided_at=at)
    return st


def regression_set_size(failures: int, passing: int, fraction: float = 1.0) -> int:
    """Size of the regression set: fraction (clipped to 30-100%) of the failure-set size, at most all passing traces."""
    fraction = min(1.0, max(0.3, fraction))
    return min(passing, max(1, round(failures * fraction))) if failures and passing else 0


def stratified_sample(rows: list[dict], size: int, key: str, seed: int) -> list[dict]:
    """``size`` rows with each ``key`` value represented in proportion (largest remainder), seeded."""
    if size >= len(rows):
        return list(rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get(key)), []).append(row)
    exact = {k: size * len(v) / len(rows) for k, v in groups.items()}
    alloc = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - alloc[k]), k))[: size - sum(alloc.values())]:
        alloc[k] += 1
    rng = random.Random(seed)
    out = []
    for k in sorted(groups):
        out += rng.sample(groups[k], alloc[k])
    return out
