"""One training stage (pretrain or finetune) from a composed config: the glue of the entry points.

prepare data -> backbone -> vocabulary -> corpus -> model -> Lightning fit -> embeddings,
checkpoints and metrics in the run folder (runs.py).
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .backbone import load_backbone, pad_id
from .config import checked_model_config
from .corpus import CorpusBuilder, CorpusConfig
from .errors import RunError
from .model import CLLM4Rec
from .metrics import VAL_KEYS
from .modules import Schedule
from .prepare import prepared_dataset
from .paths import sweep_trial
from .runs import TRAINING_SECTIONS, Run, checked_checkpoint
from .text_init import init_from_text
from .tuning import load_trained_state, tuning_kwargs
from .vocab import Vocab


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_known_noise() -> None:
    """Silence what Lightning and W&B print that is expected here and needs no action, so that what
    a user does see means something: the frozen backbone is in eval mode on purpose (dropout off),
    the model summary cannot size bf16, Lightning's own pytree deprecation, and advertising tips."""
    for pattern in (r"Found \d+ module\(s\) in eval mode", r"Precision bf16-mixed is not supported by the model summary",
                    r"`isinstance\(treespec, LeafSpec\)` is deprecated"):
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())


def in_a_sweep() -> bool:
    """A Hydra multirun job or a W&B sweep agent's run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    return bool(sweep_trial()) or (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)


def make_logger(cfg: DictConfig):
    """W&B offline unless an API key is configured; CSV; or none (an empty logger config)."""
    lc = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else None
    if not lc or "_target_" not in lc:
        return False
    if lc["_target_"].endswith("WandbLogger"):
        if lc.get("offline") == "auto":
            lc["offline"] = not (os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").exists()
                                 and "api.wandb.ai" in (Path.home() / ".netrc").read_text())
        os.environ.setdefault("WANDB_SILENT", "true")
        lc["name"] = lc.get("name") or os.path.relpath(cfg.run_dir)    # null: named after the run folder
        logger = instantiate(lc)
        # Lightning always passes anonymous=None, which wandb >= 0.19 warns about on every run
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        return logger
    return instantiate(lc)


def results_table(rows: dict[str, dict[str, float]], keys) -> str:
    """Markdown table: one row per model, one column per metric."""
    head = "| model | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys)
    lines = [f"| {name} | " + " | ".join(f"{r.get(k, float('nan')):.4f}" for k in keys) + " |"
             for name, r in rows.items()]
    return "\n".join([head, *lines])


def build_model(backbone, vocab: Vocab, builder: CorpusBuilder, m) -> CLLM4Rec:
    """The model of a training run: `m` is the model config (init_std, item_bias, backbone_tuning);
    the item bias starts from the builder's training-item counts."""
    prior = torch.from_numpy(np.bincount(builder.train_item, minlength=vocab.n_items)) if m.item_bias else None
    scale = m.id_input_scale if m.id_input_scale is not None else CLLM4Rec.auto_id_input_scale(backbone, m.init_std)
    return CLLM4Rec(backbone, vocab, init_std=m.init_std, item_prior=prior, id_input_scale=scale,
                    sparse_user_rows=m.sparse_user_rows, **tuning_kwargs(m))



