"""The controller core decides like the paper's iteration policy (§2.4), with lineage and evidence."""

from __future__ import annotations

import pytest

from conftest import tiny_adaptation
from pioneer.api.models import AttemptInputs, ObjectMeta, TrainingAttempt, TrainingAttemptSpec, TrainingAttemptStatus
from pioneer.api.validation import parse_resource
from pioneer.core.controller import NewAttempt, reconcile

SPEC = parse_resource(tiny_adaptation(search={"maxAttempts": 10, "parallelism": 2})).spec


def as_attempt(new: NewAttempt, score: float | None, loss: float = 0.3, failed: bool = False,
               patterns=({"label": "a", "prediction": "b", "count": 2},)) -> TrainingAttempt:
    spec = TrainingAttemptSpec(adaptation="t", iteration=new.iteration, parent=new.parent, modification=new.modification,
                               rationale=new.rationale, evidence=new.evidence, task=SPEC.task, labels=["a", "b"],
                               pipeline=new.pipeline, inputs=AttemptInputs(eval_uri="e", eval_sha256="h"), output_uri="o")
    status = TrainingAttemptStatus(phase="Failed" if failed else "Succeeded", score=None if failed else score,
                                   train_loss=loss, failure_patterns=list(patterns), message="boom" if failed else None)
    return TrainingAttempt(metadata=ObjectMeta(name=new.name), spec=spec, status=status)


def start(spec=SPEC):
    plan = reconcile("t", spec, [], pool_size=500)
    return plan


def run_iteration(attempts, plan, scores, pool=500, **kw):
    for new, s in zip(plan.create, scores):
        attempts.append(as_attempt(new, s, **kw))
    return reconcile("t", SPEC, attempts, pool_size=pool)


def test_first_plan_is_a_baseline_and_at_least_two_parallel_configurations():
    plan = start()
    names = [n.name for n in plan.create]
    assert names == ["t-baseline", "t-i1-a", "t-i1-b"]
    assert plan.create[0].pipeline.hyperparameters.epochs == 0
    methods = {n.pipeline.hyperparameters.method for n in plan.create[1:]}
    assert methods == {"full", "lora"}
    assert all(n.parent == "t-baseline" for n in plan.create[1:])


def test_reconcile_is_idempotent():
    assert start() == start()
    attempts = []
    plan = start()
    attempts.append(as_attempt(plan.create[0], 0.1))
    waiting = reconcile("t", SPEC, attempts + [as_attempt(plan.create[1], None, failed=False).model_copy(update={"status": None})], 500)
    assert waiting.create == () and "waiting" in waiting.note


@pytest.mark.parametrize("score, kind, word", [
    (0.55, "data-rework", "dataset size"),
    (0.88, "hyperparameter-tuning", "epochs"),
    (0.955, "surgical-augmentation", "surgical augmentation"),
])
def test_the_score_band_decides_the_next_modification(score, kind, word):
    attempts = []
    plan = start()
    attempts.append(as_attempt(plan.create[0], 0.1))
    nxt = run_iteration(attempts, type(plan)(create=plan.create[1:]), [score, score - 0.05], pool=5000)
    assert len(nxt.create) == 2
    first = nxt.create[0]
    assert first.iteration == 2 and first.parent == "t-i1-a"
    assert first.evidence["band"] == kind
    assert word in first.modification
    assert first.rationale


def test_overfitting_evidence_lowers_the_learning_rate_instead_of_adding_epochs():
    attempts = [as_attempt(start().create[0], 0.1)]
    nxt = run_iteration(attempts, type(start())(create=start().create[1:]), [0.88, 0.80], loss=0.001)
    assert "learning rate" in nxt.create[0].modification and "overfits" in nxt.create[0].rationale


def test_a_regression_rolls_back_to_the_previous_best():
    attempts = [as_attempt(start().create[0], 0.1)]
    it2 = run_iteration(attempts, type(start())(create=start().create[1:]), [0.90, 0.85])
    it3 = run_iteration(attempts, it2, [0.87, 0.86])  # both below 0.90: regression
    assert it3.create, it3
    assert all(n.parent == "t-i1-a" for n in it3.create if not n.modification.startswith("fusion"))
    assert "Rollback" in it3.create[0].rationale
    assert it3.create[0].evidence["rollback"]["to"] == "t-i1-a"


