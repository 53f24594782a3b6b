"""Fewer, larger fine-tuning steps: does a bigger batch with a scaled learning rate, warm-up and
cosine decay reach the default's validation Recall@20, and how much sooner?

    .venv/bin/python benchmarks/batch_scaling.py [--data ml100k] [--backbone tiny_gpt2]
        [--batches 16 64] [--rule sqrt|linear] [--warmup 0.05] [--seed 0] [-- <overrides of every run>]

One pretraining run, then fine-tuning runs from it (`pretrained=`), each its own run folder under
runs/<data>/<backbone>/batch_scaling_<hash of the overrides>_*:
- `reference`: the default fine-tuning (model.finetune.batch_size, lr and schedule as conf/ has them);
- per batch B: lr = default lr x (B / default batch)^(1/2) (rule sqrt) or ^1 (rule linear), a linear
  warm-up over `--warmup` of the steps, then cosine decay to 0 over the default epochs.
The target is the reference's best validation Recall@20; for each run, the wall seconds until its
validation first reaches the target (history.json's `seconds`: fit time, validation included),
and the ratio to the reference's. Only validation is read. Runs run one after another, alone on the
machine. Writes benchmarks/results/batch_scaling_<data>_<backbone>_<rule>.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, compose, load, machine, now, write_json  # noqa: E402
from quality import commit  # noqa: E402


def run(stage: str, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", f"cllm4rec.{stage}", *overrides, "logger=none", "trainer.enable_progress_bar=false"]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def curve(folder: Path, target: float | None) -> dict:
    """The run's validation curve and when it first reaches `target` (None: its own best)."""
    hist = json.loads((folder / "finetune" / "history.json").read_text())
    best = max(hist, key=lambda e: e["val_recall@20"])
    target = best["val_recall@20"] if target is None else target
    hit = next((e for e in hist if e["val_recall@20"] >= target), None)
    return {"best_val_recall@20": best["val_recall@20"], "best_epoch": best["epoch"], "epochs_run": len(hist),
            "fit_seconds": hist[-1]["seconds"], "seconds_per_epoch": hist[-1]["seconds"] / len(hist),
            "seconds_to_target": hit and hit["seconds"], "epoch_at_target": hit and hit["epoch"],
            "val_recall@20": [round(e["val_recall@20"], 4) for e in hist], "seconds": [e["seconds"] for e in hist]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="ml100k")
    p.add_argument("--backbone", default="tiny_gpt2")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--rule", choices=("sqrt", "linear"), default="sqrt")
    p.add_argument("--warmup", type=float, default=0.05, help="model.finetune.warmup_ratio of the larger batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of every run (after --)")
    a = p.parse_args()
    base = [f"data={a.data}", f"backbone={a.backbone}", f"seed={a.seed}", *a.overrides]
    ft = compose("finetune", base).model.finetune
    runs_root = ROOT / "runs" / a.data / a.backbone
    tag = hashlib.sha1(" ".join(base).encode()).hexdigest()[:8]      # other overrides: other run folders
    pre = runs_root / f"batch_scaling_{tag}_pretrain"
    load_start, t0 = load(), time.perf_counter()
    if not (pre / "pretrain" / "metrics.json").exists():
        run("pretrain", [*base, f"name={pre.name}"])
    variants = {"reference": []}
    for b in a.batches:
        lr = ft.lr * (b / ft.batch_size) ** (0.5 if a.rule == "sqrt" else 1.0)
        variants[f"batch{b}"] = [f"model.finetune.batch_size={b}", f"model.finetune.lr={lr:.4g}",
                                 "model.finetune.lr_schedule=cosine", f"model.finetune.warmup_ratio={a.warmup}"]
    rows, target = {}, None
    for name, extra in variants.items():
        folder = runs_root / f"batch_scaling_{tag}_{name}"
        run("finetune", [*base, *extra, f"name={folder.name}", f"pretrained={pre}"])
        r = rows[name] = {"overrides": extra, **curve(folder, target)}   # the reference runs first
        target = r["best_val_recall@20"] if target is None else target
        print(f"{name}: best val R@20 {r['best_val_recall@20']:.4f} (epoch {r['best_epoch']}), "
              f"{r['seconds_per_epoch']:.0f} s/epoch, target at {r['seconds_to_target']} s", flush=True)
    ref_s = rows["reference"]["seconds_to_target"]
    for r in rows.values():
        r["time_to_target_ratio"] = r["seconds_to_target"] and round(r["seconds_to_target"] / ref_s, 3)
    out = write_json(RESULTS / f"batch_scaling_{a.data}_{a.backbone}_{a.rule}.json", {
        "benchmark": "fine-tuning batch size with a scaled learning rate: time to the default's validation Recall@20",
        "date": now(), "machine": machine(), "commit": commit(), "load_avg_start": load_start, "load_avg_end": load(),
        "wall_s": round(time.perf_counter() - t0, 1), "overrides": base, "rule": a.rule, "warmup_ratio": a.warmup,
        "reference": {"batch_size": ft.batch_size, "lr": ft.lr, "lr_schedule": ft.lr_schedule,
                      "warmup_ratio": ft.warmup_ratio, "epochs": ft.epochs},
        "target_val_recall@20": target, "runs": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
