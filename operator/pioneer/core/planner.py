"""The deterministic planner: the iteration policy of paper §2.4 as candidate modifications.

Given a parent attempt, its score band decides what kind of change comes next:

* score < 0.80        -> rework the data (a data problem, not a hyperparameter problem)
* 0.80 <= score < 0.95 -> tune hyperparameters with the data held fixed
* score >= 0.95       -> surgical augmentation: 2-3 examples per remaining failure pattern

Each proposal carries its rationale and evidence. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pioneer import defaults as d
from pioneer.api.models import DataRecipe, Hyperparameters, ModelAdaptationSpec, Pipeline, TrainingAttempt

LR_CEILING = {"full": 5e-4, "lora": 3e-3}


@dataclass(frozen=True)
class Proposal:
    pipeline: Pipeline
    modification: str
    rationale: str
    evidence: dict[str, Any] = field(default_factory=dict)


def flat_fields(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flat_fields(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def pipeline_changes(before: Pipeline, after: Pipeline) -> dict[str, list[Any]]:
    """Every pipeline field that differs, as spec field name -> [before, after] (``data.replayShare: [0.5, 0.65]``)."""
    a, b = flat_fields(before.model_dump(mode="json", by_alias=True)), flat_fields(after.model_dump(mode="json", by_alias=True))
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def band(score: float) -> str:
    if score < d.DATA_REWORK_BELOW:
        return "data-rework"
    if score < d.SURGICAL_FROM:
        return "hyperparameter-tuning"
    return "surgical-augmentation"


def initial_pipeline(spec: ModelAdaptationSpec) -> Pipeline:
    cur = spec.data.curation
    return Pipeline(
        data=DataRecipe(
            max_examples=cur.max_train_examples, hard_negative_share=cur.hard_negative_share,
            max_label_ratio=cur.max_label_ratio, length_matching=cur.length_matching,
            near_duplicate_similarity=cur.near_duplicate_similarity, seed=spec.search.seed, replay_share=cur.replay_share,
            entity_max_repeats=cur.entity_max_repeats if spec.task.type == "ner" else 0,
        ),
        hyperparameters=spec.hyperparameters,
        strategy=spec.strategy,
    )


def _with(p: Pipeline, data: dict[str, Any] | None = None, hp: dict[str, Any] | None = None) -> Pipeline:
    return Pipeline(
        data=p.data.model_copy(update=data or {}),
        hyperparameters=p.hyperparameters.model_copy(update=hp or {}),
        strategy=p.strategy,
    )


def _switch_method(h: Hyperparameters) -> dict[str, Any]:
    if h.method == "full":
        # LoRA trains far fewer weights and tolerates a higher rate, but not 10x: 1e-3 diverged on SMS Spam
        return {"method": "lora", "learning_rate": d.LORA_LEARNING_RATE}
    return {"method": "full", "learning_rate": min(h.learning_rate / 10, d.LEARNING_RATE * 2)}


def initial_proposals(spec: ModelAdaptationSpec, k: int) -> list[Proposal]:
    """Iteration 1: the configured pipeline and contrasting alternatives, trained in parallel (paper §2.5)."""
    base = initial_pipeline(spec)
    h = base.hyperparameters
    if spec.mode == "production":
        more_replay = _with(base, data={"replay_share": min(d.MAX_REPLAY_SHARE, base.data.replay_share + 0.15)})
        longer = _with(base, hp={"epochs": h.epochs + max(1, round(h.epochs / 2))})
        other = _with(base, hp=_switch_method(h))

        def ev(p: Pipeline) -> dict[str, Any]:  # each proposal's own curriculum, read from its pipeline
            return {"replay_share": p.data.replay_share, "hard_negative_share": p.data.hard_negative_share,
                    "epochs": p.hyperparameters.epochs, "method": p.hyperparameters.method}
        return [
            Proposal(base, "repair curriculum: gold corrections + hard negatives + replay",
                     "Retrain from the base model on every fixable failure with its correction, a hard negative per failure "
                     "(the label it was confused with) and replay of the parent's training data.", ev(base)),
            Proposal(more_replay, f"replay {base.data.replay_share:.2f} -> {more_replay.data.replay_share:.2f}",
                     "A second configuration protects previously passing behaviour harder: more replay of the parent's data.",
                     ev(more_replay)),
            Proposal(longer, f"epochs {h.epochs:g} -> {longer.hyperparameters.epochs:g}",
                     "A contrast when replay is already at its cap: longer training on the same curriculum.", ev(longer)),
            Proposal(other, f"method {h.method} -> {_switch_method(h)['method']}",
                     "Another contrast: the other training method.", ev(other)),
        ]  # the controller keeps the first k distinct pipelines
    ev = {"pool_cap": base.data.max_examples, "method": h.method, "learning_rate": h.learning_rate}
    if spec.task.type == "generation":
        fmt = {"answerLetter": "the letter of the correct option", "finalNumber": "the final number after ####"}.get(
            spec.task.answer_format, "the answer only")
        prompt = h.system_prompt or f"{spec.task.description} Reply with {fmt}."
        return [
            Proposal(base, "initial configuration", "Iteration 1 trains the configuration from the spec on the curated dataset D0.", ev),
            Proposal(_with(base, hp={"system_prompt": None if h.system_prompt else prompt}),
                     "no system prompt" if h.system_prompt else "system prompt states the task and the answer format",
                     "The system prompt is a hyperparameter (paper §2.4): a prompt that names the answer format can fix format "
                     "failures on its own; the contrast shows whether the weights or the prompt carry the gain.", {**ev, "system_prompt": prompt}),
            Proposal(_with(base, hp={"learning_rate": min(h.learning_rate * 2, LR_CEILING[h.method])}), "learning rate x2",
                     "A third contrast: a higher learning rate on the same data.", ev),
        ][:k]
    if spec.task.type == "ner":
        cap = base.data.entity_max_repeats
        return [
            Proposal(base, "initial configuration", "Iteration 1 trains the configuration from the spec on the curated dataset D0.",
                     {**ev, "entity_max_repeats": cap}),
            Proposal(_with(base, data={"entity_max_repeats": 0 if cap else d.ENTITY_MAX_REPEATS}),
                     f"entity diversification {'off' if cap else 'on'}",
                     "Contrast the data rule that matters most for NER: capping repeated entity values (paper §2.3) helps a model "
                     "generalise past memorised names, but removes real frequent names; the evaluation set decides.",
                     {**ev, "entity_max_repeats": cap}),
            Proposal(_with(base, hp={"learning_rate": min(h.learning_rate * 2, LR_CEILING[h.method])}), "learning rate x2",
                     "A third contrast: a higher learning rate on the same data.", ev),
        ][:k]
    out = [
        Proposal(base, "initial configuration", "Iteration 1 trains the configuration from the spec on the curated dataset D0.", ev),
        Proposal(_with(base, hp=_switch_method(h)), f"method {h.method} -> {_switch_method(h)['method']}",
                 "The paper trains at least two configurations per iteration; full fine-tuning vs. LoRA is the first contrast.", ev),
        Proposal(_with(base, hp={"learning_rate": min(h.learning_rate * 2, LR_CEILING[h.method])}), "learning rate x2",
                 "A third contrast: a higher learning rate on the same data.", ev),
        Proposal(_with(base, data={"hard_negative_share": min(0.5, base.data.hard_negative_share + 0.1)}), "hard negatives +10 points",
                 "A fourth contrast: more confusable pairs in the same budget.", ev),
    ]
    return out[:k]


def _larger_model(h: Hyperparameters, larger: list[str]) -> str | None:
    if h.base_model in larger:
        i = larger.index(h.base_model)
        return larger[i + 1] if i + 1 < len(larger) else None
    return larger[0] if larger else None


def _other_backend(h: Hyperparameters, backends: list[str]) -> str | None:
    return next((b for b in backends if b != h.backend), None)


def proposals(parent: TrainingAttempt, pool_size: int, larger_models: list[str] | None = None,
              backends: list[str] | None = None) -> list[Proposal]:
    """Candidate children of ``parent``, most promising first, by the score band of the parent."""
    score = parent.status.score
    p = parent.spec.pipeline
    h, data = p.hyperparameters, p.data
    loss = parent.status.train_loss
    patterns = parent.status.failure_patterns or []
    which = band(score)
    generation = parent.spec.task.type == "generation"
    ev = {"parent": parent.metadata.name, "parent_score": round(score, 4), "band": which,
          "train_loss": loss, "failure_patterns": patterns[:5]}
    out: list[Proposal] = []
    if which == "data-rework":
        if data.max_examples < pool_size:
            grow = min(pool_size, data.max_examples * 2)
            out.append(Proposal(_with(p, data={"max_examples": grow}), f"dataset size {data.max_examples} -> {grow}",
                                f"Score {score:.3f} < {d.DATA_REWORK_BELOW}: a data problem. The pool holds {pool_size} clean examples; double the coverage.", ev))
        if generation:  # answers are sampled as they are: no boundary pairs or label caps to rework
            epochs = h.epochs + max(1, round(h.epochs * 0.66))
            out.append(Proposal(_with(p, hp={"epochs": epochs}), f"epochs {h.epochs:g} -> {epochs:g}",
                                f"Score {score:.3f} < {d.DATA_REWORK_BELOW} with every available example already used: "
                                f"more passes over them (remaining errors {_fmt(patterns)}).", ev))
        else:
            out.append(Proposal(_with(p, data={"hard_negative_share": min(0.5, data.hard_negative_share + 0.15)}),
                                f"hard negatives {data.hard_negative_share:.2f} -> {min(0.5, data.hard_negative_share + 0.15):.2f}",
                                f"Score {score:.3f} < {d.DATA_REWORK_BELOW}: confusions {_fmt(patterns)} call for more boundary pairs.", ev))
            out.append(Proposal(_with(p, data={"max_label_ratio": max(1.0, data.max_label_ratio / 2)}),
                                f"label ratio cap {data.max_label_ratio:g} -> {max(1.0, data.max_label_ratio / 2):g}",
                                f"Score {score:.3f} < {d.DATA_REWORK_BELOW}: rebalance labels so minority labels are not drowned out.", ev))
    elif which == "hyperparameter-tuning":
        underfit = loss is None or loss > d.UNDERFIT_LOSS
        more_epochs = _with(p, hp={"epochs": h.epochs + max(1, round(h.epochs * 0.66))})
        higher_lr = _with(p, hp={"learning_rate": min(h.learning_rate * 2, LR_CEILING[h.method])})
        lower_lr = _with(p, hp={"learning_rate": h.learning_rate / 2})
        switch = _with(p, hp=_switch_method(h))
        capacity = []  # "larger or different encoder" moves (paper §2.4)
        bigger = _larger_model(h, larger_models or [])
        if bigger:
            capacity.append(Proposal(_with(p, hp={"base_model": bigger, "learning_rate": min(h.learning_rate, 5e-5) if h.method == "full" else h.learning_rate}),
                                     f"base model {h.base_model} -> {bigger}",
                                     f"Score {score:.3f} in the tuning band with the data held fixed; a larger base model has more capacity for the remaining confusions {_fmt(patterns)}.", ev))
        other = None if generation else _other_backend(h, backends or [])
        if other:
            family = {"gliner2": "GLiNER2's span extractor (the paper's model family)", "transformers": "a transformers task head"}[other]
            capacity.append(Proposal(_with(p, hp={"backend": other}), f"backend {h.backend} -> {other}",
                                     f"Score {score:.3f} in the tuning band with the data held fixed; a different model family, {family}, "
                                     f"may separate the remaining confusions {_fmt(patterns)}.", ev))
        if underfit:
            why = f"training loss {loss} is still high: the model underfits"
            out += [
                Proposal(more_epochs, f"epochs {h.epochs:g} -> {more_epochs.hyperparameters.epochs:g}", f"Score {score:.3f} in the tuning band with the data held fixed; {why}.", ev),
                Proposal(higher_lr, f"learning rate {h.learning_rate:g} -> {higher_lr.hyperparameters.learning_rate:g}", f"Score {score:.3f} in the tuning band; {why}, so step faster.", ev),
                Proposal(switch, f"method {h.method} -> {switch.hyperparameters.method}", f"Score {score:.3f} in the tuning band; try the other training method on the same data.", ev),
            ]
            out[1:1] = capacity
        else:
            why = f"training loss {loss} is near zero while the held-out score lags: the model overfits"
            out += [
                Proposal(lower_lr, f"learning rate {h.learning_rate:g} -> {lower_lr.hyperparameters.learning_rate:g}", f"Score {score:.3f} in the tuning band; {why}.", ev),
                Proposal(_with(p, hp={"epochs": max(1, h.epochs - 1), "weight_decay": min(0.1, h.weight_decay * 3 or 0.03)}),
                         f"epochs {h.epochs:g} -> {max(1, h.epochs - 1):g}, more weight decay", f"Score {score:.3f} in the tuning band; {why}.", ev),
                Proposal(switch, f"method {h.method} -> {switch.hyperparameters.method}", f"Score {score:.3f} in the tuning band; LoRA/full contrast regularises differently.", ev),
            ]
            out[1:1] = capacity
    else:
        if patterns:
            per = d.SURGICAL_EXAMPLES_PER_PATTERN
            aug = _with(p, data={"augment_from": parent.metadata.name, "augment_per_pattern": per})
            out.append(Proposal(aug, f"surgical augmentation: {per} examples per failure pattern of {parent.metadata.name}",
                                f"Score {score:.3f} >= {d.SURGICAL_FROM}: bulk changes risk regressions; add {per} pool examples (each with a hard negative) per remaining confusion {_fmt(patterns)}.", ev))
            out.append(Proposal(_with(aug, hp={"epochs": h.epochs + 1}), "surgical augmentation + 1 epoch",
                                f"Score {score:.3f} >= {d.SURGICAL_FROM}: the same targeted examples, one more pass so they are learned.", ev))
        out.append(Proposal(_with(p, data={"seed": data.seed + 1}, hp={"learning_rate": h.learning_rate * 0.75}),
                            "resample gold examples, learning rate x0.75",
                            f"Score {score:.3f} >= {d.SURGICAL_FROM}: a gentle variation of the best pipeline.", ev))
    return out + _exploration(p, score, pool_size, ev, generation)


def _exploration(p: Pipeline, score: float, pool_size: int, ev: dict[str, Any], generation: bool = False) -> list[Proposal]:
    """Further single changes, tried once the band's first choices are used up (e.g. after a rollback)."""
    h, data = p.hyperparameters, p.data
    why = f"The preferred modifications of this node were already tried; explore a neighbouring pipeline (score {score:.3f})."
    moves = [
        (_with(p, hp=_switch_method(h)), f"method {h.method} -> {_switch_method(h)['method']}"),
        (_with(p, hp={"learning_rate": min(h.learning_rate * 2, LR_CEILING[h.method])}), "learning rate x2"),
        (_with(p, hp={"learning_rate": h.learning_rate / 2}), "learning rate x0.5"),
        (_with(p, hp={"epochs": h.epochs + 1}), "epochs +1"),
        (_with(p, hp={"batch_size": max(4, h.batch_size // 2)}), "batch size /2"),
        (_with(p, data={"hard_negative_share": min(0.5, data.hard_negative_share + 0.1)}), "hard negatives +10 points"),
        (_with(p, data={"max_examples": min(pool_size, data.max_examples * 2)}), "dataset size x2"),
        (_with(p, data={"seed": data.seed + 1}), "resample the dataset"),
        (_with(p, hp={"epochs": h.epochs + 1, "learning_rate": min(h.learning_rate * 1.5, LR_CEILING[h.method])}), "epochs +1 and learning rate x1.5"),
    ]
    if generation:  # a generation training set is a sample of the pool: hard negatives change nothing
        moves = [(pipe, mod) for pipe, mod in moves if not mod.startswith("hard negatives")]
    return [Proposal(pipe, mod, why, ev) for pipe, mod in moves]


def _profile_words(profile: dict[str, Any]) -> str:
    """The regression profile in a sentence the rationale cites."""
    if not profile:
        return ""
    pairs = ", ".join(f"{p['label']}->{p['prediction']} x{p['count']}" for p in profile.get("pairs", [])[:3])
    words = f"; flipped {pairs}" if pairs else ""
    if profile.get("parent_margin_median") is not None:
        words += (f"; the parent's margin on them is {profile['parent_margin_median']:.2f} (median; "
                  f"{profile.get('regression_set_margin_median', 0):.2f} over the regression set)")
    if profile.get("near_fixed_failures") is not None:
        words += (f"; {profile['near_fixed_failures']} of {profile['count']} sit next to a fixed failure corrected to the label they "
                  "flipped to")
    return words


def preservation_order(profile: dict[str, Any]) -> list[str]:
    """Which preservation objective to try first, from the regressions' profile:

    * flips where the parent itself was unsure (its margin on them below half its margin over the regression set): the
      parent's fragile boundaries need more weight -> confidence-aware replay first;
    * flips next to fixed failures corrected to the label they moved to (half or more): the fixes pulled a boundary across
      them -> interpolation toward the parent first (it moves back what moved least for the fixes);
    * otherwise learning without forgetting (distillation) first: it holds the parent's whole distribution."""
    order = ["distillation", "interpolation", "confidenceReplay"]
    count = profile.get("count") or 0
    fragile = (profile.get("parent_margin_median") is not None and profile.get("regression_set_margin_median")
               and profile["parent_margin_median"] < 0.5 * profile["regression_set_margin_median"])
    pulled = count and (profile.get("near_fixed_failures") or 0) * 2 >= count
    if pulled:
        order = ["interpolation", "distillation", "confidenceReplay"]
    if fragile:
        order = ["confidenceReplay"] + [o for o in order if o != "confidenceReplay"]
    return order


OBJECTIVE_SETTING = {"distillation": {"distillation": d.DISTILLATION_ON}, "interpolation": {"interpolation": True},
                     "confidenceReplay": {"confidence_replay": d.CONFIDENCE_REPLAY_ON}}
OBJECTIVE_WORDS = {
    "distillation": "learning without forgetting: distil the parent's answers on replayed examples alongside the corrections",
    "interpolation": "WiSE-FT: mix the parent's and the candidate's weights, the mix with the least churn that still reaches tau",
    "confidenceReplay": "confidence-aware replay: weight replayed examples by the parent's uncertainty, fragile boundaries most",
}


def after_regressions(parent: TrainingAttempt, epsilon: int, classification: bool = True) -> list[Proposal]:
    """The parent fixed failures but broke previously passing behaviour: preserve what the deployed model knew. With a
    transformers classifier (``classification``), add the preservation objective the regressions' profile points to (:func:`preservation_order`), one at a
    time on top of those already on; with all on, or another task, a lower learning rate, fewer epochs and more replay."""
    p = parent.spec.pipeline
    st = parent.status
    profile = st.regression_profile or {}
    ev = {"parent": parent.metadata.name, "regressions": st.regressions, "cross_checkpoint_regressions": st.cross_checkpoint_regressions,
          "epsilon": epsilon, "regression_profile": {k: profile[k] for k in ("pairs", "parent_margin_median", "regression_set_margin_median",
                                                                              "near_fixed_failures", "nearest_failure_similarity_median") if k in profile}}
    regressed = (f"{parent.metadata.name} regressed on {st.regressions or 0} previously passing trace(s) and "
                 f"{st.cross_checkpoint_regressions or 0} of the previous checkpoint's examples (epsilon {epsilon})"
                 + _profile_words(profile))
    out: list[Proposal] = []
    if classification:
        on = set(p.strategy.preserving())
        for objective in preservation_order(profile):
            if objective in on:
                continue
            strategy = p.strategy.model_copy(update=OBJECTIVE_SETTING[objective])
            out.append(Proposal(Pipeline(data=p.data, hyperparameters=p.hyperparameters, strategy=strategy),
                                f"preserve: {objective}" + (f" (with {', '.join(sorted(on))})" if on else ""),
                                f"{regressed}; {OBJECTIVE_WORDS[objective]}.", {**ev, "objective": objective}))
    h = p.hyperparameters
    share = min(d.MAX_REPLAY_SHARE, p.data.replay_share + 0.15)
    replay = Proposal(_with(p, data={"replay_share": share}), f"replay {p.data.replay_share:.2f} -> {share:.2f}",
                      f"{regressed}; replay more of what the deployed model knew.", ev)
    gentler = Proposal(_with(p, hp={"learning_rate": h.learning_rate / 2}), f"learning rate {h.learning_rate:g} -> {h.learning_rate / 2:g}",
                       f"{regressed}; smaller steps move the boundaries less.", ev)
    shorter = max(1, h.epochs - max(1, round(h.epochs / 4)))
    fewer = Proposal(_with(p, hp={"epochs": shorter}), f"epochs {h.epochs:g} -> {shorter:g}",
                     f"{regressed}; fewer passes over the corrections drift less from the parent.", ev)
    loss = st.train_loss
    if loss is not None and loss > d.UNDERFIT_LOSS:  # an unconverged model forgets what it has not yet relearned
        epochs = h.epochs + max(1, round(h.epochs * 0.66))
        longer = Proposal(_with(p, hp={"epochs": epochs}), f"epochs {h.epochs:g} -> {epochs:g}",
                          f"{regressed} with a training loss of {loss} still high: the retrained model has not converged on "
                          "the replayed data it already contains; train longer.", {**ev, "train_loss": loss})
        return [longer] + out + [replay, gentler]
    return out + [replay, gentler, fewer]


def fusion(a: TrainingAttempt, b: TrainingAttempt) -> Proposal:
    """Fuse two nodes: the data recipe of one, the hyperparameters of the other (paper eq. 4)."""
    pipe = Pipeline(data=a.spec.pipeline.data, hyperparameters=b.spec.pipeline.hyperparameters, strategy=a.spec.pipeline.strategy)
    return Proposal(pipe, f"fusion: data of {a.metadata.name} + hyperparameters of {b.metadata.name}",
                    "The search stagnated; two of the best nodes differ in data and in hyperparameters, so combine them.",
                    {"a": a.metadata.name, "a_score": a.status.score, "b": b.metadata.name, "b_score": b.status.score})


def pivot_after_failure(parent_pipeline: Pipeline, messages: list[str]) -> list[Proposal]:
    """Every attempt of an iteration failed: change what most often breaks training (paper's CoNLL run: LoRA -> full)."""
    h = parent_pipeline.hyperparameters
    ev = {"failures": messages[:5]}
    return [
        Proposal(_with(parent_pipeline, hp=_switch_method(h)), f"pivot: method {h.method} -> {_switch_method(h)['method']}",
                 "Every attempt of the last iteration failed; switch the training method.", ev),
        Proposal(_with(parent_pipeline, hp={"batch_size": max(1, h.batch_size // 2), "max_length": max(32, h.max_length // 2)}),
                 "pivot: halve batch size and sequence length", "Every attempt failed; reduce memory per step.", ev),
    ]


def _fmt(patterns: list[dict[str, Any]]) -> str:
    if not patterns:
        return "(none)"
    return ", ".join(f"{p['label']}->{p['prediction']} x{p['count']}" for p in patterns[:3])
