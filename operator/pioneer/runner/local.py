"""The embedded default: run a ModelAdaptation in-process, attempts as local trainer processes.

A thin adapter around the controller core: it asks :func:`pioneer.core.controller.reconcile` what to
do, materialises attempts with :mod:`pioneer.engine`, runs ``python -m pioneer.trainer`` for each,
and keeps ``state.json`` in the adaptation's artifact folder so that running the same command again
resumes instead of redoing finished attempts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pioneer import defaults as d
from pioneer import report
from pioneer.api.models import (
    GateVerdict,
    ModelAdaptation,
    ModelAdaptationStatus,
    Phase,
    Production,
    Revision,
    TrainingAttempt,
    TrainingAttemptStatus,
)
from pioneer.core import lifecycle
from pioneer.core.controller import Completion, reconcile
from pioneer.data.evalset import EvalSetTampered
from pioneer.deploy import FileRegistry
from pioneer.engine import (
    Prepared,
    attempt_key,
    attempt_spec_uri,
    before_training,
    collect,
    materialize,
    now,
    planning_advisor,
    prepare,
    read_progress,
    verify_attempt,
)
from pioneer.revisions import CorruptOutput
from pioneer.runner import ownership
from pioneer.status import adaptation_status
from pioneer.store import ArtifactStore, LocalStore, located, open_store, portable, read_json, write_json

STATE_KEY = "state.json"
MARKER_KEY = ".pioneer-adaptation"  # written into every adaptation folder this project creates
OWNED = (STATE_KEY, "eval", "data", "attempts", "planner", "report", MARKER_KEY)  # what --fresh may delete, and nothing else
LOG_TAIL = 1500


class SpecChanged(RuntimeError):
    """The spec changed in a way that invalidates the frozen evaluation set or finished attempts."""


def spec_fingerprint(ma: ModelAdaptation) -> str:
    """Hash of what the frozen artifacts depend on: task, data and the production triage. Search budget, gate and trainer may change on resume."""
    relevant = ma.spec.model_dump(mode="json", include={"mode", "task", "data"})
    if ma.spec.production != Production():  # only when set: fingerprints recorded before the field existed still match
        relevant["production"] = ma.spec.production.model_dump(mode="json")
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def frozen_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The frozen fields (mode, task, data, production) that differ between two spec dumps, named as in the YAML."""
    from pioneer.core.planner import flat_fields

    changes = []
    for section in ("mode", "task", "data", "production"):
        a, b = flat_fields(recorded.get(section), f"spec.{section}."), flat_fields(current.get(section), f"spec.{section}.")
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                changes.append(f"{k} {json.dumps(a.get(k), default=str)[:60]} -> {json.dumps(b.get(k), default=str)[:60]}")
    return changes


def clear_adaptation(store: ArtifactStore) -> list[str]:
    """``--fresh``: delete what this project wrote in an adaptation folder (only where its marker is), nothing else.

    Promoted models live outside it (``models/sha256-*``), so a fresh start never touches a served revision."""
    if not store.exists(MARKER_KEY) and not store.exists(STATE_KEY):
        return []
    removed = []
    for key in OWNED:
        if store.exists(key) or store.list(key):
            store.delete_prefix(key)
            removed.append(key)
    return removed


_PORTABLE_SECTIONS = ("status", "attempts", "lifecycle", "gate")


def read_state(store: ArtifactStore) -> dict[str, Any]:
    """state.json with its recorded locations resolved where the folder lies now (it may have been moved)."""
    state = read_json(store, STATE_KEY)
    if isinstance(store, LocalStore):
        state.update({k: located(state[k], store.root.parent) for k in _PORTABLE_SECTIONS if k in state})
    return state


def write_state(store: ArtifactStore, state: dict[str, Any]) -> None:
    """state.json with locations inside the artifacts folder recorded relative to it (a moved run still resolves)."""
    if isinstance(store, LocalStore):
        state = {**state, **{k: portable(state[k], store.root.parent) for k in _PORTABLE_SECTIONS if k in state}}
    write_json(store, STATE_KEY, state)


def adaptation_store(ma: ModelAdaptation, base_dir: Path | None) -> ArtifactStore:
    uri = ma.spec.artifacts.uri.rstrip("/")
    return open_store(f"{uri}/{ma.metadata.name}", base_dir=base_dir)


