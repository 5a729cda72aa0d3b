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


def rollback(status: DeployedModelStatus, to: int, at: str) -> DeployedModelStatus:
    """Serve an earlier revision again (history is kept; the rollback is itself recorded)."""
    target = next((r for r in status.revisions if r.revision == to), None)
    if target is None:
        known = [r.revision for r in status.revisions]
        raise ValueError(f"no revision {to}; known revisions: {known}")
    st = status.model_copy(deep=True)
    st.current_revision, st.model_uri = target.revision, target.model_uri
    st.last_verdict = GateVerdict(passed=True, reason=f"explicit rollback to revision {to}", decided_at=at)
    return st
