"""torch.compile's first-run and cached compile time (`compile=true`), SmolLM2-135M on real ML-100K
batches, bf16 autocast.

    .venv/bin/python benchmarks/compile_cache.py [--backbone smollm2_135m] [--data ml100k]

Two fresh processes share one empty inductor cache folder (model.compile_body points
TORCHINDUCTOR_CACHE_DIR at <cache_root>/inductor; here a temporary one): the first compiles
from nothing, the second finds the first's graphs. Each times, in the default fine-tuning
config's code path: the first training step (collaborative L-step batch: forward, backward,
optimizer; compilation included), a second step of another shape, one eager step of the same
batch for reference, and the first and second validation scoring calls (no_grad, its own graph).
Writes benchmarks/results/compile_cache.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, compose, load, machine, now, write_json  # noqa: E402


def child(args) -> dict:
    import torch
    from omegaconf import OmegaConf

    from cllm4rec.backbone import load_backbone, pad_id
    from cllm4rec.corpus import CorpusBuilder, CorpusConfig
    from cllm4rec.modules import CLLM4RecModule, CorpusData, Schedule
    from cllm4rec.prepare import prepared_dataset
    from cllm4rec.train import build_model
    from cllm4rec.vocab import Vocab
    cfg = compose("finetune", [f"data={args.data}", f"backbone={args.backbone}"])
    ds, _ = prepared_dataset(cfg.data)
    backbone, tok = load_backbone(args.backbone, seed=0)
    vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
    builder = CorpusBuilder(ds, tok, vocab, CorpusConfig.from_mapping(OmegaConf.to_container(cfg.corpus, resolve=True)))
    torch.manual_seed(0)
    model = build_model(backbone, vocab, builder, cfg.model)
    module = CLLM4RecModule(model, builder, Schedule(), lr=1e-4, pad_id=pad_id(tok))
    opt = module.configure_optimizers()
    data = CorpusData(builder, Schedule(content_warmup_epochs=0), batch_size=cfg.model.pretrain.batch_size,
                      max_tokens=cfg.model.pretrain.max_tokens, seed=0, pad_id=pad_id(tok))
    batches = [b for b in data.epoch_batches(0) if b["step"] == "L"]
    first, second = batches[0], next(b for b in batches if b["input_ids"].shape != batches[0]["input_ids"].shape)

    def step(b) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = module.training_step(b, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return round(time.perf_counter() - t0, 2)

    def score(users) -> float:
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            module.score_users(users, "valid")
        return round(time.perf_counter() - t0, 2)

    module.train()
    eager = step(first)
    model.compile_body()
    out = {"eager_step_s": eager, "compiled_first_step_s": step(first), "compiled_second_shape_step_s": step(second),
           "compiled_repeat_step_s": step(first)}
    module.eval()
    users = torch.as_tensor(module.eval_batches("valid")[0])
    out |= {"compiled_first_scoring_s": score(users), "compiled_repeat_scoring_s": score(users),
            "tokens_first_batch": int(first["attention_mask"].sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2_135m")
    ap.add_argument("--data", default="ml100k")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "compile_cache.json"))
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    t_start, load_start = time.perf_counter(), load()
    runs = []
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        for label in ("first run (empty cache)", "second run (cache of the first)"):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            proc = subprocess.run([sys.executable, __file__, "--child", "--backbone", args.backbone, "--data", args.data],
                                  stdout=subprocess.PIPE, text=True, env=env)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"compile_cache: the {label} failed (exit {proc.returncode}); nothing written")
            runs.append({"run": label, **json.loads(lines[-1][7:])})
            print(label, runs[-1], flush=True)
    write_json(args.out, {"benchmark": "torch.compile first-run vs cached compile time", "date": now(),
                          "machine": machine(), "load_avg_start": load_start, "load_avg_end": load(),
                          "wall_s": round(time.perf_counter() - t_start, 1), "config": vars(args),
                          "code_path": "CLLM4RecModule.training_step + backward + optimizer on real L-step batches "
                                       "(default config), bf16 autocast; CLLM4Rec.compile_body (dynamic shapes); "
                                       "scoring = score_users on the first validation batch",
                          "runs": runs})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