def test_stagnation_proposes_fusion_of_two_branches():
    attempts = [as_attempt(start().create[0], 0.1)]
    it2 = run_iteration(attempts, type(start())(create=start().create[1:]), [0.70, 0.72], pool=5000)  # LoRA branch leads
    it3 = run_iteration(attempts, it2, [0.71, 0.66], pool=5000)  # data rework on the LoRA branch: no gain
    fused = [n for n in it3.create if n.modification.startswith("fusion")]
    assert fused, [n.modification for n in it3.create]
    assert "stagnated" in fused[0].rationale


def test_search_stops_at_tau_with_the_best_attempt():
    attempts = [as_attempt(start().create[0], 0.1)]
    done = run_iteration(attempts, type(start())(create=start().create[1:]), [0.97, 0.90])
    assert done.complete is not None and done.complete.reason == "TargetReached"
    assert done.complete.best == "t-i1-a" and done.create == ()


def test_search_stops_when_the_budget_is_spent():
    spec = parse_resource(tiny_adaptation(search={"maxAttempts": 2})).spec
    plan = reconcile("t", spec, [], 500)
    attempts = [as_attempt(n, s) for n, s in zip(plan.create, [0.1, 0.7, 0.6])]
    done = reconcile("t", spec, attempts, 500)
    assert done.complete.reason == "BudgetExhausted" and done.complete.best == "t-i1-a"


def test_a_twin_that_reused_an_identical_training_does_not_spend_the_budget():
    spec = parse_resource(tiny_adaptation(search={"maxAttempts": 2})).spec
    plan = reconcile("t", spec, [], 500)
    attempts = [as_attempt(n, s) for n, s in zip(plan.create, [0.1, 0.7, 0.6])]
    attempts[2].status.reused_from = "t-i1-a"  # i1-b built the same bytes as i1-a: nothing was trained
    more = reconcile("t", spec, attempts, 500)
    assert more.complete is None and len(more.create) == 1 and more.create[0].iteration == 2
    attempts.append(as_attempt(more.create[0], 0.8))
    done = reconcile("t", spec, attempts, 500)
    assert done.complete.reason == "BudgetExhausted" and "1 twin(s) that reused an identical training not counted" in done.complete.message


def test_a_fully_failed_iteration_pivots_then_gives_up():
    attempts = [as_attempt(start().create[0], 0.1)]
    plan = type(start())(create=start().create[1:])
    for new in plan.create:
        attempts.append(as_attempt(new, None, failed=True))
    pivot = reconcile("t", SPEC, attempts, 500)
    assert pivot.create and pivot.create[0].modification.startswith("pivot")
    for new in pivot.create:
        attempts.append(as_attempt(new, None, failed=True))
    gave_up = reconcile("t", SPEC, attempts, 500)
    assert gave_up.complete is not None and not gave_up.complete.succeeded


def test_the_same_pipeline_is_never_trained_twice():
    attempts = [as_attempt(start().create[0], 0.1)]
    plan = type(start())(create=start().create[1:])
    seen = set()
    for _ in range(4):
        for new in plan.create:
            from pioneer.core.graph import pipeline_key
            key = pipeline_key(new.pipeline)
            assert key not in seen
            seen.add(key)
        plan = run_iteration(attempts, plan, [0.85, 0.84])
        if plan.complete:
            break


def test_the_tuning_band_may_move_to_a_larger_base_model():
    spec = parse_resource(tiny_adaptation(search={"maxAttempts": 10, "largerBaseModels": ["mpnet"]})).spec
    plan = reconcile("t", spec, [], 500)
    attempts = [as_attempt(n, s) for n, s in zip(plan.create, [0.1, 0.90, 0.85])]
    nxt = reconcile("t", spec, attempts, 500)
    assert [n.modification for n in nxt.create][1] == "base model minilm -> mpnet"
    assert nxt.create[1].pipeline.hyperparameters.base_model == "mpnet"


