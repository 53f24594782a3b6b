"""SASRec (full-softmax CE, or sampled softmax) on Beauty, leave-one-out, full ranking.

    nice -n 5 .venv/bin/python benchmarks/sasrec.py [--data ../shared/data] [--seeds 0 1 2]
        [--max-epochs 200] [--patience 20] [--loss ce|sampled] [--bf16 | --no-bf16]
        [--threads 1] [--max-minutes 60] [--out benchmarks/results/sasrec_beauty_loo.json]

Data: S3-Rec's Beauty.txt through the package's prepare step (conf/data/beauty.yaml with
data.split.protocol=loo): 22,363 users, 12,101 items, 198,502 interactions; per user the last
item is the test item, the second-to-last the validation item, the rest training.
Protocol: train on the training sequences; after every epoch, validation NDCG@10 / HR@10
(input: training items; training items masked) for early stopping; the best epoch's weights
score the test item from training + validation items (both masked), over the whole catalogue.
Test metrics: metrics.evaluate with ks=(5, 10), metrics=("hr", "ndcg").

Model settings: SASRec's defaults (the baseline/sasrec config), overridden by the flags. Results of every seed run
with the same settings are merged into one JSON file (re-running a seed replaces it), so seeds
may run in separate processes; the summary (mean, sample std, min, max) is recomputed each time.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from cllm4rec.files import write_atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import compose  # noqa: E402
REFERENCE = {
    "note": "leave-one-out, full ranking, this exact data (S3-Rec Beauty); Recall@10 = HR@10 here",
    "SASRec (TIGER paper table)": {"hr@5": 0.0387, "ndcg@5": 0.0249, "hr@10": 0.0605, "ndcg@10": 0.0318},
    "SASRec+SS (eSASRec repository)": {"hr@10": 0.0921, "ndcg@10": 0.0531},
    "eSASRec (eSASRec repository)": {"hr@10": 0.0928, "ndcg@10": 0.0523},
    "RecBole SASRec full-softmax CE, 6 epochs, still rising (these machines)": {"hr@10": 0.0723, "ndcg@10": 0.0357},
}
TEST_KEYS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


def machine(threads: int) -> dict:
    import numpy
    import torch
    cpu = platform.processor()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have]
    except OSError:
        pass
    return {"device": "cpu", "cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags, "torch_threads": threads,
            "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}}


def load_beauty_loo(data: Path):
    from cllm4rec.prepare import prepared_dataset
    cfg = compose("prepare", ["data=beauty", "data.split.protocol=loo", f"data.root={data}"]).data
    ds, manifest = prepared_dataset(cfg, strict=True)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (22_363, 12_101, 198_502), ds
    return ds, manifest


def model_config(args) -> dict:
    from cllm4rec.sasrec import SASRec
    cfg = {k: v for k, v in SASRec().config().items() if k not in ("eval_every", "max_seconds")}
    for key in ("max_epochs", "patience", "loss", "n_negatives", "bf16", "eval_every", "lr", "batch_size",
                "dropout", "weight_decay", "dim", "ff_mult", "n_layers", "n_heads", "positions"):
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    return cfg


def run_seed(ds, cfg: dict, seed: int, max_seconds: float | None) -> dict:
    from cllm4rec.metrics import evaluate
    from cllm4rec.sasrec import SASRec
    model = SASRec(**{**cfg, "seed": seed}, max_seconds=max_seconds, verbose=True)
    t0 = time.perf_counter()
    model.fit_dataset(ds)
    fit_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = evaluate(model.scorer("test"), ds.matrix("train", "valid"), ds.matrix("test"), ks=(5, 10),
                    metrics=("hr", "ndcg"))
    best = model.history[model.best_epoch]
    return {
        "seed": seed,
        "epochs_run": len(model.history),
        "best_epoch": model.best_epoch,
        "stopped": model.stopped,
        "converged": model.stopped == "patience",
        "train_seconds_total": fit_seconds,
        "train_seconds_without_validation": sum(e["train_seconds"] for e in model.history),
        "seconds_per_epoch_train_mean": statistics.mean(e["train_seconds"] for e in model.history),
        "seconds_per_validation_mean": statistics.mean(e["eval_seconds"] for e in model.history if "eval_seconds" in e),
        "valid_at_best": {"ndcg@10": best.get("valid_ndcg@10"), "hr@10": best.get("valid_hr@10")},
        "test": {k: test[k] for k in TEST_KEYS},
        "test_seconds": time.perf_counter() - t1,
        "n_users_evaluated": test["n_users_evaluated"],
        "history": model.history,
    }


def summary(runs: list[dict]) -> dict:
    out = {}
    for k in TEST_KEYS:
        v = [r["test"][k] for r in runs]
        out[k] = {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                  "min": min(v), "max": max(v), "n_seeds": len(v)}
    return out


def merge_write(path: Path, header: dict, runs: list[dict]) -> dict:
    """Merge `runs` into the file's runs (same model config only), recompute the summary, write
    atomically; a lock file serialises concurrent seeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = {}
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except ValueError:
                old = {}
        keep = {}
        if old.get("config") == header["config"]:
            keep = {r["seed"]: r for r in old.get("runs", [])}
        keep.update({r["seed"]: r for r in runs})
        merged = sorted(keep.values(), key=lambda r: r["seed"])
        doc = {**header, "seeds": [r["seed"] for r in merged], "summary": summary(merged), "runs": merged}
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
    path.with_suffix(".lock").unlink(missing_ok=True)
    return doc


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-epochs", dest="max_epochs", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--loss", choices=("ce", "sampled"))
    p.add_argument("--n-negatives", dest="n_negatives", type=int)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 matmuls in the full-softmax loss (default on: same curves, ~2x faster here)")
    p.add_argument("--eval-every", dest="eval_every", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--dim", type=int)
    p.add_argument("--ff-mult", dest="ff_mult", type=int)
    p.add_argument("--n-layers", dest="n_layers", type=int)
    p.add_argument("--n-heads", dest="n_heads", type=int)
    p.add_argument("--positions", choices=("forward", "inverse"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: small matmuls, and no stalls on a shared machine)")
    p.add_argument("--max-minutes", dest="max_minutes", type=float, default=None,
                   help="stop a seed's training after this many minutes (the best epoch so far is kept)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    cfg = model_config(args)
    out = args.out or HERE / "results" / ("sasrec_beauty_loo.json" if cfg["loss"] == "ce"
                                          else "sasrec_sampled_beauty_loo.json")
    t = time.perf_counter()
    ds, manifest = load_beauty_loo(args.data)
    print(f"data: {ds} ({time.perf_counter() - t:.1f} s)", flush=True)
    header = {
        "benchmark": "SASRec on Beauty (S3-Rec Beauty.txt), leave-one-out, full ranking",
        "protocol": "leave-one-out, full ranking: test item ranked against all 12,101 items, train + valid "
                    "items masked; validation (early stopping) input = training items, train masked; "
                    "test input = training + validation items",
        "metrics": "cllm4rec.metrics.evaluate, ks=(5, 10), metrics=(hr, ndcg); HR@K = Recall@K (one target)",
        "data": {"name": "beauty", "counts": ds.counts(), "split": "loo",
                 "cache_key": manifest.get("key") if isinstance(manifest, dict) else None},
        "machine": machine(args.threads),
        "load_average_at_start": os.getloadavg(),
        "config": cfg,
        "max_minutes": args.max_minutes,
        "reference": REFERENCE,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for seed in args.seeds:
        print(f"seed {seed}: {cfg}", flush=True)
        r = run_seed(ds, cfg, seed, None if args.max_minutes is None else args.max_minutes * 60)
        r["load_average_at_end"] = os.getloadavg()
        doc = merge_write(out, header, [r])
        print(f"seed {seed}: best epoch {r['best_epoch']} of {r['epochs_run']} ({r['stopped']}), "
              f"{r['train_seconds_total']:.0f} s; test " + ", ".join(f"{k} {v:.4f}" for k, v in r["test"].items()),
              flush=True)
    print(json.dumps(doc["summary"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
