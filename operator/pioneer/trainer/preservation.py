"""Regression-aware retraining: keep what the deployed parent got right while fixing what it got wrong.

A repair retrains from the base model on a curriculum; nothing in plain cross-entropy says "keep the parent's
answers". Three preservation objectives, each a strategy field of the attempt (``Strategy.preserving``):

* learning without forgetting (``distillation``): a KL term pulling the candidate's distribution toward the
  parent's on replayed and hard-negative examples (never the corrections: there the parent is wrong);
* confidence-aware replay (``confidenceReplay``): a replayed example's loss weighs 1 + c x (1 - parent margin),
  so the parent's fragile boundaries, where churn happens, get the most replay;
* weight-space interpolation (``interpolation``, WiSE-FT): (1 - alpha) x parent + alpha x candidate, both
  trained from the same base model, alpha chosen on the failure set and a validation slice of passing traces
  held out of training (:func:`choose_alpha`).

And :func:`regression_profile`: what a candidate's regressions are, for the planner and the report.
The functions here are pure (arrays in, arrays or dicts out) except the model loading at the top.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from typing import Any

import numpy as np

from pioneer import defaults as d

# roles of curriculum rows the distillation term applies to: examples the parent is meant to get right
DISTILLED_ROLES = frozenset({"replay", "hard_negative", "augment"})
REPLAY_ROLES = frozenset({"replay"})


def load_parent(inputs):
    """The deployed parent named by the attempt's inputs, verified against its content hash: (tokenizer, model).
    Loaded once per trainer run (training and the regression profile both read it)."""
    return _load_parent(inputs.parent_model_uri, inputs.parent_model_sha256)


@functools.lru_cache(maxsize=1)
def _load_parent(uri: str, sha256: str | None):
    from pioneer.revisions import verify_model_dir
    from pioneer.trainer.base_models import resolve
    from pioneer.trainer.classification import load_trained

    path = resolve(uri)
    if sha256:
        verify_model_dir(path, sha256, "parent model")
    return load_trained(path)


def label_order(model) -> list[str]:
    """A classifier's labels in the order of its head."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def aligned_probs(probs: np.ndarray, parent_labels: list[str], labels: list[str]) -> np.ndarray:
    """The parent's class probabilities re-ordered to ``labels`` (a label the parent lacks gets 0, rows renormalised)."""
    where = {lab: i for i, lab in enumerate(parent_labels)}
    out = np.zeros((probs.shape[0], len(labels)), dtype=np.float32)
    for j, lab in enumerate(labels):
        if lab in where:
            out[:, j] = probs[:, where[lab]]
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, 1.0 / max(1, len(labels))), where=total > 0)


def label_margin(probs: np.ndarray, label_ids: list[int]) -> np.ndarray:
    """Per row: probability of its label minus the best other label's (negative where the parent disagrees)."""
    rows = np.arange(len(label_ids))
    own = probs[rows, label_ids]
    others = probs.copy()
    others[rows, label_ids] = -np.inf
    return own - others.max(axis=1)


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the parent's distribution at temperature T."""
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def calibrated_temperature(probs: np.ndarray, label_ids: list[int], bounds: tuple[float, float] = d.TEMPERATURE_BOUNDS) -> float:
    """Temperature scaling (Guo et al., 2017): the T minimising the negative log-likelihood of the known labels under
    softmax(log p / T). An under-confident parent (flat probabilities, right ranking) gets T < 1."""
    from scipy.optimize import minimize_scalar

    if not label_ids:
        return 1.0
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    rows = np.arange(len(label_ids))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[rows, label_ids] - np.log(np.exp(z).sum(axis=1))).mean())
    found = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(found.x))


def parent_temperature(fixed: float | None, probs: np.ndarray, label_ids: list[int]) -> tuple[float, str]:
    """(temperature of the parent's distribution, how it was chosen): the strategy's fixed value, or temperature scaling
    on the verified rows ``probs``/``label_ids``."""
    if fixed:
        return fixed, "fixed"
    return calibrated_temperature(probs, label_ids), "calibrated on the replayed examples"


def replay_weights(roles: list[str], margins: np.ndarray, strength: float) -> np.ndarray:
    """Loss weight per row: 1 for corrections and hard negatives; 1 + c x (1 - margin clipped to [0, 1]) for replay."""
    fragile = 1.0 - np.clip(margins, 0.0, 1.0)
    replay = np.array([r in REPLAY_ROLES for r in roles])
    return np.where(replay, 1.0 + strength * fragile, 1.0).astype(np.float32)


