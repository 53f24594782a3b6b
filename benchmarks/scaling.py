"""Time and memory per epoch as the users grow: 1x, 10x and 100x the users of Beauty, synthetic,
tiny_gpt2 backbone.

    .venv/bin/python benchmarks/scaling.py [--data beauty] [--multiples 1 10 100]
        [--max-batches 150] [--eval-max-users 8192] [--precision bf16]

Data: the prepared dataset (conf/data/<data>.yaml), and for k > 1 a seeded bootstrap of k x its
users: each synthetic user is a real user drawn with replacement, with that user's items, order,
ratings and split labels. So the history lengths, the item popularity and the co-occurrences are
Beauty's, and the catalogue (12,101 items and their texts) stays fixed while the users grow (a
user-sampled subset would shrink the catalogue too, and mix the two causes).

Each size runs in its own process (its peak RSS is that size's). Per training phase (L-step,
C-step, fine-tuning 'rec'), the code path of training without Lightning's loop:
- `plan_s`: `CorpusData.epoch_batches` (the epoch's documents, length buckets, order), which
  collates nothing;
- `collate_s` and `upfront_mib`: collating every batch of the epoch, and the bytes of all those
  tensors: what the code held before batches were collated as they are read (summed, not held);
- training: the first `--max-batches` batches of the (shuffled) epoch through
  `CLLM4RecModule.training_step` + backward + the module's optimizer (`configure_optimizers`:
  fused AdamW), extrapolated to the epoch: `epoch_s` = plan_s + collate_s + train_s x scale;
- `optimizer_ms`: one optimizer step over the same parameters and gradients, fused and with
  torch's per-tensor loop (the optimizer before), measured side by side.
Evaluation: the first `--eval-max-users` validation users of `ranking_metrics`' batches (scoring
every item), extrapolated to all of them. Fits: per phase, the least-squares exponent b of
epoch_s ~ users^b. Writes benchmarks/results/scaling.json.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, compose, load, machine, now, write_json  # noqa: E402

from cllm4rec.backbone import load_backbone, pad_id  # noqa: E402
from cllm4rec.corpus import CorpusBuilder, CorpusConfig, collate  # noqa: E402
from cllm4rec.data.dataset import Dataset  # noqa: E402
from cllm4rec.modules import CLLM4RecModule, CorpusData, Schedule  # noqa: E402
from cllm4rec.prepare import prepared_dataset  # noqa: E402
from cllm4rec.train import build_model  # noqa: E402
from cllm4rec.vocab import Vocab  # noqa: E402

PHASES = ("L", "C", "rec", "eval")
MIB = 2 ** 20


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / MIB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def synthetic(ds: Dataset, multiple: int, seed: int) -> Dataset:
    """`multiple` x the users of `ds`, each a real user drawn with replacement (all its interactions,
    in order, with their split labels); items and item texts unchanged."""
    if multiple == 1:
        return ds
    rng = np.random.default_rng(seed)
    src = rng.integers(0, ds.n_users, multiple * ds.n_users)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(ds.user, minlength=ds.n_users))])   # canonical: by user
    lens = ptr[src + 1] - ptr[src]
    idx = np.repeat(ptr[src] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
    take = lambda a: None if a is None else a[idx]  # noqa: E731
    return Dataset(name=f"{ds.name}_x{multiple}", user_ids=[f"s{u}" for u in range(len(src))], item_ids=ds.item_ids,
                   user=np.repeat(np.arange(len(src), dtype=np.int32), lens), item=ds.item[idx],
                   rating=take(ds.rating), timestamp=take(ds.timestamp), item_text=ds.item_text,
                   user_text={k: [v[s] for s in src] for k, v in ds.user_text.items()},
                   interaction_text={k: [v[j] for j in idx] for k, v in ds.interaction_text.items()},
                   split=take(ds.split), cold_items=ds.cold_items)


def optimizer_ms(params: list[torch.Tensor], repeats: int = 3) -> dict:
    """One AdamW step over `params` with their current gradients: fused vs torch's per-tensor loop."""
    out = {}
    for name, kw in (("fused", {"fused": True}), ("per_tensor_loop", {"foreach": False})):
        copies = [p.detach().clone().requires_grad_() for p in params]
        for c, p in zip(copies, params):
            c.grad = p.grad.clone()
        opt = torch.optim.AdamW(copies, lr=1e-4, weight_decay=0.0, **kw)
        opt.step()   # allocates the state
        t0 = time.perf_counter()
        for _ in range(repeats):
            opt.step()
        out[name] = round((time.perf_counter() - t0) / repeats * 1e3, 2)
        del copies, opt
    return out


def autocast(args):
    return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else nullcontext


def composed(args):
    """The default fine-tuning config for this data and backbone (conf/)."""
    return compose("finetune", [f"data={args.data}", f"backbone={args.backbone}"])


