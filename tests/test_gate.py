"""The regression gate: nothing worse is ever deployed, and every refusal says why."""

from __future__ import annotations

from collections import Counter

import pytest

from pioneer.api.models import DeployedModelStatus, Revision
from pioneer.core import gate


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


@pytest.mark.parametrize("score, regressions, cross, passed, words", [
    (0.99, ["x"], [], True, "score 0.9900 >= tau"),
    (0.95, [], [], False, "< tau 0.96"),
    (0.99, ["x", "y", "z"], [], False, "3 regressions on previously passing traces > epsilon 2"),
    (0.99, [], ["p", "q", "r"], False, "previous checkpoint's evaluation set"),
    (0.99, ["x", "y"], None, True, "2 regressions <= epsilon 2"),
])
def test_production_verdicts(score, regressions, cross, passed, words):
    v = gate.production_verdict(score, 0.96, regressions, 2, cross, "now")
    assert v.passed is passed and words in v.reason
    if not passed:
        assert v.regressed_examples == regressions + (cross or [])


def test_a_refusal_leaves_the_served_revision_and_a_pass_appends_one():
    status = DeployedModelStatus(current_revision=1, model_uri="m1",
                                 revisions=[Revision(revision=1, model_uri="m1")])
    candidate = Revision(revision=1, model_uri="m2")
    refused = gate.promote(status, gate.production_verdict(0.5, 0.96, [], 2, [], "t"), candidate)
    assert refused.current_revision == 1 and refused.model_uri == "m1" and len(refused.revisions) == 1
    assert refused.last_verdict.passed is False
    promoted = gate.promote(status, gate.production_verdict(0.99, 0.96, [], 2, [], "t"), candidate)
    assert promoted.current_revision == 2 and promoted.model_uri == "m2" and [r.revision for r in promoted.revisions] == [1, 2]
    back = gate.rollback(promoted, 1, "t")
    assert back.current_revision == 1 and back.model_uri == "m1" and len(back.revisions) == 2
    assert back.last_verdict.reason == "explicit rollback to revision 1"
    assert gate.rollback(promoted, 1, "t", reason="scored lower on the held-out set").last_verdict.reason == "scored lower on the held-out set"
    with pytest.raises(ValueError, match="no revision 7"):
        gate.rollback(promoted, 7, "t")
