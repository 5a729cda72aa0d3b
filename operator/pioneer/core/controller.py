"""The controller core: (spec, attempts so far) -> next actions. Pure and idempotent.

Both adapters call :func:`reconcile` the same way: the local runner in a loop, the Kopf operator on
every change of a ModelAdaptation or its TrainingAttempts. Given the same inputs it returns the same
plan; attempts it asks for have deterministic names, so asking twice creates nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pioneer import defaults as d
from pioneer.api.models import ModelAdaptationSpec, Phase, Pipeline, TrainingAttempt
from pioneer.core import advice, planner
from pioneer.core import gate as gates
from pioneer.core.graph import TERMINAL, Graph, phase, pipeline_key, score

BASELINE_SUFFIX = "baseline"
MAX_CONSECUTIVE_FAILED_ITERATIONS = 2


class Reason:
    """Why a search completed (status.conditions reason), decided in one ordered function: :func:`reconcile`."""

    TARGET_REACHED = "TargetReached"  # a candidate passes the gate's checks on the evaluation set
    BUDGET_EXHAUSTED = "BudgetExhausted"
    ALL_ATTEMPTS_FAILED = "AllAttemptsFailed"
    REPEATED_FAILURES = "RepeatedFailures"
    STOPPED_AFTER_FAILURES = "StoppedAfterFailures"
    NOTHING_LEFT_TO_TRY = "NothingLeftToTry"
    SEARCH_EXHAUSTED = "SearchExhausted"
    REGRESSIONS_STALLED = "RegressionsStalled"  # production: candidates reach tau but stop getting closer to epsilon


@dataclass(frozen=True)
class NewAttempt:
    name: str
    iteration: int
    parent: str | None
    pipeline: Pipeline
    modification: str
    rationale: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    succeeded: bool
    reason: str  # CamelCase, for status.conditions
    message: str
    best: str | None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    create: tuple[NewAttempt, ...] = ()
    complete: Completion | None = None
    note: str = ""  # what the controller is waiting for, when it does nothing


def attempt_name(adaptation: str, iteration: int, index: int) -> str:
    if iteration == 0:
        return f"{adaptation}-{BASELINE_SUFFIX}"
    return f"{adaptation}-i{iteration}-{chr(ord('a') + index)}"


def baseline_pipeline(spec: ModelAdaptationSpec) -> Pipeline:
    base = planner.initial_pipeline(spec)
    return Pipeline(data=base.data, hyperparameters=base.hyperparameters.model_copy(update={"epochs": 0}), strategy=base.strategy)


def _new(adaptation: str, iteration: int, proposals: list[planner.Proposal], parent: str | None, seen: set[str], k: int,
         prefix: str = "") -> list[NewAttempt]:
    out = []
    for prop in proposals:
        key = pipeline_key(prop.pipeline)
        if key in seen:
            continue
        seen.add(key)
        out.append(NewAttempt(attempt_name(adaptation, iteration, len(out)), iteration, parent, prop.pipeline,
                              prop.modification, (prefix + " " + prop.rationale).strip(), prop.evidence))
        if len(out) == k:
            break
    return out


def reconcile(adaptation: str, spec: ModelAdaptationSpec, attempts: list[TrainingAttempt], pool_size: int,
              advisor: advice.Advisor | None = None) -> Plan:
    """Decide what to do next for one ModelAdaptation. Each new attempt's evidence records what its pipeline changes,
    read from the pipelines themselves: ``changed`` (field -> [before, after]) against ``changedFrom``.

    ``advisor`` (``search.planner: claude``) proposes each later iteration's attempts first; the deterministic policy
    fills the rest and is what remains when the advisor cannot answer. An advisor records its answers, so asking
    again for the same iteration gives the same plan."""
    plan = _plan(adaptation, spec, attempts, pool_size, advisor)
    if not plan.create:
        return plan
    graph = Graph.of(attempts)
    configured = planner.initial_pipeline(spec)
    annotated = []
    for new in plan.create:
        if new.iteration == 0:
            annotated.append(new)
            continue
        parent = graph.get(new.parent) if new.iteration > 1 and new.parent else None
        before, source = (parent.spec.pipeline, new.parent) if parent is not None else (configured, "the spec's configuration")
        evidence = {**new.evidence, "changedFrom": source, "changed": planner.pipeline_changes(before, new.pipeline)}
        annotated.append(replace(new, evidence=evidence))
    return replace(plan, create=tuple(annotated))


def _plan(adaptation: str, spec: ModelAdaptationSpec, attempts: list[TrainingAttempt], pool_size: int,
          advisor: advice.Advisor | None = None) -> Plan:
    graph = Graph.of(attempts)
    search, gate = spec.search, spec.gate

    if not graph.attempts:
        k = min(search.configurations_per_iteration, search.max_attempts)
        baseline = NewAttempt(attempt_name(adaptation, 0, 0), 0, None, baseline_pipeline(spec), "none (untrained base model)",
                              "The untrained base model is scored on the frozen evaluation set as the reference point.",
                              {"base_model": spec.hyperparameters.base_model})
        first = _new(adaptation, 1, planner.initial_proposals(spec, k), baseline.name, {pipeline_key(baseline.pipeline)}, k)
        if spec.mode == "production":
            baseline = NewAttempt(baseline.name, 0, None, baseline.pipeline, "none (the deployed parent model)",
                                  "The deployed model is scored on the frozen failure set, the regression set and the previous checkpoint's set.",
                                  {"deployed_model": spec.deployed_model})
        return Plan(create=(baseline, *first))

    latest = graph.latest_iteration
    pending = [a.metadata.name for a in graph.attempts if phase(a) not in TERMINAL]
    if any(graph.get(n).spec.iteration == latest for n in pending):
        return Plan(note=f"waiting for iteration {latest}: {', '.join(pending)}")

    production = spec.mode == "production"
    safe = [a for a in graph.scored if not production or _within_epsilon(a, gate.epsilon)]
    best = graph.best(safe) or (closest_to_passing(graph.scored, gate.tau) if production else None) or graph.best()
    # the budget counts trainings: a twin that reused an earlier attempt's output trained nothing (at most as many
    # twins as trainings, so a planner that keeps proposing twins still ends)
    n_trained, twins = len(graph.distinct_trainings), len(graph.trained) - len(graph.distinct_trainings)
    verdict = passes(spec, best, graph) if best is not None else None
    if verdict is not None and verdict.passed:
        return _finish(graph, True, Reason.TARGET_REACHED, verdict.reason, pending, best)
    if n_trained >= search.max_attempts or twins >= search.max_attempts:
        if best is None:
            return _finish(graph, False, Reason.ALL_ATTEMPTS_FAILED, f"all {n_trained} attempts failed", pending)
        if n_trained >= search.max_attempts:
            spent = f"attempt budget {search.max_attempts} used" + (
                f" ({twins} twin(s) that reused an identical training not counted)" if twins else "")
        else:
            spent = (f"{twins} proposals rebuilt training sets already trained (twins, reusing their output) beside "
                     f"{n_trained} distinct training(s): nothing new is left to train")
        return _finish(graph, True, Reason.BUDGET_EXHAUSTED, f"{spent}; best {best.metadata.name} scored {score(best):.4f} "
                       f"(tau {gate.tau})", pending, best)

    k = min(search.configurations_per_iteration, search.max_attempts - n_trained)
    seen = graph.keys()
    nxt = latest + 1
    current = graph.iteration(latest)
    cur_best = graph.best(current)
    prev_best = graph.best([a for a in graph.trained if a.spec.iteration < latest])

    if cur_best is None:  # the whole iteration failed
        failed_streak = 0
        for i in range(latest, 0, -1):
            if graph.best(graph.iteration(i)) is None:
                failed_streak += 1
            else:
                break
        messages = [a.status.message or "" for a in current if a.status]
        if failed_streak >= MAX_CONSECUTIVE_FAILED_ITERATIONS:
            return _finish(graph, best is not None, Reason.REPEATED_FAILURES if best is None else Reason.STOPPED_AFTER_FAILURES,
                           f"{failed_streak} iterations in a row failed: {messages[:2]}", pending)
        anchor = prev_best or current[0]
        props = planner.pivot_after_failure(anchor.spec.pipeline, messages)
        created = _new(adaptation, nxt, props, prev_best.metadata.name if prev_best else current[0].spec.parent, seen, k,
                       prefix=f"Iteration {latest} failed entirely ({'; '.join(m[:80] for m in messages[:2])}).")
        return Plan(create=tuple(created)) if created else _finish(graph, best is not None, Reason.NOTHING_LEFT_TO_TRY, "no pivot left after failures", pending)

    stalled = _regressions_stalled(graph, gate.tau, gate.epsilon, latest) if production else None
    if stalled:
        return _finish(graph, best is not None, Reason.REGRESSIONS_STALLED, stalled["message"], pending, best, stalled)

    rollback = prev_best is not None and score(cur_best) < score(prev_best)
    if rollback:
        parent = prev_best
        prefix = (f"Rollback: iteration {latest}'s best ({cur_best.metadata.name}, {score(cur_best):.4f}) regressed from "
                  f"{prev_best.metadata.name} ({score(prev_best):.4f}); continue from {prev_best.metadata.name}'s data and configuration.")
        uct_values: dict[str, float] = {}
    else:
        parent, uct_values = graph.select(latest)
        prefix = f"Selected {parent.metadata.name} (UCT {uct_values.get(parent.metadata.name)})."

    props = planner.proposals(parent, pool_size, spec.search.larger_base_models, spec.search.backends)
    if production and not _within_epsilon(parent, gate.epsilon):
        objectives = spec.task.type == "classification" and parent.spec.pipeline.hyperparameters.backend == "transformers"
        props = planner.after_regressions(parent, gate.epsilon, objectives) + props
    stagnated = prev_best is not None and score(cur_best) <= score(prev_best) + 1e-9
    if stagnated or rollback:
        props = _fusion_candidates(graph) + props
    if advisor is not None:
        answer = advisor(advice.Request(nxt, parent, k, spec, graph, props))
        # when it fell back, what the call cost (if one was made) is recorded with the attempts planned instead
        fallback = {k: answer.record[k] for k in ("fallback", "llm") if answer.record.get(k)} if answer.record.get("fallback") else {}
        props = [replace(p, evidence={**p.evidence, **answer.record, "decidedBy": "claude"}) for p in answer.proposals] + \
                [replace(p, evidence={**p.evidence, "decidedBy": "deterministic", **fallback}) for p in props]
    created = _new(adaptation, nxt, props, parent.metadata.name, seen, k, prefix)
    for i, c in enumerate(created):
        ev = dict(c.evidence)
        if uct_values:
            ev["uct"] = uct_values
        if rollback:
            ev["rollback"] = {"from": cur_best.metadata.name, "from_score": score(cur_best),
                              "to": prev_best.metadata.name, "to_score": score(prev_best)}
        created[i] = NewAttempt(c.name, c.iteration, c.parent, c.pipeline, c.modification, c.rationale, ev)
    if not created:
        return _finish(graph, True, Reason.SEARCH_EXHAUSTED, f"no untried modification of {parent.metadata.name} is left", pending)
    return Plan(create=tuple(created))


def _fusion_candidates(graph: Graph, k: int = 3) -> list[planner.Proposal]:
    """Fuse pairs among the top-k nodes whose data and hyperparameters both differ (the two halves of each)."""
    tops = sorted(graph.scored, key=lambda a: (-score(a), a.metadata.name))[:k]
    out = []
    for i, a in enumerate(tops):
        for b in tops[i + 1:]:
            pa, pb = a.spec.pipeline, b.spec.pipeline
            if pa.data != pb.data and pa.hyperparameters != pb.hyperparameters:
                out += [planner.fusion(a, b), planner.fusion(b, a)]
    return out


def passes(spec: ModelAdaptationSpec, attempt: TrainingAttempt, graph: Graph):
    """The gate's verdict on an attempt from its status alone: the same checks the promotion applies."""
    st = attempt.status
    candidate = gates.Candidate(attempt.metadata.name, score(attempt), st.regressions if st else None,
                                st.cross_checkpoint_regressions if st else None)
    return gates.assess(candidate, gate_limits(spec), baseline_reference(spec, graph))


