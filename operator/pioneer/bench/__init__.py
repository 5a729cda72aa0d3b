"""Benchmarks: separate commands, not timed tests. Each writes a JSON file of measured figures."""

from __future__ import annotations

import argparse
from typing import Callable

from pioneer.bench import coldstart_sms, repair_clinc

BENCHMARKS: dict[str, Callable[[argparse.Namespace], int]] = {
    "coldstart-sms": coldstart_sms.run,
    "repair-clinc150": repair_clinc.run,
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coldstart-sms", help="cold start on UCI SMS Spam; spam F1 on a held-out 20%% test split")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding sms_spam/SMSSpamCollection.tsv")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="artifacts folder (default: a folder next to --out)")
    p.add_argument("--max-attempts", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("repair-clinc150", help="production repair of an under-trained 30-intent CLINC150 model from ~3,000 judged traces")
    p.add_argument("--data-dir", default="../shared/datasets", help="folder holding clinc150/data_full.json")
    p.add_argument("--out", required=True, help="JSON file for the results")
    p.add_argument("--workdir", default=None, help="working folder (default: next to --out; recreated)")
    p.add_argument("--seed", type=int, default=0)
