"""A trained run -> a folder that plain transformers loads, and its item head.

    cllm4rec-export runs/ml100k/smollm2_135m/default exported/
    python -m cllm4rec.hf_export RUN OUT [--stage finetune]

The folder holds
    config.json, model.safetensors, tokenizer files   AutoModelForCausalLM / AutoTokenizer: the
        backbone (LoRA merged, or fully tuned weights) with its vocabulary extended by one row per
        user and item (the collaborative rows as they enter the backbone, id_input_scale applied)
        and the tokens <user_i> / <item_j> at ids N + i / N + I + j
    item_head.safetensors   weight [J, d] (the tied item rows) and bias [J]
    id_maps.json            user/item index -> raw id
    cllm4rec.json           the layout, the prompt template, and how to score (below)

Scoring a user, as `Recommender` does:
    ids = tokenizer("<user_3> has interacted with <item_5> <item_9>", return_tensors="pt").input_ids
    h = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]      # [d]
    scores = h @ head["weight"].T + head["bias"]                            # [J], higher is better
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken
from torch import nn

from .errors import RunError, reported
from .recommend import load_trained
from .runs import Run


def merged(backbone: nn.Module) -> nn.Module:
    """The backbone with every LoRA layer merged into its base weight and removed (in place)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    for name, module in list(backbone.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent = backbone.get_submodule(name.rsplit(".", 1)[0]) if "." in name else backbone
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
    return backbone


def export_run(run_dir: str | Path, out: str | Path, stage: str = "finetune") -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out} exists and is not empty: give a new folder")
    rcfg, ds, builder, model = load_trained(Run(run_dir), stage)
    v, tok = model.vocab, builder.tokenizer
    if len(tok) != v.n_vocab:   # ids N + i must be the user tokens: the vocabulary must be exactly N
        tok.add_tokens([AddedToken(f"<|cllm4rec_unused_{k}|>", special=True) for k in range(v.n_vocab - len(tok))])
    if len(tok) != v.n_vocab:
        raise RunError(f"the tokenizer has {len(tok)} tokens, more than the {v.n_vocab} embedding rows: "
                       "this backbone cannot be exported with contiguous user/item ids")
    # lstrip: an ID token absorbs the one space before it, as in the corpus (vocab.py)
    tok.add_tokens([AddedToken(f"<user_{i}>", lstrip=True, normalized=False) for i in range(v.n_users)]
                   + [AddedToken(f"<item_{j}>", lstrip=True, normalized=False) for j in range(v.n_items)])
    backbone = merged(model.backbone)
    backbone.resize_token_embeddings(v.size, mean_resizing=False)
    scale = model.id_input_scale.item()
    with torch.no_grad():
        rows = backbone.get_input_embeddings().weight
        rows[v.user_offset:v.item_offset] = model.user["collaborative"].weight * scale
        rows[v.item_offset:v.size] = model.item["collaborative"].weight * scale
    bias = model.item_bias.detach() if model.item_bias is not None else torch.zeros(v.n_items)
    tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=f".{out.name}-"))
    try:
        backbone.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        save_file({"weight": model.item["collaborative"].weight.detach().float().contiguous(),
                   "bias": bias.float().contiguous()}, str(tmp / "item_head.safetensors"))
        (tmp / "id_maps.json").write_text(json.dumps({"user_ids": ds.user_ids, "item_ids": ds.item_ids}))
        (tmp / "cllm4rec.json").write_text(json.dumps({
            "run": str(Path(run_dir).resolve()), "stage": stage, "data": rcfg.data.name,
            "backbone": rcfg.backbone.name, "backbone_tuning": rcfg.model.backbone_tuning,
            "n_vocab": v.n_vocab, "n_users": v.n_users, "n_items": v.n_items,
            "user_token": "<user_{index}>: id n_vocab + index", "item_token": "<item_{index}>: id n_vocab + n_users + index",
            "prompt": builder.cfg.finetune_template,
            "scoring": "h = hidden_states[-1][:, -1]; scores = h @ item_head.weight.T + item_head.bias",
        }, indent=1))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.move(str(tmp), out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@reported
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="cllm4rec-export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder, e.g. runs/ml100k/smollm2_135m/default")
    p.add_argument("out", help="a new folder for the Hugging Face model")
    p.add_argument("--stage", default="finetune", choices=("pretrain", "finetune"))
    a = p.parse_args(argv)
    print(f"exported to {export_run(a.run, a.out, a.stage)}", file=sys.stderr)


if __name__ == "__main__":
    main()
