"""What a user would do instead of the agent, measured in the same benchmark run on the same held-out split.

- :func:`tfidf_logreg`: the classical baseline, TF-IDF features and logistic regression (scikit-learn), its
  regularisation chosen by cross-validation on the training data for the task's metric (a fair classical
  baseline, not a hobbled one).
- :func:`plain_finetune`: a plain ``transformers`` ``Trainer`` fine-tune of the same base model on all the training
  data the agent had, every ``TrainingArguments`` value at its library default (learning rate, epochs, batch,
  schedule, weight decay); only the output folder, the seed and "no checkpoints, no reporting" are set.
- :func:`plain_token_finetune`: the same for NER, token classification with the transformers recipe.

Each returns (predictions on the test texts, facts about how it was trained), so every benchmark scores them with
its own metric, exactly as it scores the agent's best model.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any


def tfidf_logreg(train_texts: list[str], train_labels: list[str], test_texts: list[str], metric: str,
                 positive_label: str | None = None, seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, C chosen by 5-fold CV on the task's ``metric``
    (``f1`` of ``positive_label``, ``macroF1`` or ``accuracy``)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    scorers = {"f1": "f1", "macroF1": "f1_macro", "accuracy": "accuracy"}
    if metric not in scorers:
        raise ValueError(f"tfidf_logreg: no scorer for metric {metric!r}; known: {sorted(scorers)}")
    if metric == "f1" and positive_label != max(train_labels):  # LogisticRegressionCV scores binary F1 of its last class
        raise ValueError(f"tfidf_logreg: binary F1 is scored for the label that sorts last ({max(train_labels)!r}), not {positive_label!r}")
    scoring = scorers[metric]
    started = time.monotonic()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegressionCV(Cs=10, cv=5, scoring=scoring, max_iter=2000, random_state=seed))
    with warnings.catch_warnings():  # scikit-learn 1.9 announces 1.10's new defaults and attributes; the values used are the same
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(train_texts, train_labels)
    predictions = [str(p) for p in model.predict(test_texts)]
    lr = model[-1]
    return predictions, {"method": "tfidf_logreg", "n_train": len(train_texts), "features": len(model[0].vocabulary_),
                         "cv_metric": metric, "chosen_C": float(np.ravel(lr.C_)[0]), "seconds": round(time.monotonic() - started, 2)}


def plain_finetune(base_model: str, train_texts: list[str], train_labels: list[str], test_texts: list[str], workdir: Path,
                   seed: int = 0, scorer_labels: list[str] | None = None) -> tuple[list[str], dict[str, Any]]:
    """Fine-tune ``base_model`` (an alias, folder or hub id, resolved like the trainer's) for sequence classification
    with ``Trainer`` at default ``TrainingArguments``; predict ``test_texts`` with the library's default truncation."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from pioneer.trainer.base_models import resolve
    from pioneer.trainer.classification import predict
    from pioneer.trainer.fit import ListDataset, pick_device

    started = time.monotonic()
    set_seed(seed)
    labels = scorer_labels or sorted(set(train_labels))
    source = resolve(base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
        ignore_mismatched_sizes=True)
    enc = tokenizer(train_texts, truncation=True)
    label_id = {lab: i for i, lab in enumerate(labels)}
    items = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": label_id[y]}
             for i, y in enumerate(train_labels)]
    args = TrainingArguments(output_dir=str(workdir / "checkpoints"), save_strategy="no", report_to=[], seed=seed,
                             disable_tqdm=True, use_cpu=pick_device() == "cpu")
    trainer = Trainer(model=model, args=args, train_dataset=ListDataset(items), data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    train_seconds = time.monotonic() - started
    limit = min(tokenizer.model_max_length, trainer.model.config.max_position_embeddings)
    predictions, _ = predict(trainer.model, tokenizer, test_texts, max_length=limit)
    return predictions, {"method": "plain_trainer_finetune", "base_model": base_model, "n_train": len(train_texts),
                         "learning_rate": args.learning_rate, "epochs": args.num_train_epochs,
                         "batch_size": args.per_device_train_batch_size, "steps": result.global_step,
                         "final_mean_loss": round(float(result.training_loss), 4), "train_seconds": round(train_seconds, 1),
                         "seconds": round(time.monotonic() - started, 1)}


def plain_token_finetune(base_model: str, train: list[tuple[list[str], list[str]]], test_words: list[list[str]], workdir: Path,
                         seed: int = 0) -> tuple[list[list[str]], dict[str, Any]]:
    """Fine-tune ``base_model`` for token classification with ``Trainer`` at default ``TrainingArguments``, the
    transformers recipe: each word's tag on its first sub-token, the others ignored (-100); predictions read from
    each word's first sub-token by argmax (no decoding constraints), words past the model's length tagged O."""
    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer, TrainingArguments, set_seed

    from pioneer.trainer.base_models import resolve
    from pioneer.trainer.fit import ListDataset, pick_device

    started = time.monotonic()
    set_seed(seed)
    tags = sorted({t for _, ts in train for t in ts})
    tag_id = {t: i for i, t in enumerate(tags)}
    source = resolve(base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForTokenClassification.from_pretrained(source, num_labels=len(tags), id2label=dict(enumerate(tags)),
                                                            label2id=tag_id, ignore_mismatched_sizes=True)
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)

    def encoded(words: list[str]):
        return tokenizer(words, is_split_into_words=True, truncation=True, max_length=limit)

    items = []
    for words, ts in train:
        enc = encoded(words)
        ids, previous, labels = enc.word_ids(), None, []
        for w in ids:
            labels.append(-100 if w is None or w == previous else tag_id[ts[w]])
            previous = w
        items.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    args = TrainingArguments(output_dir=str(workdir / "checkpoints"), save_strategy="no", report_to=[], seed=seed,
                             disable_tqdm=True, use_cpu=pick_device() == "cpu")
    trainer = Trainer(model=model, args=args, train_dataset=ListDataset(items), data_collator=DataCollatorForTokenClassification(tokenizer))
    result = trainer.train()
    train_seconds = time.monotonic() - started
    trained = trainer.model.eval()
    device = next(trained.parameters()).device
    predictions = []
    with torch.inference_mode():
        for words in test_words:
            enc = encoded(words)
            logits = trained(**{k: torch.tensor([v], device=device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}).logits[0]
            best = np.asarray(logits.argmax(-1).cpu())
            first: dict[int, str] = {}
            for position, w in enumerate(enc.word_ids()):
                if w is not None and w not in first:
                    first[w] = tags[int(best[position])]
            predictions.append([first.get(i, "O") for i in range(len(words))])
    return predictions, {"method": "plain_trainer_token_finetune", "base_model": base_model, "n_train": len(train),
                         "learning_rate": args.learning_rate, "epochs": args.num_train_epochs,
                         "batch_size": args.per_device_train_batch_size, "steps": result.global_step,
                         "final_mean_loss": round(float(result.training_loss), 4), "train_seconds": round(train_seconds, 1),
                         "seconds": round(time.monotonic() - started, 1)}
