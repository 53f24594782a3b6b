"""Helpers every layer shares: atomic writes, file hashes, package versions, help-text fields.

An output is written to a temporary file beside it and moved into place with os.replace, so a
reader (or a run killed mid-write) sees the old file or the whole new one, never half of one.
"""
from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from contextlib import contextmanager
from dataclasses import field
from importlib import metadata
from pathlib import Path
from typing import Iterator

PACKAGES = ("cllm4rec", "torch", "transformers", "tokenizers", "lightning", "hydra-core", "numpy", "scipy")


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; when the block ends it replaces `path`
    atomically (on an error it is removed and `path` is untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def versions(packages: tuple[str, ...] = PACKAGES) -> dict:
    """Python's and each package's installed version (None where it is not installed)."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def help_field(default, text: str, **kw):
    """A dataclass field with help text (peft style); dict / list defaults are copied per instance."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)
