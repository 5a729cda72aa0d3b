"""AdaptFT-Bench protocol pieces: stages, the naive baseline's labels, the poison-filter and coverage figures."""

from pioneer.bench.adaptft import SCENARIOS, coverage_table, filter_quality, heldout_check, make_stages, naive_labels, score, write_report
from pioneer.data.bio import alignment_problem

LABELS = ["balance", "transfer", "oos"]
POOL = [(f"what is the balance of account {i}", "balance") if i % 2 else (f"send {i} dollars to my savings", "transfer")
        for i in range(3000)]


def test_three_stages_of_rising_poison_split_70_30_by_input():
    stages = make_stages(POOL, LABELS, "oos", per_stage=800, seed=0)
    assert len(stages) == 3
    rates = []
    for k, rows in enumerate(stages, start=1):
        assert {r["stage"] for r in rows} == {k}
        sources = {r["source"] for r in rows}
        test = {r["source"] for r in rows if r["split"] == "test"}
        assert len(sources) == 800 and len(test) == 240  # 70/30 by input
        for s in sources:  # copies of one input never straddle the split
            assert len({r["split"] for r in rows if r["source"] == s}) == 1
        firsts = [r for r in rows if r["id"].endswith("-0")]
        rates.append(sum(r["poisoned"] for r in firsts) / len(firsts))
    assert rates[0] < rates[1] < rates[2] and abs(rates[0] - 0.15) < 0.04 and abs(rates[2] - 0.40) < 0.05
    # a destroyed request's right answer is the out-of-scope label; a flipped log keeps the right answer
    rows = [r for st in stages for r in st]
    assert all(r["answer"] == "oos" for r in rows if "off_domain" in r["applied"])
    assert all(r["answer"] != r["reference"] for r in rows if r["applied"] == ["label_flip"])
    # same seed, same stages
    assert make_stages(POOL, LABELS, "oos", per_stage=800, seed=0) == stages


def test_naive_labels_follow_the_papers_review_rates():
    rows = ([{"text": f"c{i}", "applied": [], "poisoned": False, "answer": "balance", "reference": "balance"} for i in range(1000)]
            + [{"text": f"n{i}", "applied": ["typos"], "poisoned": False, "answer": "balance", "reference": "balance"} for i in range(2000)]
            + [{"text": f"p{i}", "applied": ["off_domain"], "poisoned": True, "answer": "oos", "reference": "transfer"} for i in range(2000)])
    preds = ["transfer"] * 3000 + ["balance"] * 2000  # the model fails every clean and noisy input
    labels = naive_labels(rows, preds, seed=0)
    clean, noisy, poison = labels[:1000], labels[1000:3000], labels[3000:]
    assert all(y == "balance" for _, y in clean)  # clean examples always get the right label
    uncorrected = sum(y == "transfer" for _, y in noisy) / 2000
    assert abs(uncorrected - 0.30) < 0.04  # 30% of noisy failures keep the model's wrong output
    wrong, right, own = (sum(y == v for _, y in poison) / 2000 for v in ("transfer", "oos", "balance"))
    assert abs(wrong - 0.5) < 0.04 and abs(right - 0.2) < 0.04 and abs(own - 0.3) < 0.04


def test_poison_filter_precision_recall_and_the_coverage_table():
    rows = [{"id": "a", "poisoned": True, "applied": ["gibberish"]}, {"id": "b", "poisoned": True, "applied": ["label_flip"]},
            {"id": "c", "poisoned": False, "applied": ["typos"]}, {"id": "d", "poisoned": False, "applied": []}]
    verdicts = {"a": "fail", "b": "fail", "c": "fail", "d": "pass"}
    q = filter_quality(rows, {"a", "c"}, verdicts)
    assert (q["precision"], q["recall"], q["true_positives"]) == (0.5, 0.5, 1)
    # the false positives on clean traffic: c (a clean failure) was set aside, d (clean, passing) was not
    assert (q["clean_set_aside"], q["clean"], q["clean_failures_set_aside"], q["clean_failures"]) == (1, 2, 1, 1)
    table = coverage_table(rows, verdicts,
                           {"a": "trained as 'oos': adversarial-or-malformed-input", "c": "excluded: off-domain-input"}, failure_set={"b"})
    by = {r["perturbation"]: r for r in table}
    assert by["gibberish"]["fixable"] is False and by["gibberish"]["action"] == "trained as 'oos': adversarial-or-malformed-input"
    assert by["typos"]["action"] == "excluded: off-domain-input"
    assert by["label_flip"]["action"] == "trained on (gold correction)" and by["typos"]["fixable"] is True
    assert "(none: clean input)" not in by  # d passed


