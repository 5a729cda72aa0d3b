"""Regression-aware retraining: the preservation objectives' arithmetic, and the regression profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pioneer.trainer import preservation as pv
from pioneer.trainer.fit import preserving_loss


def test_the_parents_probabilities_follow_the_candidates_label_order():
    probs = np.array([[0.7, 0.2, 0.1]])
    assert pv.aligned_probs(probs, ["a", "b", "c"], ["c", "a", "b"])[0].tolist() == pytest.approx([0.1, 0.7, 0.2])
    # a label the parent never had gets no mass; the rest is renormalised
    assert pv.aligned_probs(probs, ["a", "b", "c"], ["a", "b", "new"])[0].tolist() == pytest.approx([0.7 / 0.9, 0.2 / 0.9, 0.0])


def test_margin_is_the_labels_probability_minus_the_best_other():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    assert pv.label_margin(probs, [0, 0]).tolist() == pytest.approx([0.3, -0.3])


def test_an_under_confident_parent_is_sharpened_by_temperature_scaling():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=400)
    logits = rng.normal(size=(400, 5)) * 0.05
    logits[np.arange(400), labels] += 0.1  # right ranking most of the time, nearly flat probabilities
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = pv.calibrated_temperature(probs, labels.tolist())
    assert t < 0.5
    assert pv.tempered(probs, t).max(axis=1).mean() > probs.max(axis=1).mean() + 0.1


def test_a_fixed_distillation_temperature_overrides_the_calibration():
    probs = np.array([[0.4, 0.35, 0.25], [0.3, 0.45, 0.25]])
    assert pv.parent_temperature(3.0, probs, [0, 1]) == (3.0, "fixed")
    t, rule = pv.parent_temperature(None, probs, [0, 1])
    assert t != 3.0 and t < 1.0 and rule.startswith("calibrated")


def test_replay_weights_favour_the_parents_fragile_boundaries_and_leave_corrections_alone():
    roles = ["gold", "replay", "replay", "hard_negative", "replay"]
    margins = np.array([0.0, 0.9, 0.1, 0.0, -0.4])
    w = pv.replay_weights(roles, margins, strength=2.0)
    assert w[0] == 1.0 and w[3] == 1.0  # corrections and hard negatives keep weight 1
    assert w[2] > w[1] > 1.0  # the less sure the parent, the more weight
    assert w[4] == pytest.approx(3.0)  # the parent was wrong there: the full weight, clipped


def test_tempered_distribution_flattens_with_temperature():
    p = np.array([[0.9, 0.09, 0.01]])
    assert pv.tempered(p, 1.0)[0].tolist() == pytest.approx(p[0].tolist(), rel=1e-5)
    assert pv.tempered(p, 4.0)[0, 0] < 0.9 and pv.tempered(p, 4.0)[0, 2] > 0.01


def test_distillation_pulls_toward_the_parent_only_on_the_marked_rows():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0])
    teacher = torch.tensor([[0.1, 0.9], [0.1, 0.9]])
    plain = preserving_loss(logits, labels, None, None, None, 0.0)
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    loss = preserving_loss(logits, labels, None, teacher, torch.tensor([1.0, 0.0]), 1.0)
    loss.backward()
    # the distilled row is pushed toward class 1 (its gradient on logit 1 is negative), the other only by cross-entropy
    assert logits.grad[0, 1] < logits.grad[1, 1] < 0 or logits.grad[0, 1] < 0 < logits.grad[1, 1]
    assert logits.grad[1, 1] > 0  # cross-entropy alone pushes class 1 down on the undistilled row


def test_weighted_cross_entropy_counts_heavier_rows_more():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0])  # the first row is wrong, the second right
    light = preserving_loss(logits, labels, torch.tensor([1.0, 1.0]), None, None, 0.0)
    heavy_wrong = preserving_loss(logits, labels, torch.tensor([3.0, 1.0]), None, None, 0.0)
    assert heavy_wrong > light


def test_interpolation_mixes_float_weights_and_keeps_integer_buffers():
    parent = {"w": torch.zeros(2), "ids": torch.tensor([1, 2])}
    candidate = {"w": torch.ones(2), "ids": torch.tensor([3, 4])}
    mixed = pv.mix(parent, candidate, 0.25)
    assert mixed["w"].tolist() == [0.25, 0.25] and mixed["ids"].tolist() == [3, 4]
    assert pv.compatible(parent, candidate) is None
    assert "shape" in pv.compatible(parent, {"w": torch.ones(3), "ids": candidate["ids"]})
    assert "not the same base model" in pv.compatible(parent, {"w": torch.ones(2)})


def test_the_mix_kept_is_the_least_churn_that_still_reaches_tau():
    results = [{"alpha": 1.0, "failure_score": 0.99, "validation_churn": 9},
               {"alpha": 0.7, "failure_score": 0.97, "validation_churn": 3},
               {"alpha": 0.5, "failure_score": 0.96, "validation_churn": 3},
               {"alpha": 0.3, "failure_score": 0.60, "validation_churn": 0}]
    chosen, rule = pv.choose_alpha(results, tau=0.96)
    assert chosen["alpha"] == 0.7 and "tau 0.96" in rule  # ties on churn: the larger alpha, nearer the trained candidate
    chosen, rule = pv.choose_alpha(results, tau=0.995)
    assert chosen["alpha"] == 1.0 and "no mix reaches" in rule


def test_the_validation_slice_comes_from_replayed_passing_traces_only():
    rows = ([{"text": f"g{i}", "label": "a", "role": "gold"} for i in range(10)]
            + [{"text": f"p{i}", "label": "a", "role": "replay", "meta": {"source": "parent"}} for i in range(10)]
            + [{"text": f"t{i}", "label": "a", "role": "replay", "meta": {"source": "passing"}} for i in range(20)])
    train, held = pv.validation_split(rows, seed=0, share=0.25)
    assert len(held) == 5 and all(r["text"].startswith("t") for r in held)
    assert len(train) == 35 and not {r["text"] for r in held} & {r["text"] for r in train}
    assert pv.validation_split(rows, seed=0, share=0.25)[1] == held  # seeded


def test_regression_profile_names_the_flipped_pairs_the_margins_and_the_fixes_nearby():
    regressed = [{"text": "show my todo list please", "label": "todo_list", "prediction": "todo_list_update"},
                 {"text": "what's on my todo list", "label": "todo_list", "prediction": "todo_list_update"},
                 {"text": "is it cold in Oslo", "label": "weather", "prediction": "time"}]
    failures = [{"text": "add milk to my todo list please", "label": "todo_list_update"},
                {"text": "what time is it in Oslo", "label": "time"}]
    prof = pv.regression_profile(regressed, np.array([0.9, 0.8, 0.7, 0.2]), np.array([0.1, 0.2, 0.3]), failures, near=0.3)
    assert prof["count"] == 3
    assert prof["pairs"][0] == {"label": "todo_list", "prediction": "todo_list_update", "count": 2}
    assert prof["parent_margin_median"] == 0.2 and prof["regression_set_margin_median"] == 0.75
    assert 1 <= prof["near_fixed_failures"] <= 3


# --------------------------------------------------------------------------- through the trainer program, with a real parent

LABELS = ["on", "off"]
THINGS = ("lamp", "tv", "fan", "heater", "radio", "light", "porch light", "oven", "kettle", "stereo")


def _attempt(tmp_path, name: str, rows: list, strategy: dict, parent: str | None = None, failures: list | None = None,
             regression: list | None = None):
    import json

    from conftest import tiny_adaptation
    from pioneer.api.models import AttemptInputs, Gate, TrainingAttemptSpec
    from pioneer.api.validation import parse_resource
    from pioneer.core.planner import initial_pipeline
    from pioneer.data.evalset import serialize, sha256
    from pioneer.data.examples import Example

    spec = parse_resource(tiny_adaptation(task={"labels": LABELS})).spec
    pipe = initial_pipeline(spec)
    pipe = pipe.model_copy(update={
        "hyperparameters": pipe.hyperparameters.model_copy(update={"epochs": 2, "learning_rate": 3e-4, "batch_size": 8}),
        "strategy": pipe.strategy.model_copy(update=strategy)})
    evalset = serialize(failures or [Example("switch on the kettle", "on"), Example("switch off the kettle", "off")])
    (tmp_path / f"{name}-eval.jsonl").write_bytes(evalset)
    (tmp_path / f"{name}-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reg_uri = None
    if regression:
        (tmp_path / f"{name}-regression.jsonl").write_bytes(serialize(regression))
        reg_uri = str(tmp_path / f"{name}-regression.jsonl")
    folder = tmp_path / name
    folder.mkdir()
    ts = TrainingAttemptSpec(adaptation="t", iteration=1, modification="test", rationale="test", task=spec.task, labels=LABELS,
                             pipeline=pipe, gate=Gate(tau=0.5),
                             inputs=AttemptInputs(train_uri=str(tmp_path / f"{name}-train.jsonl"), eval_uri=str(tmp_path / f"{name}-eval.jsonl"),
                                                  eval_sha256=sha256(evalset), regression_uri=reg_uri, parent_model_uri=parent),
                             output_uri=str(folder))
    (folder / "attempt.json").write_text(json.dumps(ts.dump()))
    return folder


def _train(python, folder):
    import json
    import subprocess

    proc = subprocess.run([python, "-m", "pioneer.trainer", str(folder / "attempt.json"), "--threads", "1"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((folder / "output" / "metrics.json").read_text())


@pytest.mark.slow
def test_the_trainer_trains_with_every_objective_against_its_parent_and_records_what_it_did(tmp_path, python):
    from pioneer.data.examples import Example

    parent_rows = [{"text": f"please turn {w} the {x}", "label": w} for w in LABELS for x in THINGS]
    _train(python, parent := _attempt(tmp_path, "parent", parent_rows, {}))
    rows = ([{"text": f"switch {w} the {x}", "label": w, "role": "gold"} for w in LABELS for x in THINGS[:4]]
            + [{**r, "role": "replay", "meta": {"source": "parent"}} for r in parent_rows[::2]]
            + [{"text": f"could you turn {w} the {x}", "label": w, "role": "replay", "meta": {"source": "passing"}}
               for w in LABELS for x in THINGS])
    regression = [Example(f"turn {w} my {x}", w) for w in LABELS for x in THINGS[:5]]
    folder = _attempt(tmp_path, "repair", rows, {"distillation": 1.0, "confidence_replay": 2.0, "interpolation": True},
                      parent=str(parent / "output" / "model"), regression=regression)
    metrics = _train(python, folder)
    facts = metrics["training"]
    assert facts["objectives"] == ["distillation", "confidenceReplay", "interpolation"]
    # distilled: the replayed rows left after the validation slice (the gold corrections never)
    assert facts["preservation"]["distilled_rows"] == len(rows) - 8 - facts["interpolation_validation"]
    assert facts["interpolation_validation"] == 4  # 20% of the 20 replayed passing traces, held out of training
    assert facts["preservation"]["parent_temperature"] > 0 and facts["preservation"]["replay_weight_mean"] > 1.0
    mix = facts["interpolation"]
    assert [g["alpha"] for g in mix["grid"]] == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] and mix["alpha"] in [g["alpha"] for g in mix["grid"]]
    assert "tau 0.5" in mix["rule"]
    # the saved model is the chosen mix: its score on the failure set is the one recorded for that alpha
    assert metrics["score"] == pytest.approx(next(g["failure_score"] for g in mix["grid"] if g["alpha"] == mix["alpha"]), abs=1e-4)
    if metrics["regressions"]:
        assert metrics["regression_profile"]["count"] == metrics["regressions"]


@pytest.mark.slow
def test_an_objective_without_a_parent_fails_the_attempt_clearly(tmp_path, python):
    import subprocess

    folder = _attempt(tmp_path, "alone", [{"text": "turn on the lamp", "label": "on"}, {"text": "turn off the lamp", "label": "off"}],
                      {"distillation": 1.0})
    proc = subprocess.run([python, "-m", "pioneer.trainer", str(folder / "attempt.json"), "--threads", "1"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1 and "needs the deployed parent" in (folder / "failure.json").read_text()


@pytest.mark.slow
def test_a_parent_whose_files_do_not_match_its_recorded_hash_is_refused(tmp_path, python):
    import json
    import subprocess

    rows = [{"text": f"turn {w} the lamp", "label": w} for w in LABELS]
    _train(python, parent := _attempt(tmp_path, "parent", rows, {}))
    folder = _attempt(tmp_path, "repair", [{**r, "role": "replay"} for r in rows], {"distillation": 1.0},
                      parent=str(parent / "output" / "model"))
    spec = json.loads((folder / "attempt.json").read_text())
    spec["inputs"]["parentModelSha256"] = "0" * 64  # the promoted parent's files changed after promotion
    (folder / "attempt.json").write_text(json.dumps(spec))
    proc = subprocess.run([python, "-m", "pioneer.trainer", str(folder / "attempt.json"), "--threads", "1"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1 and "parent model" in (folder / "failure.json").read_text()


def test_the_confusable_preset_is_the_closest_intent_pairs_taken_without_reuse():
    from pioneer.bench.repair_clinc import CONFUSABLE_INTENTS, INTENTS, confusable_intents, specs

    vectors = {"a": [1.0, 0.0, 0.0], "b": [0.99, 0.14, 0.0], "c": [0.97, 0.0, 0.24], "d": [0.0, 1.0, 0.0], "e": [0.0, 0.96, 0.28],
               "f": [0.0, 0.0, 1.0]}
    utterances = [(f"{lab}{i}", lab) for lab in vectors for i in range(2)]

    def embed(texts):
        rows = np.array([vectors[t[0]] for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)
    pairs = confusable_intents(utterances, embed, n=4)
    assert [(a, b) for _, a, b in pairs] == [("a", "b"), ("d", "e")]  # a-c is close too, but a is taken
    assert len(CONFUSABLE_INTENTS) == len(set(CONFUSABLE_INTENTS)) == 30
    deploy, repair = specs(CONFUSABLE_INTENTS)
    assert deploy["spec"]["task"]["labels"] == repair["spec"]["task"]["labels"] == CONFUSABLE_INTENTS
    assert specs(INTENTS)[1]["spec"]["task"]["labels"] == INTENTS
