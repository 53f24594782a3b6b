"""Training throughput (tokens/s) and model FLOP utilisation of one CLLM4Rec optimisation step.

    .venv/bin/python benchmarks/throughput.py [--backbones tiny_gpt2 smollm2_135m]
        [--precisions fp32 bf16 bf16w] [--shapes 8x128 16x96 32x64] [--real-batches 4]
        [--repeats 3] [--real-repeats 2] [--warmup 1] [--variants baseline current compiled] [--no-profile]

One step = exactly `CLLM4RecModule.training_step` (called directly, no Lightning Trainer: its
`self.log` calls are no-ops without one) + `loss.backward()` + Adam on the ID tables
(`configure_optimizers`) + zero_grad. Steps: L (collaborative LM loss, item head over J items,
+ mutual regularization), C (content LM loss, vocabulary head over N words, + MR) and rec
(fine-tuning: multinomial NLL of the item head at the prompt's last token, + MR).

Precisions: fp32; bf16 = `torch.autocast('cpu', dtype=torch.bfloat16)` around training_step
(what Lightning's `precision: bf16-mixed`, the default trainer config, does); bf16w = not a
config of the project but a measured proposal: the frozen backbone's weights cast to bf16 once
(`backbone.to(torch.bfloat16)`), no autocast, ID tables and Adam in fp32.

Batches, at ML-100K sizes (943 users, 1,682 items, the embedded dataset):
  synthetic  B x T token batches, no padding: L = user + ' has interacted with' + items; C = user +
             ' wrote the following review for' + item + ':' + random words; rec = a fine-tuning
             prompt of T tokens with T/4 random target items. Median of `--repeats` after `--warmup`.
  real       ML-100K (conf/data/ml100k.yaml), the default corpus (CorpusConfig) and
             batches exactly as `CorpusData.epoch_batches` cuts them (LengthBucketSampler with the
             model config's batch_size 64 / max_tokens 1536): a seeded sample of `--real-batches`
             batches of each step kind (+ one warm-up batch), run `--real-repeats` times; tokens/s =
             real tokens of the sample / the median over repeats of its total time.
Tokens/s counts real (non-pad) tokens. Variants (real batches): `baseline` = the model's
embed/hidden as they were before the speed fixes (verbatim copies below), `current` = the code in
cllm4rec/model.py, `compiled` = current with the backbone body torch.compile'd (`compile: true`; its
compile time is the first warm-up step, `warmup_seconds`); interleaved batch by batch, so all see
the same machine load.

Model FLOPs of a step (written into the JSON as `flops_formula`):
  4 * P * real_tokens            frozen body: forward 2P + gradient to the activations 2P, where P =
                                 the Linear/Conv1D weights of the transformer blocks (no embeddings)
  + 6 * d * J * labelled         item head (forward, grad wrt h, grad wrt the item table)
  + 4 * d * N * labelled         vocabulary head (the vocabulary table is frozen)
  + 6 * d * J * B                multinomial head at the last prompt token
Attention scores (QK^T, AV) are not in it (reported apart: `attention_flops`, 6 * T^2 * d per
layer per sequence, causal, forward + backward). MFU = model FLOPs / step seconds / matmul peak
of the compute dtype; the peak (GFLOP/s) is measured in this process with square 2048^3 and the
backbone's own shapes, the max over repeats, again before and after every block of measurements
(`mfu` uses the run's maximum, `mfu_local` the sample taken just before the block).

Profile (smollm2_135m, bf16, real batches, `--no-profile` to skip): torch.profiler over one
batch of each kind (op self-times in categories: matmul, attention, casts, elementwise, ...,
and the step's phases), plus timed ablations on the real sample: body only (embed + backbone
forward/backward, no head), embed only, the attention mask kept vs dropped, the old `where`
embedding, and the data side (documents + sampler + collate per batch).
Writes benchmarks/results/throughput.json.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import types
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, Peak, load, machine, now, write_json  # noqa: E402

from cllm4rec.backbone import load_backbone, pad_id  # noqa: E402
from cllm4rec.config import ModelConfig  # noqa: E402
from cllm4rec.corpus import CorpusBuilder, CorpusConfig  # noqa: E402
from cllm4rec.model import CLLM4Rec  # noqa: E402
from cllm4rec.modules import CLLM4RecModule, CorpusData, Schedule  # noqa: E402
from cllm4rec.prepare import prepared_dataset  # noqa: E402
from cllm4rec.vocab import Vocab  # noqa: E402

STEPS = ("L", "C", "rec")
FLOPS_FORMULA = ("4*P*real_tokens + [L] 6*d*J*labelled | [C] 4*d*N*labelled | [rec] 6*d*J*B; P = Linear/Conv1D "
                 "weights of the transformer blocks (embedding table excluded), d = width, J = items, N = vocabulary "
                 "rows, labelled = main-text label positions (main_mask[:, 1:]); attention scores excluded")


# ---------------------------------------------------------------------- variants of the model code
def _baseline_embed(self, ids, side):
    """cllm4rec/model.py CLLM4Rec.embed before the speed fixes (verbatim)."""
    v = self.vocab
    words = self.backbone.get_input_embeddings()
    is_user = (ids >= v.user_offset) & (ids < v.item_offset)
    is_item = ids >= v.item_offset
    x = words(ids.clamp(max=v.n_vocab - 1))
    u = self.user[side]((ids - v.user_offset).clamp(0, v.n_users - 1))
    i = self.item[side]((ids - v.item_offset).clamp(0, v.n_items - 1))
    x = torch.where(is_user.unsqueeze(-1), u.to(x.dtype), x)
    return torch.where(is_item.unsqueeze(-1), i.to(x.dtype), x)


def _baseline_hidden(self, ids, attention_mask, side):
    """cllm4rec/model.py CLLM4Rec.hidden before the speed fixes (verbatim)."""
    out = self.backbone.base_model(inputs_embeds=self.embed(ids, side), attention_mask=attention_mask)
    return out.last_hidden_state


def _mask_kept_hidden(self, ids, attention_mask, side):
    """Ablation: the current code but the attention mask always passed to the backbone."""
    out = self.backbone.base_model(inputs_embeds=self.embed(ids, side), attention_mask=attention_mask,
                                   use_cache=False)
    return out.last_hidden_state


# name -> (method overrides on the CLLM4Rec instance, attention implementation or None = as loaded)
VARIANTS = {
    # baseline: before the speed fixes, plain SDPA attention included (bf16 under autocast)
    "baseline": ({"embed": _baseline_embed, "hidden": _baseline_hidden}, "sdpa"),
    "current": ({}, None),
    # current runs attention in fp32 under bf16 autocast (cllm4rec.backbone); this is transformers'
    # plain SDPA in bf16, kept to re-check that choice on each new kind of CPU
    "sdpa_bf16": ({}, "sdpa"),
    "mask_kept": ({"hidden": _mask_kept_hidden}, None),    # ablation: mask skip off
    "where_embed": ({"embed": _baseline_embed}, None),     # ablation: the old embedding assembly
    "attn_eager": ({}, "eager"),                           # ablation: transformers' eager attention
    "compiled": ({}, None),                                # current + model.compile_body() (config `compile`)
}


def set_variant(model: CLLM4Rec, name: str) -> None:
    for attr in ("embed", "hidden", "lm_loss"):
        model.__dict__.pop(attr, None)
    methods, attn = VARIANTS[name]
    for attr, fn in methods.items():
        setattr(model, attr, types.MethodType(fn, model))
    cfg = model.backbone.config
    if not hasattr(model, "_loaded_attn"):
        model._loaded_attn = cfg._attn_implementation
    cfg._attn_implementation = attn or model._loaded_attn
    model.compile_body(False)
    if name == "compiled":   # one compiled body per model, kept aside between uses (recompiling costs minutes)
        if "_compiled_aside" not in model.__dict__:
            model.__dict__["_compiled_aside"] = model.compile_body().__dict__["compiled_body"]
        model.__dict__["compiled_body"] = model.__dict__["_compiled_aside"]


# ---------------------------------------------------------------------- setup
class Bench:
    """One backbone at one precision: model, module, optimizer, FLOP constants."""

    def __init__(self, name: str, precision: str, ds, corpus_cfg: CorpusConfig, lr: float, lambda_mr: float,
                 mr_reduction: str, shared=None):
        self.name, self.precision = name, precision
        if shared is None:
            backbone, tok = load_backbone(name, seed=0)
        else:   # bf16w: a copy of an already loaded backbone
            backbone, tok = copy.deepcopy(shared.model.backbone), shared.tok
        if precision == "bf16w":
            backbone = backbone.to(torch.bfloat16)
        self.tok = tok
        self.pad_id = pad_id(tok)
        self.vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
        self.builder = shared.builder if shared is not None else CorpusBuilder(ds, tok, self.vocab, corpus_cfg)
        torch.manual_seed(0)
        self.model = CLLM4Rec(backbone, self.vocab)
        self.module = CLLM4RecModule(self.model, self.builder, Schedule(), lr=lr, lambda_mr=lambda_mr,
                                     mr_reduction=mr_reduction, pad_id=self.pad_id)
        self.module.train()
        self.opt = self.module.configure_optimizers()
        base = backbone.base_model
        self.P = sum(m.weight.numel() for m in base.modules()
                     if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
        cfg = backbone.config
        self.d = cfg.hidden_size
        self.layers = cfg.num_hidden_layers
        self.attn_width = cfg.num_attention_heads * getattr(cfg, "head_dim", None) if getattr(cfg, "head_dim", None) \
            else self.d
        self.N = backbone.get_output_embeddings().weight.shape[0]
        self.J = ds.n_items
        self.dtype = torch.float32 if precision == "fp32" else torch.bfloat16

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext()

    def step(self, batch: dict) -> float:
        """One optimisation step; returns its wall seconds."""
        t0 = time.perf_counter()
        with torch.profiler.record_function("phase:forward"), self.autocast():
            loss = self.module.training_step(batch, 0)
        with torch.profiler.record_function("phase:backward"):
            loss.backward()
        with torch.profiler.record_function("phase:optimizer"):
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def flops(self, batch: dict) -> dict:
        real = int(batch["attention_mask"].sum())
        step = batch["step"]
        body = 4 * self.P * real
        if step == "rec":
            labelled = int(batch["input_ids"].shape[0])
            head = 6 * self.d * self.J * labelled
        else:
            labelled = int(batch["main_mask"][:, 1:].sum())
            head = (6 * self.d * self.J if step == "L" else 4 * self.d * self.N) * labelled
        lens = batch["attention_mask"].sum(1).double()
        attention = float(6 * self.layers * self.attn_width * (lens ** 2).sum())
        return {"real_tokens": real, "padded_tokens": int(batch["input_ids"].numel()), "labelled": labelled,
                "flops": body + head, "body_flops": body, "head_flops": head, "attention_flops": attention}


def real_batches(b: Bench, model_cfg, seed: int = 0) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Every batch of one epoch per step kind, as CorpusData.epoch_batches cuts them."""
    out, timing = {}, {}
    for step, stage, epoch in (("L", "pretrain", 0), ("C", "pretrain", 1), ("rec", "finetune", 0)):
        sm = model_cfg[stage]
        data = CorpusData(b.builder, Schedule(stage=stage, content_warmup_epochs=0, finetune_content=False),
                          batch_size=sm.batch_size, max_tokens=sm.max_tokens, seed=seed, pad_id=b.pad_id)
        t0 = time.perf_counter()
        batches = [x for x in data.epoch_batches(epoch) if x["step"] == step]
        timing[step] = time.perf_counter() - t0
        out[step] = batches
    return out, timing