def validation_split(rows: list[dict[str, Any]], seed: int, share: float = d.INTERPOLATION_VALIDATION_SHARE,
                     cap: int = d.INTERPOLATION_VALIDATION_MAX) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, validation rows): a seeded share of the replayed passing traces (``meta.source == passing``),
    held out of training to measure churn when mixing weights. The regression set is never among them."""
    passing = [i for i, r in enumerate(rows) if r.get("role") == "replay" and (r.get("meta") or {}).get("source") == "passing"]
    n = min(cap, round(len(passing) * share))
    held = set(random.Random(f"interpolation-{seed}").sample(passing, n)) if n else set()
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def mix(parent_state: dict[str, Any], candidate_state: dict[str, Any], alpha: float) -> dict[str, Any]:
    """(1 - alpha) x parent + alpha x candidate, tensor by tensor (integer buffers are the candidate's)."""
    out = {}
    for key, value in candidate_state.items():
        other = parent_state[key]
        out[key] = (1 - alpha) * other + alpha * value if value.is_floating_point() else value
    return out


def compatible(parent_state: dict[str, Any], candidate_state: dict[str, Any]) -> str | None:
    """Why two state dicts cannot be mixed (another architecture or base model), or None."""
    if parent_state.keys() != candidate_state.keys():
        missing = sorted(set(parent_state) ^ set(candidate_state))[:3]
        return f"the parent and the candidate have different weights ({missing}): not the same base model"
    for key, value in candidate_state.items():
        if parent_state[key].shape != value.shape:
            return f"weight {key} has shape {tuple(parent_state[key].shape)} in the parent and {tuple(value.shape)} in the candidate"
    return None


def choose_alpha(results: list[dict[str, Any]], tau: float | None) -> tuple[dict[str, Any], str]:
    """The mix to keep, from one result per alpha ({alpha, failure_score, validation_churn}): the least churn among the
    mixes whose failure-set score reaches tau (ties: the larger alpha, closer to the trained candidate); with none
    reaching tau, the best failure-set score (ties: the larger alpha). Returns (result, the rule in words)."""
    ordered = sorted(results, key=lambda r: -r["alpha"])
    if tau is not None:
        reaching = [r for r in ordered if r["failure_score"] >= tau]
        if reaching:
            best = min(reaching, key=lambda r: (r["validation_churn"], -r["alpha"]))
            return best, (f"least validation churn ({best['validation_churn']}) among the {len(reaching)} mixes whose failure-set "
                          f"score reaches tau {tau:g}")
    best = max(ordered, key=lambda r: (r["failure_score"], r["alpha"]))
    return best, f"no mix reaches tau {tau:g}: the best failure-set score" if tau is not None else "the best failure-set score"


def regression_profile(regressed: list[dict[str, Any]], regression_margins: np.ndarray, regressed_margins: np.ndarray,
                       failures: list[dict[str, Any]], near: float = d.REGRESSION_NEAR_SIMILARITY) -> dict[str, Any]:
    """What the regressions are: which label pairs flipped (the parent's answer -> the candidate's), the parent's margin on
    the flipped traces against its margin over the whole regression set, and whether the flips sit next to a fixed failure
    whose correction is the label they flipped to (the repair pulled that boundary across them)."""
    from pioneer.data.similarity import TextIndex

    pairs = Counter((r["label"], r["prediction"]) for r in regressed)
    profile: dict[str, Any] = {
        "count": len(regressed),
        "pairs": [{"label": a, "prediction": b, "count": n} for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))][:10],
        "parent_margin_median": round(float(np.median(regressed_margins)), 4) if len(regressed_margins) else None,
        "regression_set_margin_median": round(float(np.median(regression_margins)), 4) if len(regression_margins) else None,
    }
    if regressed and failures:
        index = TextIndex([f["text"] for f in failures])
        sims, nearest = index.nearest(index.vectors([r["text"] for r in regressed]), list(range(len(failures))), k=1)
        pulled = [float(s[0]) >= near and failures[int(n[0])]["label"] == r["prediction"]
                  for r, s, n in zip(regressed, sims, nearest)]
        profile["nearest_failure_similarity_median"] = round(float(np.median(sims[:, 0])), 4)
        profile["near_fixed_failures"] = int(sum(pulled))
        profile["near_similarity"] = near
    return profile