def train(cfg: DictConfig) -> dict:
    stage = cfg.stage
    if stage not in ("pretrain", "finetune"):
        raise ValueError(f"stage must be pretrain or finetune, got {stage!r}")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_flush_denormal(True)
    quiet_known_noise()
    run = Run(cfg.run_dir)
    m = checked_model_config(cfg.model)
    sm = m[stage]

    ds, manifest = prepared_dataset(cfg.data, strict=cfg.strict_data,
                                    needs=("valid", "test") if stage == "finetune" or sm.evaluate else ())
    backbone, tokenizer = load_backbone(cfg.backbone.name, seed=cfg.seed)
    vocab = Vocab(backbone.get_input_embeddings().num_embeddings, ds.n_users, ds.n_items)
    corpus_cfg = CorpusConfig.from_mapping(OmegaConf.to_container(cfg.corpus, resolve=True))
    builder = CorpusBuilder(ds, tokenizer, vocab, corpus_cfg)
    model = build_model(backbone, vocab, builder, m)
    if m.item_init == "text" and not (stage == "finetune" and sm.from_pretrained):
        done = init_from_text(model, builder, m.item_init_field, m.init_std)
        print(f"item_init=text: {done['items']} item rows from item {done['field']!r}, {done['users']} user rows",
              file=sys.stderr)
    if stage == "finetune" and sm.from_pretrained:
        source = Run(cfg.pretrained) if cfg.pretrained else run
        shared = Run(cfg.run_root)
        if not cfg.pretrained and in_a_sweep() and not run.embeddings_path("pretrain").exists() and \
                shared.root.resolve() != run.root.resolve() and shared.embeddings_path("pretrain").exists():
            source = shared     # a sweep trial: the pretraining of the run the sweep started from
            print(f"fine-tuning from the pretraining in {shared.root} (this trial's folder has none; "
                  f"pretrained=<run folder> picks another)", file=sys.stderr)
        tables, meta = source.load_embeddings("pretrain")
        found = {"data": meta.get("data"), "backbone": meta.get("backbone"), "users": meta.get("n_users"),
                 "items": meta.get("n_items")}
        wanted = {"data": cfg.data.name, "backbone": cfg.backbone.name, "users": ds.n_users, "items": ds.n_items}
        if found != wanted:
            raise RunError(f"{source.embeddings_path('pretrain')} was pretrained for {found}, this fine-tuning "
                           f"is for {wanted}: pretrain with this data and backbone first (make pretrain), or "
                           f"point pretrained= at a run folder that matches")
        model.load_id_embeddings(tables)
        tuned = source.load_backbone_state("pretrain")
        if tuned is not None:
            state, tuned_meta = tuned
            if tuned_meta.get("backbone_tuning") != m.backbone_tuning:
                raise RunError(f"{source.backbone_path('pretrain')} was trained with model.backbone_tuning="
                                 f"{tuned_meta.get('backbone_tuning')}; fine-tune with the same (now "
                                 f"{m.backbone_tuning}) or pretrain again")
            load_trained_state(model.backbone, state, str(source.backbone_path("pretrain")))
    if cfg.get("compile"):
        model.compile_body()
    if cfg.resume and run.last_checkpoint(stage):   # a damaged checkpoint first, then one of another run
        checked_checkpoint(run.last_checkpoint(stage))
        run.check_resumable(stage, {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg.get(k), DictConfig)
                                    else cfg.get(k) for k in TRAINING_SECTIONS})
    run.write_config(stage, OmegaConf.to_yaml(cfg, resolve=True), {**manifest, "seed": cfg.seed})
    run.keep_dataset(manifest["cache"]["folder"])

    schedule = Schedule(stage=stage, content_warmup_epochs=m.pretrain.content_warmup_epochs,
                        finetune_content=bool(m.finetune.content_alongside), finetune_rating=corpus_cfg.rating,
                        finetune_sequence=corpus_cfg.finetune_target == "sequence",
                        finetune_auxiliary=bool(m.finetune.auxiliary))
    if stage == "finetune" and schedule.finetune_auxiliary and not any(
            getattr(corpus_cfg, k) for k in ("mim", "bpr", "history")):
        raise RunError("model.finetune.auxiliary=true trains the L-step's auxiliary documents, but corpus.mim, "
                         "corpus.bpr and corpus.history are all off: turn one on (experiment=sequential has mim "
                         "and history) or set model.finetune.auxiliary=false")
    if not builder.has_content():
        schedule.content = False    # nothing for the content LM to read; MR would tie rows to random ones
        lambda_override = 0.0
        print("no item, user or review texts in this dataset: the content LM (warm-up epochs, C-steps) and "
              "mutual regularization are skipped; the collaborative side trains alone", file=sys.stderr)
    else:
        lambda_override = None
    if schedule.finetune_rating:
        builder.rating_scale   # fails now, with what to do, if the data has no usable ratings
    pad = pad_id(tokenizer)
    lambda_mr = m.finetune.lambda_mr if stage == "finetune" and m.finetune.lambda_mr is not None else m.lambda_mr
    lambda_mr = lambda_mr if lambda_override is None else lambda_override
    # conf/stage.yaml: the module, the data module and the callbacks, given what only this run has
    # (partials: Hydra would turn the Schedule dataclass into a config if passed through instantiate)
    data = instantiate(cfg.datamodule, _partial_=True)(builder=builder, schedule=schedule, pad_id=pad)
    module = instantiate(cfg.module, _partial_=True)(model, builder, schedule, lambda_mr=lambda_mr, pad_id=pad)
    callbacks = {name: instantiate(c, **({"dirpath": str(run.checkpoints(stage))}
                                         if "dirpath" in c and c.dirpath is None else {}))
                 for name, c in cfg.callbacks.items() if c is not None}
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["max_epochs"] = trainer_cfg.get("max_epochs") or sm.epochs
    if stage == "pretrain" and sm.evaluate:   # pretraining validates once, after fit
        trainer_cfg["check_val_every_n_epoch"] = sm.epochs + 1
    elif stage == "pretrain":
        trainer_cfg["limit_val_batches"] = 0
    elif not sm.validate_every_epoch:   # once, after the last epoch (Lightning's cadence alone would skip it)
        trainer_cfg.setdefault("check_val_every_n_epoch", trainer_cfg["max_epochs"])
    trainer = instantiate(trainer_cfg, callbacks=list(callbacks.values()), logger=make_logger(cfg),
                          default_root_dir=str(run.stage_dir(stage)), reload_dataloaders_every_n_epochs=1,
                          use_distributed_sampler=False)
    ckpt = None
    if cfg.resume and run.last_checkpoint(stage):
        ckpt = str(checked_checkpoint(run.last_checkpoint(stage)))
    elif cfg.resume:
        print(f"resume=true: no checkpoint at {run.checkpoints(stage) / 'last.ckpt'}; the {stage} stage starts "
              f"from its beginning", file=sys.stderr)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    fit_seconds = time.perf_counter() - t0

    best = (callbacks["best"].best_model_path or None) if "best" in callbacks else None
    results = {"stage": stage, "fit_seconds": round(fit_seconds, 1), "best_checkpoint": best,
               "epochs_run": trainer.current_epoch}
    # before validate/test restore the best checkpoint, whose callback state ends at its epoch
    history = list(callbacks["epoch_history"].rows) if "epoch_history" in callbacks else []
    if stage == "finetune" or sm.evaluate:   # the best epoch's weights (fine-tuning), every rank its share
        if best:
            checked_checkpoint(best)
        trainer.test(module, datamodule=data, ckpt_path=best, verbose=False, weights_only=True)
        if best and module.checkpoint_valid_results:   # the best epoch's validation, measured during fit
            module.results["valid"] = module.checkpoint_valid_results
        else:   # no best checkpoint (pretraining, fast_dev_run, `~callbacks.best`), or one saved before this was kept
            trainer.validate(module, datamodule=data, ckpt_path=best, verbose=False, weights_only=True)
        for part in ("valid", "test"):
            results[part] = module.results[part] | {"n_users_skipped": ds.n_users - module.results[part]["n_users_evaluated"]}
    if trainer.is_global_zero:
        if stage == "finetune" and schedule.finetune_rating:
            with torch.autocast(module.device.type, dtype=torch.bfloat16,
                                enabled=str(trainer_cfg.get("precision", "")).startswith("bf16")):
                for part in ("valid", "test"):
                    results[part].update({f"rating_{k}": v for k, v in module.rating_metrics(part).items()})
        if "valid" in results:   # the best epoch's val/sum: the objective a sweep maximises
            results["val_sum"] = sum(results["valid"][k] for k in VAL_KEYS)
            if isinstance(trainer.logger, pl.loggers.WandbLogger):   # what a W&B sweep maximises
                trainer.logger.experiment.summary["val/sum_best"] = results["val_sum"]
        run.save_embeddings(stage, model.id_embeddings(), ds.user_ids, ds.item_ids,
                            {"n_users": ds.n_users, "n_items": ds.n_items, "backbone": cfg.backbone.name,
                             "data": cfg.data.name, "stage": stage, "dim": int(model.user["content"].weight.shape[1])})
        if m.backbone_tuning != "frozen":
            run.save_backbone_state(stage, model.backbone, {"backbone_tuning": m.backbone_tuning,
                                                            "backbone": cfg.backbone.name})
        keys = [*VAL_KEYS] + ["rating_rmse", "rating_mae"] * (
            stage == "finetune" and schedule.finetune_rating)
        rows = {f"CLLM4Rec ({stage}, {p})": results[p] for p in ("valid", "test") if p in results}
        table = results_table(rows, keys) if rows else ""
        run.write_metrics(stage, results, table)
        run.write_history(stage, history)
        after = table or ("no ranking metrics after pretraining (model.pretrain.evaluate=false); fine-tuning "
                          "evaluates: make finetune")
        print(f"\n{stage} finished in {fit_seconds / 60:.1f} min; run folder {run.root}\n{after}", file=sys.stderr)
    return results