def test_the_tuning_band_may_move_to_another_model_family_the_spec_allows():
    spec = parse_resource(tiny_adaptation(search={"maxAttempts": 10, "configurationsPerIteration": 3, "largerBaseModels": ["mpnet"], "backends": ["gliner2"]})).spec
    plan = reconcile("t", spec, [], 500)
    attempts = [as_attempt(n, s) for n, s in zip(plan.create, [0.1, 0.90, 0.85])]
    nxt = reconcile("t", spec, attempts, 500)
    moves = [n.modification for n in nxt.create]
    assert moves[1:3] == ["base model minilm -> mpnet", "backend transformers -> gliner2"]
    switched = nxt.create[2]
    assert switched.pipeline.hyperparameters.backend == "gliner2" and "GLiNER2" in switched.rationale
    # without search.backends the family never changes
    plain = parse_resource(tiny_adaptation(search={"maxAttempts": 10})).spec
    attempts = [as_attempt(n, s) for n, s in zip(reconcile("t", plain, [], 500).create, [0.1, 0.90, 0.85])]
    assert not any("backend" in n.modification for n in reconcile("t", plain, attempts, 500).create)


def test_regressions_from_an_unconverged_repair_train_longer_first():
    from pioneer.core import planner

    parent = as_attempt(start().create[1], 0.79, loss=1.41)
    parent.status.regressions, parent.status.cross_checkpoint_regressions = 0, 6
    first, *rest = planner.after_regressions(parent, epsilon=2)
    assert first.modification.startswith("epochs") and "not converged" in first.rationale and first.evidence["train_loss"] == 1.41
    assert [p.modification for p in rest][:3] == ["preserve: distillation", "preserve: interpolation", "preserve: confidenceReplay"]


PROFILE = {"count": 10, "pairs": [{"label": "a", "prediction": "b", "count": 7}, {"label": "c", "prediction": "a", "count": 3}],
           "parent_margin_median": 0.6, "regression_set_margin_median": 0.8, "near_fixed_failures": 2, "near_similarity": 0.5}


def converged_with(profile: dict) -> object:
    parent = as_attempt(start().create[1], 0.99, loss=0.01)
    parent.status.regressions, parent.status.cross_checkpoint_regressions = 10, 0
    parent.status.regression_profile = profile
    return parent


def test_regressions_are_answered_with_a_preservation_objective_chosen_from_their_profile():
    from pioneer.core import planner

    proposals = planner.after_regressions(converged_with(PROFILE), epsilon=2)
    first = proposals[0]
    assert first.modification == "preserve: distillation" and first.pipeline.strategy.distillation > 0
    # the rationale cites the figures it rests on
    assert "a->b x7" in first.rationale and "0.60" in first.rationale and "0.80" in first.rationale and "2 of 10" in first.rationale
    assert first.evidence["regression_profile"]["pairs"][0] == {"label": "a", "prediction": "b", "count": 7}
    # after the objectives: the gentler moves
    assert [p.modification.split()[0] for p in proposals[3:]] == ["replay", "learning", "epochs"]

    # flips where the parent itself was unsure: fragile boundaries get the replay weight first
    fragile = planner.after_regressions(converged_with({**PROFILE, "parent_margin_median": 0.2}), epsilon=2)
    assert fragile[0].modification == "preserve: confidenceReplay" and fragile[0].pipeline.strategy.confidence_replay > 0
    # flips next to fixes corrected to the label they moved to: mix back toward the parent first
    pulled = planner.after_regressions(converged_with({**PROFILE, "near_fixed_failures": 6}), epsilon=2)
    assert pulled[0].modification == "preserve: interpolation" and pulled[0].pipeline.strategy.interpolation


def test_preservation_objectives_accumulate_and_other_tasks_get_the_gentler_moves():
    from pioneer.core import planner

    parent = converged_with(PROFILE)
    parent.spec.pipeline = parent.spec.pipeline.model_copy(update={"strategy": parent.spec.pipeline.strategy.model_copy(update={"distillation": 1.0})})
    proposals = planner.after_regressions(parent, epsilon=2)
    assert proposals[0].modification == "preserve: interpolation (with distillation)"
    assert proposals[0].pipeline.strategy.preserving() == ["distillation", "interpolation"]
    assert "preserve" not in " ".join(p.modification for p in planner.after_regressions(parent, epsilon=2, classification=False))


