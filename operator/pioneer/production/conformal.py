"""Conformal p-values and Benjamini-Hochberg: how the triage flags traces at a known false-discovery rate.

Every statistical check gives a score where lower means less like the task (less support, less similarity).
The trusted reference (the parent's training data, scored leave-one-out) gives the score's distribution
on clean data, so a trace's conformal p-value is the share of trusted examples that look at least as
unusual as it does. Under the null (the trace is exchangeable with the trusted data) it is super-uniform,
and Benjamini-Hochberg over a batch of such p-values (positively dependent through the shared reference,
which BH tolerates) keeps the expected share of false discoveries at or below the level.
"""

from __future__ import annotations

import numpy as np


def p_values(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """p_i = (1 + #{reference <= score_i}) / (n + 1); NaN where a score is undefined (the check does not apply).

    The smallest possible value is 1 / (n + 1): a reference of n examples cannot make a lone trace more
    significant than that, whatever its score."""
    ref = np.sort(np.asarray(reference, dtype=float)[np.isfinite(reference)])
    scores = np.asarray(scores, dtype=float)
    out = (1.0 + np.searchsorted(ref, scores, side="right")) / (len(ref) + 1.0)
    out[~np.isfinite(scores)] = np.nan
    return out


def reference_p_values(reference: np.ndarray) -> np.ndarray:
    """Each trusted example's own p-value against the others (leave-one-out), to calibrate a combination of checks."""
    ref = np.asarray(reference, dtype=float)
    finite = np.sort(ref[np.isfinite(ref)])
    # #{others <= r_i} = #{all <= r_i} - 1, over a reference of n - 1
    out = np.searchsorted(finite, ref, side="right").astype(float) / max(len(finite), 1)
    out[~np.isfinite(ref)] = np.nan
    return out


def min_p(columns: list[np.ndarray]) -> np.ndarray:
    """Row-wise smallest p-value over several checks (NaN only where no check applies)."""
    stacked = np.vstack([np.where(np.isfinite(c), c, np.inf) for c in columns])
    out = stacked.min(axis=0)
    out[~np.isfinite(out)] = np.nan
    return out


def adjusted(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy): a trace is a discovery at level q when its value is <= q.
    Traces without a p-value (NaN) take no part and get NaN."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=float)
    out = np.full(len(p), np.nan)
    tested = np.isfinite(p)
    if tested.any():
        out[tested] = false_discovery_control(p[tested], method="bh")
    return out


def by_group(reference: np.ndarray, reference_groups: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mondrian conformal p-values: each trace against the trusted examples of its own group only (a trace is
    compared with trusted examples that are as hard as it is, not with all of them)."""
    out = np.full(len(scores), np.nan)
    for g in np.unique(groups):
        mine = groups == g
        out[mine] = p_values(reference[reference_groups == g], scores[mine])
    return out


def reference_by_group(reference: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """:func:`reference_p_values` within each group."""
    out = np.full(len(reference), np.nan)
    for g in np.unique(groups):
        mine = groups == g
        out[mine] = reference_p_values(reference[mine])
    return out