def gate_limits(spec: ModelAdaptationSpec) -> gates.Limits:
    return gates.Limits(tau=spec.gate.tau, epsilon=spec.gate.epsilon, production=spec.mode == "production",
                        cross_checkpoint=spec.gate.cross_checkpoint)


def baseline_reference(spec: ModelAdaptationSpec, graph: Graph, **served) -> gates.References:
    """The untrained base model (cold start) or the deployed parent (production), scored on the same frozen set."""
    base = graph.baseline
    who = "the deployed parent" if spec.mode == "production" else "the untrained base model"
    return gates.References(baseline=score(base) if base is not None and score(base) is not None else None,
                            baseline_name=who, **served)


def _within_epsilon(a: TrainingAttempt, epsilon: int) -> bool:
    st = a.status
    return st is not None and (st.regressions or 0) <= epsilon and (st.cross_checkpoint_regressions or 0) <= epsilon


def fewest_regressions(attempts: list[TrainingAttempt], tau: float) -> int | None:
    """An iteration's closest approach to the regression checks: the fewest regressions (the worse of the regression set
    and the previous checkpoint's set) among its candidates whose score reaches ``tau``; None when none reaches it."""
    counts = [max(a.status.regressions or 0, a.status.cross_checkpoint_regressions or 0)
              for a in attempts if a.status is not None and a.status.score is not None and a.status.score >= tau]
    return min(counts) if counts else None