def plan_phases(builder, model_cfg, pad: int, args) -> dict:
    """Per training phase: the epoch's plan and its collation, timed once per size (neither depends
    on the user rows); the EpochBatches left holding the first --max-batches batches to train on."""
    planned = {}
    for step, stage, epoch in (("L", "pretrain", 0), ("C", "pretrain", 1), ("rec", "finetune", 0)):
        sm = model_cfg[stage]
        data = CorpusData(builder, Schedule(stage=stage, content_warmup_epochs=0, finetune_content=False),
                          batch_size=sm.batch_size, max_tokens=sm.max_tokens, seed=0, pad_id=pad)
        t0 = time.perf_counter()
        epoch_batches = data.epoch_batches(epoch)
        plan = [b for b in epoch_batches.batches if b[2] == step]
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        upfront = sum(t.numel() * t.element_size() for docs, idx, _ in plan
                      for t in collate(docs, idx, pad_id=pad).values())
        collate_s = time.perf_counter() - t0
        epoch_batches.batches = plan[:args.max_batches]
        planned[step] = (epoch_batches, {"batches": len(plan), "plan_s": round(plan_s, 3),
                                         "collate_s": round(collate_s, 3), "upfront_mib": round(upfront / MIB, 1)})
        print(f"  {step:4s} {len(plan):6d} batches  plan {plan_s:6.2f} s  collate {collate_s:6.2f} s "
              f"({upfront / MIB:7.1f} MiB up front)", flush=True)
    return planned


def train_phases(module, planned: dict, args, compare_optimizers: bool) -> dict:
    """Each training phase's timed prefix of batches (module.training_step + backward + the module's
    optimizer), extrapolated to the epoch; the optimizer step alone, fused and looped."""
    opt = module.configure_optimizers()
    model = module.model
    phases = {}
    ctx = autocast(args)
    for step, (epoch_batches, stats) in planned.items():
        module.train()
        real, rss_before = 0, rss_mib()
        t0 = time.perf_counter()
        for i, b in enumerate(epoch_batches):     # collated as read, as in training
            with ctx():
                loss = module.training_step(b, i)
            loss.backward()
            real += int(b["attention_mask"].sum())
            if i == len(epoch_batches) - 1:       # the last batch's gradients: the optimizer alone
                grads = [p for p in model.parameters() if p.grad is not None]
                train_s = time.perf_counter() - t0
                opt_ms = optimizer_ms(grads) if compare_optimizers else {}
                t0 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
        scale = stats["batches"] / max(1, len(epoch_batches))
        phases[step] = {
            **stats, "batches_timed": len(epoch_batches), "real_tokens_timed": real,
            "train_s_timed": round(train_s, 3), "ms_per_batch": round(1e3 * train_s / max(1, len(epoch_batches)), 2),
            "optimizer_ms": opt_ms, "epoch_s": round(stats["plan_s"] + stats["collate_s"] + train_s * scale, 2),
            "tokens_per_s": round(real / train_s, 1), "rss_mib_training": round(rss_mib() - rss_before),
            "extrapolated": scale != 1.0}
        print(f"  {step:4s} {1e3 * train_s / len(epoch_batches):7.1f} ms/batch  optimizer {opt_ms}  "
              f"epoch ~{phases[step]['epoch_s']:.0f} s", flush=True)
    return phases


def run_size(ds: Dataset, args) -> dict:
    cfg = composed(args)
    model_cfg = cfg.model
    corpus_cfg = CorpusConfig.from_mapping(OmegaConf.to_container(cfg.corpus, resolve=True))
    backbone, tok = load_backbone(args.backbone, seed=0)
    pad = pad_id(tok)
    vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
    out = {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions,
           "train_interactions": int(ds.mask("train").sum()), "rss_mib_data": round(rss_mib())}
    t0 = time.perf_counter()
    builder = CorpusBuilder(ds, tok, vocab, corpus_cfg)
    out["builder_s"] = round(time.perf_counter() - t0, 3)
    planned = plan_phases(builder, model_cfg, pad, args)
    for variant in args.user_rows:          # dense (AdamW over every row) | sparse (model.sparse_user_rows)
        with open_dict(model_cfg):
            model_cfg.sparse_user_rows = variant == "sparse"
        torch.manual_seed(0)
        model = build_model(load_backbone(args.backbone, seed=0)[0], vocab, builder, model_cfg)
        module = CLLM4RecModule(model, builder, Schedule(), lr=model_cfg.pretrain.lr, lambda_mr=model_cfg.lambda_mr,
                                mr_reduction=model_cfg.mr_reduction, eval_batch_size=model_cfg.eval_batch_size,
                                pad_id=pad)
        out["trainable_mib"] = round(sum(p.numel() * p.element_size() for p in model.parameters()
                                         if p.requires_grad) / MIB)
        print(f"  user rows {variant}", flush=True)
        out["phases" if variant == "dense" else f"phases_{variant}"] = train_phases(module, planned, args,
                                                                                   variant == "dense")
    module.eval()
    ctx = autocast(args)
    sums, batches = module.ranking_sums("valid"), module.eval_batches("valid")
    n_all, timed, t0 = sum(map(len, batches)), 0, time.perf_counter()
    with ctx():
        for users in batches:
            if timed >= args.eval_max_users:
                break
            sums.add(users.numpy(), module.score_users(users, "valid"))
            timed += len(users)
    ev = time.perf_counter() - t0
    out.setdefault("phases", {})["eval"] = {"users": n_all, "users_timed": timed, "users_per_s": round(timed / ev, 1),
                             "epoch_s": round(ev * n_all / timed, 2), "extrapolated": timed < n_all}
    print(f"  eval {n_all:7d} users  {timed / ev:8.1f} users/s  pass ~{ev * n_all / timed:.0f} s", flush=True)
    out["peak_rss_mib"] = round(peak_rss_mib())
    return out