@dataclass
class Event:
    """Something the user should see: a decision, a phase change, a result."""

    kind: str
    message: str
    attempt: str | None = None
    time: str = field(default_factory=now)


@dataclass
class _Proc:
    popen: subprocess.Popen
    started: float
    log: Any


class LocalRunner:
    def __init__(self, ma: ModelAdaptation, base_dir: Path | None = None, store: ArtifactStore | None = None,
                 on_event: Callable[[Event], None] | None = None, python: str = sys.executable):
        self.ma = ma
        self.spec = ma.spec
        self.name = ma.metadata.name
        self.base_dir = base_dir
        self.store = store or adaptation_store(ma, base_dir)
        self.on_event = on_event or (lambda e: None)
        self.python = python
        self.attempts: dict[str, TrainingAttempt] = {}
        self.events: list[dict[str, Any]] = []
        self.completion: Completion | None = None
        self.prepared: Prepared | None = None
        self.status = ModelAdaptationStatus()
        self.procs: dict[str, _Proc] = {}
        self.retry_at: dict[str, float] = {}
        self.progress_record = lifecycle.Progress()
        self.recorded_eval_sha256: str | None = None
        self._pending_event: tuple[str, str] | None = None
        # attempts run as separate processes: split the cores between them
        self.threads = max(1, (os.cpu_count() or 1) // self.spec.search.parallelism)
        self.advisor = planning_advisor(self.spec, self.store, os.environ.get("ANTHROPIC_API_KEY"), on_event=self._event)

    @property
    def verdict(self) -> GateVerdict | None:
        """The gate's verdict on the target DeployedModel, when the spec names one (recorded by the lifecycle)."""
        return self.progress_record.verdict

    # ------------------------------------------------------------------ state

    def _load_state(self) -> None:
        if not self.store.exists(STATE_KEY):
            return
        state = read_state(self.store)
        if state.get("fingerprint") != spec_fingerprint(self.ma):
            recorded = ((state.get("adaptation") or {}).get("spec") or {})
            changed = (frozen_changes(recorded, self.ma.spec.dump()) if recorded else []) or ["task or data (the earlier spec is not recorded)"]
            raise SpecChanged(
                f"{self.store.uri(STATE_KEY)} was made from another spec: {'; '.join(changed[:5])}. These are frozen inputs "
                "(the evaluation set and the finished attempts depend on them). Use a new metadata.name, another "
                "artifacts.uri, or run with --fresh to start over."
            )
        self.recorded_eval_sha256 = state.get("evalSha256")
        self.attempts = {a["metadata"]["name"]: TrainingAttempt.model_validate(a) for a in state["attempts"]}
        self.events = state.get("events", [])
        if state.get("completion"):
            self.completion = Completion(**state["completion"])
        self.progress_record = _progress_from(state.get("lifecycle") or {}, self.completion)
        recorded_gate = ((state.get("adaptation") or {}).get("spec") or {}).get("gate")
        if self.completion is not None and recorded_gate is not None and recorded_gate != self.spec.gate.dump():
            # gate settings are not frozen inputs: re-decide completion and verdict from the recorded results
            changes = ", ".join(f"{k} {recorded_gate.get(k)} -> {v}" for k, v in self.spec.gate.dump().items() if recorded_gate.get(k) != v)
            self.completion, self.progress_record = None, lifecycle.Progress()
            self._pending_event = ("gate", f"the gate changed ({changes}): the search's completion and the verdict are "
                                           "decided again from the recorded results; finished attempts are not retrained")
        self.status = ModelAdaptationStatus.model_validate(state.get("status") or {})
        for name, a in self.attempts.items():
            ownership.reclaim(self._lock_path(name), lambda msg, n=name: self._event("resume", f"{n}: {msg}", n))
            if a.status and a.status.phase == Phase.running.value:
                # the runner stopped while this attempt ran: adopt a result it left, else run it again
                try:
                    done = collect(self.store, a)
                except CorruptOutput as exc:
                    done = None
                    self._event("resume", f"{name}: its output failed verification ({exc}); it will be trained again", name)
                a.status = done or a.status.model_copy(update={"phase": Phase.pending})
                self._event("resume", f"{name}: {'result adopted' if done else 'interrupted earlier, will run again'}", name)
            elif a.status and a.status.phase == Phase.succeeded.value and self.completion is None:
                try:  # a finished result is trusted only while its output still matches its manifest
                    verify_attempt(self.store, name)  # every file hashed on a local store
                except CorruptOutput as exc:
                    a.status = a.status.model_copy(update={"phase": Phase.pending, "score": None, "message": str(exc)})
                    self._event("resume", f"{name}: its output failed verification ({exc}); it will be trained again", name)
        kept = sum(1 for a in self.attempts.values() if a.status and a.status.phase in (Phase.succeeded.value, Phase.failed.value))
        self._event("resume", f"resuming from {self.store.uri(STATE_KEY)}: {kept} finished attempt(s) kept, "
                              f"{len(self.attempts) - kept} to run")

    def _save_state(self) -> None:
        if not self.store.exists(MARKER_KEY):
            self.store.write_bytes(MARKER_KEY, f"pioneer adaptation {self.name}\n".encode())
        write_state(self.store, self.state())

    def state(self) -> dict[str, Any]:
        self.status = adaptation_status(self.status, self.ma.metadata.generation, self.prepared, list(self.attempts.values()),
                                        self.completion, report_uri=self.status.report_uri)
        pr = self.progress_record
        return {
            "fingerprint": spec_fingerprint(self.ma),
            "evalSha256": self.prepared.eval_sha256 if self.prepared else self.recorded_eval_sha256,
            "adaptation": self.ma.dump() | {"status": self.status.dump()},
            "status": self.status.dump(),
            "attempts": [a.dump() for a in sorted(self.attempts.values(), key=lambda a: (a.spec.iteration, a.metadata.name))],
            "completion": asdict(self.completion) if self.completion else None,
            "events": self.events,
            "gate": self.verdict.dump() if self.verdict else None,
            "lifecycle": {"verdict": pr.verdict.dump() if pr.verdict else None,
                          "candidate": pr.candidate.dump() if pr.candidate else None,
                          "applied": pr.applied, "reportUri": pr.report_uri},
        }

    def _event(self, kind: str, message: str, attempt: str | None = None) -> None:
        ev = Event(kind, message, attempt)
        self.events.append(asdict(ev))
        self.on_event(ev)
        if self.prepared is not None:
            self._save_state()

    # ------------------------------------------------------------------ attempts as processes

    def _log_path(self, name: str) -> Path:
        """Trainer output: in the attempt folder for a local store, else a local file uploaded when the attempt ends."""
        if isinstance(self.store, LocalStore):
            path = self.store.path(attempt_key(name, "trainer.log"))
        else:
            path = Path(tempfile.gettempdir()) / "pioneer-logs" / self.name / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _lock_path(self, name: str) -> Path:
        """The attempt's owner lock: held by its one trainer for as long as that trainer runs."""
        if isinstance(self.store, LocalStore):
            return self.store.path(attempt_key(name, ownership.LOCK_NAME))
        return self._log_path(name).with_suffix(".lock")

    def _start(self, name: str) -> None:
        a = self.attempts[name]
        ownership.reclaim(self._lock_path(name), lambda msg: self._event("resume", f"{name}: {msg}", name))
        log = open(self._log_path(name), "ab")
        env = {**os.environ, "PIONEER_THREADS": str(self.threads), "OMP_NUM_THREADS": str(self.threads),
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", ownership.LOCK_ENV: str(self._lock_path(name)),
               ownership.PARENT_ENV: str(os.getpid())}
        popen = subprocess.Popen([self.python, "-m", "pioneer.trainer", attempt_spec_uri(self.store, name)],
                                 stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = _Proc(popen, time.monotonic(), log)
        a.status = (a.status or TrainingAttemptStatus()).model_copy(update={"phase": Phase.running, "started_at": now(),
                                                                            "job_name": f"pid {popen.pid}"})
        self._event("started", f"{name}: training ({a.spec.modification})", name)

    def _log_tail(self, name: str) -> str:
        path = self._log_path(name)
        return path.read_bytes()[-LOG_TAIL:].decode(errors="replace") if path.exists() else ""

    def _close_log(self, name: str, proc: _Proc) -> None:
        proc.log.close()
        if not isinstance(self.store, LocalStore):
            self.store.write_bytes(attempt_key(name, "trainer.log"), self._log_path(name).read_bytes())

    def _poll(self) -> None:
        for name, proc in list(self.procs.items()):
            a = self.attempts[name]
            code = proc.popen.poll()
            timed_out = code is None and time.monotonic() - proc.started > self.spec.trainer.timeout_seconds
            if timed_out:
                self._kill(proc)
                code = -9
            if code is None:
                continue
            del self.procs[name]
            self._close_log(name, proc)
            try:
                result = collect(self.store, a)
            except CorruptOutput as exc:
                result, code = None, f"with output that failed verification ({exc})"
            if result is not None:
                a.status = result
                if result.phase == Phase.succeeded.value:
                    self._event("succeeded", f"{name}: {self.spec.task.metric} = {result.score:.4f}", name)
                else:
                    self._event("failed", f"{name}: {result.message}", name)
                continue
            # crashed without a verdict (killed, out of memory, timeout): retry with backoff, then fail
            why = "timed out" if timed_out else f"exited with code {code}"
            retries = (a.status.retries if a.status else 0)
            if retries < self.spec.trainer.max_retries:
                delay = 2 ** retries
                a.status = a.status.model_copy(update={"phase": Phase.pending, "retries": retries + 1,
                                                       "message": f"{why}; retry {retries + 1} in {delay}s"})
                self.retry_at[name] = time.monotonic() + delay
                self._event("retry", f"{name}: {why}; retry {retries + 1}/{self.spec.trainer.max_retries} in {delay}s", name)
            else:
                tail = self._log_tail(name).strip().splitlines()[-3:]
                a.status = a.status.model_copy(update={"phase": Phase.failed, "finished_at": now(),
                                                       "message": f"{why} after {retries} retries: {' | '.join(tail)}"})
                self._event("failed", f"{name}: {why} after {retries} retries", name)

    def _launch_pending(self) -> None:
        for name, a in sorted(self.attempts.items(), key=lambda kv: (kv[1].spec.iteration, kv[0])):
            if len(self.procs) >= self.spec.search.parallelism:
                return
            if a.status.phase == Phase.pending.value and name not in self.procs and time.monotonic() >= self.retry_at.get(name, 0):
                decision = before_training(self.store, a, self.attempts.values())
                if decision.wait_for is not None:  # the same training is under way: wait for its result
                    if a.status.message != (waiting := f"waits for {decision.wait_for}: same training data and configuration"):
                        a.status = a.status.model_copy(update={"message": waiting})
                        self._event("waiting", f"{name}: {waiting}", name)
                    continue
                if decision.rejected:  # a half-written or edited output: train it again
                    self._event("retry", f"{name}: {decision.rejected}; training it again", name)
                if (reused := decision.reused) is not None:
                    a.status = reused
                    self._event("reused", f"{name}: same training data and configuration as an earlier attempt; its result "
                                          f"is reused ({self.spec.task.metric} = {reused.score:.4f})", name)
                    continue
                self._start(name)

    @staticmethod
    def _kill(proc: _Proc) -> None:
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            proc.popen.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.popen.wait()

    def stop(self) -> None:
        """Stop every running attempt; they are marked pending so a resume runs them again."""
        for name, proc in list(self.procs.items()):
            self._kill(proc)
            self._close_log(name, proc)
            a = self.attempts[name]
            a.status = a.status.model_copy(update={"phase": Phase.pending, "message": "interrupted"})
            del self.procs[name]
        self._save_state()

    def registry(self) -> ArtifactStore:
        """Where local DeployedModels live: <artifacts>/deployed/<name>.json (models under <artifacts>/models/)."""
        return open_store(self.spec.artifacts.uri, base_dir=self.base_dir)

    def _finish(self) -> None:
        """The lifecycle after the search: gate, promotion and report, each recorded before the next."""
        def emit(reason: str, message: str, warning: bool) -> None:
            self._event({"Promoted": "promoted", "GateFailed": "gate", "Report": "report"}.get(reason, reason.lower()), message)

        def save(progress: lifecycle.Progress) -> None:
            self.progress_record = progress
            self.status.report_uri = progress.report_uri
            self._save_state()

        def write_report(progress: lifecycle.Progress) -> str:
            self.progress_record = progress
            return report.write(self.store, self.state())

        ports = lifecycle.Ports(registry=FileRegistry(self.registry()), store=self.store, emit=emit,
                                write_report=write_report, save=save, now=now)
        self.progress_record = lifecycle.advance(self.spec, self.name, list(self.attempts.values()),
                                                 replace(self.progress_record, completion=self.completion), ports,
                                                 self.prepared.eval_sha256 if self.prepared else self.recorded_eval_sha256)

    # ------------------------------------------------------------------ main loop

    def progress(self) -> dict[str, dict[str, Any] | None]:
        return {name: read_progress(self.store, name) for name in self.procs}

    def run(self, on_tick: Callable[[LocalRunner], None] | None = None, poll_seconds: float = d.POLL_SECONDS) -> ModelAdaptationStatus:
        self._load_state()
        if self.completion is not None:
            missing = lifecycle.next_step(self.spec, replace(self.progress_record, completion=self.completion))
            if missing is lifecycle.Step.DONE:
                self._event("resume", f"already complete ({self.completion.reason}); nothing to do (use --fresh to start over)")
                return self.status
            self._event("resume", f"search complete ({self.completion.reason}); finishing the {missing.value} step")
            self._prepare()
            self._finish()
            return self.status
        self._prepare()
        if self._pending_event:
            self._event(*self._pending_event)
        self._save_state()
        try:
            while True:
                self._poll()
                plan = reconcile(self.name, self.spec, list(self.attempts.values()), self.prepared.pool_size, self.advisor)
                for new in plan.create:
                    if new.name in self.attempts:
                        continue
                    self.attempts[new.name] = materialize(self.name, self.spec, self.prepared, new, self.store)
                    parent = f" from {new.parent}" if new.parent else ""
                    self._event("decision", f"{new.name}{parent}: {new.modification}. {new.rationale}", new.name)
                if plan.complete and not self.procs:
                    self.completion = plan.complete
                    self._event("complete", f"{plan.complete.reason}: {plan.complete.message}")
                    self._finish()
                    return self.status
                self._launch_pending()
                if on_tick:
                    on_tick(self)
                time.sleep(poll_seconds)
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        """Freeze (or, on resume, reopen and verify) the evaluation set and the training pool."""
        if self.spec.mode == "production":
            from pioneer.production.prepare import prepare as prepare_production

            self._event("prepare", "diagnosing judged traces: failure set, regression set, taxonomy")
            registry = FileRegistry(self.registry())
            self.prepared = self._checked(prepare_production(self.spec, self.store, registry.load(self.spec.deployed_model),
                                                             self.registry().uri("deployed"), self.base_dir))
            rec = self.prepared.record
            self._event("diagnosis", f"{rec['traces']} traces: {rec['failing']} failing ({rec['fixable']} fixable, "
                                     f"{rec['external']} external), {rec['passing']} passing; regression set {rec['regression_set']}, "
                                     f"cross-checkpoint set {rec['cross_checkpoint_set']}, parent training data {rec['parent_train']}")
            for cluster in rec["taxonomy"][:8]:
                probe = (f"; live probes {cluster['probes']}, confirmation {cluster['confirmation_rate']}"
                         if cluster.get("confirmation_rate") is not None else "")
                self._event("diagnosis", f"{cluster['fixability']:<8} {cluster['size']:>4}  {cluster['cluster']}: {cluster['evidence']}{probe}")
        else:
            self._event("prepare", "building the frozen evaluation set and the cleaned training pool")
            self.prepared = self._checked(prepare(self.spec, self.store, self.base_dir))
        ev = self.prepared.record["evaluation"]
        self._event("prepare", f"evaluation set frozen: {ev['size']} examples {ev['slices']}, sha256 {self.prepared.eval_sha256[:12]}; "
                               f"training pool {self.prepared.pool_size} examples")

    def _checked(self, prepared: Prepared) -> Prepared:
        """The evaluation set must be the one this run froze (state.json's record, not only the manifest beside it)."""
        if self.recorded_eval_sha256 and prepared.eval_sha256 != self.recorded_eval_sha256:
            raise EvalSetTampered(
                f"the frozen evaluation set now hashes to {prepared.eval_sha256[:12]}, but this run froze "
                f"{self.recorded_eval_sha256[:12]} (recorded in {self.store.uri(STATE_KEY)}): it and its manifest were "
                "edited after freezing; attempts scored on two different sets cannot be compared. Use --fresh to start over.")
        return prepared


def _progress_from(raw: dict[str, Any], completion: Completion | None) -> lifecycle.Progress:
    return lifecycle.Progress(completion=completion,
                              verdict=GateVerdict.model_validate(raw["verdict"]) if raw.get("verdict") else None,
                              candidate=Revision.model_validate(raw["candidate"]) if raw.get("candidate") else None,
                              applied=bool(raw.get("applied")), report_uri=raw.get("reportUri"))