def test_ner_first_iteration_contrasts_entity_diversification():
    doc = tiny_adaptation(search={"maxAttempts": 10, "parallelism": 2})
    doc["spec"]["task"] = {"description": "find names", "type": "ner"}
    plan = start(parse_resource(doc).spec)
    a, b = [n for n in plan.create if n.iteration == 1]
    assert a.pipeline.data.entity_max_repeats == 3 and b.pipeline.data.entity_max_repeats == 0
    assert "diversification" in b.modification and "§2.3" in b.rationale


def test_generation_first_iteration_contrasts_the_system_prompt():
    doc = tiny_adaptation(search={"maxAttempts": 10, "parallelism": 2})
    doc["spec"]["task"] = {"description": "Answer science questions.", "type": "generation", "answerFormat": "answerLetter"}
    plan = start(parse_resource(doc).spec)
    a, b = [n for n in plan.create if n.iteration == 1]
    assert a.pipeline.hyperparameters.system_prompt is None
    assert b.pipeline.hyperparameters.system_prompt == "Answer science questions. Reply with the letter of the correct option."


def test_generation_data_rework_trains_longer_instead_of_reworking_pairs_it_does_not_have():
    from pioneer.core import planner

    doc = tiny_adaptation(search={"maxAttempts": 10, "parallelism": 2})
    doc["spec"]["task"] = {"description": "Answer science questions.", "type": "generation", "answerFormat": "answerLetter"}
    spec = parse_resource(doc).spec
    first = next(n for n in start(spec).create if n.iteration == 1)
    parent = as_attempt(first, 0.35).model_copy(update={"spec": as_attempt(first, 0.35).spec.model_copy(update={"task": spec.task})})
    moves = [p.modification for p in planner.proposals(parent, pool_size=200)]
    assert moves[0].startswith("epochs") and "every available example" in planner.proposals(parent, 200)[0].rationale
    assert not any(m.startswith(("hard negatives", "label ratio")) for m in moves)  # no-ops for a sampled answer set


@pytest.mark.parametrize("mode", ["coldStart", "production"])
def test_the_decision_log_evidence_is_read_from_each_attempts_own_pipeline(mode):
    doc = tiny_adaptation(search={"maxAttempts": 10, "configurationsPerIteration": 3})
    if mode == "production":
        doc["spec"].update(mode="production", deployedModel="lights", data={"sources": [{"traces": "t.db"}]})
    spec = parse_resource(doc).spec
    plan = reconcile("t", spec, [], pool_size=500)
    configured = plan.create[1].pipeline.model_dump(by_alias=True)
    for new in plan.create[1:]:
        assert new.evidence["changedFrom"] == "the spec's configuration"
        mine = new.pipeline.model_dump(by_alias=True)
        for field, (before, after) in new.evidence["changed"].items():  # every recorded change is the attempt's own
            section, key = field.split(".")
            assert configured[section][key] == before and mine[section][key] == after
        if mode == "production":
            assert new.evidence["replay_share"] == new.pipeline.data.replay_share  # not the sibling's value
    assert plan.create[2].evidence["changed"]  # a sibling differs from the configuration, and says in what
    attempts = [as_attempt(n, s) for n, s in zip(plan.create, [0.3, 0.5, 0.6, 0.4])]
    nxt = reconcile("t", spec, attempts, pool_size=500).create
    for new in nxt:
        parent = next(a for a in attempts if a.metadata.name == new.parent)
        assert new.evidence["changedFrom"] == parent.metadata.name
        flat = {f"{s}.{k}": v for s, d in new.pipeline.model_dump(by_alias=True).items() for k, v in d.items()}
        assert all(flat[f] == after for f, (_, after) in new.evidence["changed"].items())


def test_among_equal_scores_the_attempt_that_broke_less_is_best():
    from pioneer.core.graph import Graph

    plan = start()
    a, b = (as_attempt(n, 1.0) for n in plan.create[1:3])
    a.status.regressions, b.status.regressions, b.status.cross_checkpoint_regressions = 2, 0, 1
    assert Graph.of([a, b]).best().metadata.name == b.metadata.name
    b.status.cross_checkpoint_regressions = 2
    assert Graph.of([a, b]).best().metadata.name == a.metadata.name  # a tie on both: the earlier attempt


