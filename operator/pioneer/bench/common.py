"""Pieces every benchmark uses: a fresh working folder, CPU time, predictions of a trained model."""

from __future__ import annotations

import argparse
import resource
import shutil
from pathlib import Path


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def fresh_workdir(args: argparse.Namespace, out: Path) -> Path:
    """``--workdir`` or a folder next to ``--out``, emptied: a benchmark never resumes a half run."""
    work = Path(args.workdir).resolve() if args.workdir else out.parent / (out.stem + "-work")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def predict_labels(model_uri: str, texts: list[str], max_length: int) -> list[str]:
    from pioneer.trainer.classification import load_trained, predict

    tokenizer, model = load_trained(model_uri)
    return predict(model, tokenizer, texts, max_length=max_length)[0]
