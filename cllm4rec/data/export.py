"""Export a split Dataset as RecBole atomic benchmark files, so RecBole (or anything reading
its format) runs on exactly our train / valid / test parts.

Files, tab-separated, raw ids, one header line of `name:type` fields:
  <name>.train.inter, <name>.valid.inter, <name>.test.inter
      user_id:token  item_id:token  [rating:float]  [timestamp:float]
  <name>.item   item_id:token  <field>:token_seq ...   (when the dataset has item texts)
  <name>.user   user_id:token  <field>:token_seq ...   (when the dataset has user texts)
Rows are in the dataset's canonical order (by user, then time). Tabs and line breaks inside
texts become spaces (the format has no quoting). In RecBole, point `benchmark_filename` at
['train', 'valid', 'test'] to use these parts as given.
Every file is written to a temporary name first and renamed into place once all are complete.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .dataset import PARTS, Dataset

_BREAKS = re.compile(r"[\t\r\n]+")


def _check_id(kind: str, raw: str) -> str:
    if _BREAKS.search(raw):
        raise ValueError(f"{kind} id {raw!r} contains a tab or line break and cannot be written to a "
                         "RecBole atomic file; clean the ids first")
    return raw


def _float32(x) -> str:
    return np.format_float_positional(np.float32(x), trim="-")  # shortest repr that round-trips


def _inter_lines(ds: Dataset, part: str) -> list[str]:
    header = ["user_id:token", "item_id:token"]
    if ds.rating is not None:
        header.append("rating:float")
    if ds.timestamp is not None:
        header.append("timestamp:float")
    lines = ["\t".join(header)]
    for j in np.flatnonzero(ds.split == PARTS[part]):
        row = [ds.user_ids[ds.user[j]], ds.item_ids[ds.item[j]]]
        if ds.rating is not None:
            row.append(_float32(ds.rating[j]))
        if ds.timestamp is not None:
            row.append(str(int(ds.timestamp[j])))
        lines.append("\t".join(row))
    return lines


def _text_lines(key: str, ids: list[str], texts: dict[str, list[str]]) -> list[str]:
    fields = sorted(texts)
    lines = ["\t".join([f"{key}:token"] + [f"{f}:token_seq" for f in fields])]
    for j, raw in enumerate(ids):
        lines.append("\t".join([raw] + [_BREAKS.sub(" ", texts[f][j]).strip() for f in fields]))
    return lines


def export_recbole(ds: Dataset, folder: str | os.PathLike, name: str) -> list[Path]:
    """Write `ds` (which must be split) as RecBole atomic files into `folder`; return their paths."""
    if ds.split is None:
        raise ValueError(f"dataset {ds.name!r} has no split, so there is no train/valid/test to export; "
                         "split it first (cllm4rec.data.split_dataset / split_random / split_leave_one_out)")
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file-name stem such as 'ml-100k', got {name!r}")
    for u in ds.user_ids:
        _check_id("user", u)
    for i in ds.item_ids:
        _check_id("item", i)

    files = {f"{name}.{part}.inter": _inter_lines(ds, part) for part in ("train", "valid", "test")}
    if ds.item_text:
        files[f"{name}.item"] = _text_lines("item_id", ds.item_ids, ds.item_text)
    if ds.user_text:
        files[f"{name}.user"] = _text_lines("user_id", ds.user_ids, ds.user_text)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for fname, lines in files.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{fname}.", suffix=".tmp")
            temps[fname] = Path(tmp)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write("\n".join(lines) + "\n")
        for fname, tmp in temps.items():
            os.replace(tmp, folder / fname)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return [folder / fname for fname in files]