def test_scores():
    assert score(["a", "b", "a"], ["a", "a", "a"], "accuracy", None) == 2 / 3
    assert score(["spam", "ham", "spam"], ["spam", "spam", "ham"], "f1", "spam") == 0.5
    # entity-level F1: one of two gold entities found, one spurious -> P = R = 1/2
    assert score(["B-PER O O B-ORG", "O O"], ["B-PER O O O", "B-LOC O"], "entityF1", None) == 0.5


SENTENCES = [(f"Smith met officials in Paris on day {i} .", "B-PER O O O B-LOC O O O O") if i % 2
             else (f"Shares of Acme fell {i} percent .", "O O B-ORG O O O O") for i in range(1500)]


def test_conll2003_stages_keep_every_scored_answer_a_tagging_of_its_input_and_naive_drops_tags_of_another_input():
    conll = SCENARIOS["conll2003"]
    types = conll.labels
    stages = make_stages(SENTENCES, types, conll.out_of_scope, per_stage=500, seed=0, perturb_one=conll.perturb(types))
    rows = [r for st in stages for r in st]
    scored = [r for r in rows if r["answer"] is not None]
    assert all(alignment_problem(r["text"].split(" "), r["answer"].split(" "), types) is None for r in scored)
    destroyed = [r for r in rows if r["answer"] is None]
    assert destroyed and all(r["poisoned"] for r in destroyed)  # an injection or an off-domain text has no right tagging
    flips = [r for r in rows if r["applied"] == ["label_flip"]]
    assert flips and all(r["reference"] != r["answer"] and conll.trainable(r["text"], r["reference"], types) for r in flips)
    # the naive pipeline trains on what its trainer can load: tags of another (destroyed) input are dropped
    preds = ["O " * (len(r["text"].split(" ")) - 1) + "O" for r in rows]
    naive = [x for x in naive_labels(rows, preds, seed=0) if x is not None and conll.trainable(*x, types)]
    assert all(alignment_problem(t.split(" "), y.split(" "), types) is None for t, y in naive)
    assert len(naive) < len(rows) and {(r["text"], r["reference"]) for r in flips} & set(naive)  # flipped tags still get through


def test_the_evaluate_step_keeps_a_retrain_only_if_it_does_not_score_lower_than_the_deployed_checkpoint():
    kept, reason = heldout_check(0.9209, 0.9209, candidate_revision=3, deployed_revision=2)
    assert kept and "kept" in reason  # a tie keeps the newer model
    kept, reason = heldout_check(0.9190, 0.9209, candidate_revision=3, deployed_revision=2)
    assert not kept
    assert reason == "held-out check: revision 3 scored 0.9190 < revision 2's 0.9209; rolled back to revision 2"


def test_the_report_shows_the_trajectory_and_every_rolled_back_retrain_with_its_reason(tmp_path):
    _, reason = heldout_check(0.90, 0.92, candidate_revision=3, deployed_revision=2)
    result = {"scenario": "clinc150", "metric": "accuracy", "heldout_size": 506, "final_gap": 11.9, "agent_monotone": True,
              "naive_final_below_c1": True, "deploy_check": "heldout",
              "checkpoints": [{"checkpoint": "C1", "poison_rate": 0.0, "agent": 0.84, "agent_candidate": None, "naive": 0.84},
                              {"checkpoint": "C2", "poison_rate": 0.15, "agent": 0.92, "agent_candidate": 0.92, "naive": 0.83},
                              {"checkpoint": "C3", "poison_rate": 0.25, "agent": 0.92, "agent_candidate": 0.90, "naive": 0.80}],
              "poison_filter": {"precision": 0.95, "recall": 0.9, "true_positives": 9, "excluded": 10, "poisoned": 10},
              "stages": [{"stage": 2, "poison_rate": 0.25, "failing": 60, "agent_promoted": True, "agent_gate": "score 1.0 >= tau",
                          "agent_heldout_check": reason, "poison_filter": {"precision": 0.9, "recall": 0.9}}],
              "failure_coverage": []}
    md = write_report(result, tmp_path / "adaptft.md").read_text()
    assert "rolled back to revision 2" in md and "| C3 | 25% | 0.92 | 0.9 | 0.8 |" in md
    assert "model selection on the held-out set" in md
    assert (tmp_path / "adaptft.png").read_bytes()[:4] == b"\x89PNG"