def closest_to_passing(attempts: list[TrainingAttempt], tau: float) -> TrainingAttempt | None:
    """Production, when no candidate is within epsilon: the one reaching ``tau`` that broke the fewest previously passing
    traces (the worse of the two gate sets), then the higher score, so the refusal names the nearest miss and its
    count; None when none reaches tau."""
    pool = [a for a in attempts if a.status is not None and score(a) is not None and score(a) >= tau]
    return min(pool, key=lambda a: (max(a.status.regressions or 0, a.status.cross_checkpoint_regressions or 0), -score(a),
                                    a.spec.iteration, a.metadata.name), default=None)


def _regressions_stalled(graph: Graph, tau: float, epsilon: int, latest: int) -> dict[str, Any] | None:
    """Production: the last ``REGRESSION_STALL_ITERATIONS`` iterations each had candidates reaching tau, none of which broke
    fewer previously passing traces than the fewest before them, and that fewest is over epsilon. The preservation
    moves are not closing the gap: end the search and say so, with the count per iteration (None: not stalled)."""
    n = d.REGRESSION_STALL_ITERATIONS
    if latest <= n:
        return None
    per = {i: fewest_regressions(graph.iteration(i), tau) for i in range(1, latest + 1)}
    recent = [per[i] for i in range(latest - n + 1, latest + 1)]
    earlier = [v for i, v in per.items() if i <= latest - n and v is not None]
    if not earlier or any(v is None for v in recent) or min(earlier) <= epsilon or min(recent) < min(earlier):
        return None
    counts = ", ".join(f"iteration {i}: {'-' if v is None else v}" for i, v in per.items())
    return {"message": f"for {n} iterations no candidate reaching tau {tau:g} broke fewer previously passing traces than "
                       f"{min(earlier)}, the fewest before them (fewest per iteration, {counts}; epsilon {epsilon}): the "
                       "preservation moves are not closing the gap, so the search ends and the deployed revision stays "
                       "unless the gate passes",
            "fewest_regressions_per_iteration": {str(i): v for i, v in per.items()}, "epsilon": epsilon, "tau": tau}


