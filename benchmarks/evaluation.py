"""Full-ranking evaluation on Beauty: users/s and peak memory.

    .venv/bin/python benchmarks/evaluation.py [--data ../shared/data] [--bounds 64 256 1024]
                                              [--whole-bound 256] [--eval-batch-size 256]

Two parts, each measured in its own child process so that peak RSS (ru_maxrss) belongs to it:
  scoring  metrics.evaluate alone (masking, top-K, metrics) on Beauty's shape (22,363 users x
           12,101 items, real seen/test matrices of the per-user 80/10/10 split) with random
           scores, at several memory bounds (max_batch_bytes)
  whole    the real path of fine-tuning's evaluation: Beauty evaluation prompts -> tiny_gpt2
           forward (the CLLM4Rec module's score_users) -> metrics, at the default 256 MiB bound
Peak memory = peak RSS during the measured call minus the RSS peak before it.
Writes benchmarks/results/evaluation.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import load, machine, now, write_json  # noqa: E402

KS = (20, 40, 100)


def _beauty(data: Path):
    from cllm4rec.data import BadLines, split_random
    from cllm4rec.data.readers import S3RecSequences
    ds = S3RecSequences(path=data / "amazon_s3rec_splits" / "Beauty.txt").read(BadLines())
    return split_random(ds, seed=0)


def child(kind: str, bound_mib: int, data: Path, eval_batch_size: int = 256) -> dict:
    import torch

    from cllm4rec import metrics as M
    torch.set_num_threads(os.cpu_count() or 1)
    ds = _beauty(data)
    seen, target = ds.matrix("train", "valid"), ds.matrix("test")
    bound = bound_mib << 20
    if kind == "scoring":
        gen = torch.Generator().manual_seed(0)
        score_fn = lambda u: torch.rand(len(u), ds.n_items, generator=gen)  # noqa: E731
    else:
        from cllm4rec.backbone import load_backbone
        from cllm4rec.corpus import CorpusBuilder
        from cllm4rec.model import CLLM4Rec
        from cllm4rec.modules import CLLM4RecModule, Schedule
        from cllm4rec.vocab import Vocab
        backbone, tok = load_backbone("tiny_gpt2", seed=0)
        vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
        builder = CorpusBuilder(ds, tok, vocab)
        module = CLLM4RecModule(CLLM4Rec(backbone, vocab), builder, Schedule(stage="finetune"),
                                eval_batch_size=eval_batch_size).eval()
        score_fn = lambda u: module.score_users(u, "test")  # noqa: E731
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = M.evaluate(score_fn, seen, target, ks=KS, metrics=("recall", "ndcg"), max_batch_bytes=bound)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bs = M.batch_users(ds.n_items, bound)
    return {"part": kind, "bound_mib": bound_mib, "users": ds.n_users, "items": ds.n_items,
            "batch_users": bs, "seconds": round(dt, 2), "users_per_s": round(out["n_users_evaluated"] / dt, 1),
            "peak_rss_increase_mib": round((peak - before) / 1024, 1), "rss_before_mib": round(before / 1024, 1),
            "one_batch_scores_mib": round(bs * ds.n_items * 4 / 2**20, 1),
            "recall@20": out["recall@20"], "random_expectation_recall@20": 20 / ds.n_items}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    p.add_argument("--bounds", type=int, nargs="+", default=[64, 256, 1024],
                   help="memory bounds (MiB of one batch of dense scores) of the scoring-only runs")
    p.add_argument("--whole-bound", type=int, default=256, help="memory bound (MiB) of the whole evaluation")
    p.add_argument("--eval-batch-size", type=int, default=256, help="prompts per backbone forward (whole)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "evaluation.json")
    p.add_argument("--child", nargs=2)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.data, a.eval_batch_size)))
        return
    load_start, t0 = load(), time.perf_counter()
    rows = []
    for kind, bound in [*(("scoring", b) for b in a.bounds), ("whole", a.whole_bound)]:
        out = subprocess.run([sys.executable, __file__, "--data", str(a.data), "--eval-batch-size",
                              str(a.eval_batch_size), "--child", kind, str(bound)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{kind:8s} bound {bound:5d} MiB: {rows[-1]['users_per_s']:10,.1f} users/s  "
              f"peak +{rows[-1]['peak_rss_increase_mib']:.0f} MiB  ({rows[-1]['seconds']} s)", file=sys.stderr)
    m = machine()
    result = {"benchmark": "evaluation", "date": now(), "machine": m, "versions": m["versions"],
              "load_avg_start": load_start, "load_avg_end": load(), "wall_s": round(time.perf_counter() - t0, 1),
              "data": "Beauty (S3-Rec Beauty.txt), per-user random 80/10/10, seed 0",
              "config": {"ks": list(KS), "metrics": ["recall", "ndcg"], "scoring_bounds_mib": a.bounds,
                         "whole_bound_mib": a.whole_bound, "whole_backbone": "tiny_gpt2",
                         "whole_eval_batch_size": a.eval_batch_size, "whole_part": "test",
                         "scoring_scores": "torch.rand (random scores; the ranking work does not depend on them)",
                         "peak_memory": "ru_maxrss after the call minus ru_maxrss before it, in a fresh child "
                                        "process per row"},
              "results": rows}
    write_json(a.out, result)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
