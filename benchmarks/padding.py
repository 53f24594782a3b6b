"""Padding and packing efficiency of the training batches: one epoch of each step kind, real data.

    .venv/bin/python benchmarks/padding.py [--backbone smollm2_135m]

Cases, composed from conf/ as training composes them: ML-100K's default job (pretraining's L and
C steps, fine-tuning's multinomial `rec` step) and Beauty leave-one-out with
`experiment=sequential_searched` (the `seq` step). For each step kind's epoch of documents:
- `bucketed`: the batches training cuts (LengthBucketSampler: pools of 50 batches sorted by
  length, at most batch_size documents and max_tokens padded tokens); efficiency = real tokens /
  padded tokens (B x longest, summed over batches);
- `unbucketed`: the same cut from the shuffled order without sorting (pool of one batch);
- `packed`: the documents packed first-fit-decreasing into rows as long as the epoch's longest
  document, positions restarting per document: real tokens / (rows x row length).
Attention is the cost that packing moves: a packed row keeps attention inside each document only
with a block-diagonal mask, and CPU SDPA with an explicit mask computes every score of the row, so
`attention_scores` counts rows x length^2 packed against sum of B x longest^2 bucketed (causal
attention halves both alike). Writes benchmarks/results/padding.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, compose, machine, now, write_json  # noqa: E402

from cllm4rec.backbone import load_backbone  # noqa: E402
from cllm4rec.corpus import CorpusBuilder, CorpusConfig, LengthBucketSampler  # noqa: E402
from cllm4rec.modules import CorpusData, Schedule  # noqa: E402
from cllm4rec.prepare import prepared_dataset  # noqa: E402
from cllm4rec.vocab import Vocab  # noqa: E402

CASES = {   # name: (overrides, [(step, stage)])
    "ml100k": (["data=ml100k"], [("L", "pretrain"), ("C", "pretrain"), ("rec", "finetune")]),
    "beauty_loo_sequential_searched": (["data=beauty", "data.split.protocol=loo", "experiment=sequential_searched"],
                                       [("seq", "finetune")]),
}


def cut(lengths: np.ndarray, batches: list[np.ndarray]) -> dict:
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    scores = sum(len(b) * int(lengths[b].max()) ** 2 for b in batches)
    return {"batches": len(batches), "padded_tokens": int(padded), "efficiency": round(int(lengths.sum()) / padded, 4),
            "attention_scores": int(scores)}


def pack(lengths: np.ndarray) -> dict:
    """First-fit decreasing into rows of the longest document's length (a heap of free room would
    be faster; numpy over the open rows is fast enough for an epoch)."""
    row = int(lengths.max())
    free = np.empty(0, np.int64)
    for n in np.sort(lengths)[::-1]:
        fits = np.flatnonzero(free >= n)
        if len(fits):
            free[fits[0]] -= n
        else:
            free = np.append(free, row - n)
    return {"rows": len(free), "row_length": row, "padded_tokens": int(len(free) * row),
            "efficiency": round(int(lengths.sum()) / (len(free) * row), 4),
            "attention_scores": int(len(free) * row ** 2)}


def run_case(name: str, overrides: list[str], steps, backbone: str) -> dict:
    stage_cfg = {stage: compose(stage, [*overrides, f"backbone={backbone}"]) for stage in {s for _, s in steps}}
    any_cfg = next(iter(stage_cfg.values()))
    ds, _ = prepared_dataset(any_cfg.data)
    _, tok = load_backbone(backbone, seed=0)
    corpus = CorpusConfig.from_mapping(OmegaConf.to_container(any_cfg.corpus, resolve=True))
    builder = CorpusBuilder(ds, tok, Vocab(len(tok), ds.n_users, ds.n_items), corpus)
    out = {"overrides": overrides, "users": ds.n_users, "items": ds.n_items, "steps": {}}
    for step, stage in steps:
        sm = stage_cfg[stage].model[stage]
        docs = CorpusData(builder, Schedule(stage=stage), batch_size=sm.batch_size,
                          max_tokens=sm.max_tokens).documents(step, np.random.default_rng(0))
        lengths = docs.lengths.astype(np.int64)
        rows = {}
        for kind, pool in (("bucketed", 50), ("unbucketed", 1)):
            s = LengthBucketSampler(lengths, batch_size=sm.batch_size, max_tokens=sm.max_tokens, seed=0, pool=pool)
            rows[kind] = cut(lengths, s.batches())
        rows["packed"] = pack(lengths)
        for kind in ("unbucketed", "packed"):
            rows[kind]["attention_vs_bucketed"] = round(rows[kind]["attention_scores"]
                                                        / rows["bucketed"]["attention_scores"], 3)
        out["steps"][step] = {"documents": len(lengths), "real_tokens": int(lengths.sum()),
                              "mean_length": round(float(lengths.mean()), 1), "max_length": int(lengths.max()),
                              "batch_size": sm.batch_size, "max_tokens": sm.max_tokens, **rows}
        print(f"{name:32s} {step:4s} {len(lengths):7d} docs  mean {lengths.mean():6.1f}  max {lengths.max():4d}  "
              f"bucketed {rows['bucketed']['efficiency']:.3f}  unbucketed {rows['unbucketed']['efficiency']:.3f}  "
              f"packed {rows['packed']['efficiency']:.3f} (attention x{rows['packed']['attention_vs_bucketed']:.2f})",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2_135m", help="its tokenizer cuts the texts")
    ap.add_argument("--out", default=str(RESULTS / "padding.json"))
    args = ap.parse_args()
    cases = {name: run_case(name, ov, steps, args.backbone) for name, (ov, steps) in CASES.items()}
    rows = [{"case": name, "step": step, "documents": st["documents"], "mean_length": st["mean_length"],
             "max_length": st["max_length"],
             **{kind: st[kind]["efficiency"] for kind in ("bucketed", "unbucketed", "packed")},
             "packed_attention_vs_bucketed": st["packed"]["attention_vs_bucketed"]}
            for name, case in cases.items() for step, st in case["steps"].items()]
    write_json(args.out, {"benchmark": "padding", "date": now(), "machine": machine(), "backbone": args.backbone,
                          "command": " ".join(["python", "benchmarks/padding.py", *sys.argv[1:]]),
                          "rows": rows, "cases": cases})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
