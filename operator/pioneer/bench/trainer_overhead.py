"""``pioneer bench trainer-overhead``: what the trainer program costs over a bare torch training loop.

One cold-start attempt trains through ``pioneer run`` (the local runner starts ``python -m pioneer.trainer``, as a
cluster Job would). The bench then reads that attempt's curated training file and trains the same base model on it
in this process with a bare loop: the same batches (a length-grouped sampler with the same seed and batch size, as
the trainer's ``group_by_length``), the same number of optimizer steps, fused AdamW at the same rate and weight decay
(``Trainer``'s default implementation), a linear schedule and gradient clipping at 1.0 (its defaults), the same
threads. It reports
examples per second of both training phases and their ratio (``ratio`` = trainer / bare: 1.0 means no overhead),
and, apart from it, the trainer program's whole wall time (start, load, train, evaluate, save, upload). The trainer
program (started as the runner starts it, on the same attempt spec) and the bare loop alternate ``--repeats`` times;
the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from pioneer import defaults as d
from pioneer.bench.common import fresh_workdir, run_adaptation, run_trainer

SPEC = """
apiVersion: pioneer.dev/v1alpha1
kind: ModelAdaptation
metadata:
  name: trainer-overhead
spec:
  mode: coldStart
  task:
    description: Route a smart-home voice command to the intent that handles it.
    type: classification
    metric: macroF1
    labels: [HassTurnOn, HassTurnOff, HassGetState, HassLightSet, HassMediaPause, HassMediaUnpause]
  data:
    sources:
      - builtin: home-assistant-intents
        limitPerLabel: {per_label}
    evaluation: {{size: 90}}
    curation: {{maxTrainExamples: {per_label_total}}}
  hyperparameters: {{baseModel: {base_model}, learningRate: 1.0e-4, epochs: {epochs}, maxLength: {max_length}, batchSize: {batch_size}}}
  gate: {{tau: 1.0}}
  search: {{maxAttempts: 1, parallelism: 1, configurationsPerIteration: 1, seed: {seed}}}
  artifacts: {{uri: {artifacts}}}
"""


def bare_loop(rows: list[dict], labels: list[str], hp, seed: int, steps: int) -> dict:
    """Train ``hp.base_model`` on ``rows`` for ``steps`` optimizer steps with plain torch; time the loop only."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_linear_schedule_with_warmup
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from pioneer.trainer.base_models import resolve
    from pioneer.trainer.fit import pick_device

    torch.manual_seed(seed)
    device = pick_device()
    source = resolve(hp.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(labels), ignore_mismatched_sizes=True).to(device)
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=hp.max_length)
    label_id = {lab: i for i, lab in enumerate(labels)}
    items = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": label_id[r["label"]]}
             for i, r in enumerate(rows)]
    collate = DataCollatorWithPadding(tokenizer)
    sampler = LengthGroupedSampler(hp.batch_size, lengths=[len(x["input_ids"]) for x in items],
                                   generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(items, batch_size=hp.batch_size, sampler=sampler, collate_fn=collate)
    # the optimizer implementation Trainer defaults to (adamw_torch_fused): the comparison is of the loop, not of kernels
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=True)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, steps)
    model.train()
    done, examples, started = 0, 0, time.monotonic()
    while done < steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            done, examples = done + 1, examples + len(batch["labels"])
            if done == steps:
                break
    seconds = time.monotonic() - started
    return {"steps": done, "examples": examples, "train_seconds": round(seconds, 2), "examples_per_second": round(examples / seconds, 2),
            "final_loss": round(float(loss.detach()), 4), "device": device}


def _bare_child(rows, labels, hp_json, seed, steps, threads, path) -> None:
    import torch

    from pioneer.api.models import Hyperparameters

    torch.set_num_threads(threads)
    result = bare_loop(rows, labels, Hyperparameters.model_validate_json(hp_json), seed, steps)
    Path(path).write_text(json.dumps({**result, "threads": threads}))


