"""Where a bf16 training step's time goes, by operator, for the step kinds and backbone tunings the
quality work trains, and why holding the frozen weights in bf16 (bf16w) measured slower than autocast.

    .venv/bin/python benchmarks/profile_steps.py [--backbone smollm2_135m] [--kinds L seq rec] [--batches 3]

Steps are tuning_throughput.py's (`CLLM4RecModule.training_step` + backward + the module's AdamW +
zero_grad) on real batches cut as `CorpusData.epoch_batches` cuts them (its KINDS).
Part 1, tunings: per step kind and tuning (frozen / lora / full), bf16 autocast, one warm-up batch,
then the same `--batches` batches timed without the profiler (tokens/s) and once under
torch.profiler: self time per operator category (throughput.categorise), the top operators, and
the rest of the wall time (Python, autograd, the profiler's own cost).
Part 2, bf16w: the frozen L step under autocast against the backbone cast to bf16 once (no
autocast), with the attention in fp32 (backbone.py's attention function, as under autocast) and in
bf16 (transformers' plain SDPA, how bf16w ran when throughput.py measured it slower), the same
batches, operators grouped by input shapes: per category, and the operators whose self time
differs most between autocast and bf16w with bf16 attention.
Writes benchmarks/results/profile_steps.json.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, load, machine, now, write_json  # noqa: E402
from throughput import categorise  # noqa: E402
from tuning_throughput import KINDS, Stepper, labelled, sample_batches  # noqa: E402

from cllm4rec.backbone import load_backbone  # noqa: E402
from cllm4rec.tuning import MODES  # noqa: E402


def op_table(prof, by_shape: bool = False) -> dict[tuple[str, str], tuple[float, int]]:
    """(op, input shapes) -> (self seconds, calls), aten operators and SDPA only."""
    out = {}
    for e in prof.key_averages(group_by_input_shape=by_shape):
        if e.key.startswith("aten::") or "scaled_dot_product" in e.key:
            out[(e.key, str(e.input_shapes) if by_shape else "")] = (e.self_cpu_time_total / 1e6, e.count)
    return out


def categories(ops: dict, wall: float) -> dict[str, float]:
    cats: dict[str, float] = {}
    for (name, _), (sec, _) in ops.items():
        cats[categorise(name)] = cats.get(categorise(name), 0.0) + sec
    cats["python / autograd / profiler (wall - op self time)"] = max(0.0, wall - sum(cats.values()))
    return {k: round(v / wall, 4) for k, v in sorted(cats.items())}


def measure(stepper: Stepper, batches: list, by_shape: bool = False) -> dict:
    stepper.step(batches[0])                                    # warm-up: first calls allocate
    plain = [stepper.step(b) for b in batches[1:]]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as prof:
        t0 = time.perf_counter()
        for b in batches[1:]:
            stepper.step(b)
        wall = time.perf_counter() - t0
    ops = op_table(prof, by_shape)
    real = sum(int(b["attention_mask"].sum()) for b in batches[1:])
    top = sorted(ops.items(), key=lambda kv: -kv[1][0])[:12]
    return {"tokens_per_s": round(real / sum(plain), 1),
            "labelled_per_s": round(sum(labelled(b) for b in batches[1:]) / sum(plain), 1),
            "share": categories(ops, wall), "seconds": round(sum(plain), 3), "wall_under_profiler_s": round(wall, 3),
            "top_ops": [{"op": k, **({"shapes": s} if by_shape else {}), "self_s": round(v, 3), "calls": n}
                        for (k, s), (v, n) in top], "_ops": ops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2_135m")
    ap.add_argument("--kinds", nargs="+", default=["L", "seq", "rec"], choices=list(KINDS))
    ap.add_argument("--batches", type=int, default=3, help="profiled real batches per kind (+1 warm-up)")
    ap.add_argument("--out", default=str(RESULTS / "profile_steps.json"))
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)`")   # no Trainer: logging is off
    start = load()
    _, tok = load_backbone(args.backbone, seed=0)
    tunings, samples = [], {}
    for kind in args.kinds:
        builder, batches = sample_batches(kind, tok, args.batches)
        samples[kind] = (builder, batches)
        for mode in MODES:
            r = measure(Stepper(args.backbone, mode, builder, KINDS[kind][3]), batches)
            r.pop("_ops")
            tunings.append({"kind": kind, "tuning": mode, **r,
                            "shapes": [list(b["input_ids"].shape) for b in batches[1:]]})
            print(kind, mode, r["tokens_per_s"], "tok/s", sorted(r["share"].items(), key=lambda kv: -kv[1])[:4], flush=True)
    builder, batches = samples.get("L") or sample_batches("L", tok, args.batches)
    pair = {}
    for name in ("autocast", "bf16w_bf16_attention", "bf16w"):
        stepper = Stepper(args.backbone, "frozen", builder, False, bf16_weights=name != "autocast")
        if name == "bf16w_bf16_attention":     # transformers' plain SDPA: attention in bf16 too
            stepper.model.backbone.config._attn_implementation = "sdpa"
        pair[name] = measure(stepper, batches, by_shape=True)
    a, w = pair["autocast"].pop("_ops"), pair["bf16w_bf16_attention"].pop("_ops")
    pair["bf16w"].pop("_ops")
    diff = sorted(((w.get(k, (0.0, 0))[0] - a.get(k, (0.0, 0))[0], k) for k in set(a) | set(w)), reverse=True)
    row = lambda d, k: {"op": k[0], "shapes": k[1], "bf16w_bf16_attention_self_s": round(w.get(k, (0.0, 0))[0], 3),  # noqa: E731
                        "autocast_self_s": round(a.get(k, (0.0, 0))[0], 3), "minus_autocast_s": round(d, 3)}
    by_cat = {}
    for name, ops in (("autocast", a), ("bf16w_bf16_attention", w)):
        for (op, _), (sec, _) in ops.items():
            by_cat.setdefault(categorise(op), {}).setdefault(name, 0.0)
            by_cat[categorise(op)][name] += sec
    bf16w = {**pair, "category_seconds": {c: {k: round(v, 3) for k, v in d.items()} for c, d in by_cat.items()},
             "slower_in_bf16w_bf16_attention": [row(d, k) for d, k in diff[:12] if d > 0],
             "faster_in_bf16w_bf16_attention": [row(d, k) for d, k in diff[::-1][:8] if d < 0]}
    print("tokens/s", {k: v["tokens_per_s"] for k, v in pair.items()}, flush=True)
    out = {"benchmark": "profile_steps", "date": now(), "machine": machine(), "load_at_start": start,
           "load_at_end": load(), "backbone": args.backbone,
           "command": " ".join(["python", "benchmarks/profile_steps.py", *sys.argv[1:]]),
           "threads": torch.get_num_threads(), "rows": tunings, "bf16w_vs_autocast_L": bf16w}
    print("wrote", write_json(args.out, out))


if __name__ == "__main__":
    main()
