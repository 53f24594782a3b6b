"""Corpus building speed: documents/s and tokens/s per document kind, one epoch each.

    .venv/bin/python benchmarks/corpus.py [--repeats 5] [--data ../shared/data]

Datasets: Beauty (S3-Rec, 22k users; item texts = attributes only) and ML-100K (943 users,
long histories; titles/years/genres and user profiles), plus All_Beauty_5 reviews. Text
tokenization happens once per builder and is reported separately (`tokenize_s`). Times are
CPU seconds of this process (time.process_time) and wall seconds, median of `--repeats` runs.
Writes benchmarks/results/corpus.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from cllm4rec.backbone import gpt2_tokenizer
from cllm4rec.corpus import CorpusBuilder, CorpusConfig, LengthBucketSampler, collate
from cllm4rec.data import BadLines, split_random
from cllm4rec.data.readers import AmazonReviews, RecBoleAtomic, S3RecSequences
from cllm4rec.vocab import Vocab

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, timed, write_json  # noqa: E402


def bench_dataset(name: str, ds, tok, cfg: CorpusConfig, kinds: list[str], repeats: int) -> dict:
    b = CorpusBuilder(ds, tok, Vocab(len(tok), ds.n_users, ds.n_items), cfg)
    rng = np.random.default_rng(0)
    out = {"dataset": name, "users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions,
           "train_interactions": int(len(b.train_item)), "kinds": {}}
    # one-off: tokenizing every free text the content kinds use (then kept by the builder)
    c0, w0 = time.process_time(), time.perf_counter()
    texts = b.epoch("content", rng)
    if cfg.history and any(f in ds.item_text for f in ("title", "movie_title", "name")):
        b._titles()
    out["tokenize_cpu_s"], out["tokenize_wall_s"] = time.process_time() - c0, time.perf_counter() - w0
    out["content_texts"] = len(texts)
    for kind in kinds:
        cpu, wall, docs = timed(lambda: b.epoch(kind, rng), repeats)
        out["kinds"][kind] = {"documents": len(docs), "tokens": docs.n_tokens, "cpu_s": cpu, "wall_s": wall,
                              "docs_per_s": len(docs) / cpu if cpu else None,
                              "tokens_per_s": docs.n_tokens / cpu if cpu else None,
                              "mean_len": float(docs.lengths.mean()) if len(docs) else 0.0,
                              "max_len": int(docs.lengths.max()) if len(docs) else 0}
        print(f"{name:11s} {kind:16s} {len(docs):8d} docs {docs.n_tokens:9d} tokens  "
              f"{cpu * 1e3:8.1f} ms CPU  {len(docs) / max(cpu, 1e-9):12,.0f} docs/s  "
              f"{docs.n_tokens / max(cpu, 1e-9):14,.0f} tokens/s")
    cpu, wall, ev = timed(lambda: b.eval_prompts("test"), repeats)
    out["kinds"]["eval_prompts"] = {"documents": len(ev), "tokens": ev.n_tokens, "cpu_s": cpu, "wall_s": wall}
    # batching one epoch of fine-tuning documents: sampler + collate
    ft = b.epoch("finetune", rng)

    def batches(n_items):
        s = LengthBucketSampler(ft.lengths, batch_size=64, seed=0)
        return [collate(ft, idx, n_items=n_items) for idx in s]
    cpu, wall, bs = timed(lambda: batches(None), repeats)
    out["collate_finetune_epoch"] = {"batches": len(bs), "batch_size": 64, "cpu_s": cpu, "wall_s": wall}
    cpu_d, wall_d, _ = timed(lambda: batches(ds.n_items), repeats)
    out["collate_finetune_epoch_dense_targets"] = {"batches": len(bs), "batch_size": 64, "cpu_s": cpu_d,
                                                   "wall_s": wall_d}
    both = out["kinds"]["collaborative"]["cpu_s"] + out["kinds"]["finetune"]["cpu_s"]
    out["collaborative_plus_finetune_epoch_cpu_s"] = both
    print(f"{name:11s} collaborative + finetune epoch: {both * 1e3:.1f} ms CPU; text tokenization "
          f"(one-off): {out['tokenize_cpu_s']:.2f} s CPU; sampler + collate of a finetune epoch: {cpu * 1e3:.1f} ms "
          f"(index targets), {cpu_d * 1e3:.1f} ms (dense [B, J] targets)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("CLLM4REC_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "corpus.json"))
    args = ap.parse_args()
    data = Path(args.data)
    tok = gpt2_tokenizer()
    cfg = CorpusConfig(mim=True, bpr=True, history=True)
    kinds = ["collaborative", "finetune", "content", "mim", "bpr", "history"]
    results = []
    beauty = S3RecSequences(path=data / "amazon_s3rec_splits" / "Beauty.txt",
                            attributes=data / "amazon_s3rec_splits" / "Beauty_item2attributes.json",
                            datamaps=data / "amazon_p5_datamaps" / "beauty_datamaps.json").read(BadLines())
    beauty = split_random(beauty, seed=0)
    has_title = any(f in beauty.item_text for f in ("title", "movie_title", "name"))
    results.append(bench_dataset("beauty", beauty, tok, dataclasses.replace(cfg, history=has_title),
                                 [k for k in kinds if k != "history" or has_title], args.repeats))
    ml = split_random(RecBoleAtomic(path=data / "movielens_100k").read(BadLines()), seed=0)
    results.append(bench_dataset("ml100k", ml, tok, cfg, kinds, args.repeats))
    ab = split_random(AmazonReviews(reviews=data / "amazon2018_all_beauty_5" / "All_Beauty_5.json.gz")
                      .read(BadLines()), seed=0)
    results.append(bench_dataset("all_beauty", ab, tok, dataclasses.replace(cfg, history=False),
                                 ["collaborative", "finetune", "content"], args.repeats))
    report = {"benchmark": "corpus building, one epoch per kind (median of repeats, CPU seconds)",
              "machine": machine(), "repeats": args.repeats, "split": "split_random(seed=0)",
              "config": dataclasses.asdict(cfg), "results": results,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
