"""The regression gate and DeployedModel revisions: pure functions.

A DeployedModel changes only through a passing gate (or an explicit user rollback). Cold start: the
best attempt must reach tau. Production mode adds the regression and cross-checkpoint checks.
"""

from __future__ import annotations

from pioneer.api.models import DeployedModelStatus, GateVerdict, Revision


def cold_start_verdict(best_score: float | None, tau: float, best_attempt: str | None, decided_at: str) -> GateVerdict:
    if best_score is None:
        return GateVerdict(passed=False, reason="no attempt produced a model", decided_at=decided_at)
    if best_score < tau:
        return GateVerdict(passed=False, score=best_score, decided_at=decided_at,
                           reason=f"best attempt {best_attempt} scored {best_score:.4f} < tau {tau}")
    return GateVerdict(passed=True, score=best_score, decided_at=decided_at,
                       reason=f"best attempt {best_attempt} scored {best_score:.4f} >= tau {tau}")


def promote(status: DeployedModelStatus | None, verdict: GateVerdict, candidate: Revision | None) -> DeployedModelStatus:
    """The DeployedModel status after a verdict: a new revision only when the gate passed."""
    st = (status or DeployedModelStatus()).model_copy(deep=True)
    st.last_verdict = verdict
    if verdict.passed and candidate is not None:
        number = max((r.revision for r in st.revisions), default=0) + 1
        rev = candidate.model_copy(update={"revision": number})
        st.revisions = [*st.revisions, rev]
        st.current_revision, st.model_uri = number, rev.model_uri
    return st


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
    import random

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


def production_verdict(score: float, tau: float, regressions: list[str], epsilon: int,
                       cross_regressions: list[str] | None, decided_at: str) -> GateVerdict:
    """Accept only if score >= tau on the failure set, regressions <= epsilon on previously passing traces,
    and (when checked) <= epsilon on the previous checkpoint's evaluation set (paper eq. 16, §2.7)."""
    reasons = []
    if score < tau:
        reasons.append(f"score {score:.4f} on the failure set < tau {tau}")
    if len(regressions) > epsilon:
        reasons.append(f"{len(regressions)} regressions on previously passing traces > epsilon {epsilon}")
    if cross_regressions is not None and len(cross_regressions) > epsilon:
        reasons.append(f"{len(cross_regressions)} regressions on the previous checkpoint's evaluation set > epsilon {epsilon}")
    passed = not reasons
    summary = (f"score {score:.4f} >= tau {tau}; {len(regressions)} regressions <= epsilon {epsilon}"
               + (f"; cross-checkpoint {len(cross_regressions)} <= {epsilon}" if cross_regressions is not None else ""))
    return GateVerdict(passed=passed, score=score, regressions=len(regressions),
                       cross_checkpoint_regressions=None if cross_regressions is None else len(cross_regressions),
                       reason=summary if passed else "; ".join(reasons),
                       regressed_examples=list(regressions) + list(cross_regressions or []), decided_at=decided_at)
