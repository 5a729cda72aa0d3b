"""Encoder sequence classification with transformers: full fine-tune or LoRA (peft)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pioneer.api.models import Hyperparameters
from pioneer.trainer.base_models import resolve


def pick_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_for_training(hp: Hyperparameters, labels: list[str], seed: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(seed)
    source = resolve(hp.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    if hp.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=hp.lora_rank, lora_alpha=2 * hp.lora_rank, lora_dropout=0.1,
            target_modules="all-linear",
        )
        model = get_peft_model(model, config)
    return tokenizer, model


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, encodings: dict[str, list], labels: list[int]):
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = self.labels[i]
        return item


def train(
    texts: list[str],
    labels: list[str],
    label_names: list[str],
    hp: Hyperparameters,
    seed: int,
    workdir: Path,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
):
    """Train and return (tokenizer, model ready for inference, training facts)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    device = pick_device()
    tokenizer, model = load_for_training(hp, label_names, seed)
    facts: dict[str, Any] = {"device": device, "n_train": len(texts), "method": hp.method}
    if hp.epochs == 0 or not texts:
        facts.update(steps=0, train_seconds=0.0, final_loss=None)
        return tokenizer, model, facts

    label_id = {lab: i for i, lab in enumerate(label_names)}
    enc = tokenizer(texts, truncation=True, max_length=hp.max_length)
    dataset = _Dataset(dict(enc), [label_id[lab] for lab in labels])
    total_steps = math.ceil(len(texts) / hp.batch_size) * math.ceil(hp.epochs)

    last_loss: list[float] = []

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                last_loss.append(float(logs["loss"]))
            if on_progress and logs and "loss" in logs:
                on_progress({"phase": "training", "step": state.global_step, "total_steps": state.max_steps,
                             "epoch": round(state.epoch or 0, 2), "loss": round(float(logs["loss"]), 4)})

    args = TrainingArguments(
        output_dir=str(workdir / "checkpoints"),
        num_train_epochs=hp.epochs,
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        weight_decay=hp.weight_decay,
        warmup_steps=hp.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=max(1, total_steps // 20),
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length",  # batches of similar lengths: far less padding on CPU
    )
    started = time.monotonic()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=[Progress()])
    result = trainer.train()
    facts.update(steps=result.global_step, train_seconds=round(time.monotonic() - started, 2),
                 mean_loss=round(float(result.training_loss), 4),
                 final_loss=round(last_loss[-1] if last_loss else float(result.training_loss), 4))
    model = trainer.model
    if hp.method == "lora":
        model = model.merge_and_unload()
    return tokenizer, model, facts


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """Predicted labels and class probabilities, batched by length for speed."""
    device = next(model.parameters()).device
    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    id2label = model.config.id2label
    return [id2label[int(i)] for i in probs.argmax(axis=1)], probs


def load_trained(model_dir: str | Path):
    """Load a model the trainer wrote (plain Hugging Face format)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(pick_device())
    return tokenizer, model
