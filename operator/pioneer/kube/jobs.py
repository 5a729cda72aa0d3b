"""The batch/v1 Job that runs one TrainingAttempt: a pure function of the resources."""

from __future__ import annotations

import math
import os
from typing import Any

from pioneer.api.models import ModelAdaptationSpec, TrainingAttempt

LABEL_ADAPTATION = "pioneer.dev/adaptation"
LABEL_ATTEMPT = "pioneer.dev/attempt"
LABEL_PREPARATION = "pioneer.dev/preparation"
LABEL_DEPLOYED_MODEL = "pioneer.dev/deployed-model"  # on a repair the DeployedModel generated
LABEL_REVISION = "pioneer.dev/revision"  # ... and the revision it repairs
TTL_AFTER_FINISHED = 7 * 24 * 3600


def _threads(cpu: str) -> int:
    """CPU request -> torch threads ('2' -> 2, '1500m' -> 1)."""
    cpu = cpu.strip()
    value = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, math.floor(value))


def job_name(attempt_name: str) -> str:
    return attempt_name[:63].rstrip("-.")


def job_manifest(attempt: TrainingAttempt, spec: ModelAdaptationSpec, attempt_spec_uri: str) -> dict[str, Any]:
    """A Job running ``python -m pioneer.trainer <attempt spec URI>`` with the spec's trainer settings."""
    name = attempt.metadata.name
    labels = {LABEL_ADAPTATION: attempt.spec.adaptation, LABEL_ATTEMPT: name, "app.kubernetes.io/part-of": "pioneer",
              "app.kubernetes.io/component": "trainer"}
    return _job(job_name(name), labels, spec, attempt_spec_uri)


def preparation_name(adaptation: str) -> str:
    return f"{adaptation[:55].rstrip('-.')}-prepare"


def preparation_manifest(adaptation: str, spec: ModelAdaptationSpec, request_uri: str) -> dict[str, Any]:
    """The Job that runs production preparation (triage, embeddings, cleanlab, live probes) from the trainer image:
    ``python -m pioneer.trainer <preparation request URI>``. It also gets the trace stores' credentials Secrets."""
    labels = {LABEL_ADAPTATION: adaptation, LABEL_PREPARATION: adaptation, "app.kubernetes.io/part-of": "pioneer",
              "app.kubernetes.io/component": "preparation"}
    secrets = [src.credentials_secret for src in spec.data.sources if src.credentials_secret]
    job = _job(preparation_name(adaptation), labels, spec, request_uri, secrets)
    ref = spec.search.llm.api_key_secret
    if spec.production.triage.llm and ref is not None:  # the LLM review runs in the Job: the key as env, from the Secret
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["env"].append({"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        if spec.search.llm.base_url:
            container["env"].append({"name": "ANTHROPIC_BASE_URL", "value": spec.search.llm.base_url})
    return job


def _job(name: str, labels: dict[str, str], spec: ModelAdaptationSpec, uri: str, extra_secrets: list[str] | None = None) -> dict[str, Any]:
    trainer = spec.trainer
    resources: dict[str, Any] = {"requests": {"cpu": trainer.resources.cpu, "memory": trainer.resources.memory},
                                 "limits": {"memory": trainer.resources.memory}}
    if trainer.resources.gpu:
        resources["requests"]["nvidia.com/gpu"] = str(trainer.resources.gpu)
        resources["limits"]["nvidia.com/gpu"] = str(trainer.resources.gpu)
    # an image set in the spec wins; otherwise the operator-wide default (Helm value trainerImage)
    image = trainer.image if "image" in trainer.model_fields_set else os.environ.get("PIONEER_TRAINER_IMAGE", trainer.image)
    container: dict[str, Any] = {
        "name": "trainer",
        "image": image,
        "args": [uri],
        "resources": resources,
        "env": [{"name": "PIONEER_THREADS", "value": str(_threads(trainer.resources.cpu))},
                {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    secrets = ([trainer.s3_credentials_secret] if trainer.s3_credentials_secret else []) + list(extra_secrets or [])
    if secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in secrets]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if trainer.service_account_name:
        pod["serviceAccountName"] = trainer.service_account_name
    if trainer.node_selector:
        pod["nodeSelector"] = dict(trainer.node_selector)
    if trainer.tolerations:
        pod["tolerations"] = [t.dump() for t in trainer.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            # crashed pods are retried by the Job controller with exponential backoff, a bounded number of times
            "backoffLimit": trainer.max_retries,
            "activeDeadlineSeconds": trainer.timeout_seconds,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def job_outcome(job: dict[str, Any]) -> str | None:
    """'succeeded', 'failed' or None (still running) from a Job's status conditions."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    if status.get("succeeded"):
        return "succeeded"
    return None