def fit(rows: list[dict], key: str = "phases") -> dict:
    """Per phase: exponent b of epoch_s ~ users^b (least squares in log-log) and the ratios."""
    out, base = {}, rows[0]
    xs = [math.log(r["users"]) for r in rows]
    for ph in PHASES:
        src = key if ph != "eval" else "phases"
        ys = [math.log(max(r[src][ph]["epoch_s"], 1e-9)) for r in rows]
        b = float(np.polyfit(xs, ys, 1)[0]) if len(rows) >= 2 else float("nan")
        out[ph] = {"exponent": round(b, 3), "user_ratios": [round(r["users"] / base["users"], 2) for r in rows],
                   "time_ratios": [round(r[src][ph]["epoch_s"] / max(base[src][ph]["epoch_s"], 1e-9), 2)
                                   for r in rows]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="beauty", help="a conf/data config name (beauty, yelp, ...)")
    ap.add_argument("--multiples", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--backbone", default="tiny_gpt2")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--max-batches", type=int, default=150, help="training batches timed per phase")
    ap.add_argument("--eval-max-users", type=int, default=8192, help="validation users timed")
    ap.add_argument("--user-rows", nargs="+", default=["dense", "sparse"], choices=["dense", "sparse"],
                    help="model.sparse_user_rows false (dense) and true (sparse), each size measured with both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # internal: one size, JSON out
    ap.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = ap.parse_args()
    if args.one is not None:
        ds, _ = prepared_dataset(composed(args).data)
        t0 = time.perf_counter()
        ds = synthetic(ds, args.one, args.seed)
        row = {"multiple": args.one, "synthesis_s": round(time.perf_counter() - t0, 2), **run_size(ds, args)}
        print("RESULT " + json.dumps(row), flush=True)
        return
    t_start, load_start = time.perf_counter(), load()
    runs = []
    for k in sorted(args.multiples):
        print(f"== {args.data} x{k}, {args.backbone} {args.precision}; load {load()}", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", str(k)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        print("\n".join(x for x in proc.stdout.splitlines() if not x.startswith("RESULT ")), flush=True)
        if proc.returncode or not lines:
            sys.exit(f"scaling: the x{k} run failed (exit {proc.returncode}); nothing written")
        runs.append({**json.loads(lines[-1][7:]), "wall_s": round(time.perf_counter() - t0, 1), "load": load()})
    report = {"benchmark": "time and memory per epoch vs users (synthetic: Beauty's users bootstrapped)",
              "date": now(), "machine": machine(), "load_avg_start": load_start, "load_avg_end": load(),
              "wall_s": round(time.perf_counter() - t_start, 1), "config": vars(args),
              "code_path": "CorpusData.epoch_batches (collated as read) + CLLM4RecModule.training_step + backward "
                           "+ the module's optimizer (fused AdamW), no Lightning Trainer; eval = "
                           "CLLM4RecModule.score_users over ranking_metrics' validation batches",
              "epoch_s": "plan_s + collate_s + train_s x (batches / batches_timed); eval: seconds x users / users_timed",
              "runs": runs,
              "fits": {v: fit(runs, "phases" if v == "dense" else f"phases_{v}") for v in args.user_rows}
              if len(runs) >= 2 else {},
              "peak_rss_mib": [r["peak_rss_mib"] for r in runs]}
    write_json(args.out, report)
    for variant, fits in report["fits"].items():
        for ph, r in fits.items():
            print(f"{variant:6s} {ph:4s} time ~ users^{r['exponent']:.2f}  users x{r['user_ratios'][-1]:.0f} -> time "
                  f"x{r['time_ratios'][-1]:.1f}")
    print(f"wrote {args.out} ({time.perf_counter() - t_start:.0f} s; load {load_start} -> {load()})")


if __name__ == "__main__":
    main()
