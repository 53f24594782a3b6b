"""What of the backbone trains: `model.backbone_tuning`.

    frozen  CLLM4Rec as published: only the user/item tables (and the item bias) learn
    lora    low-rank adapters (peft) on the backbone's projections, as Cao et al. adapt their LLM
    full    every backbone weight (the tied vocabulary head included)

Whatever trains is saved next to the ID tables (`backbone.safetensors` in the stage folder: the
adapter only for lora, all weights for full) and loaded again by fine-tuning, evaluation and
serving; a frozen backbone is never saved, it is rebuilt from `backbone.name`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import MODES, LoraSettings

def prepare_backbone(backbone: nn.Module, mode: str, lora: LoraSettings | None = None,
                     dropout: float | None = None) -> nn.Module:
    """Set which backbone weights train (in place; LoRA layers are injected for 'lora').

    dropout: null keeps the backbone's own rates (they act only when it trains: lora/full);
    a number sets every dropout of the backbone, attention dropout included."""
    if mode not in MODES:
        raise ValueError(f"model.backbone_tuning must be one of {MODES}, got {mode!r}")
    for p in backbone.parameters():
        p.requires_grad_(mode == "full")
    if mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model
        lora = lora or LoraSettings()
        cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=list(lora.target_modules) if lora.target_modules else None,
                         fan_in_fan_out=getattr(backbone.config, "model_type", "") == "gpt2")   # GPT-2's Conv1D
        if cfg.target_modules is None:
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
            model_type = getattr(backbone.config, "model_type", None)
            if model_type not in DEFAULTS:
                raise ValueError(f"no default LoRA targets for model type {model_type!r}: set "
                                 "model.lora.target_modules, e.g. [q_proj, v_proj]")
            cfg.target_modules = set(DEFAULTS[model_type])
        inject_adapter_in_model(cfg, backbone)
        for name, p in backbone.named_parameters():
            p.requires_grad_("lora_" in name)
    if dropout is not None:
        for name, module in backbone.named_modules():
            if isinstance(module, nn.Dropout) and "lora_" not in name:   # the adapter keeps model.lora.dropout
                module.p = float(dropout)
            if isinstance(getattr(module, "attention_dropout", None), float):   # Llama-style attention
                module.attention_dropout = float(dropout)
    return backbone


def trained_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone tensors that train (adapter or all weights), by parameter name; tied weights once."""
    return {n: p.detach().cpu().contiguous() for n, p in backbone.named_parameters() if p.requires_grad}


def load_trained_state(backbone: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved backbone tensors in: every trainable parameter must be there, nothing else."""
    want = {n for n, p in backbone.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(want - set(tensors)), sorted(set(tensors) - want)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit this backbone: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)}); it was saved with another "
                         "model.backbone_tuning, model.lora or backbone.name")
    params = dict(backbone.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)


def tuning_kwargs(m) -> dict:
    """CLLM4Rec's backbone_tuning / lora / backbone_dropout from a model config (a run folder's
    config from before these keys: frozen)."""
    lora = dict(m.get("lora") or {})
    if lora.get("target_modules") is not None:
        lora["target_modules"] = list(lora["target_modules"])
    return {"backbone_tuning": m.get("backbone_tuning", "frozen"), "lora": LoraSettings(**lora),
            "backbone_dropout": m.get("backbone_dropout")}