def _finish(graph: Graph, ok: bool, reason: str, message: str, pending: list[str], best: TrainingAttempt | None = None,
            evidence: dict[str, Any] | None = None) -> Plan:
    if pending:  # e.g. the baseline is still running: wait so the report has it
        return Plan(note=f"done searching ({reason}); waiting for {', '.join(pending)}")
    best = best or graph.best()
    ev = {"scores": {a.metadata.name: score(a) for a in graph.trained}, **{k: v for k, v in (evidence or {}).items() if k != "message"}}
    if graph.baseline is not None:
        ev["baseline"] = score(graph.baseline)
    return Plan(complete=Completion(ok, reason, message, best.metadata.name if best else None, ev))


def summarize(attempts: list[TrainingAttempt]) -> dict[str, Any]:
    """Status numbers for a ModelAdaptation."""
    graph = Graph.of(attempts)
    best = graph.best()
    counts = {"total": len(graph.trained), "running": 0, "succeeded": 0, "failed": 0}
    for a in graph.trained:
        ph = phase(a)
        if ph == Phase.succeeded.value:
            counts["succeeded"] += 1
        elif ph == Phase.failed.value:
            counts["failed"] += 1
        else:
            counts["running"] += 1
    return {
        "llm_usage": llm_usage(attempts),
        "best_attempt": best.metadata.name if best else None,
        "best_score": score(best) if best else None,
        "baseline_score": score(graph.baseline) if graph.baseline else None,
        "iteration": graph.latest_iteration,
        "attempts": counts,
    }


def llm_usage(attempts: list[TrainingAttempt]) -> dict[str, int] | None:
    """The Claude planner's spend, read from the attempts' own evidence (one planning call per iteration): calls, input
    and output tokens, iterations that fell back to the deterministic policy. None when no attempt was planned by it."""
    calls: dict[int, dict[str, Any]] = {}
    fallbacks: set[int] = set()
    for a in attempts:
        ev = a.spec.evidence or {}
        if ev.get("llm", {}).get("usage"):
            calls.setdefault(a.spec.iteration, ev["llm"]["usage"])
        if ev.get("fallback"):
            fallbacks.add(a.spec.iteration)
    if not calls and not fallbacks:
        return None
    return {"calls": len(calls), "inputTokens": sum(u.get("inputTokens", 0) for u in calls.values()),
            "outputTokens": sum(u.get("outputTokens", 0) for u in calls.values()), "fallbacks": len(fallbacks)}
