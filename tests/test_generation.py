"""Generation trainer: chat-template prompts, assistant-only loss, EOS, LoRA, batched generation, metrics.

A tiny randomly initialised Llama with the bundled MiniLM tokenizer (given a chat template) stands in
for the decoder, so the tests run in seconds with no converted weights; `pioneer bench coldstart-arc`
runs the same code on SmolLM2-135M.
"""

from __future__ import annotations

import json

import pytest
import torch

from pioneer.api.models import Hyperparameters, TrainingAttemptSpec
from pioneer.trainer import generation
from pioneer.trainer.run import main as trainer_main


def test_only_the_answer_and_its_eos_are_learned(tiny_decoder):
    tok, _ = generation.load_for_training(Hyperparameters(base_model=tiny_decoder, method="full"), 0)
    ex = generation.encode_example(tok, "is the sky blue?", "yes", "Answer yes or no.", max_length=64)
    learned = [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != generation.IGNORE]
    assert tok.decode(learned) == "yes [SEP]"  # the answer, then EOS: the model learns to stop
    assert ex["labels"][: len(ex["labels"]) - len(learned)] == [generation.IGNORE] * (len(ex["labels"]) - len(learned))
    prompt = tok.decode(ex["input_ids"][: len(ex["input_ids"]) - len(learned)])
    assert "< system > answer yes or no. < user > is the sky blue?" in prompt and prompt.endswith("< assistant >")  # its own template


def test_a_long_prompt_loses_its_start_never_the_answer(tiny_decoder):
    tok, _ = generation.load_for_training(Hyperparameters(base_model=tiny_decoder, method="full"), 0)
    ex = generation.encode_example(tok, "word " * 200, "final answer", None, max_length=32)
    assert len(ex["input_ids"]) == 32
    assert tok.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != generation.IGNORE]) == "final answer [SEP]"


def test_logits_only_where_labels_are_learned_give_the_same_loss_and_gradients(tiny_decoder):
    from transformers import DataCollatorForSeq2Seq

    tok, model = generation.load_for_training(Hyperparameters(base_model=tiny_decoder, method="full"), 0)
    model.eval()  # no dropout: the two losses must match exactly
    items = [generation.encode_example(tok, prompt, answer, None, 64)
             for prompt, answer in [("is the sky blue?", "yes"), ("what colour is grass on a sunny summer day?", "green")]]
    slim = generation.AnswerLogitsCollator(tok)(items)
    assert int(slim["logits_to_keep"].sum()) == len(slim["shift_labels"]) == 2 + 2  # each answer word + its EOS
    full_loss = model(**DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=generation.IGNORE)(items)).loss
    full_loss.backward()
    full_grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    slim_loss = model(**slim).loss
    slim_loss.backward()
    assert slim_loss.item() == pytest.approx(full_loss.item(), rel=1e-5)
    assert torch.allclose(model.lm_head.weight.grad, full_grad, atol=1e-6)


def test_chain_of_thought_target_uses_the_teachers_rationale():
    row = {"text": "2+3?", "label": "5", "meta": {"rationale": "Two plus three is five."}}
    assert generation.target_text(row, "chainOfThought", "finalNumber") == "Two plus three is five.\n#### 5"
    assert generation.target_text(row, "direct", "finalNumber") == "5"
    assert generation.target_text({"text": "q", "label": "B"}, "chainOfThought", "answerLetter") == "B"  # no rationale: direct


