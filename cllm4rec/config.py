"""The `model` and `corpus` config groups as dataclasses with help text, registered in Hydra's
ConfigStore as `model/cllm4rec` and `corpus/default`: the one home of their defaults. conf/ holds
the other groups and the experiments, which override these; a wrong type or an unknown key stops
at compose with its full name. Print the composed values with `python -m cllm4rec.finetune --cfg job`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .errors import RunError
from .files import help_field


MODES = ("frozen", "lora", "full")


@dataclass
class LoraSettings:
    """The `model.lora` config group (peft's LoraConfig fields of the same meaning)."""
    r: int = help_field(8, "Adapter rank")
    alpha: float = help_field(16.0, "Scaling numerator: the adapter's output is multiplied by alpha / r")
    dropout: float = help_field(0.05, "Dropout on the adapter's input")
    target_modules: Optional[list[str]] = help_field(None, "Module names to adapt; null: peft's default for the "
                                                   "architecture (GPT-2: c_attn; Llama: q_proj, v_proj)")



@dataclass
class StageConfig:
    """What both stages share: the optimiser (AdamW) and its learning-rate schedule."""
    lr: float = help_field(1e-4, "Learning rate of the ID tables; an Adam step moves the item head's logits by "
                             "about lr x sum|h|, which a large hidden state h (SmolLM2) makes big")
    backbone_lr: Optional[float] = help_field(5e-4, "Learning rate of the backbone's adapter or weights "
                                            "(model.backbone_tuning=lora|full); null: lr. The adapters learn "
                                            "at a higher rate than the ID rows (benchmarks/README.md)")
    weight_decay: float = help_field(0.01, "AdamW weight decay of the adapter or backbone weights (never the ID tables)")
    lr_schedule: str = help_field("constant", "constant, linear or cosine decay to 0 over the stage's epochs "
                                      "(transformers.get_scheduler), after the warm-up")
    warmup_ratio: float = help_field(0.0, "Fraction of the stage's steps with a linear warm-up from 0")
    batch_size: int = help_field(64, "Documents per batch at most (length-bucketed)")
    max_tokens: Optional[int] = help_field(1536, "At most this many padded tokens per batch")


@dataclass
class PretrainConfig(StageConfig):
    epochs: int = help_field(2, "Total epochs: content warm-up first, then L-step / C-step alternating")
    content_warmup_epochs: int = help_field(1, "Content-only epochs before the alternation")
    evaluate: bool = help_field(False, "Rank validation/test users with the pretrained item head at the end "
                               "(costs two evaluation passes; validation every epoch is fine-tuning's job)")


@dataclass
class FinetuneConfig(StageConfig):
    epochs: int = help_field(5, "Maximum fine-tuning epochs")
    validate_every_epoch: bool = help_field(False, "Validate after every epoch, keep the best epoch's weights and "
                                           "stop early (patience); false: validate once, after the last epoch, "
                                           "whose weights are kept (a short schedule whose curve still rises)")
    batch_size: int = help_field(4, "Prompts (users) per batch at most. On a CPU the time per epoch hardly depends "
                                "on it, so small batches buy steps at a fixed lr; a GPU wants wide batches")
    content_alongside: bool = help_field(False, "C-step batches with MR toward the fine-tuned embeddings")
    patience: int = help_field(3, "Early stopping on val recall@20 + recall@40 + ndcg@100 "
                               "(validate_every_epoch=true)")
    from_pretrained: bool = help_field(True, "Start from the pretraining embeddings (false: from scratch)")
    lambda_mr: Optional[float] = help_field(None, "Mutual regularization weight in fine-tuning; null: model.lambda_mr. "
                                          "0 when fine-tuning from scratch: the content rows are then untrained "
                                          "noise that MR would hold the collaborative rows to")
    exclude_seen: bool = help_field(False, "corpus.finetune_target=sequence: a user's earlier items are out of the "
                                   "softmax at each position (the ranking leaves seen items out too)")
    auxiliary: bool = help_field(False, "The L-step's auxiliary documents alongside (corpus.mim, bpr, history: "
                                "their *_weight = documents per user per epoch)")


@dataclass
class ModelConfig:
    """The `model` config group (ConfigStore `model/cllm4rec`); checked field by field."""
    backbone_tuning: str = help_field("lora", "frozen: only the ID tables train (the paper); lora: peft adapters "
                                        "(model.lora) at backbone_lr; full: every backbone weight too")
    lora: LoraSettings = field(default_factory=LoraSettings)
    backbone_dropout: Optional[float] = help_field(None, "Dropout of a tuned backbone (lora/full); null: its own rates")
    init_std: float = help_field(0.002, "Std of the new user/item rows. Small because the item head's logits are "
                                 "h . e_j with a backbone's large last hidden state h: the paper's 0.02 "
                                 "(experiment=paper) adds logit noise that swamps the popularity bias")
    item_init: str = help_field("random", "random: N(0, init_std) rows; text: item rows from the backbone's mean last "
                                  "hidden state over the item's text, users from their items (text_init.py)")
    item_init_field: Optional[str] = help_field(None, "Item text field of item_init=text; null: a title, else the first field")
    id_input_scale: Optional[float] = help_field(None, "Multiplier of user/item rows where they enter the backbone (not "
                                               "in the tied item head); null: std(word embeddings) / init_std, "
                                               "so new tokens enter at the words' scale; 1: the paper")
    item_bias: bool = help_field(True, "Item head bias initialised to log training item frequency (false: the paper's "
                               "bias-free head)")
    sparse_user_rows: bool = help_field(True, "User tables with sparse gradients and a lazy Adam update of the "
                                        "batch's rows only (optim.py): a step's cost stops growing with the users; "
                                        "false: dense AdamW over every row")
    lambda_mr: float = help_field(1.0, "Mutual regularization weight")
    mr_reduction: str = help_field("sum", "sum (authors' code) or mean (per distinct token)")
    eval_batch_size: int = help_field(64, "Prompts per forward pass in evaluation (at most)")
    eval_max_tokens: int = help_field(8192, "Padded tokens per evaluation forward pass (at most; length-sorted)")
    max_eval_bytes: int = help_field(256 << 20, "Memory bound of one scoring batch")
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    checkpoint_every_n_steps: int = help_field(50, "Mid-epoch checkpoints (last.ckpt) for resume after a crash")


def checked_model_config(model_cfg):
    """The model group (a DictConfig, e.g. a run folder's stored config) merged onto ModelConfig:
    unknown keys, wrong types and out-of-range values fail here with the key's full name."""
    from omegaconf import OmegaConf
    schema = OmegaConf.structured(ModelConfig)
    try:
        merged = OmegaConf.merge(schema, model_cfg)
    except Exception as e:   # omegaconf's ValidationError / ConfigKeyError name the key
        raise RunError(f"invalid model config: {e}") from None
    if merged.mr_reduction not in ("sum", "mean"):
        raise RunError(f"model.mr_reduction must be 'sum' or 'mean', got {merged.mr_reduction!r}")
    if merged.item_init not in ("random", "text"):
        raise RunError(f"model.item_init must be random or text, got {merged.item_init!r}")
    if merged.backbone_tuning not in MODES:
        raise RunError(f"model.backbone_tuning must be one of {MODES}, got {merged.backbone_tuning!r}")
    for stage in ("pretrain", "finetune"):
        if merged[stage].lr_schedule not in ("constant", "linear", "cosine"):
            raise RunError(f"model.{stage}.lr_schedule must be constant, linear or cosine, "
                           f"got {merged[stage].lr_schedule!r}")
        if not 0 <= merged[stage].warmup_ratio < 1:
            raise RunError(f"model.{stage}.warmup_ratio must be in [0, 1), got {merged[stage].warmup_ratio}")
    ranges = {"init_std": (0, True), "lambda_mr": (0, True), "eval_batch_size": (1, True),
              "eval_max_tokens": (1, True), "max_eval_bytes": (1, True), "checkpoint_every_n_steps": (1, True)}
    for stage in ("pretrain", "finetune"):
        ranges |= {f"{stage}.lr": (0, False), f"{stage}.weight_decay": (0, True), f"{stage}.batch_size": (1, True),
                   f"{stage}.epochs": (1, True), f"{stage}.max_tokens": (1, True), f"{stage}.backbone_lr": (0, False)}
    ranges |= {"pretrain.content_warmup_epochs": (0, True), "finetune.patience": (0, True),
               "finetune.lambda_mr": (0, True)}
    for key, (low, inclusive) in ranges.items():
        v = OmegaConf.select(merged, key)
        if v is not None and (v < low or (v == low and not inclusive)):
            raise RunError(f"model.{key} must be {'>=' if inclusive else '>'} {low}, got {v}")
    return merged


# the `baseline` group: name -> class; a baseline's defaults are its constructor's
BASELINES = {"pop": "baselines.Popularity", "random": "baselines.RandomScores", "ease": "baselines.EASE",
             "multivae": "baselines.MultiVAE", "tfidf_knn": "baselines.TextKNN",
             "backbone_knn": "baselines.BackboneKNN", "sasrec": "sasrec.SASRec"}
# what a baseline takes from the run rather than from its class
BASELINE_WIRING = {"backbone_knn": {"backbone": "${backbone.name}", "seed": "${seed}"}}


def _signature_defaults(fn, names=None) -> dict:
    """The keyword defaults of `fn` (all of them, or `names`), tuples as lists (OmegaConf has no tuples)."""
    import inspect
    params = inspect.signature(fn).parameters
    names = names or [n for n, p in params.items() if p.default is not inspect.Parameter.empty]
    return {n: list(params[n].default) if isinstance(params[n].default, tuple) else params[n].default for n in names}


def baseline_node(name: str) -> dict:
    """The `baseline/<name>` config: `_target_` and every constructor argument with its default,
    so the class is the one home of its defaults and each of them is overridable
    (`baselines.ease.l2=250`), an unknown key failing at compose."""
    import importlib
    module, cls = BASELINES[name].rsplit(".", 1)
    target = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    return {"_target_": f"{__package__}.{module}.{cls}", **_signature_defaults(target),
            **BASELINE_WIRING.get(name, {})}


def data_base_node() -> dict:
    """`data/_base`, which every data config starts from: the preprocess and split defaults of
    `data.preprocess.preprocess` and `data.splits.split_dataset` (their one home), so a data file
    lists only what differs (a 5-core, a source)."""
    from .data.preprocess import preprocess
    from .data.splits import split_dataset
    return {"preprocess": _signature_defaults(preprocess, ("keep_ratings_above", "dedup", "user_core", "item_core")),
            "split": _signature_defaults(split_dataset, ("protocol", "seed", "ratios"))}


def register_configs() -> None:
    """Store the dataclass groups, the baselines and the data base in Hydra's ConfigStore (done on `import cllm4rec`)."""
    from hydra.core.config_store import ConfigStore
    from .corpus.config import CorpusConfig
    cs = ConfigStore.instance()
    cs.store(group="model", name="cllm4rec", node=ModelConfig)
    cs.store(group="corpus", name="default", node=CorpusConfig)
    for name in BASELINES:
        cs.store(group="baseline", name=name, node=baseline_node(name))
    cs.store(group="data", name="_base", node=data_base_node())