def synthetic_batch(b: Bench, step: str, B: int, T: int, rng: np.random.Generator) -> dict:
    v, words = b.vocab, (lambda s: b.tok(s, add_special_tokens=False)["input_ids"])
    users = rng.integers(0, v.n_users, B)
    ids = np.zeros((B, T), np.int64)
    main = np.zeros((B, T), bool)
    targets, offsets = [], [0]
    for r in range(B):
        u = v.user(int(users[r]))
        if step == "L":
            prompt = [u] + words(" has interacted with")
            rest = [v.item(int(j)) for j in rng.integers(0, v.n_items, T - len(prompt))]
        elif step == "C":
            prompt = [u] + words(" wrote the following review for") + [v.item(int(rng.integers(v.n_items)))] + \
                words(":")
            rest = rng.integers(1000, v.n_vocab - 1, T - len(prompt)).tolist()
        else:
            head, tail = [u] + words(" has interacted with"), words(",") + [u] + words(" will interact with")
            prompt = head + [v.item(int(j)) for j in rng.integers(0, v.n_items, T - len(head) - len(tail))] + tail
            rest = []
            t = rng.choice(v.n_items, max(1, T // 4), replace=False)
            targets += t.tolist()
            offsets.append(offsets[-1] + len(t))
        ids[r] = prompt + rest
        main[r, len(prompt):] = True
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.ones(B, T, dtype=torch.long),
             "main_mask": torch.from_numpy(main), "last_prompt_index": torch.full((B,), T - 1, dtype=torch.long),
             "kind": torch.zeros(B, dtype=torch.long), "user": torch.from_numpy(users),
             "target_items": torch.as_tensor(targets, dtype=torch.long),
             "target_offsets": torch.as_tensor(offsets if step == "rec" else [0] * (B + 1), dtype=torch.long),
             "step": step}
    return batch


# ---------------------------------------------------------------------- measurements
def summarise(b: Bench, per_batch: list[dict], seconds: float, peak: Peak, local_peak: float) -> dict:
    keys = ("real_tokens", "padded_tokens", "labelled", "flops", "body_flops", "head_flops", "attention_flops")
    tot = {k: sum(x[k] for x in per_batch) for k in keys}
    run_peak = peak.best(b.dtype)
    achieved = tot["flops"] / seconds / 1e9
    return {"batches": len(per_batch), "real_tokens": tot["real_tokens"],
            "padding_fraction": round(1 - tot["real_tokens"] / tot["padded_tokens"], 4),
            "labelled": tot["labelled"], "seconds": round(seconds, 3),
            "seconds_per_step": round(seconds / len(per_batch), 3),
            "tokens_per_s": round(tot["real_tokens"] / seconds, 1),
            "achieved_gflops": round(achieved, 1),
            "mfu": round(achieved / run_peak, 4), "mfu_local": round(achieved / local_peak, 4),
            "mfu_incl_attention": round((tot["flops"] + tot["attention_flops"]) / seconds / 1e9 / run_peak, 4),
            "head_flops_share": round(tot["head_flops"] / tot["flops"], 4),
            "attention_flops_vs_model": round(tot["attention_flops"] / tot["flops"], 4)}


def run_synthetic(b: Bench, args, peak: Peak, rows: list) -> None:
    rng = np.random.default_rng(0)
    for step in args.steps:
        for shape in args.shapes:
            B, T = map(int, shape.split("x"))
            batch = synthetic_batch(b, step, B, T, rng)
            for _ in range(args.warmup):
                b.step(batch)
            times = [b.step(batch) for _ in range(args.repeats)]
            f = b.flops(batch)
            row = {"backbone": b.name, "precision": b.precision, "source": "synthetic", "variant": "current",
                   "step": step, "shape": shape, **summarise(b, [f], statistics.median(times), peak,
                                                            peak.last(b.dtype)),
                   "step_seconds_all": [round(t, 3) for t in times], "load": load()}
            rows.append(row)
            print(f"{b.name:13s} {b.precision:5s} synthetic {step:3s} {shape:7s} {row['tokens_per_s']:9.1f} tok/s "
                  f"MFU {row['mfu']:.3f}  ({row['seconds']:.2f} s/step)", flush=True)


def run_real(b: Bench, args, peak: Peak, rows: list, sample: dict, warm: dict, variants: list[str]) -> dict:
    """Interleaved: repeat -> batch -> variant. Returns per-variant per-step the per-batch medians."""
    times = {v: {s: [[] for _ in sample[s]] for s in sample} for v in variants}
    warmup_s = {v: {} for v in variants}
    for s in sample:   # warm-up: every variant once on a batch outside the sample (first calls allocate,
        for j, v in enumerate(variants):   # `compiled` compiles: its first warm-up is the compile time)
            set_variant(b.model, v)
            warmup_s[v][s] = [round(b.step(warm[s]), 2)
                              for _ in range(max(1, args.warmup) if j == 0 or v == "compiled" else min(args.warmup, 1))]
    for _ in range(args.real_repeats):
        for s in sample:
            for i, batch in enumerate(sample[s]):
                for v in variants:
                    set_variant(b.model, v)
                    times[v][s][i].append(b.step(batch))
    set_variant(b.model, "current")
    for v in variants:
        for s in sample:
            per = [b.flops(x) for x in sample[s]]
            totals = [sum(t[r] for t in times[v][s]) for r in range(args.real_repeats)]
            row = {"backbone": b.name, "precision": b.precision, "source": "real", "variant": v, "step": s,
                   "shape": "ML-100K epoch sample",
                   **summarise(b, per, statistics.median(totals), peak, peak.last(b.dtype)),
                   "shapes": [list(x["input_ids"].shape) for x in sample[s]],
                   "per_batch_seconds": [round(statistics.median(t), 3) for t in times[v][s]],
                   "total_seconds_per_repeat": [round(t, 3) for t in totals], "warmup_seconds": warmup_s[v][s],
                   "load": load()}
            rows.append(row)
            print(f"{b.name:13s} {b.precision:5s} real {v:9s} {s:3s} {row['tokens_per_s']:9.1f} tok/s "
                  f"MFU {row['mfu']:.3f} pad {row['padding_fraction']:.3f} ({row['seconds_per_step']:.2f} s/step)",
                  flush=True)
    return times


def categorise(name: str) -> str:
    n = name.lower()
    if "scaled_dot_product" in n or "flash_attention" in n:
        return "attention (sdpa)"
    if n in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul"):
        return "matmul"
    if n in ("aten::copy_", "aten::_to_copy", "aten::to"):
        return "dtype casts / copies"
    if n in ("aten::fill_", "aten::zero_", "aten::zeros", "aten::zeros_like", "aten::empty", "aten::empty_strided",
             "aten::empty_like", "aten::ones_like"):
        return "allocation / fill"
    if "softmax" in n or "nll_loss" in n or "cross_entropy" in n:
        return "softmax / cross-entropy"
    if "embedding" in n or "index" in n or "nonzero" in n or "gather" in n or "scatter" in n or n == "aten::where":
        return "embedding / indexing"
    if "adam" in n or "_foreach" in n or "addcdiv" in n or "addcmul" in n or "lerp" in n or "sqrt" in n:
        return "optimizer"
    if n.startswith("aten::"):
        return "elementwise / norm / rope / reductions"
    return "other"


def profile(b: Bench, sample: dict, warm: dict, data_timing: dict, n_batches: dict, args) -> dict:
    """torch.profiler on one batch per kind + timed ablations on the whole sample."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile
    set_variant(b.model, "current")
    out = {"backbone": b.name, "precision": b.precision, "kinds": {}}
    for s in sample:
        batch = sample[s][len(sample[s]) // 2]
        b.step(warm[s])
        t0 = time.perf_counter()
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            b.step(batch)
        wall = time.perf_counter() - t0
        avg = prof.key_averages()
        cats: dict[str, float] = {}
        phases, top, ops_total = {}, [], 0.0
        for e in avg:
            if e.key.startswith("phase:"):
                phases[e.key[6:]] = round(e.cpu_time_total / 1e6, 3)
                continue
            if not e.key.startswith("aten::") and "scaled_dot_product" not in e.key:
                continue
            sec = e.self_cpu_time_total / 1e6
            ops_total += sec
            c = categorise(e.key)
            cats[c] = cats.get(c, 0.0) + sec
            top.append((sec, e.key, e.count))
        top.sort(reverse=True)
        cats["python / autograd overhead (wall - op self time)"] = max(0.0, wall - ops_total)
        out["kinds"][s] = {"shape": list(batch["input_ids"].shape), "wall_s_under_profiler": round(wall, 3),
                           "categories_s": {k: round(v, 3) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
                           "categories_share": {k: round(v / wall, 4) for k, v in
                                                sorted(cats.items(), key=lambda kv: -kv[1])},
                           "phases_s": phases,
                           "top_ops": [{"op": k, "self_s": round(sec, 3), "calls": n} for sec, k, n in top[:15]]}
    # timed ablations over the sample, interleaved batch by batch
    g = torch.Generator().manual_seed(0)

    def body_only(batch):
        side = "content" if batch["step"] == "C" else "collaborative"
        t0 = time.perf_counter()
        with b.autocast():
            h = b.model.hidden(batch["input_ids"], batch["attention_mask"], side)
        w = torch.randn(h.shape, generator=g, dtype=torch.float32)
        (h.float() * w).sum().backward()
        b.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def embed_only(batch):
        side = "content" if batch["step"] == "C" else "collaborative"
        t0 = time.perf_counter()
        with b.autocast():
            x = b.model.embed(batch["input_ids"], side)
        x.float().sum().backward()
        b.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def with_variant(v):
        def f(batch):
            set_variant(b.model, v)
            try:
                return b.step(batch)
            finally:
                set_variant(b.model, "current")
        return f

    def embed_where(batch):
        set_variant(b.model, "where_embed")
        try:
            return embed_only(batch)
        finally:
            set_variant(b.model, "current")

    tasks = {"full step (current)": b.step, "embed + body fwd/bwd, no head": body_only,
             "embed fwd/bwd only": embed_only, "embed only, old where-embedding": embed_where,
             "step, attention mask kept": with_variant("mask_kept"),
             "step, eager attention": with_variant("attn_eager")}
    abl = {}
    for s in sample:
        t = {k: [] for k in tasks}
        for _ in range(args.profile_repeats):
            for batch in sample[s]:
                for k, f in tasks.items():
                    t[k].append(f(batch))
        per = {k: round(sum(v) / args.profile_repeats, 3) for k, v in t.items()}
        full = per["full step (current)"]
        real = sum(int(x["attention_mask"].sum()) for x in sample[s])
        padded = sum(int(x["input_ids"].numel()) for x in sample[s])
        abl[s] = {"seconds_over_sample": per,
                  "share_of_step": {
                      "heads + loss + MR + Adam (step - body)": round((full - per["embed + body fwd/bwd, no head"]) / full, 4),
                      "backbone body (body - embed)": round((per["embed + body fwd/bwd, no head"] -
                                                             per["embed fwd/bwd only"]) / full, 4),
                      "embed assembly (current)": round(per["embed fwd/bwd only"] / full, 4),
                      "embed assembly (old where)": round(per["embed only, old where-embedding"] / full, 4),
                      "padding (upper bound: pad fraction of the body)": round(
                          (1 - real / padded) * (per["embed + body fwd/bwd, no head"] / full), 4),
                      "data: documents + sampler + collate per batch": round(
                          data_timing[s] / n_batches[s] / (full / len(sample[s])), 4)},
                  "speedup_mask_dropped_vs_kept": round(per["step, attention mask kept"] / full, 3),
                  "speedup_sdpa_vs_eager_attention": round(per["step, eager attention"] / full, 3),
                  "speedup_index_put_vs_where_embed_embed_only": round(
                      per["embed only, old where-embedding"] / max(per["embed fwd/bwd only"], 1e-9), 3),
                  "data_seconds_per_batch": round(data_timing[s] / n_batches[s], 4)}
        print(f"profile {s}: {abl[s]['share_of_step']}", flush=True)
    out["ablations"] = abl
    return out


MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def alloc_child(name: str, kind: str, n: int, threads: int | None) -> dict:
    """Child process of the allocator check: n real batches of one kind, bf16; wall/user/sys/faults."""
    import resource
    if threads:
        torch.set_num_threads(threads)
    ds, _ = prepared_dataset(OmegaConf.load(ROOT / "conf" / "data" / "ml100k.yaml"))
    corpus_cfg = CorpusConfig.from_mapping(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "corpus" /
                                                                                 "default.yaml"), resolve=True))
    model_cfg = OmegaConf.structured(ModelConfig)
    b = Bench(name, "bf16", ds, corpus_cfg, model_cfg.pretrain.lr, model_cfg.lambda_mr, model_cfg.mr_reduction)
    batches = real_batches(b, model_cfg)[0][kind]
    b.step(batches[0])
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for x in batches[1:1 + n]:
        b.step(x)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": round(time.perf_counter() - t0, 3), "user_s": round(r1.ru_utime - r0.ru_utime, 3),
            "sys_s": round(r1.ru_stime - r0.ru_stime, 3), "minor_faults": r1.ru_minflt - r0.ru_minflt,
            "real_tokens": sum(int(x["attention_mask"].sum()) for x in batches[1:1 + n])}


def allocator_check(args) -> list[dict]:
    """glibc malloc hands blocks > 32 MiB (e.g. the [labels, vocabulary] logits) back to the kernel at
    every free, so every step page-faults them in again. Child processes, alternating default and
    MALLOC_MMAP_MAX_=0 + MALLOC_TRIM_THRESHOLD_=64 GiB (big blocks from the heap, kept)."""
    import json as _json
    import os
    import subprocess
    out = []
    for name, kind, n in args.alloc_cases:
        runs = {"default": [], "heap_kept": []}
        for _ in range(args.alloc_repeats):
            for label, env in (("default", {}), ("heap_kept", MALLOC_ENV)):
                cmd = [sys.executable, __file__, "--alloc-child", name, kind, str(n)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env})
                runs[label].append(_json.loads(res.stdout.strip().splitlines()[-1]))
        med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
        row = {"backbone": name, "step": kind, "batches": n, "precision": "bf16", "runs": runs, "median": med,
               "speedup": round(med["default"]["wall_s"] / med["heap_kept"]["wall_s"], 3), "env": MALLOC_ENV}
        out.append(row)
        print(f"allocator {name} {kind}: default {med['default']['wall_s']:.2f} s (sys {med['default']['sys_s']:.2f}, "
              f"{med['default']['minor_faults']:,.0f} faults) vs heap kept {med['heap_kept']['wall_s']:.2f} s (sys "
              f"{med['heap_kept']['sys_s']:.2f}): x{row['speedup']}", flush=True)
    return out


def _num(x: float):
    return None if x != x else x   # NaN (no sample of that dtype) -> null


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["tiny_gpt2", "smollm2_135m"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "bf16w"], choices=["fp32", "bf16", "bf16w"])
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--shapes", nargs="*", default=["8x128", "16x96", "32x64"], help="synthetic B x T")
    ap.add_argument("--repeats", type=int, default=3, help="timed synthetic steps per shape (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before each measurement")
    ap.add_argument("--real-batches", type=int, default=4, help="sampled real batches per step kind")
    ap.add_argument("--real-repeats", type=int, default=2, help="passes over the real sample (median)")
    ap.add_argument("--variants", nargs="+", default=["baseline", "current", "compiled"],
                    choices=["baseline", "current", "compiled", "sdpa_bf16"],
                    help="real-batch variants, interleaved (sdpa_bf16 runs only under bf16 autocast; bf16w runs "
                         "current only; compiled = torch.compile'd backbone body, its compile time is the first "
                         "warm-up step of each kind, `warmup_seconds`)")
    ap.add_argument("--synthetic-precisions", nargs="*", default=["fp32", "bf16"],
                    help="precisions that also run the synthetic shapes (real batches run every precision)")
    ap.add_argument("--tiny-scale", type=int, default=3, help="tiny_gpt2 steps are fast: x more real batches")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-repeats", type=int, default=1)
    ap.add_argument("--profile-backbone", default="smollm2_135m", help="the backbone profiled (at bf16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-allocator-check", action="store_true")
    ap.add_argument("--alloc-cases", nargs=3, action="append", metavar=("BACKBONE", "STEP", "N"),
                    help="allocator check cases (default: tiny_gpt2 C 20, tiny_gpt2 L 20, smollm2_135m C 3)")
    ap.add_argument("--alloc-repeats", type=int, default=2, help="alternating child-process pairs per case")
    ap.add_argument("--alloc-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "throughput.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.alloc_child:
        import json as _json
        name, kind, n = args.alloc_child
        print(_json.dumps(alloc_child(name, kind, int(n), args.threads)))
        return
    args.alloc_cases = [(a, b, int(c)) for a, b, c in (args.alloc_cases or [("tiny_gpt2", "C", 20),
                                                                           ("tiny_gpt2", "L", 20),
                                                                           ("smollm2_135m", "C", 3)])]
    t_start, load_start = time.perf_counter(), load()
    data_cfg = OmegaConf.load(ROOT / "conf" / "data" / "ml100k.yaml")
    ds, _ = prepared_dataset(data_cfg)
    corpus_cfg = CorpusConfig.from_mapping(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "corpus" /
                                                                                 "default.yaml"), resolve=True))
    model_cfg = OmegaConf.structured(ModelConfig)
    peak = Peak([(2048, 2048, 2048), (1536, 576, 1536), (1536, 1536, 576), (1536, 576, 576)])
    rows, profiles, epochs = [], [], {}
    rng = np.random.default_rng(args.seed)
    for name in args.backbones:
        first = None
        for precision in args.precisions:
            t0 = time.perf_counter()
            b = Bench(name, precision, ds, corpus_cfg, model_cfg.pretrain.lr, model_cfg.lambda_mr,
                      model_cfg.mr_reduction, shared=first if precision == "bf16w" else None)
            load_s = time.perf_counter() - t0
            if first is None:
                first = b
                batches, data_timing = real_batches(b, model_cfg, args.seed)
                n_batches = {s: len(v) for s, v in batches.items()}
                k = args.real_batches * (args.tiny_scale if name.startswith("tiny") else 1)
                picks = {s: rng.choice(len(v), min(len(v), k + 1), replace=False) for s, v in batches.items()}
                warm = {s: batches[s][int(p[0])] for s, p in picks.items()}
                sample = {s: [batches[s][int(i)] for i in p[1:]] for s, p in picks.items() if s in args.steps}
                warm = {s: warm[s] for s in sample}
                epochs[name] = {s: {"batches": len(v), "real_tokens": int(sum(int(x["attention_mask"].sum()) for x in v)),
                                    "padded_tokens": int(sum(x["input_ids"].numel() for x in v)),
                                    "data_seconds": round(data_timing[s], 3)} for s, v in batches.items()}
            peak.measure(b.dtype, f"{name}/{precision} start")
            print(f"== {name} {precision}: P = {b.P:,} matmul weights, d = {b.d}, N = {b.N:,}, J = {b.J:,}; "
                  f"peak {peak.last(b.dtype):.0f} GFLOP/s ({b.dtype}); load {load()}", flush=True)
            if precision in args.synthetic_precisions:
                run_synthetic(b, args, peak, rows)
                peak.measure(b.dtype, f"{name}/{precision} after synthetic")
            variants = [v for v in args.variants if v == "current" or precision == "bf16"
                        or (v in ("baseline", "compiled") and precision == "fp32")]
            run_real(b, args, peak, rows, sample, warm, variants)
            peak.measure(b.dtype, f"{name}/{precision} after real")
            if not args.no_profile and name == args.profile_backbone and precision == "bf16":
                profiles.append(profile(b, sample, warm, data_timing, n_batches, args))
                peak.measure(b.dtype, f"{name}/{precision} after profile")
            for r in rows:
                if r["backbone"] == name and r["precision"] == precision:
                    r.setdefault("backbone_load_s", round(load_s, 2))
            if b is not first:
                del b
    alloc = [] if args.no_allocator_check else allocator_check(args)
    # final MFU against the run's maximum peak (later samples may have raised it)
    for r in rows:
        dt = torch.float32 if r["precision"] == "fp32" else torch.bfloat16
        r["mfu"] = round(r["achieved_gflops"] / peak.best(dt), 4)
        r["mfu_incl_attention"] = round(r["mfu"] * (1 + r["attention_flops_vs_model"]), 4)
        if r["source"] == "real" and r["backbone"] in epochs:
            e = epochs[r["backbone"]][r["step"]]
            r["estimated_epoch_minutes"] = round(e["real_tokens"] / r["tokens_per_s"] / 60, 2)
    report = {"benchmark": "training throughput and MFU of one optimisation step", "date": now(),
              "machine": machine(), "load_avg_start": load_start, "load_avg_end": load(),
              "wall_s": round(time.perf_counter() - t_start, 1),
              "config": {k: (v if not isinstance(v, Path) else str(v)) for k, v in vars(args).items()},
              "dataset": {"name": "ml100k", "users": ds.n_users, "items": ds.n_items},
              "batching": {"pretrain": OmegaConf.to_container(model_cfg.pretrain),
                           "finetune": OmegaConf.to_container(model_cfg.finetune)},
              "flops_formula": FLOPS_FORMULA,
              "mfu_definition": "model FLOPs (flops_formula) / step wall seconds / matmul peak of the compute dtype "
                                "(fp32 for fp32, bf16 for bf16 and bf16w); peak = max over the run's samples",
              "precisions": {"fp32": "fp32 weights and activations",
                             "bf16": "torch.autocast('cpu', dtype=torch.bfloat16) around training_step "
                                     "(Lightning bf16-mixed)",
                             "bf16w": "proposal, not a project config: backbone weights cast to bf16 once, no autocast"},
              "variants": {"baseline": "model.embed / model.hidden before the speed fixes (torch.where assembly of "
                                       "three [B, T, d] lookups; attention mask always passed; KV cache built)",
                           "current": "cllm4rec/model.py as run (attention in fp32 under CPU bf16 autocast)",
                           "sdpa_bf16": "current with transformers' plain SDPA attention (bf16 under autocast)",
                           "compiled": "current with the backbone body torch.compile'd (dynamic shapes; "
                                       "CLLM4Rec.compile_body, config `compile: true`); compile time in warmup_seconds"},
              "matmul_peak_gflops": {"fp32": _num(peak.best(torch.float32)), "bf16": _num(peak.best(torch.bfloat16)),
                                     "fp32_per_shape": peak.best_per_shape(torch.float32),
                                     "bf16_per_shape": peak.best_per_shape(torch.bfloat16),
                                     "samples": peak.samples},
              "epochs": epochs, "results": rows, "profile": profiles, "allocator_check": alloc}
    write_json(args.out, report)
    print(f"\nmatmul peak: fp32 {peak.best(torch.float32):.0f}, bf16 {peak.best(torch.bfloat16):.0f} GFLOP/s; "
          f"load {load_start} -> {load()}; {time.perf_counter() - t_start:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
