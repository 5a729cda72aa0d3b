"""Continual improvement: when a DeployedModel's next repair starts. Pure functions.

A DeployedModel with ``spec.improvement`` gets a production ModelAdaptation from its template whenever the
trigger fires. :func:`decide` is the one ordered decision (like Katib's completion reasons, each outcome a
named constant, the first that applies wins)::

    Paused          spec.improvement.paused
    NoRevision      nothing is served yet, so there is nothing to repair
    InFlight        a generated repair has not finished (maxConcurrent 1)
    CoolingDown     the previous repair started less than cooldownSeconds ago
    Failures        at least trigger.newFailures new judged failures of the current revision  -> a repair starts
    Schedule        a cron tick of trigger.schedule passed since the last check, with any new failure -> a repair starts

"New" failures are those judged since the revision was first served, less those already there when an earlier
repair of the same revision started: a refused repair is not retried on the same evidence.
    BelowThreshold  otherwise

The name of a repair is a function of (model, revision, sequence), the sequence counted from the repairs that
already exist for that revision, so an operator restarted between the creation and its status write finds the
repair it made and makes no second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from pioneer import defaults as d
from pioneer.api.models import Improvement

PAUSED, NO_REVISION, IN_FLIGHT, COOLING_DOWN = "Paused", "NoRevision", "InFlight", "CoolingDown"
FAILURES, SCHEDULE, BELOW_THRESHOLD = "Failures", "Schedule", "BelowThreshold"
FIRING = (FAILURES, SCHEDULE)


@dataclass(frozen=True)
class Repair:
    """A ModelAdaptation the DeployedModel generated earlier."""

    name: str
    revision: int | None
    created_at: datetime
    finished: bool
    failures_at_start: int = 0  # the revision's judged failures when it started: the next repair needs new ones


@dataclass(frozen=True)
class Decision:
    reason: str  # one of the constants above
    message: str
    name: str | None = None  # the adaptation to create when the trigger fires
    next_check: datetime | None = None

    @property
    def fires(self) -> bool:
        return self.reason in FIRING


def repair_name(model: str, revision: int, sequence: int) -> str:
    """``<model>-r<revision>-<sequence>``, shortened with a hash of the model name to fit 63 characters."""
    suffix = f"-r{revision}-{sequence}"
    if len(model) + len(suffix) <= 63:
        return model + suffix
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{model[: 63 - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def schedule_ticked(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The first tick of ``schedule`` after ``since`` when it is not later than ``now``."""
    from croniter import croniter

    tick = croniter(schedule, since).get_next(datetime)
    return tick if tick <= now else None


def decide(policy: Improvement, model: str, revision: int | None, failures: int, repairs: list[Repair], now: datetime,
           last_check: datetime | None, check_every: float = d.IMPROVEMENT_CHECK_SECONDS) -> Decision:
    """Whether the next repair of ``model`` starts now; ``failures`` are the current revision's judged failures."""
    trigger = policy.trigger
    next_check = now + timedelta(seconds=check_every)
    if policy.paused:
        return Decision(PAUSED, "spec.improvement.paused is true", next_check=next_check)
    if revision is None:
        return Decision(NO_REVISION, "no revision is served yet", next_check=next_check)
    running = [r for r in repairs if not r.finished]
    if running:
        return Decision(IN_FLIGHT, f"{running[0].name} is still running (maxConcurrent {policy.max_concurrent})", next_check=next_check)
    latest = max(repairs, key=lambda r: r.created_at, default=None)
    if latest is not None and (now - latest.created_at).total_seconds() < trigger.cooldown_seconds:
        until = latest.created_at + timedelta(seconds=trigger.cooldown_seconds)
        return Decision(COOLING_DOWN, f"{latest.name} started at {latest.created_at:%Y-%m-%dT%H:%M:%SZ}; the cool-down of "
                        f"{trigger.cooldown_seconds} s ends at {until:%Y-%m-%dT%H:%M:%SZ}", next_check=max(next_check, until))
    earlier = [r for r in repairs if r.revision == revision]
    name = repair_name(model, revision, 1 + len(earlier))
    seen = max((r.failures_at_start for r in earlier), default=0)
    new = failures - seen
    counted = f"{new} new judged failure(s) of revision {revision}" + (f" ({failures} in all, {seen} when {earlier[-1].name} started)"
                                                                        if earlier else "")
    if trigger.new_failures is not None and new >= trigger.new_failures:
        return Decision(FAILURES, f"{counted} (trigger: newFailures {trigger.new_failures})", name, next_check)
    if trigger.schedule and new > 0:
        tick = schedule_ticked(trigger.schedule, last_check or now - timedelta(seconds=check_every), now)
        if tick is not None:
            return Decision(SCHEDULE, f"schedule {trigger.schedule!r} ticked at {tick:%Y-%m-%dT%H:%M:%SZ} with {counted}", name, next_check)
    wanted = [f"newFailures {trigger.new_failures}"] if trigger.new_failures is not None else []
    wanted += [f"schedule {trigger.schedule!r} (with any new failure)"] if trigger.schedule else []
    return Decision(BELOW_THRESHOLD, f"{counted}; waits for {' or '.join(wanted)}", next_check=next_check)
