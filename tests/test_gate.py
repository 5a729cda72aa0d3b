"""The regression gate: nothing worse is ever deployed, and every refusal says which check failed and why."""

from __future__ import annotations

from collections import Counter

import pytest

from pioneer.api.models import DeployedModelStatus, GateVerdict, Revision
from pioneer.core import gate

PRODUCTION = gate.Limits(tau=0.96, epsilon=2, production=True)
COLD = gate.Limits(tau=0.5, epsilon=2, production=False)


def test_the_regression_set_is_30_to_100_percent_of_the_failures():
    assert gate.regression_set_size(failures=200, passing=1000, fraction=0.1) == 60
    assert gate.regression_set_size(failures=200, passing=1000, fraction=2.0) == 200
    assert gate.regression_set_size(failures=200, passing=50) == 50
    assert gate.regression_set_size(failures=0, passing=50) == 0


def test_the_regression_set_is_stratified_and_seeded():
    rows = [{"id": i, "label": "a" if i < 80 else "b"} for i in range(100)]
    sample = gate.stratified_sample(rows, 20, "label", seed=1)
    assert Counter(r["label"] for r in sample) == {"a": 16, "b": 4}
    assert sample == gate.stratified_sample(rows, 20, "label", seed=1)


def _production(score, regressed, cross):
    return gate.Candidate("c", score, len(regressed), None if cross is None else len(cross), tuple(regressed + (cross or [])))


@pytest.mark.parametrize("score, regressions, cross, passed, failed_checks, words", [
    (0.99, ["x"], [], True, [], "c scored 0.9900 >= tau 0.96 on the failure set"),
    (0.95, [], [], False, ["score"], "< tau 0.96"),
    (0.99, ["x", "y", "z"], [], False, ["regressions"], "3 regressions on previously passing traces > epsilon 2"),
    (0.99, [], ["p", "q", "r"], False, ["crossCheckpoint"], "3 regressions on the previous checkpoint's evaluation set > epsilon 2"),
    (0.99, ["x", "y"], None, True, [], "2 regressions on previously passing traces <= epsilon 2"),
    (0.90, ["x", "y", "z"], ["p", "q", "r"], False, ["score", "regressions", "crossCheckpoint"], "> epsilon 2"),
])
def test_production_verdicts_name_every_check_with_its_value_and_limit(score, regressions, cross, passed, failed_checks, words):
    v = gate.assess(_production(score, regressions, cross), PRODUCTION)
    assert v.passed is passed and words in v.reason
    assert [c.name for c in v.checks if not c.passed] == failed_checks
    by_name = {c.name: c for c in v.checks}
    assert by_name["score"].value == score and by_name["score"].limit == 0.96
    assert by_name["regressions"].value == len(regressions) and by_name["regressions"].limit == 2
    assert ("crossCheckpoint" in by_name) is (cross is not None)
    assert v.regressed_examples == regressions + (cross or []) and v.regressed_examples_total == len(v.regressed_examples)


def test_the_worst_check_wins_and_examples_are_capped_with_a_count():
    many = [f"t{i}" for i in range(120)]
    v = gate.assess(_production(1.0, many, []), PRODUCTION)
    assert not v.passed and len(v.regressed_examples) == 50 and v.regressed_examples_total == 120
    # a passing verdict lists every check; a refusal lists only the failed ones
    assert v.reason == "120 regressions on previously passing traces > epsilon 2"


def test_a_cold_start_candidate_below_the_untrained_baseline_is_refused_even_above_tau():
    refs = gate.References(baseline=0.70, baseline_name="the untrained base model")
    v = gate.assess(gate.Candidate("tiny-i1-a", 0.50), COLD, refs)
    assert not v.passed
    assert [c.name for c in v.checks if not c.passed] == ["notBelowBaseline"]
    assert "score 0.5000 < the untrained base model 0.7000" in v.reason
    assert gate.assess(gate.Candidate("tiny-i1-a", 0.71), COLD, refs).passed


def test_a_candidate_below_the_served_revision_on_the_same_set_is_refused():
    refs = gate.References(current_revision=1, current_score=0.687)
    v = gate.assess(gate.Candidate("tiny-i1-a", 0.60), COLD, refs)
    assert not v.passed and "the served revision 1's 0.6870 on the same evaluation set" in v.reason


def test_no_model_is_a_refusal():
    v = gate.assess(gate.Candidate(None, None), COLD)
    assert not v.passed and [c.name for c in v.checks] == ["modelProduced"]


def test_a_refusal_leaves_the_served_revision_and_a_pass_appends_one():
    status = DeployedModelStatus(current_revision=1, model_uri="m1",
                                 revisions=[Revision(revision=1, model_uri="m1")])
    candidate = Revision(revision=1, model_uri="m2", attempt="a-i1-a", adaptation="a", model_sha256="s2")
    refused = gate.promote(status, gate.assess(gate.Candidate("a-i1-a", 0.5), PRODUCTION), candidate)
    assert refused.current_revision == 1 and refused.model_uri == "m1" and len(refused.revisions) == 1
    assert refused.last_verdict.passed is False
    assert [(c.type, c.status, c.reason) for c in refused.conditions] == [("GatePassed", "False", "GateFailed")]
    passing = gate.assess(gate.Candidate("a-i1-a", 0.99, 0), PRODUCTION)
    promoted = gate.promote(status, passing, candidate)
    assert promoted.current_revision == 2 and promoted.model_uri == "m2" and [r.revision for r in promoted.revisions] == [1, 2]
    assert [(c.type, c.status, c.reason) for c in promoted.conditions] == [("GatePassed", "True", "Promoted")]
    back = gate.rollback(promoted, 1, "t")
    assert back.current_revision == 1 and back.model_uri == "m1" and len(back.revisions) == 2
    assert back.last_verdict.reason == "explicit rollback to revision 1"
    assert gate.rollback(promoted, 1, "t", reason="scored lower on the held-out set").last_verdict.reason == "scored lower on the held-out set"
    with pytest.raises(ValueError, match="no revision 7"):
        gate.rollback(promoted, 7, "t")


def test_promotion_is_idempotent_keyed_by_the_attempt():
    status = DeployedModelStatus(current_revision=1, model_uri="m1", revisions=[Revision(revision=1, model_uri="m1")])
    candidate = Revision(revision=1, model_uri="m2", attempt="a-i1-a", adaptation="a", model_sha256="s2")
    verdict = GateVerdict(passed=True, attempt="a-i1-a", reason="ok")
    once = gate.promote(status, verdict, candidate)
    twice = gate.promote(once, verdict, candidate)  # the same verdict applied again after a crash
    assert [r.revision for r in twice.revisions] == [1, 2] and twice.current_revision == 2
    other = gate.promote(twice, GateVerdict(passed=True, attempt="b-i1-a"), candidate.model_copy(update={"attempt": "b-i1-a"}))
    assert [r.revision for r in other.revisions] == [1, 2, 3]
