"""Full-ranking evaluation: users/s and peak memory.

    .venv/bin/python benchmarks/evaluation.py [--bounds 64 256 1024] [--whole-bounds 256]
        [--whole beauty:tiny_gpt2 beauty:smollm2_135m ml100k:smollm2_135m] [--eval-batch-size 64]

Two parts, each row measured in its own child process so that peak RSS (ru_maxrss) belongs to it:
  scoring  metrics.evaluate alone (masking, top-K, metrics) on Beauty's shape (22,363 users x
           12,101 items, real seen/test matrices of the per-user 80/10/10 split) with random
           scores, at several memory bounds (max_batch_bytes)
  whole    the real path of evaluation: a data set's test prompts (conf/data/<data>, its default
           split) -> the backbone's forward (the CLLM4Rec module's score_users, bf16 autocast as
           the default trainer) -> metrics, per data:backbone pair and memory bound
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
from common import compose, load, machine, now, write_json  # noqa: E402

KS = (20, 40, 100)


def _config(data: str, backbone: str | None):
    """The default fine-tuning config of conf/data/<data> (its default split) and this backbone."""
    return compose("finetune", [f"data={data}", *([f"backbone={backbone}"] if backbone else [])])


def child(kind: str, bound_mib: int, data: str, backbone_name: str, eval_batch_size: int) -> dict:
    import torch

    from cllm4rec import metrics as M
    from cllm4rec.prepare import prepared_dataset
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = _config(data, backbone_name if kind == "whole" else None)
    ds = prepared_dataset(cfg.data)[0]
    seen, target = ds.matrix("train", "valid"), ds.matrix("test")
    bound = bound_mib << 20
    if kind == "scoring":
        gen = torch.Generator().manual_seed(0)
        score_fn = lambda u: torch.rand(len(u), ds.n_items, generator=gen)  # noqa: E731
    else:
        from omegaconf import OmegaConf

        from cllm4rec.backbone import load_backbone
        from cllm4rec.config import checked_model_config
        from cllm4rec.corpus import CorpusBuilder, CorpusConfig
        from cllm4rec.modules import CLLM4RecModule, Schedule
        from cllm4rec.train import build_model
        from cllm4rec.vocab import Vocab
        backbone, tok = load_backbone(backbone_name, seed=0)
        vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
        builder = CorpusBuilder(ds, tok, vocab, CorpusConfig.from_mapping(OmegaConf.to_container(cfg.corpus, resolve=True)))
        torch.manual_seed(0)
        model = build_model(backbone, vocab, builder, checked_model_config(cfg.model))
        module = CLLM4RecModule(model, builder, Schedule(stage="finetune"), eval_batch_size=eval_batch_size).eval()

        def score_fn(u):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module.score_users(u, "test")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = M.evaluate(score_fn, seen, target, ks=KS, metrics=("recall", "ndcg"), max_batch_bytes=bound)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bs = M.batch_users(ds.n_items, bound)
    return {"part": kind, "data": data, "backbone": backbone_name if kind == "whole" else None,
            "bound_mib": bound_mib, "users": ds.n_users, "items": ds.n_items,
            "batch_users": bs, "seconds": round(dt, 2), "users_per_s": round(out["n_users_evaluated"] / dt, 1),
            "peak_rss_increase_mib": round((peak - before) / 1024, 1), "rss_before_mib": round(before / 1024, 1),
            "one_batch_scores_mib": round(bs * ds.n_items * 4 / 2**20, 1),
            "recall@20": out["recall@20"], "random_expectation_recall@20": 20 / ds.n_items}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bounds", type=int, nargs="+", default=[64, 256, 1024],
                   help="memory bounds (MiB of one batch of dense scores) of the scoring-only runs (Beauty)")
    p.add_argument("--whole", nargs="*", default=["beauty:tiny_gpt2", "beauty:smollm2_135m", "ml100k:smollm2_135m"],
                   help="data:backbone pairs of the whole evaluation")
    p.add_argument("--whole-bounds", type=int, nargs="+", default=[256], help="memory bounds (MiB) of the whole runs")
    p.add_argument("--eval-batch-size", type=int, default=64, help="prompts per backbone forward (whole; the "
                   "default model.eval_batch_size)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "evaluation.json")
    p.add_argument("--child", nargs=4)
    a = p.parse_args()
    if a.child:
        kind, bound, data, backbone = a.child
        print(json.dumps(child(kind, int(bound), data, backbone, a.eval_batch_size)))
        return
    load_start, t0 = load(), time.perf_counter()
    plan = [("scoring", b, "beauty", "-") for b in a.bounds] + \
           [("whole", b, *pair.split(":")) for pair in a.whole for b in a.whole_bounds]
    rows = []
    for kind, bound, data, backbone in plan:
        out = subprocess.run([sys.executable, __file__, "--eval-batch-size", str(a.eval_batch_size),
                              "--child", kind, str(bound), data, backbone], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"evaluation: the {kind} {data} {backbone} row failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{kind:8s} {data:7s} {backbone:13s} bound {bound:5d} MiB: {rows[-1]['users_per_s']:10,.1f} users/s  "
              f"peak +{rows[-1]['peak_rss_increase_mib']:.0f} MiB  ({rows[-1]['seconds']} s)", file=sys.stderr)
    m = machine()
    result = {"benchmark": "evaluation", "date": now(), "machine": m, "versions": m["versions"],
              "load_avg_start": load_start, "load_avg_end": load(), "wall_s": round(time.perf_counter() - t0, 1),
              "data": "conf/data/<data> with its default split (beauty: S3-Rec Beauty.txt, ml100k: u.data; per-user "
                      "random 80/10/10, seed 0)",
              "config": {"ks": list(KS), "metrics": ["recall", "ndcg"], "scoring_bounds_mib": a.bounds,
                         "whole": a.whole, "whole_bounds_mib": a.whole_bounds, "whole_precision": "bf16 autocast",
                         "whole_weights": "untrained, the default model config (train.build_model): the cost "
                                          "does not depend on trained values",
                         "whole_eval_batch_size": a.eval_batch_size, "whole_part": "test",
                         "scoring_scores": "torch.rand (random scores; the ranking work does not depend on them)",
                         "peak_memory": "ru_maxrss after the call minus ru_maxrss before it, in a fresh child "
                                        "process per row"},
              "results": rows}
    write_json(a.out, result)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
