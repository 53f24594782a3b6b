"""Training speed of each backbone tuning (frozen / lora / full) and each fine-tuning step kind.

    .venv/bin/python benchmarks/tuning_throughput.py [--backbones tiny_gpt2 smollm2_135m]
        [--batches 4] [--repeats 2]

One step = `CLLM4RecModule.training_step` + backward + the module's own optimiser step (AdamW
groups of `configure_optimizers`) + zero_grad, under bf16 autocast (the default trainer), on real
batches cut exactly as `CorpusData.epoch_batches` cuts them:
  rec  ML-100K fine-tuning prompts (conf defaults: finetune_target=all, mask 0.5, batch 4)
  seq  Beauty leave-one-out, experiment=sequential_tuned's corpus (the time-ordered history as the
       main text, next-item loss at every item; batch 128 / 1536 tokens), with exclude_seen off and on
  L    ML-100K collaborative LM documents (batch 64 / 1536 tokens)
Per backbone, the same sampled batches run under every tuning, interleaved batch by batch (so all
see the same machine load), median over repeats after one warm-up batch. Reported: real tokens/s,
labelled positions/s (the item-head targets scored per second: what a step kind buys), and each
tuning's time relative to frozen in the same run.
Writes benchmarks/results/throughput_tuning.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, compose, load, machine, now, write_json  # noqa: E402

from cllm4rec.backbone import load_backbone  # noqa: E402
from cllm4rec.corpus import CorpusBuilder, CorpusConfig  # noqa: E402
from cllm4rec.model import CLLM4Rec  # noqa: E402
from cllm4rec.modules import CLLM4RecModule, CorpusData, Schedule  # noqa: E402
from cllm4rec.prepare import prepared_dataset  # noqa: E402
from cllm4rec.tuning import MODES  # noqa: E402
from cllm4rec.vocab import Vocab  # noqa: E402

# step kind -> (overrides composing its data and corpus, stage, Schedule kwargs, exclude_seen)
KINDS = {
    "rec": (["data=ml100k"], "finetune", {}, False),
    "seq": (["experiment=sequential_tuned", "data=beauty", "data.split.protocol=loo"], "finetune",
            {"finetune_sequence": True}, False),
    "seq_exclude_seen": (["experiment=sequential_tuned", "data=beauty", "data.split.protocol=loo"], "finetune",
                         {"finetune_sequence": True}, True),
    "L": (["data=ml100k"], "pretrain", {"content_warmup_epochs": 0}, False),
}


def sample_batches(kind: str, tok, n: int, seed: int = 0):
    overrides, stage, sched, _ = KINDS[kind]
    cfg = compose("finetune", overrides)
    ds, _ = prepared_dataset(cfg.data)
    builder = CorpusBuilder(ds, tok, Vocab(len(tok), ds.n_users, ds.n_items),
                            CorpusConfig.from_mapping(OmegaConf.to_container(cfg.corpus, resolve=True)))
    sm = cfg.model[stage]
    data = CorpusData(builder, Schedule(stage=stage, finetune_content=False, **sched), batch_size=sm.batch_size,
                      max_tokens=sm.max_tokens, seed=seed, pad_id=tok.pad_token_id or 0)
    batches = list(data.epoch_batches(0))
    pick = np.random.default_rng(seed).choice(len(batches), n + 1, replace=False)
    return builder, [batches[i] for i in pick]


class Stepper:
    """One optimisation step of one tuning. bf16_weights: the backbone cast to bf16 once and no
    autocast (profile_steps.py's bf16w), the ID tables and Adam in fp32 either way."""

    def __init__(self, backbone_name: str, mode: str, builder, exclude_seen: bool, bf16_weights: bool = False):
        backbone, _ = load_backbone(backbone_name, seed=0)
        if bf16_weights:
            backbone = backbone.to(torch.bfloat16)
        self.autocast = not bf16_weights
        vocab = builder.vocab
        torch.manual_seed(0)
        self.model = CLLM4Rec(backbone, vocab, init_std=0.002,
                              id_input_scale=CLLM4Rec.auto_id_input_scale(backbone, 0.002), backbone_tuning=mode)
        self.module = CLLM4RecModule(self.model, builder, Schedule(stage="finetune"), lr=1e-4,
                                     exclude_seen=exclude_seen).train()
        self.opt = self.module.configure_optimizers()
        self.trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def step(self, batch) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.module.training_step(batch, 0)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


def labelled(batch) -> int:
    if batch["step"] == "rec":
        return int(batch["target_items"].numel())
    return int(batch["main_mask"][:, 1:].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["tiny_gpt2", "smollm2_135m"])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)`")   # no Trainer: logging is off
    rows, start = [], load()
    for name in args.backbones:
        _, tok = load_backbone(name, seed=0)
        for kind in args.kinds:
            builder, batches = sample_batches(kind, tok, args.batches)
            steppers = {m: Stepper(name, m, builder, KINDS[kind][3]) for m in MODES}
            for s in steppers.values():
                s.step(batches[0])                      # warm-up: first calls allocate
            times = {m: [[] for _ in batches[1:]] for m in MODES}
            for _ in range(args.repeats):
                for i, b in enumerate(batches[1:]):
                    for m, s in steppers.items():
                        times[m][i].append(s.step(b))
            real = sum(int(b["attention_mask"].sum()) for b in batches[1:])
            lab = sum(labelled(b) for b in batches[1:])
            secs = {m: sum(statistics.median(t) for t in times[m]) for m in MODES}
            for m in MODES:
                rows.append({"backbone": name, "kind": kind, "tuning": m, "trainable_params": steppers[m].trainable,
                             "batches": len(batches) - 1, "real_tokens": real, "labelled": lab,
                             "seconds": round(secs[m], 4), "tokens_per_s": round(real / secs[m], 1),
                             "labelled_per_s": round(lab / secs[m], 1),
                             "time_vs_frozen": round(secs[m] / secs["frozen"], 3)})
                print(rows[-1], flush=True)
    out = {"benchmark": "tuning_throughput", "date": now(), "machine": machine(), "load_at_start": start,
           "load_at_end": load(), "precision": "bf16 autocast", "command": " ".join(sys.argv), "rows": rows}
    print("wrote", write_json(RESULTS / "throughput_tuning.json", out))


if __name__ == "__main__":
    main()