def test_the_specs_strategy_is_the_first_attempts_strategy():
    from pioneer.api.models import ModelAdaptationSpec

    spec = ModelAdaptationSpec.model_validate({
        **tiny_adaptation()["spec"], "mode": "production", "deployedModel": "intents",
        "data": {"sources": [{"traces": "traces.db"}]}, "strategy": {"confidenceReplay": 2.0, "interpolation": True}})
    plan = reconcile("r", spec, [], pool_size=200)
    trained = [n for n in plan.create if not n.name.endswith("-baseline")]
    assert trained and trained[0].pipeline.strategy.confidence_replay == 2.0 and trained[0].pipeline.strategy.interpolation
    default = reconcile("r", spec.model_copy(update={"strategy": type(spec.strategy)()}), [], pool_size=200)
    assert [n for n in default.create if not n.name.endswith("-baseline")][0].pipeline.strategy.preserving() == []


def production_spec(max_attempts: int = 20):
    doc = tiny_adaptation(search={"maxAttempts": max_attempts, "parallelism": 2})
    doc["spec"].update(mode="production", deployedModel="lights", data={"sources": [{"traces": "t.db"}]})
    return parse_resource(doc).spec


def run_repair_iteration(spec, attempts, plan, outcomes):
    """outcomes: (score, regressions) per new attempt, in order."""
    for new, (s, regressions) in zip(plan.create, outcomes):
        attempt = as_attempt(new, s, loss=0.01)
        attempt.status.regressions, attempt.status.cross_checkpoint_regressions = regressions, 0
        attempts.append(attempt)
    return reconcile("t", spec, attempts, pool_size=500)


def test_a_repair_whose_regressions_stop_falling_for_two_iterations_ends_with_the_counts_as_its_reason():
    spec = production_spec()
    attempts: list = []
    plan = reconcile("t", spec, [], pool_size=500)
    plan = run_repair_iteration(spec, attempts, plan, [(0.5, 0), (0.99, 6), (0.99, 5)])  # baseline, iteration 1: fewest 5
    assert plan.create and plan.complete is None
    plan = run_repair_iteration(spec, attempts, plan, [(0.99, 5), (0.99, 7)])  # iteration 2: no fewer than 5
    assert plan.create and plan.complete is None  # one iteration without progress is not yet a stall
    plan = run_repair_iteration(spec, attempts, plan, [(0.99, 6), (0.95, 1)])  # iteration 3: 1 regression, but below tau
    done = plan.complete
    assert done is not None and done.reason == "RegressionsStalled" and not plan.create
    assert done.evidence["fewest_regressions_per_iteration"] == {"1": 5, "2": 5, "3": 6}
    assert "iteration 3: 6" in done.message and "epsilon 2" in done.message
    assert done.best == "t-i3-b"  # chosen as always, the best within epsilon first; the gate then refuses it below tau


def test_when_no_candidate_is_within_epsilon_the_one_that_broke_the_fewest_is_gated_and_named():
    spec = production_spec(max_attempts=2)
    attempts: list = []
    plan = reconcile("t", spec, [], pool_size=500)
    plan = run_repair_iteration(spec, attempts, plan, [(0.0, 0), (0.9991, 6), (0.9966, 3)])
    done = plan.complete
    assert done is not None and done.reason == "BudgetExhausted"
    assert done.best == "t-i1-b"  # 3 regressions: the nearest miss, not the higher score with 6
    below_tau = run_repair_iteration(spec, [], reconcile("t", spec, [], pool_size=500), [(0.0, 0), (0.99, 6), (0.5, 3)])
    assert below_tau.complete.best == "t-i1-a"  # a candidate under tau is no nearer a pass, however few it broke


@pytest.mark.parametrize("iteration_3", [[(0.99, 4), (0.99, 9)], [(0.5, 0), (0.6, 0)]],
                         ids=["fewer regressions than before", "no candidate reached tau"])
def test_a_repair_that_still_gets_closer_or_has_nothing_within_tau_is_not_stalled(iteration_3):
    spec = production_spec()
    attempts: list = []
    plan = reconcile("t", spec, [], pool_size=500)
    plan = run_repair_iteration(spec, attempts, plan, [(0.5, 0), (0.99, 6), (0.99, 5)])
    plan = run_repair_iteration(spec, attempts, plan, [(0.99, 5), (0.99, 7)])
    plan = run_repair_iteration(spec, attempts, plan, iteration_3)
    assert plan.complete is None and plan.create