def _attempt(tmp_path, base_model: str, epochs: float) -> TrainingAttemptSpec:
    rows = [{"text": f"question {i}: which option?", "label": "B", "id": f"q{i}"} for i in range(24)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
    eval_bytes = "".join(json.dumps(r) + "\n" for r in rows[16:]).encode()
    (tmp_path / "eval.jsonl").write_bytes(eval_bytes)
    import hashlib

    return TrainingAttemptSpec.model_validate({
        "adaptation": "gen", "iteration": 1, "modification": "test", "rationale": "test",
        "task": {"description": "answer with a letter", "type": "generation", "answerFormat": "answerLetter"},
        "pipeline": {"data": {"maxExamples": 100, "hardNegativeShare": 0, "maxLabelRatio": 3, "nearDuplicateSimilarity": 0.9},
                     "hyperparameters": {"baseModel": base_model, "method": "lora", "loraRank": 4, "learningRate": 5e-3,
                                         "epochs": epochs, "batchSize": 8, "maxLength": 48, "maxNewTokens": 4}},
        "inputs": {"trainUri": str(tmp_path / "train.jsonl"), "evalUri": str(tmp_path / "eval.jsonl"),
                   "evalSha256": hashlib.sha256(eval_bytes).hexdigest(), "regressionUri": str(tmp_path / "eval.jsonl")},
        "outputUri": str(tmp_path / "attempt"),
    })


def test_trainer_program_learns_the_answer_format_and_reports_format_failures(tiny_decoder, tmp_path):
    spec = _attempt(tmp_path, tiny_decoder, epochs=30)
    (tmp_path / "attempt.json").write_text(spec.model_dump_json(by_alias=True))
    assert trainer_main([str(tmp_path / "attempt.json")]) == 0
    out = tmp_path / "attempt" / "output"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric"] == "exactMatch" and metrics["score"] == metrics["exact_match"] == 1.0
    assert metrics["format_failure_rate"] == 0.0 and metrics["regressions"] == 0
    assert {"rouge1", "rouge2", "rougeL"} <= set(metrics) and metrics["training"]["chat_template"] is True
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(p["prediction"].strip().upper() == "B" for p in preds)  # it stops after the answer: EOS was learned
    tok, model = generation.load_trained(out / "model")  # LoRA merged: a plain causal LM folder
    assert generation.generate(model, tok, ["question 99: which option?"], None, 4) == ["b"]


def test_untrained_decoder_fails_on_format_not_silently(tiny_decoder, tmp_path):
    spec = _attempt(tmp_path, tiny_decoder, epochs=0)
    (tmp_path / "attempt.json").write_text(spec.model_dump_json(by_alias=True))
    assert trainer_main([str(tmp_path / "attempt.json")]) == 0
    metrics = json.loads((tmp_path / "attempt" / "output" / "metrics.json").read_text())
    assert metrics["format_failure_rate"] > 0.5 and metrics["score"] < 0.5


def test_cold_start_generation_end_to_end(tiny_decoder, write_spec, tmp_path):
    from pioneer.cli import main

    rows = [{"text": f"Question {i}: pick one.\n A. x\n B. y\nAnswer:", "label": "B"} for i in range(40)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "qa"},
           "spec": {"task": {"description": "Answer with a letter.", "type": "generation", "answerFormat": "answerLetter"},
                    "data": {"sources": [{"path": "qa.jsonl"}], "evaluation": {"size": 10}},
                    "hyperparameters": {"baseModel": tiny_decoder, "method": "lora", "loraRank": 4, "learningRate": 5e-3,
                                        "epochs": 15, "batchSize": 8, "maxLength": 48, "maxNewTokens": 4},
                    "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
                    "artifacts": {"uri": str(tmp_path / "art")}}}
    assert main(["run", str(write_spec(doc)), "--quiet"]) == 0
    root = tmp_path / "art" / "qa"
    assert json.loads((root / "eval" / "manifest.json").read_text())["size"] == 10  # frozen before training
    curation = json.loads((root / "attempts" / "qa-i1-a" / "curation.json").read_text())
    assert curation["size"] == 30 and curation["rules"][0]["rule"] == "sample"  # the 30 not held out
    baseline = json.loads((root / "attempts" / "qa-baseline" / "output" / "metrics.json").read_text())
    trained = json.loads((root / "attempts" / "qa-i1-a" / "output" / "metrics.json").read_text())
    assert trained["score"] == 1.0 > baseline["score"] and trained["format_failure_rate"] < baseline["format_failure_rate"]
    assert "Format failures" in (root / "report" / "report.md").read_text()
