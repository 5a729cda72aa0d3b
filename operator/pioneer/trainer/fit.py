"""The optimisation loop every encoder backend shares: Hugging Face ``Trainer`` with our progress and facts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pioneer.api.models import Hyperparameters


def pick_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class ListDataset(torch.utils.data.Dataset):
    """Pre-tokenised examples (one dict of features per example)."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


EXTRA_FEATURES = ("teacher", "distill", "weight")  # per-example preservation inputs (trainer.preservation), not model inputs


def with_extras(collator):
    """A collator that pads the model inputs with ``collator`` and stacks the preservation features beside them."""
    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        features = [dict(f) for f in features]  # the dataset's own items are reused every epoch
        extras = {k: torch.tensor([f.pop(k) for f in features], dtype=torch.float32) for k in EXTRA_FEATURES if k in features[0]}
        return {**collator(features), **extras}
    return collate


def preserving_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, teacher: torch.Tensor | None,
                    distill: torch.Tensor | None, distillation: float) -> torch.Tensor:
    """Weighted cross-entropy, plus ``distillation`` x KL(teacher || student) on the rows ``distill`` marks (``teacher``:
    the parent's distribution, already at its temperature)."""
    ce = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    loss = (ce * weight).sum() / weight.sum() if weight is not None else ce.mean()
    if teacher is not None and distillation > 0 and distill is not None and distill.sum() > 0:
        log_student = torch.log_softmax(logits.float(), dim=-1)
        kl = torch.nn.functional.kl_div(log_student, teacher, reduction="none").sum(-1)
        loss = loss + distillation * (kl * distill).sum() / distill.sum()
    return loss


def fit(model, dataset, collator, hp: Hyperparameters, seed: int, workdir: Path,
        on_progress: Callable[[dict[str, Any]], None] | None = None, distillation: float = 0.0) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` on ``dataset``; return (trained model, facts: steps, seconds, mean and final loss).

    Items carrying the preservation features (``teacher``, ``distill``, ``weight``) train on :func:`preserving_loss`."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class PreservingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            extras = {k: inputs.pop(k, None) for k in EXTRA_FEATURES}
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = preserving_loss(outputs.logits, labels, extras["weight"], extras["teacher"], extras["distill"], distillation)
            return (loss, outputs) if return_outputs else loss

    preserving = len(dataset) > 0 and any(k in dataset[0] for k in EXTRA_FEATURES)
    if preserving:
        collator = with_extras(collator)

    device = pick_device()
    total_steps = math.ceil(len(dataset) / hp.batch_size) * math.ceil(hp.epochs)
    last_loss: list[float] = []

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                last_loss.append(float(logs["loss"]))
                if on_progress:
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
        remove_unused_columns=False,
    )
    started = time.monotonic()
    trainer = (PreservingTrainer if preserving else Trainer)(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[Progress()])
    built = time.monotonic()
    result = trainer.train()
    facts = {"device": device, "steps": result.global_step, "setup_seconds": round(built - started, 2),
             "train_seconds": round(time.monotonic() - built, 2),
             "mean_loss": round(float(result.training_loss), 4),
             "final_loss": round(last_loss[-1] if last_loss else float(result.training_loss), 4)}
    model = trainer.model
    if hp.method == "lora":
        model = model.merge_and_unload()
    return model, facts


def with_lora(model, hp: Hyperparameters, task_type: str, target_modules: Any = "all-linear"):
    """Wrap ``model`` in LoRA adapters when the pipeline asks for it."""
    if hp.method != "lora":
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type=task_type, r=hp.lora_rank, lora_alpha=2 * hp.lora_rank, lora_dropout=0.1,
                        target_modules=target_modules)
    return get_peft_model(model, config)
