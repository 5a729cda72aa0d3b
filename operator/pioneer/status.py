"""ModelAdaptation status in Kubernetes conventions, computed the same way by both adapters."""

from __future__ import annotations

from pioneer.api.models import Condition, ModelAdaptationStatus, Phase, TrainingAttempt
from pioneer.conditions import set_condition
from pioneer.core.controller import Completion, summarize
from pioneer.layout import EVAL_KEY, Prepared, now


def adaptation_status(
    previous: ModelAdaptationStatus | None,
    generation: int | None,
    prepared: Prepared | None,
    attempts: list[TrainingAttempt],
    completion: Completion | None,
    error: str | None = None,
    report_uri: str | None = None,
) -> ModelAdaptationStatus:
    st = (previous or ModelAdaptationStatus()).model_copy(deep=True)
    summary = summarize(attempts)
    st.observed_generation = generation
    st.started_at = st.started_at or now()  # once: a retried preparation does not look like a fresh start
    st.best_attempt, st.best_score = summary["best_attempt"], summary["best_score"]
    if completion is not None and completion.best:  # the attempt the search chose (in production: within epsilon)
        chosen = next((a for a in attempts if a.metadata.name == completion.best), None)
        if chosen is not None and chosen.status is not None:
            st.best_attempt, st.best_score = completion.best, chosen.status.score
    st.baseline_score, st.iteration = summary["baseline_score"], summary["iteration"]
    st.llm_usage = summary["llm_usage"]
    st.attempts = st.attempts.model_validate(summary["attempts"])
    st.report_uri = report_uri or st.report_uri
    conds = st.conditions
    if prepared is not None:
        st.eval_set_sha256 = prepared.eval_sha256
        conds = set_condition(conds, Condition(type="EvalSetFrozen", status="True", reason="Frozen", observed_generation=generation,
                                               message=f"{EVAL_KEY} sha256 {prepared.eval_sha256[:12]}"))
    if error:
        st.phase, st.message = Phase.failed.value, error
        conds = set_condition(conds, Condition(type="Ready", status="False", reason="Error", message=error, observed_generation=generation))
    elif completion is not None:
        st.phase = Phase.succeeded.value if completion.succeeded else Phase.failed.value
        st.message = completion.message
        conds = set_condition(conds, Condition(type="Ready", status="True" if completion.succeeded else "False",
                                               reason=completion.reason, message=completion.message, observed_generation=generation))
    elif prepared is None:
        st.phase = Phase.preparing.value
        conds = set_condition(conds, Condition(type="Ready", status="False", reason="Preparing",
                                               message="building the evaluation set", observed_generation=generation))
    else:
        st.phase = Phase.running.value
        msg = f"iteration {st.iteration}, {st.attempts.running} attempt(s) running"
        conds = set_condition(conds, Condition(type="Ready", status="False", reason="Searching", message=msg, observed_generation=generation))
    st.conditions = conds
    return st
