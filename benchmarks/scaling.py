"""Time per epoch against dataset size: pretraining L-step and C-step epochs, a fine-tuning
epoch and one evaluation pass, on user-sampled subsets of Beauty (or Yelp), tiny_gpt2 backbone.

    .venv/bin/python benchmarks/scaling.py [--data beauty] [--fractions 0.1 0.3 1.0]
        [--backbone tiny_gpt2] [--precision bf16] [--smollm2-fractions 0.01]

Subsets: the prepared dataset (conf/data/<data>.yaml: per-user random 80/10/10 split, seed 0),
then a seeded sample of `fraction` of the users with all their interactions and split labels
kept (`Dataset.select`: items nobody in the sample touched drop out, so the catalogue shrinks
too). The default corpus (CorpusConfig) and batching (ModelConfig:
batch_size 64, max_tokens 1536).

Code path, without Lightning's Trainer (its loop overhead is not measured): the batches of
`CorpusData.epoch_batches` (documents + LengthBucketSampler + collate; timed as `data_s`),
each run through `CLLM4RecModule.training_step` + backward + Adam (`configure_optimizers`),
under `torch.autocast('cpu', bfloat16)` for --precision bf16 (Lightning's bf16-mixed, the default
trainer); the evaluation pass is `CLLM4RecModule.ranking_metrics('valid')` (evaluation prompts ->
recommend_logits -> metrics.evaluate, the default 256 MiB scoring bound) under the same autocast.
Every phase is timed once per size (wall seconds). Scaling: per phase the least-squares exponent
b of time ~ size^b (size = users; also vs interactions), and the time ratios vs the size ratios
to the smallest subset. Writes benchmarks/results/scaling.json.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, load, machine, now, write_json  # noqa: E402

from cllm4rec.backbone import load_backbone, pad_id  # noqa: E402
from cllm4rec.config import ModelConfig  # noqa: E402
from cllm4rec.corpus import CorpusBuilder, CorpusConfig  # noqa: E402
from cllm4rec.modules import CLLM4RecModule, CorpusData, Schedule  # noqa: E402
from cllm4rec.prepare import prepared_dataset  # noqa: E402
from cllm4rec.train import build_model  # noqa: E402
from cllm4rec.vocab import Vocab  # noqa: E402

PHASES = ("L", "C", "rec", "eval")


def subset(ds, fraction: float, seed: int):
    if fraction >= 1.0:
        return ds
    rng = np.random.default_rng(seed)
    users = rng.choice(ds.n_users, max(1, round(fraction * ds.n_users)), replace=False)
    keep = np.zeros(ds.n_users, bool)
    keep[users] = True
    return ds.select(keep[ds.user])


def run_size(ds, backbone_name: str, precision: str, corpus_cfg, model_cfg, max_batches: int | None) -> dict:
    backbone, tok = load_backbone(backbone_name, seed=0)
    pad = pad_id(tok)
    vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
    t0 = time.perf_counter()
    builder = CorpusBuilder(ds, tok, vocab, corpus_cfg)
    builder_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = build_model(backbone, vocab, builder, model_cfg)
    module = CLLM4RecModule(model, builder, Schedule(), lr=model_cfg.pretrain.lr, lambda_mr=model_cfg.lambda_mr,
                            mr_reduction=model_cfg.mr_reduction, eval_batch_size=model_cfg.eval_batch_size,
                            pad_id=pad)
    opt = module.configure_optimizers()
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    out = {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions,
           "train_interactions": int(ds.mask("train").sum()), "builder_s": round(builder_s, 3), "phases": {}}
    for step, stage, epoch in (("L", "pretrain", 0), ("C", "pretrain", 1), ("rec", "finetune", 0)):
        sm = model_cfg[stage]
        data = CorpusData(builder, Schedule(stage=stage, content_warmup_epochs=0, finetune_content=False),
                          batch_size=sm.batch_size, max_tokens=sm.max_tokens, seed=0, pad_id=pad)
        t0 = time.perf_counter()
        batches = [b for b in data.epoch_batches(epoch) if b["step"] == step]
        data_s = time.perf_counter() - t0
        n_all = len(batches)
        if max_batches is not None and n_all > max_batches:   # a slice: time a prefix, scale to the epoch
            batches = batches[:max_batches]
        module.train()
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            with ctx():
                loss = module.training_step(b, i)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        train_s = time.perf_counter() - t0
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        scale = n_all / len(batches) if batches else 1.0
        out["phases"][step] = {"batches": n_all, "batches_timed": len(batches), "real_tokens_timed": real,
                               "data_s": round(data_s, 3), "train_s_timed": round(train_s, 3),
                               "epoch_s": round(data_s + train_s * scale, 3),
                               "tokens_per_s": round(real / train_s, 1) if train_s else None,
                               "extrapolated": scale != 1.0}
        print(f"  {step:4s} {n_all:5d} batches  data {data_s:7.2f} s  train {train_s:8.2f} s"
              f"{f' (x{scale:.1f} extrapolated)' if scale != 1.0 else ''}  {real / max(train_s, 1e-9):8.0f} tok/s",
              flush=True)
    module.eval()
    t0 = time.perf_counter()
    with ctx():
        res = module.ranking_metrics("valid")
    ev = time.perf_counter() - t0
    out["phases"]["eval"] = {"users_evaluated": res["n_users_evaluated"], "epoch_s": round(ev, 3),
                             "users_per_s": round(res["n_users_evaluated"] / ev, 1), "recall@20": res["recall@20"]}
    print(f"  eval {res['n_users_evaluated']:6d} users  {ev:8.2f} s  {res['n_users_evaluated'] / ev:8.1f} users/s",
          flush=True)
    return out


def fit(rows: list[dict], size_key: str) -> dict:
    """Per phase: exponent b of epoch_s ~ size^b (least squares in log-log) and the ratios."""
    out = {}
    base = rows[0]
    for ph in PHASES:
        xs = [math.log(r[size_key]) for r in rows]
        ys = [math.log(max(r["phases"][ph]["epoch_s"], 1e-9)) for r in rows]
        if len(rows) >= 2 and max(xs) > min(xs):
            b = float(np.polyfit(xs, ys, 1)[0])
        else:
            b = float("nan")
        out[ph] = {"exponent": round(b, 3),
                   "size_ratios": [round(r[size_key] / base[size_key], 3) for r in rows],
                   "time_ratios": [round(r["phases"][ph]["epoch_s"] / max(base["phases"][ph]["epoch_s"], 1e-9), 3)
                                   for r in rows]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="beauty", help="a conf/data config name (beauty, yelp, ...)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--backbone", default="tiny_gpt2")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--smollm2-fractions", type=float, nargs="*", default=[],
                    help="also these (small) fractions with smollm2_135m")
    ap.add_argument("--smollm2-max-batches", type=int, default=4,
                    help="smollm2: time this many batches per training epoch and extrapolate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start, load_start = time.perf_counter(), load()
    data_cfg = OmegaConf.load(ROOT / "conf" / "data" / f"{args.data}.yaml")
    if "root" in data_cfg:
        data_cfg.root = str(ROOT.parent / "shared" / "data") if data_cfg.root.startswith("..") else data_cfg.root
    ds_full, _ = prepared_dataset(data_cfg)
    corpus_cfg = CorpusConfig.from_mapping(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "corpus" /
                                                                                 "default.yaml"), resolve=True))
    model_cfg = OmegaConf.structured(ModelConfig)
    runs = []
    plan = [(args.backbone, f, None) for f in sorted(args.fractions)] + \
           [("smollm2_135m", f, args.smollm2_max_batches) for f in sorted(args.smollm2_fractions)]
    for name, f, max_batches in plan:
        ds = subset(ds_full, f, args.seed)
        print(f"== {args.data} {f:.0%} ({ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions), "
              f"{name} {args.precision}; load {load()}", flush=True)
        t0 = time.perf_counter()
        row = {"backbone": name, "fraction": f, **run_size(ds, name, args.precision, corpus_cfg, model_cfg,
                                                            max_batches), "load": load()}
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        runs.append(row)
    fits = {}
    for name in dict.fromkeys(r["backbone"] for r in runs):
        rows = [r for r in runs if r["backbone"] == name]
        if len(rows) >= 2:
            fits[name] = {"vs_users": fit(rows, "users"), "vs_interactions": fit(rows, "interactions")}
    report = {"benchmark": "time per epoch vs dataset size (user-sampled subsets)", "date": now(),
              "machine": machine(), "load_avg_start": load_start, "load_avg_end": load(),
              "wall_s": round(time.perf_counter() - t_start, 1),
              "config": {k: v for k, v in vars(args).items()},
              "dataset": {"name": args.data, "users": ds_full.n_users, "items": ds_full.n_items,
                          "interactions": ds_full.n_interactions},
              "code_path": "CorpusData.epoch_batches + CLLM4RecModule.training_step + backward + Adam, no Lightning "
                           "Trainer; eval = CLLM4RecModule.ranking_metrics('valid'); autocast bf16 if precision=bf16",
              "epoch_s": "data_s (documents + sampler + collate) + training seconds (extrapolated from a prefix of "
                         "batches where batches_timed < batches)",
              "runs": runs, "fits": fits}
    write_json(args.out, report)
    for name, fb in fits.items():
        for ph, r in fb["vs_users"].items():
            print(f"{name:13s} {ph:4s} time ~ users^{r['exponent']:.2f}  size x{r['size_ratios'][-1]:.1f} -> "
                  f"time x{r['time_ratios'][-1]:.1f}")
    print(f"wrote {args.out} ({time.perf_counter() - t_start:.0f} s; load {load_start} -> {load()})")


if __name__ == "__main__":
    main()
