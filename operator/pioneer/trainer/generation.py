"""Generation: decoder LoRA fine-tuning of a small causal LM (peft), scored by answer extraction or ROUGE.

Prompts go through the model's own chat template, in training and at inference alike (train/serve
parity); the loss covers only the assistant's tokens; every target ends with the EOS token so base
models learn to stop. A model without a chat template gets a plain ``prompt\\nanswer<eos>`` layout.
Supervision is ``direct`` (the reference answer) or ``chainOfThought`` (a teacher's rationale from the
row's ``meta.rationale``, then the answer) and the system prompt is a hyperparameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pioneer.api.models import Hyperparameters
from pioneer.trainer.base_models import resolve
from pioneer.trainer.fit import ListDataset, fit, pick_device, with_lora

IGNORE = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]


def _ids(out) -> list[int]:
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def prompt_ids(tokenizer, prompt: str, system_prompt: str | None) -> list[int]:
    """Token ids of the prompt up to where the assistant's answer begins."""
    if tokenizer.chat_template:
        return _ids(tokenizer.apply_chat_template(messages(prompt, system_prompt), add_generation_prompt=True, tokenize=True))
    text = (f"{system_prompt}\n\n" if system_prompt else "") + prompt + "\n"
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def encode_example(tokenizer, prompt: str, answer: str, system_prompt: str | None, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels where only the answer (and its EOS) is learned; long prompts lose their start."""
    head = prompt_ids(tokenizer, prompt, system_prompt)
    if tokenizer.chat_template:
        full = _ids(tokenizer.apply_chat_template(messages(prompt, system_prompt) + [{"role": "assistant", "content": answer}],
                                                  tokenize=True))
        if full[: len(head)] != head:  # a template that rewrites earlier turns: fall back to concatenation
            full = head + tokenizer(answer, add_special_tokens=False)["input_ids"]
    else:
        full = head + tokenizer(answer, add_special_tokens=False)["input_ids"]
    tail = full[len(head):]
    if tokenizer.eos_token_id not in tail:
        tail = tail + [tokenizer.eos_token_id]
    keep_head = max(0, max_length - len(tail))
    head = head[-keep_head:] if keep_head else []
    tail = tail[: max_length - len(head)]
    return {"input_ids": head + tail, "attention_mask": [1] * (len(head) + len(tail)), "labels": [IGNORE] * len(head) + tail}


class AnswerLogitsCollator:
    """Pads a batch and asks the model for logits only where a label is learned.

    The loss covers only the assistant's few tokens, yet a causal LM projects every position onto its
    vocabulary (262k entries for Gemma 3): most of a training step went into logits nobody uses. The
    boolean ``logits_to_keep`` mask selects the positions that predict a label, ``shift_labels`` holds
    those labels in the same order, and the model's own loss function does the rest.
    """

    def __init__(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        self.pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad(features)
        following = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)  # position i predicts token i + 1
        keep = following != IGNORE
        batch["logits_to_keep"] = keep
        batch["shift_labels"] = following[keep]
        return batch


def target_text(row: dict[str, Any], supervision: str, answer_format: str) -> str:
    """What the model learns to write: the reference, or a teacher's rationale followed by it."""
    rationale = (row.get("meta") or {}).get("rationale")
    if supervision != "chainOfThought" or not rationale:
        return row["label"]
    marker = "####" if answer_format == "finalNumber" else "Answer:"
    return f"{rationale.strip()}\n{marker} {row['label']}"


def load_for_training(hp: Hyperparameters, seed: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(seed)
    source = resolve(hp.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in names] or "all-linear"
    return tokenizer, with_lora(model, hp, "CAUSAL_LM", targets)


def train(rows: list[dict[str, Any]], hp: Hyperparameters, supervision: str, answer_format: str, seed: int, workdir: Path,
          on_progress=None):
    tokenizer, model = load_for_training(hp, seed)
    cot = sum(1 for r in rows if (r.get("meta") or {}).get("rationale"))
    facts: dict[str, Any] = {"device": pick_device(), "n_train": len(rows), "method": hp.method, "supervision": supervision,
                             "rationales": cot, "chat_template": bool(tokenizer.chat_template)}
    if hp.epochs == 0 or not rows:
        facts.update(steps=0, train_seconds=0.0, final_loss=None)
        return tokenizer, model, facts
    items = [encode_example(tokenizer, r["text"], target_text(r, supervision, answer_format), hp.system_prompt, hp.max_length)
             for r in rows]
    model, trained = fit(model, ListDataset(items), AnswerLogitsCollator(tokenizer), hp, seed, workdir, on_progress)
    facts.update(trained)
    return tokenizer, model, facts


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], system_prompt: str | None, max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy answers, batched (left padding, prompts sorted by length), decoded without the prompt."""
    device = next(model.parameters()).device
    model.eval()
    encoded = [prompt_ids(tokenizer, p, system_prompt) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx], device=device)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
    return out


def load_trained(model_dir: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, AutoModelForCausalLM.from_pretrained(model_dir).to(pick_device())


# --------------------------------------------------------------------------- the trainer program's interface


def validate_row(row: dict[str, Any], labels: list[str]) -> str | None:
    return None if row["label"].strip() else "empty reference answer"


def train_attempt(rows: list[dict[str, Any]], spec, workdir: Path, on_progress=None, eval_rows=None):
    hp = spec.pipeline.hyperparameters
    tokenizer, model, facts = train(rows, hp, spec.pipeline.strategy.supervision, spec.task.answer_format,
                                    spec.pipeline.data.seed, workdir, on_progress)
    return (tokenizer, model), facts


def predict_rows(trained, rows: list[dict[str, Any]], spec) -> list[str]:
    tokenizer, model = trained
    hp = spec.pipeline.hyperparameters
    return generate(model, tokenizer, [r["text"] for r in rows], hp.system_prompt, hp.max_new_tokens)


def agrees(prediction: str, label: str, spec) -> bool:
    from pioneer.trainer.generation_metrics import answer_correct

    return answer_correct(prediction, label, spec.task.answer_format)[0]


def evaluate_attempt(trained, rows: list[dict[str, Any]], spec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from pioneer.trainer.generation_metrics import answer_correct, rouge

    outputs = predict_rows(trained, rows, spec)
    judged = [answer_correct(o, r["label"], spec.task.answer_format) for o, r in zip(outputs, rows)]
    n = max(1, len(rows))
    metrics: dict[str, Any] = {"metric": spec.task.metric, "n": len(rows), "answer_format": spec.task.answer_format,
                               "exact_match": sum(c for c, _ in judged) / n,
                               "format_failure_rate": sum(not ok for _, ok in judged) / n,
                               **rouge(outputs, [r["label"] for r in rows])}
    if spec.task.answer_format == "code":
        metrics["pass_at_1"] = metrics["exact_match"]  # one greedy sample per problem, run against its tests
    metrics["score"] = metrics["rougeL"] if spec.task.metric == "rougeL" else metrics["exact_match"]
    metrics["failure_patterns"] = [{"label": "readable answer", "prediction": "format failure", "count": sum(not ok for _, ok in judged)},
                                   {"label": "right answer", "prediction": "wrong answer", "count": sum(ok and not c for c, ok in judged)}]
    metrics["failure_patterns"] = [p for p in metrics["failure_patterns"] if p["count"]]
    by: dict[str, list[bool]] = {}
    for r, (c, _) in zip(rows, judged):
        by.setdefault(r.get("role", "positive"), []).append(c)
    metrics["slice_scores"] = {k: sum(v) / len(v) for k, v in sorted(by.items())}
    predictions = [{"id": r.get("id"), "text": r["text"], "label": r["label"], "prediction": o, "correct": c, "readable": ok,
                    "slice": r.get("role")} for r, o, (c, ok) in zip(rows, outputs, judged)]
    return metrics, predictions


def save(trained, folder: Path) -> None:
    tokenizer, model = trained
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
