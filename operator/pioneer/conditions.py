"""Kubernetes-style status conditions: one pure upsert, used by every status Pioneer writes."""

from __future__ import annotations

from pioneer.api.models import Condition
from pioneer.layout import now


def set_condition(conditions: list[Condition], cond: Condition) -> list[Condition]:
    """Replace the condition of the same type; keep lastTransitionTime when the status did not change."""
    out, replaced = [], False
    for c in conditions:
        if c.type == cond.type:
            keep_time = c.status == cond.status and c.last_transition_time
            out.append(cond.model_copy(update={"last_transition_time": c.last_transition_time if keep_time else now()}))
            replaced = True
        else:
            out.append(c)
    if not replaced:
        out.append(cond.model_copy(update={"last_transition_time": now()}))
    return out
