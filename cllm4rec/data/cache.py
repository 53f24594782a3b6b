"""Prepared datasets on disk: read -> preprocess -> split, cached under a key with a manifest.

The key hashes the reader's class and options, the sha256 of every input file, every
preprocessing and split parameter and the on-disk format version, so a changed input or
parameter rebuilds and an unchanged one reuses the cache. Builds go to a temporary folder
that is renamed into place only when complete: a failed run leaves nothing behind, and a file
lock makes concurrent prepares of the same dataset (a Hydra multirun, DDP ranks) build it once.
The manifest holds the sha256 of every cached file, checked on every load: a missing, cut or
altered file, or an unreadable manifest, is rebuilt from the inputs with one log line saying why.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from filelock import FileLock

from ..files import sha256_file, versions
from ..paths import data_cache
from .dataset import Dataset
from .errors import BadLines, DataError
from .preprocess import preprocess
from .splits import split_counts, split_dataset, split_users

FORMAT_VERSION = 2          # 2: the manifest holds each cached file's sha256

log = logging.getLogger(__name__)


def _source_options(source) -> dict:
    """The reader's public options. Private `_x` state and `notes` are not options; input paths
    are left out because their content is hashed instead (moving a file does not rebuild,
    changing it does)."""
    def is_path(v):
        return isinstance(v, (str, os.PathLike)) and Path(v).exists()
    return {k: v for k, v in sorted(vars(source).items())
            if k != "notes" and not k.startswith("_") and not is_path(v)}


def prepare_dataset(source, *, preprocess_args: dict | None = None, split_args: dict | None = None,
                    strict: bool = True, cache_dir: str | os.PathLike | None = None,
                    force: bool = False) -> tuple[Dataset, dict]:
    """Return the prepared (preprocessed, split) dataset and its manifest, building if needed."""
    preprocess_args = dict(preprocess_args or {})
    split_args = dict(split_args or {})
    if "ratios" in split_args:
        split_args["ratios"] = [float(r) for r in split_args["ratios"]]
    files = [Path(f) for f in source.files()]
    for f in files:
        if not f.exists():
            raise DataError(f, "input file not found", hint="check the path in the data config "
                            "(data.source.*) or pass another one on the command line")
    inputs = [{"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]
    recipe = {
        "format_version": FORMAT_VERSION,
        "reader": type(source).__name__,
        "reader_options": _source_options(source),
        "inputs": sorted(i["sha256"] for i in inputs),
        "strict": strict,
        "preprocess": preprocess_args,
        "split": split_args,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else data_cache()
    folder = root / f"{source.name}-{key}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / f".{source.name}-{key}.lock"):
        if folder.exists() and not force:
            damage = cache_damage(folder)
            if damage is None:
                manifest = json.loads((folder / "manifest.json").read_text())
                manifest["cache"] = {"folder": str(folder), "reused": True}
                return Dataset.load(folder), manifest
            log.warning("prepared dataset %s is damaged (%s): rebuilding it from the inputs", folder, damage)
            force = True
        return _build(source, files, inputs, key, folder, preprocess_args, split_args, strict, force)


def cache_damage(folder: Path) -> str | None:
    """Why a cache folder cannot be used as it is (None: every file is the one its manifest hashed)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return "no manifest.json"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"manifest.json unreadable: {type(e).__name__}"
    for name, digest in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if sha256_file(path) != digest:
            return f"{name} differs from the sha256 in its manifest (cut or altered)"
    return None


def _build(source, files, inputs, key, folder, preprocess_args, split_args, strict, force):
    root = folder.parent
    bad = BadLines(strict=strict)
    ds = source.read(bad)
    ds, steps = preprocess(ds, **preprocess_args)
    if ds.n_interactions == 0:
        raise DataError(files[0] if files else source.name,
                        f"preprocessing {preprocess_args} left no interactions "
                        f"(counts per step: {steps})",
                        hint="lower data.preprocess.user_core / item_core or the rating threshold")
    ds = split_dataset(ds, **split_args)
    manifest = {
        "dataset": source.name,
        "key": key,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reader": {"class": type(source).__name__, "options": {k: str(v) for k, v in vars(source).items()
                                                                 if k != "notes"}},
        "inputs": inputs,
        "read_report": {**bad.report(), "notes": getattr(source, "notes", {})},
        "preprocess": preprocess_args,
        "steps": steps,
        "split": {**split_args, "counts": split_counts(ds), "users": split_users(ds)},
        "counts": ds.counts(),
        **({} if ds.cold_items is None else {"cold_items": [ds.item_ids[j] for j in np.flatnonzero(ds.cold_items)]}),
        "texts": {"item": sorted(ds.item_text), "user": sorted(ds.user_text),
                  "interaction": sorted(ds.interaction_text)},
        "versions": versions(("cllm4rec", "numpy", "scipy")),
    }
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{source.name}-{key}-"))
    try:
        ds.save(tmp)
        manifest["files"] = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if force and folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)      # the lock is held: nobody else builds this key meanwhile
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest["cache"] = {"folder": str(folder), "reused": False}
    return ds, manifest


def manifest_table(manifest: dict) -> str:
    """A plain-text summary of a manifest for the terminal."""
    rows = [("dataset", manifest["dataset"]), ("cache", manifest.get("cache", {}).get("folder", "")),
            ("reused", manifest.get("cache", {}).get("reused", ""))]
    for i in manifest["inputs"]:
        rows.append(("input", f"{i['path']}  ({i['bytes']:,} B, sha256 {i['sha256'][:16]})"))
    rr = manifest["read_report"]
    rows.append(("bad lines skipped", rr["skipped_lines"]))
    for k, v in rr.get("notes", {}).items():
        rows.append((k, v))
    width = max(len(s["step"]) for s in manifest["steps"])
    rows.append(("", ""))
    rows.append(("step".ljust(width), f"{'users':>9} {'items':>9} {'interactions':>13}"))
    for s in manifest["steps"]:
        rows.append((s["step"].ljust(width), f"{s['users']:>9,} {s['items']:>9,} {s['interactions']:>13,}"))
    sp = manifest["split"]
    rows.append(("", ""))
    rows.append(("split", ", ".join(f"{k}={v}" for k, v in sp.items() if k != "counts")))
    rows.append(("split counts", ", ".join(f"{k} {v:,}" for k, v in sp["counts"].items())))
    rows.append(("scorable users", ", ".join(f"{k} {v:,}" for k, v in sp.get("users", {}).items())))
    if "cold_items" in manifest:
        rows.append(("cold items", f"{len(manifest['cold_items']):,} held out of training"))
    t = manifest["texts"]
    rows.append(("texts", f"item {t['item']}, user {t['user']}, interaction {t['interaction']}"))
    kw = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{str(k).ljust(kw)}  {v}" for k, v in rows)
