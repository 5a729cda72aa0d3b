"""GLiNER2 models (the ``gliner2`` package, the paper's model family): load, train with gliner2's own trainer, save.

A base model is one of:

- a GLiNER2 checkpoint: a hub id (``fastino/gliner2-base-v1``) or a folder whose ``config.json`` is an
  extractor's (a deployed revision, a published model): loaded with ``AutoExtractor.from_pretrained``;
- an encoder (an offline alias such as ``minilm``, or a plain Hugging Face folder): a span extractor is
  built on it from config (``ExtractorConfig(model_name=...)``). Its span and classification heads start
  untrained: such a model has no zero-shot ability until it is trained.

Training is ``gliner2.training.ExtractorTrainer`` (full fine-tune, or LoRA through its ``use_lora``); the
LoRA adapters are merged before saving, so every saved model is a plain ``save_pretrained`` folder that
``AutoExtractor.from_pretrained`` reads, with no reference to the encoder folder it was built from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pioneer import defaults as d
from pioneer.api.models import Hyperparameters
from pioneer.trainer.base_models import ModelNotFound, resolve

EXTRA = "gliner"  # pyproject's optional extra that installs gliner2[train]
EXTRACTOR_MODEL_TYPE = "extractor"  # config.json model_type of a GLiNER2 checkpoint


class Gliner2Unavailable(RuntimeError):
    pass


def require() -> None:
    """Raise with the install line when the optional gliner2 package is absent."""
    try:
        import gliner2.training  # noqa: F401
    except ImportError as exc:
        raise Gliner2Unavailable(f"backend gliner2 needs the gliner2 package ({exc}): pip install 'pioneer[{EXTRA}]' "
                                 "(the trainer image includes it)") from None


def is_checkpoint(folder: str | Path) -> bool:
    """Whether a model folder holds a GLiNER2 extractor (rather than a plain encoder)."""
    config = Path(folder) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type") == EXTRACTOR_MODEL_TYPE
    except (OSError, ValueError):
        return False


def _is_hub_id(ref: str) -> bool:
    return ref.count("/") == 1 and not ref.startswith(("/", ".", "s3://")) and not Path(ref).expanduser().exists()


def load(ref: str, seed: int, architecture: str = d.GLINER2_ARCHITECTURE) -> tuple[Any, str]:
    """(model, how it was obtained: 'pretrained' or 'built from config on <encoder> (<architecture>)') for a base-model reference.

    ``seed`` fixes the initial weights of heads built from config (and of the special-token embeddings), so an
    attempt, and the untrained baseline it is compared with, are reproducible. ``architecture`` (span or boundary)
    is the extractor built on an encoder; a checkpoint keeps its own."""
    require()
    import torch

    torch.manual_seed(seed)
    from gliner2.auto import AutoExtractor
    from gliner2.configuration import ExtractorConfig

    if _is_hub_id(ref):
        try:
            return AutoExtractor.from_pretrained(ref), "pretrained"
        except OSError as exc:
            raise ModelNotFound(f"base model {ref!r}: not a GLiNER2 checkpoint this machine can load ({exc}); offline, "
                                "use an encoder alias such as minilm") from None
    folder = resolve(ref)
    if is_checkpoint(folder):
        return AutoExtractor.from_pretrained(folder), "pretrained"
    return (AutoExtractor.from_config(ExtractorConfig(model_name=folder, architecture=architecture)),
            f"built from config on {ref} ({architecture})")


def device_of(model) -> str:
    import torch

    return next(model.parameters()).device.type if any(True for _ in model.parameters()) else ("cuda" if torch.cuda.is_available() else "cpu")


def _in_encoder(name: str) -> bool:
    """Whether a parameter belongs to the encoder, under PEFT's wrapper too (``base_model.model.encoder...``)."""
    return name.startswith("encoder.") or ".encoder." in name