def bare_process(rows: list[dict], labels: list[str], hp, seed: int, steps: int, threads: int, work: Path) -> dict:
    """:func:`bare_loop` in a fresh process with the environment the runner gives a trainer (threads included)."""
    import multiprocessing

    path = work / "bare.json"
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "OMP_WAIT_POLICY")}
    # the trainer program sets the OpenMP wait policy itself (a value in the environment wins): the bare loop gets the same
    os.environ.update(OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
                      OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY") or d.TRAINER_OMP_WAIT_POLICY)
    try:
        proc = multiprocessing.get_context("spawn").Process(target=_bare_child, args=(rows, labels, hp.model_dump_json(), seed, steps,
                                                                                       threads, str(path)))
        proc.start()
        proc.join()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    if proc.exitcode != 0 or not path.is_file():
        raise RuntimeError(f"the bare loop failed (exit {proc.exitcode})")
    return json.loads(path.read_text())


def trainer_program(attempt_json: str, threads: int) -> dict:
    """Run the trainer program on an attempt spec, as the local runner starts it (same environment); its metrics."""
    started = time.monotonic()
    run_trainer(attempt_json, threads, Path(attempt_json).parent / "overhead-trainer.log", "trainer-overhead")
    wall = time.monotonic() - started
    metrics = json.loads((Path(attempt_json).parent / "output" / "metrics.json").read_text())
    return {**metrics["training"], "program_wall_seconds": round(wall, 2)}


def run(args: argparse.Namespace) -> int:
    import statistics

    from pioneer.api.models import Phase
    from pioneer.store import read_jsonl, split_uri

    out = Path(args.out).resolve()
    work = fresh_workdir(args, out)
    spec_text = SPEC.format(per_label=args.per_label, per_label_total=6 * args.per_label, base_model=args.base_model, epochs=args.epochs,
                            max_length=args.max_length, batch_size=args.batch_size, seed=args.seed,
                            artifacts=json.dumps(str(work / "artifacts")))
    runner, status, _, _ = run_adaptation(spec_text, work)
    attempt = next((a for a in runner.attempts.values() if a.spec.iteration == 1), None)
    if attempt is None or attempt.status is None or attempt.status.phase != Phase.succeeded:
        print("trainer-overhead: the trainer program's attempt did not succeed; see the report", status.report_uri)
        return 1
    rows = read_jsonl(*split_uri(attempt.spec.inputs.train_uri))
    hp = attempt.spec.pipeline.hyperparameters
    attempt_json = str(Path(attempt.spec.output_uri) / "attempt.json")
    threads = runner.threads
    # the two loops alternate, so a slow spell of the machine falls on both; the medians are compared
    trainer_runs, bare_runs = [], []
    for _ in range(args.repeats):
        facts = trainer_program(attempt_json, threads)
        examples = min(len(rows) * math.ceil(hp.epochs), facts["steps"] * hp.batch_size)
        trainer_runs.append({"steps": facts["steps"], "examples": examples, "train_seconds": facts["train_seconds"],
                             "setup_seconds": facts.get("setup_seconds"), "examples_per_second": round(examples / facts["train_seconds"], 2),
                             "program_wall_seconds": facts["program_wall_seconds"]})
        bare_runs.append(bare_process(rows, list(attempt.spec.labels), hp, args.seed, facts["steps"], threads, work))
    trainer_eps = statistics.median(r["examples_per_second"] for r in trainer_runs)
    bare_eps = statistics.median(r["examples_per_second"] for r in bare_runs)
    result = {"benchmark": "trainer-overhead", "base_model": hp.base_model, "batch_size": hp.batch_size, "max_length": hp.max_length,
              "epochs": hp.epochs, "n_train": len(rows), "threads": threads, "repeats": args.repeats,
              "trainer_examples_per_second": trainer_eps, "bare_examples_per_second": bare_eps,
              "ratio": round(trainer_eps / bare_eps, 4), "trainer_runs": trainer_runs, "bare_runs": bare_runs}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio", "trainer_examples_per_second", "bare_examples_per_second", "repeats")}
                     | {"trainer_program_wall_seconds": [r["program_wall_seconds"] for r in trainer_runs]}))
    return 0
