"""The run folder: the only module that knows where a run's files live.

    runs/<data>/<backbone>/<name>/            (a Hydra multirun job: multirun/.../<job number>/)
        config-<stage>.yaml                   the resolved config of each stage
        manifest-<stage>.json                 data manifest, input hashes, versions, seed
        <stage>/checkpoints/{last,best}.ckpt  Lightning checkpoints (ID tables, optimizer, loop,
                                              data position, RNG; never the frozen backbone)
        <stage>/embeddings.safetensors        trained user/item tables, loadable with plain torch
        <stage>/metrics.json, metrics.md      final metrics
        <stage>/history.json                  per-epoch mean losses and validation metrics
        evaluation.json, evaluation.md        model vs baselines (python -m cllm4rec.evaluate)
        id_maps.json                          user/item index -> raw id
        data/                                 the prepared dataset the run trained on (id maps, split,
                                              texts, manifest with sha256): evaluate and recommend
                                              read it, so a copied folder serves without the raw data
        plot.png                              losses and validation metrics (evaluation stage)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import RunError
from .files import replacing, versions, write_atomic

STAGES = ("pretrain", "finetune")


TRAINING_SECTIONS = ("data", "backbone", "corpus", "model", "seed")   # what decides a trained model


def config_differences(old: dict, new: dict, sections=TRAINING_SECTIONS, limit: int = 6) -> list[str]:
    """'key: old -> new' for each leaf of `sections` that differs between two resolved configs."""
    out = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")

    for s in sections:
        walk(old.get(s), new.get(s), s)
    return out[:limit]


def checked_checkpoint(path: str | os.PathLike) -> Path:
    """`path` if it is a whole Lightning checkpoint (a zip archive whose every member's CRC
    matches), else a RunError naming it: a cut or altered checkpoint never loads partially."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile) as e:
        bad = f"not a whole checkpoint ({e})"
    if bad is not None:
        raise RunError(f"{path} is damaged ({bad}): it was cut or altered. Delete it and train the stage "
                       f"again (without resume=true), or restore the file")
    return path


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON metadata) of a run's safetensors file; a damaged one is a RunError naming it."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} is damaged and cannot be read ({e}): train the stage that wrote it again, "
                       f"or restore the file") from None


class Run:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return self.root / stage

    def checkpoints(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoints"

    def last_checkpoint(self, stage: str) -> Path | None:
        p = self.checkpoints(stage) / "last.ckpt"
        return p if p.exists() else None

    def embeddings_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "embeddings.safetensors"

    def dataset_folder(self) -> Path:
        return self.root / "data"

    # ------------------------------------------------------------------ writing
    def keep_dataset(self, prepared: str | os.PathLike) -> None:
        """Copy the prepared dataset (a cache folder) into the run, once per dataset key."""
        prepared, dest = Path(prepared), self.dataset_folder()
        manifest = json.loads((prepared / "manifest.json").read_text())
        if (dest / "manifest.json").exists() and json.loads((dest / "manifest.json").read_text()).get("key") == manifest["key"]:
            return
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".data-"))
        try:
            shutil.copytree(prepared, tmp, dirs_exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def check_resumable(self, stage: str, config: dict) -> None:
        """A RunError unless the stage's last run (config-<stage>.yaml) trained what `config` (resolved)
        trains: resuming its checkpoint under another config would mix two runs."""
        path = self.root / f"config-{stage}.yaml"
        if not path.exists():
            return
        import yaml
        diff = config_differences(yaml.safe_load(path.read_text()) or {}, config)
        if diff:
            raise RunError(f"resume=true, but {self.last_checkpoint(stage)} was written by a run with another "
                           f"config ({'; '.join(diff)}): resume with that run's overrides, or start the stage over "
                           f"without resume=true (its checkpoints are then replaced)")

    def write_config(self, stage: str, yaml_text: str, manifest: dict) -> None:
        write_atomic(self.root / f"config-{stage}.yaml", yaml_text)
        write_atomic(self.root / f"manifest-{stage}.json",
                      json.dumps({**manifest, "versions_run": versions()}, indent=2, default=str))

    def save_embeddings(self, stage: str, tables: dict[str, torch.Tensor], user_ids, item_ids,
                        meta: dict) -> Path:
        path = self.embeddings_path(stage)
        with replacing(path) as tmp:
            save_file(tables, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
        write_atomic(self.root / "id_maps.json", json.dumps({"user_ids": list(user_ids), "item_ids": list(item_ids)}))
        return path

    def added_items_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "added_items.safetensors"

    def save_added_items(self, stage: str, rows: dict[str, torch.Tensor], meta: dict) -> Path:
        """Rows of the items added at serving time (Recommender.add_items), with their ids and texts."""
        path = self.added_items_path(stage)
        with replacing(path) as tmp:
            save_file({k: v.contiguous() for k, v in rows.items()}, str(tmp),
                      metadata={k: json.dumps(v) for k, v in meta.items()})
        return path

    def load_added_items(self, stage: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        path = self.added_items_path(stage)
        return read_safetensors(path) if path.exists() else None

    def backbone_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "backbone.safetensors"

    def save_backbone_state(self, stage: str, backbone, meta: dict) -> Path:
        """What of the backbone trained (tuning.trained_state: a LoRA adapter or every weight)."""
        from .tuning import trained_state
        path = self.backbone_path(stage)
        with replacing(path) as tmp:
            save_file(trained_state(backbone), str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
        return path

    def load_backbone_state(self, stage: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, metadata) of a tuned backbone, or None: the stage kept the backbone frozen."""
        path = self.backbone_path(stage)
        if not path.exists():
            return None
        return read_safetensors(path)

    def write_metrics(self, stage: str, results: dict, table: str) -> None:
        write_atomic(self.stage_dir(stage) / "metrics.json", json.dumps(results, indent=2))
        write_atomic(self.stage_dir(stage) / "metrics.md", table + "\n")

    def write_evaluation(self, results: dict, table: str) -> None:
        write_atomic(self.root / "evaluation.json", json.dumps(results, indent=2))
        write_atomic(self.root / "evaluation.md", table + "\n")

    def write_history(self, stage: str, epochs: list[dict]) -> None:
        write_atomic(self.stage_dir(stage) / "history.json", json.dumps(epochs, indent=1))

    # ------------------------------------------------------------------ reading
    def history(self, stage: str) -> list[dict]:
        p = self.stage_dir(stage) / "history.json"
        return json.loads(p.read_text()) if p.exists() else []

    def load_embeddings(self, stage: str) -> tuple[dict[str, torch.Tensor], dict]:
        path = self.embeddings_path(stage)
        if not path.exists():
            raise RunError(
                f"no {stage} embeddings at {path}: run `python -m cllm4rec.{stage}` with the same data/backbone/"
                f"name first, or point `pretrained=` at a run folder that has them")
        return read_safetensors(path)

    def id_maps(self) -> dict:
        return json.loads((self.root / "id_maps.json").read_text())