def optimizer_groups(model, optimizer) -> list[dict[str, Any]]:
    """What each optimizer group stepped: which part of the model (encoder, task heads), how many parameters, at what rate."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [{"part": "+".join(sorted({"encoder" if _in_encoder(names[id(p)]) else "heads" for p in g["params"]})),
             "parameters": sum(p.numel() for p in g["params"]), "lr": g.get("initial_lr", g["lr"])}
            for g in optimizer.param_groups if g["params"]]


def train(model, examples: list, hp: Hyperparameters, seed: int, workdir: Path,
          on_progress: Callable[[dict[str, Any]], None] | None = None,
          sampling: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` on gliner2 ``InputExample``s with ``ExtractorTrainer``; return (the trained model, LoRA merged; facts).

    ``sampling`` overrides fields of gliner2's ``SamplingConfig`` (its training-time schema augmentation).
    LoRA puts adapters on the encoder and trains the task heads in full (they are small, and a head built from
    config starts random: low-rank updates of a frozen random head barely learn; measured on 90 toy spam/ham
    texts, F1 0.64 with adapters on the heads). The learning rates mean the same as in a full fine-tune: the
    encoder's adapters step at ``learningRate``, the heads at ``taskLearningRate`` (gliner2 alone would step
    everything at the task rate). A full fine-tune groups the same way: gliner2's own grouping puts every parameter
    with "encoder" in its name at the encoder's rate, the boundary head's candidate and boundary encoders included.
    """
    import dataclasses

    import torch
    from gliner2.training import ExtractorTrainer, TrainingConfig
    from torch.optim import AdamW

    if sampling:
        model.processor.sampling_config = dataclasses.replace(model.processor.sampling_config, **sampling)

    steps_per_epoch = math.ceil(len(examples) / hp.batch_size)
    max_steps = max(1, math.ceil(steps_per_epoch * hp.epochs))
    cuda = torch.cuda.is_available()
    config = TrainingConfig(
        output_dir=str(workdir / "gliner2"), num_epochs=max(1, math.ceil(hp.epochs)), max_steps=max_steps,
        batch_size=hp.batch_size, encoder_lr=hp.learning_rate, task_lr=hp.task_learning_rate, weight_decay=hp.weight_decay,
        warmup_ratio=hp.warmup_ratio, scheduler_type="linear", seed=seed, max_len=hp.max_length,
        fp16=False, bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        eval_strategy="no", save_best=False, save_total_limit=1, logging_steps=max(1, max_steps // 20),
        num_workers=0, pin_memory=cuda,
        use_lora=hp.method == "lora", lora_target_modules=["encoder"], lora_r=hp.lora_rank, lora_alpha=2.0 * hp.lora_rank, save_adapter_only=False,
    )
    losses: list[float] = []

    class Trainer(ExtractorTrainer):
        def _setup_lora(self):  # adapters on the encoder; the small task heads train in full, as PEFT's modules_to_save
            super()._setup_lora()
            if self.config.use_lora:
                for name, param in self.model.named_parameters():
                    if not _in_encoder(name):
                        param.requires_grad = True

        def _create_optimizer(self):  # gliner2 groups by "encoder" anywhere in a name, so the boundary head's own
            # candidate_encoder and boundary_encoder would step at the encoder's rate; the encoder is the module named so
            trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            groups = [{"params": [p for n, p in trainable if _in_encoder(n)], "lr": hp.learning_rate},
                      {"params": [p for n, p in trainable if not _in_encoder(n)], "lr": hp.task_learning_rate}]
            fused = self.device.type == "cuda" and self.config.fused_optimizer  # as gliner2 steps: fused on a GPU
            return AdamW([{**g, "weight_decay": hp.weight_decay} for g in groups if g["params"]],
                         betas=(self.config.adam_beta1, self.config.adam_beta2), eps=self.config.adam_epsilon,
                         **({"fused": True} if fused else {"foreach": True}))

        def _log_metrics(self, metrics, prefix: str = ""):  # gliner2's logging hook: our progress file rides on it
            super()._log_metrics(metrics, prefix)
            values = metrics.to_dict() if hasattr(metrics, "to_dict") else dict(metrics)
            if prefix == "train" and "loss" in values:
                losses.append(float(values["loss"]))
                if on_progress:
                    on_progress({"phase": "training", "step": self.global_step, "total_steps": max_steps,
                                 "epoch": round(float(values.get("epoch", 0)), 2), "loss": round(float(values["loss"]), 4)})

    trainer = Trainer(model, config)
    result = trainer.train(train_data=examples)
    trained = trainer.model
    groups = optimizer_groups(trained, trainer.optimizer)
    if hp.method == "lora" and hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    trained.eval()
    history = [float(m["loss"]) for m in result.get("train_metrics_history", []) if "loss" in m] or losses
    facts = {"device": device_of(trained), "steps": int(result["total_steps"]), "train_seconds": round(float(result["total_time_seconds"]), 2),
             "mean_loss": round(sum(history) / len(history), 4) if history else None,
             "final_loss": round(history[-1], 4) if history else None, "trainer": "gliner2.training.ExtractorTrainer",
             "optimizer_groups": groups}
    return trained, facts


def save(model, folder: Path) -> None:
    model.save_pretrained(str(folder))


def load_trained(model_dir: str | Path):
    """A GLiNER2 model the trainer wrote, on the run-time device."""
    require()
    from gliner2.auto import AutoExtractor

    from pioneer.trainer.fit import pick_device

    model = AutoExtractor.from_pretrained(str(model_dir))
    model.to(pick_device())
    model.eval()
    return model
