"""The operator image installs Pioneer without the `train` extra: nothing the operator runs may need torch."""

from __future__ import annotations

import subprocess
import sys

TRAIN_ONLY = ("torch", "transformers", "peft", "accelerate", "cleanlab", "rouge_score", "gguf")


def test_the_operator_code_paths_import_nothing_from_the_train_extra():
    code = ("import sys\n"
            "import pioneer.kube.handlers, pioneer.kube.registry, pioneer.engine, pioneer.report, pioneer.preparation\n"
            "import pioneer.production.curriculum, pioneer.production.prepare, pioneer.core.lifecycle, pioneer.serve\n"
            f"print(sorted(m for m in {TRAIN_ONLY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_the_core_dependencies_leave_out_the_train_extra():
    from importlib.metadata import requires

    core = [r for r in requires("pioneer") if "extra ==" not in r]
    train = [r for r in requires("pioneer") if 'extra == "train"' in r]
    names = lambda reqs: {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in reqs}  # noqa: E731
    assert not names(core) & {"torch", "transformers", "peft", "accelerate", "cleanlab"}
    assert {"torch", "transformers", "peft", "cleanlab"} <= names(train)
