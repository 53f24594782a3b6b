"""The only Lightning code: one LightningModule for both stages and the DataModule feeding it.

Stages and their steps (method.md, "Mutual regularization" and "Recommendation-oriented
fine-tuning"); `Schedule` says which step each epoch runs:

    content warm-up   content LM loss (vocabulary head), no MR
    L-step            collaborative LM loss (item head) + lambda_mr * MR(collaborative -> content)
                      over the item-head documents: collaborative, MIM, BPR, history
    C-step            content LM loss + lambda_mr * MR(content -> collaborative)
    fine-tuning       multinomial NLL of the masked items at the prompt's last token
                      (+ lambda_mr * MR toward the content side); with corpus.finetune_target=
                      sequence instead ('seq') the item head's next-item loss at every item of the
                      time-ordered history; optionally the L-step's auxiliary documents (MIM, BPR,
                      history: 'aux') and C-step batches alongside
                      so the content LM follows the fine-tuned embeddings, and rating batches
                      (cross-entropy over the rating levels' tokens) when corpus.rating is on

Each epoch's documents and batch order depend only on (seed, epoch), and the batch list is a
stateful iterable: a checkpoint taken mid-epoch resumes at the next batch with the same data.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch

from . import metrics
from .config import FinetuneConfig, ModelConfig, StageConfig
from .corpus import CorpusBuilder, Documents, LengthBucketSampler, collate
from .progress import Progress
from .errors import RunError
from .fitting import Batches
from .metrics import VAL_KEYS
from .model import CLLM4Rec
from .optim import AdamWSparseRows, clip_grad_norm


@dataclass
class Schedule:
    """Which step each epoch runs."""
    stage: str = "pretrain"             # pretrain | finetune
    content_warmup_epochs: int = 1      # pretrain: content-only epochs first
    finetune_content: bool = True       # finetune: C-step batches alongside
    finetune_rating: bool = False       # finetune: rating batches alongside
    finetune_sequence: bool = False     # finetune: next-item loss at every item ('seq', not 'rec')
    finetune_auxiliary: bool = False    # finetune: MIM/BPR/history documents alongside ('aux')
    content: bool = True                # False: the data has no texts, no warm-up and no C-steps

    def steps(self, epoch: int) -> list[str]:
        if self.stage == "finetune":
            return (["seq" if self.finetune_sequence else "rec"] + ["aux"] * self.finetune_auxiliary
                    + ["rating"] * self.finetune_rating + ["C"] * (self.finetune_content and self.content))
        if not self.content:
            return ["L"]
        if epoch < self.content_warmup_epochs:
            return ["warmup"]
        return ["L"] if (epoch - self.content_warmup_epochs) % 2 == 0 else ["C"]


class EpochBatches(Batches):
    """One epoch's batches, each collated only when it is read (memory: one batch, not the epoch);
    `batches` holds (documents, document indices, step) per batch. Stateful so Lightning can
    resume mid-epoch."""

    def __init__(self, batches: list[tuple[Documents, np.ndarray, str]], epoch: int, progress=None, pad_id: int = 0):
        super().__init__(batches)
        self.epoch, self.start, self.pad_id = epoch, 0, pad_id
        self._progress = progress     # callable -> batches finished (the trainer's count)

    def __iter__(self):
        start, self.start = self.start, 0
        for docs, idx, step in self.batches[start:]:
            # targets stay index lists here; the dense [B, J] multi-hot is built per step
            yield {**collate(docs, idx, pad_id=self.pad_id), "step": step}

    def state_dict(self) -> dict:
        done = self._progress() if self._progress else 0
        return {"epoch": self.epoch, "done": int(done)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("epoch") == self.epoch:
            self.start = int(state["done"])


class PlainProgress(pl.Callback):
    """Training, validation and test progress as plain lines for a log file (Lightning's bar writes
    only carriage returns there): one line at most every CLLM4REC_PROGRESS_EVERY seconds, on rank 0,
    and nothing when stderr is a terminal (the bar is there)."""

    epoch = None

    @staticmethod
    def _on(trainer) -> bool:
        return trainer.is_global_zero and not sys.stderr.isatty()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not self._on(trainer):
            return
        if self.epoch != trainer.current_epoch:     # per epoch (a resumed epoch never calls on_train_epoch_start)
            self.epoch, n = trainer.current_epoch, trainer.num_training_batches
            self.progress = Progress(n if isinstance(n, int) else 0, f"{module.schedule.stage} epoch {self.epoch}",
                                     unit="batches")
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.progress.update(1, **({"loss": float(loss)} if loss is not None else {}))

    # validation and test: rank 0's share of the user batches
    def on_validation_epoch_start(self, trainer, module) -> None:
        if self._on(trainer) and not trainer.sanity_checking:
            self.ranking = Progress(sum(trainer.num_val_batches), f"validation after epoch {trainer.current_epoch}",
                                    unit="batches")

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._on(trainer) and not trainer.sanity_checking:
            self.ranking.update(1)

    def on_test_epoch_start(self, trainer, module) -> None:
        if self._on(trainer):
            self.ranking = Progress(sum(trainer.num_test_batches), "test", unit="batches")

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._on(trainer):
            self.ranking.update(1)


class EpochHistory(pl.Callback):
    """The rows of <stage>/history.json and the run's plot, one per training epoch: the epoch means
    that training_step logs (train/loss_<step>, train/mr_<step>, train/loss_rec_pop) and the
    validation metrics, as Lightning reduced them for the loggers, and `seconds`: the run's wall
    time from the start of fit to the end of the epoch, its validation included (a resumed run
    continues from the last finished epoch's; the lost part of an interrupted epoch is not
    counted), so a curve reads as time to a validation score. Its rows travel in the
    checkpoints, so a resumed run keeps the whole curve (mid-epoch, the resumed epoch's means
    cover the batches after the resume). Lightning's loggers cannot hold this: logger=none and
    fast_dev_run have none, W&B's files are not for reading back, and a CSVLogger deletes its
    file when a run resumes."""

    def __init__(self):
        self.rows: list[dict] = []
        self._val: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer, module) -> None:
        self._t0 = time.perf_counter() - (self.rows[-1].get("seconds", 0.0) if self.rows else 0.0)

    def on_validation_end(self, trainer, module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:   # not the final trainer.validate
            self._val = {f"val_{k}": float(trainer.callback_metrics[f"val/{k}"]) for k in VAL_KEYS}

    def on_train_epoch_end(self, trainer, module) -> None:
        # only this epoch's steps: callback_metrics keeps the keys of earlier epochs' step kinds
        epoch, steps = trainer.current_epoch, module.schedule.steps(trainer.current_epoch)
        names = [f"{kind}_{s}" for s in steps for kind in ("loss", "mr")] + ["loss_rec_pop"] * ("rec" in steps)
        logged = trainer.callback_metrics
        row = {"epoch": epoch, **{n: float(logged[k]) for n in names
                                  for k in (f"train/{n}_epoch", f"train/{n}") if k in logged}, **self._val,
               "seconds": round(time.perf_counter() - self._t0, 2)}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        self._val = {}

    def state_dict(self) -> dict:
        return {"rows": self.rows, "val": self._val}

    def load_state_dict(self, state: dict) -> None:
        self.rows, self._val = list(state["rows"]), dict(state["val"])


class CorpusData(pl.LightningDataModule):
    """Builds each epoch's documents from the corpus and cuts length-bucketed batches."""

    def __init__(self, builder: CorpusBuilder, schedule: Schedule, *, batch_size: int, max_tokens: int | None,
                 seed: int = 0, pad_id: int = 0):
        super().__init__()
        self.builder, self.schedule = builder, schedule
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.seed, self.pad_id = seed, pad_id
        self.n_items = builder.ds.n_items

    def documents(self, step: str, rng: np.random.Generator) -> Documents:
        b = self.builder
        if step == "L":
            return b.mixture("item", rng)
        if step == "aux":
            return b.mixture("item", rng, exclude=("collaborative",))
        if step in ("C", "warmup"):
            return b.mixture("word", rng)
        if step in ("rec", "seq"):
            return b.epoch("finetune", rng)
        if step == "rating":
            return b.mixture("rating", rng)
        raise ValueError(step)

    def epoch_batches(self, epoch: int, rank: int = 0, world_size: int = 1, progress=None) -> EpochBatches:
        """Epoch `epoch`'s batches (every step kind of the schedule, interleaved), as rank `rank` of
        `world_size` reads them: every rank cuts the same batches (the documents and the order
        depend only on seed and epoch), keeps every world_size-th one (equal counts per rank) and
        collates only those, as they are read."""
        rng = np.random.default_rng([self.seed, epoch])
        plan = []
        for step in self.schedule.steps(epoch):
            docs = self.documents(step, rng)
            sampler = LengthBucketSampler(docs.lengths, batch_size=self.batch_size, max_tokens=self.max_tokens,
                                          seed=self.seed * 1000 + len(plan))
            sampler.set_epoch(epoch)
            plan += [(docs, idx, step) for idx in sampler.batches()]
        if not plan:
            raise RunError(f"{self.schedule.stage} epoch {epoch} (steps {self.schedule.steps(epoch)}) has no training "
                           "documents: the corpus kinds these steps read are all off or empty for this data "
                           "(conf/corpus: collaborative, content, ...); turn one on or check the dataset's texts")
        order = rng.permutation(len(plan))   # interleave the steps of a mixed epoch
        order = order[rank:len(order) // world_size * world_size:world_size]
        return EpochBatches([plan[i] for i in order], epoch, progress, pad_id=self.pad_id)

    def train_dataloader(self):
        if self.trainer is None:
            return self.epoch_batches(0)
        loop = self.trainer.fit_loop.epoch_loop.batch_progress
        return self.epoch_batches(self.trainer.current_epoch, self.trainer.global_rank, self.trainer.world_size,
                                  progress=lambda: loop.current.processed)   # batches whose step finished

    def val_dataloader(self):
        return Batches(self.trainer.lightning_module.eval_batches("valid"))

    def test_dataloader(self):
        return Batches(self.trainer.lightning_module.eval_batches("test"))


class CLLM4RecModule(pl.LightningModule):
    def __init__(self, model: CLLM4Rec, builder: CorpusBuilder, schedule: Schedule, *, lr: float = StageConfig.lr,
                 lambda_mr: float = ModelConfig.lambda_mr, mr_reduction: str = ModelConfig.mr_reduction,
                 eval_batch_size: int = ModelConfig.eval_batch_size, eval_max_tokens: int = ModelConfig.eval_max_tokens,
                 pad_id: int = 0, backbone_lr: float | None = None, weight_decay: float = StageConfig.weight_decay,
                 lr_schedule: str = StageConfig.lr_schedule, warmup_ratio: float = StageConfig.warmup_ratio,
                 exclude_seen: bool = FinetuneConfig.exclude_seen):
        """The defaults are the config's (config.py); a run builds it from conf/stage.yaml."""
        super().__init__()
        self.model, self.builder, self.schedule = model, builder, schedule
        self.lr, self.lambda_mr, self.mr_reduction = lr, lambda_mr, mr_reduction
        self.backbone_lr, self.weight_decay = backbone_lr, weight_decay
        self.lr_schedule, self.warmup_ratio, self.exclude_seen = lr_schedule, warmup_ratio, exclude_seen
        self.eval_batch_size, self.eval_max_tokens = eval_batch_size, eval_max_tokens
        self.pad_id = pad_id
        self.strict_loading = False   # checkpoints leave out the frozen backbone weights
        self._eval_docs: dict[str, Documents] = {}
        self.results: dict[str, dict[str, float]] = {}   # the last validation / test metrics, all ranks
        self.checkpoint_valid_results: dict[str, float] | None = None   # those the loaded checkpoint was saved with
        # [J] the smoothed log training item frequency: the popularity reference of `loss_rec_pop`
        counts = torch.from_numpy(np.bincount(builder.train_item, minlength=builder.ds.n_items))
        self.register_buffer("pop_log_prob", CLLM4Rec.log_frequency(counts, builder.ds.n_items), persistent=False)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step, m = batch["step"], self.model
        ids, att = batch["input_ids"], batch["attention_mask"]
        if step == "rec":
            logits = m.recommend_logits(ids, att, batch["last_prompt_index"])   # [B, J]
            rows = torch.repeat_interleave(torch.arange(len(ids), device=ids.device),
                                           batch["target_offsets"].diff())
            targets = torch.zeros_like(logits).index_put_((rows, batch["target_items"]),
                                                          torch.ones_like(rows, dtype=logits.dtype))
            main = m.multinomial_nll(logits, targets)
            side = "collaborative"
            # the same NLL under popularity alone: a model that learns nothing personal sits here
            pop = -self.pop_log_prob[batch["target_items"]].sum() / len(ids)
            self.log("train/loss_rec_pop", pop, on_step=False, on_epoch=True, batch_size=ids.shape[0])
        elif step == "rating":   # the label is the main text's one token, right after the prompt
            tokens, _ = self.rating_levels()
            last = batch["last_prompt_index"]
            label = ids[torch.arange(len(ids), device=ids.device), last + 1]
            logits = m.rating_logits(ids, att, last, tokens)                     # [B, K]
            main = torch.nn.functional.cross_entropy(logits, (label[:, None] == tokens[None]).float().argmax(1))
            side = "collaborative"
        else:
            side = "collaborative" if step in ("L", "seq", "aux") else "content"
            main = m.lm_loss(ids, att, batch["main_mask"], side, exclude_seen=step == "seq" and self.exclude_seen)
        loss = main
        if step != "warmup" and self.lambda_mr > 0:
            mr = m.mutual_regularization(ids, side, self.mr_reduction)
            loss = loss + self.lambda_mr * mr
            self.log(f"train/mr_{step}", mr, on_step=True, on_epoch=True, batch_size=ids.shape[0])
        # per step and as the epoch's mean (Lightning's reduction, weighted by batch size): the
        # loggers' curves and EpochHistory's rows
        self.log(f"train/loss_{step}", main, on_step=True, on_epoch=True, prog_bar=True, batch_size=ids.shape[0])
        return loss

    def configure_optimizers(self):
        # ID tables (and the item bias) without weight decay: a row decays only when its token is in
        # the batch under Adam's per-row scaling, rare items would shrink for nothing; the backbone's
        # adapter or weights (lora/full) get weight_decay and their own rate
        ids = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        body = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
        groups = [{"params": ids, "weight_decay": 0.0}]
        if body:
            groups.append({"params": body, "weight_decay": self.weight_decay,
                           "lr": self.backbone_lr if self.backbone_lr is not None else self.lr})
        # = Adam where weight_decay is 0; fused: one kernel over all tensors, the same update (on 2
        # CPU cores the per-tensor loop over the ID tables cost more than the tiny backbone's step);
        # sparse gradients (model.sparse_user_rows) move only their rows (optim.py)
        fused = all(p.device.type in ("cpu", "cuda") for p in ids + body) and not (
            self._trainer is not None and str(self.trainer.precision).startswith("16"))   # fp16 loss scaling
        optimizer = AdamWSparseRows(groups, lr=self.lr, fused=fused or None)
        if self.lr_schedule == "constant" and self.warmup_ratio == 0:
            return optimizer
        from transformers import get_scheduler
        total = max(1, int(self.trainer.estimated_stepping_batches))
        name = "constant_with_warmup" if self.lr_schedule == "constant" else self.lr_schedule
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=int(self.warmup_ratio * total),
                                  num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # clipped here, not by Lightning's precision plugin, which refuses fused optimizers (for loss
        # scaling, which bf16 does not use; the optimizer is not fused under fp16) and cannot take the
        # sparse user rows' gradients
        if not gradient_clip_val:
            return
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if str(getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm) or "norm") == "norm":
            clip_grad_norm(params, gradient_clip_val)
        elif any(p.grad is not None and p.grad.is_sparse for p in params):
            raise RunError(f"trainer.gradient_clip_algorithm={gradient_clip_algorithm} cannot clip the sparse user "
                           "rows' gradients (model.sparse_user_rows=true): use the norm algorithm, or "
                           "model.sparse_user_rows=false")
        else:
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)

    def setup(self, stage: str) -> None:
        if self.model.user["collaborative"].sparse and self.trainer.world_size > 1:
            # DDP cannot reduce a sparse gradient that a step left undefined (the alternating
            # schedule leaves one side's table unused in every step), and only gloo reduces sparse ones
            for table in self.model.user.values():
                table.sparse = False
            print("model.sparse_user_rows: dense user rows under multi-process training", file=sys.stderr)

    # ------------------------------------------------------------------ evaluation
    def rating_levels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(level tokens [K], level values [K]) on this module's device."""
        scale = self.builder.rating_scale
        return (torch.as_tensor(scale.tokens, device=self.device),
                torch.as_tensor(scale.values, device=self.device))

    @torch.no_grad()
    def predict_ratings(self, docs: Documents, batch_size: int = 256) -> np.ndarray:
        """Rating prompts -> [D] expected ratings."""
        tokens, values = self.rating_levels()
        out = []
        for start in range(0, len(docs), batch_size):
            b = collate(docs, np.arange(start, min(start + batch_size, len(docs))), pad_id=self.pad_id)
            logits = self.model.rating_logits(b["input_ids"].to(self.device), b["attention_mask"].to(self.device),
                                              b["last_prompt_index"].to(self.device), tokens)
            out.append(self.model.expected_rating(logits, values).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def rating_metrics(self, part: str) -> dict[str, float]:
        """RMSE / MAE of the part's rating prompts, in eval mode (a tuned backbone's dropout off)."""
        docs, truth = self.builder.rating_prompts(part)
        training = self.training
        self.eval()
        try:
            return metrics.rating_errors(self.predict_ratings(docs), truth)
        finally:
            self.train(training)

    def eval_docs(self, part: str) -> Documents:
        if part not in self._eval_docs:
            self._eval_docs[part] = self.builder.eval_prompts(part)
        return self._eval_docs[part]

    @torch.no_grad()
    def score_users(self, users: torch.Tensor, part: str) -> torch.Tensor:
        """[B] user indices -> [B, J] item scores from the evaluation prompts."""
        docs = self.eval_docs(part)     # one document per user, in user order
        u = users.cpu().numpy()
        lengths = docs.lengths[u]
        # prompts of similar length share a batch (histories range from a few items to hundreds:
        # batches in user order would be mostly padding); scores go back to the users' order
        sampler = LengthBucketSampler(lengths, batch_size=self.eval_batch_size,
                                      max_tokens=max(self.eval_max_tokens, int(lengths.max(initial=1))),
                                      shuffle=False, pool=len(u) + 1)
        out = torch.empty(len(u), self.builder.ds.n_items, device=self.device)
        for idx in sampler.batches():
            b = collate(docs, u[idx], pad_id=self.pad_id)
            out[torch.as_tensor(idx, device=self.device)] = self.model.recommend_logits(
                b["input_ids"].to(self.device), b["attention_mask"].to(self.device),
                b["last_prompt_index"].to(self.device)).float()
        return out

    def ranking_sums(self, part: str) -> metrics.RankingSums:
        """An empty accumulator of the full-ranking metrics of `part` (valid: training items are
        seen; test: training + validation), at the cut-offs fine-tuning selects on."""
        ds = self.builder.ds
        seen = ds.matrix("train") if part == "valid" else ds.matrix("train", "valid")
        return metrics.RankingSums(seen, ds.matrix(part))

    def eval_batches(self, part: str) -> list[torch.Tensor]:
        """The users with a `part` target as batches of similar prompt length, one forward pass
        each; under data parallelism each rank keeps every world_size-th batch."""
        lengths = self.eval_docs(part).lengths
        users = np.flatnonzero(np.diff(self.builder.ds.matrix(part).indptr))   # those with a target
        sampler = LengthBucketSampler(lengths[users], batch_size=self.eval_batch_size,
                                      max_tokens=max(self.eval_max_tokens, int(lengths.max(initial=1))),
                                      shuffle=False, pool=len(users) + 1)
        batches = [torch.as_tensor(users[idx], dtype=torch.long) for idx in sampler.batches()]
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            batches = batches[trainer.global_rank::trainer.world_size]
        return batches

    def ranking_metrics(self, part: str) -> dict[str, float]:
        """The metrics of `part` over every user, in this process (no trainer needed)."""
        sums, batches = self.ranking_sums(part), self.eval_batches(part)
        progress = Progress(sum(map(len, batches)), f"ranking the {part} users", unit="users")
        for users in batches:
            sums.add(users.numpy(), self.score_users(users, part))
            progress.update(len(users))
        progress.close()
        return sums.means()

    # validation and test: Lightning loops over eval_batches (CorpusData's val/test dataloaders:
    # progress, sharded across ranks); the ranks' sums are added at the epoch's end, so every
    # rank sees the metrics of all users
    def on_validation_epoch_start(self) -> None:
        self._ranking = self.ranking_sums("valid")

    def on_test_epoch_start(self) -> None:
        self._ranking = self.ranking_sums("test")

    def validation_step(self, users, batch_idx):
        self._ranking.add(users.cpu().numpy(), self.score_users(users, "valid"))

    def test_step(self, users, batch_idx):
        self._ranking.add(users.cpu().numpy(), self.score_users(users, "test"))

    def _all_ranks(self, part: str) -> dict[str, float]:
        totals = self.trainer.strategy.reduce(self._ranking.totals.to(self.device), reduce_op="sum")
        self.results[part] = self._ranking.means(totals)
        return self.results[part]

    def on_validation_epoch_end(self) -> None:
        res = self._all_ranks("valid")
        for k in VAL_KEYS:
            self.log(f"val/{k}", res[k], sync_dist=True)   # equal on every rank already
        self.log("val/sum", sum(res[k] for k in VAL_KEYS), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        for k, v in self._all_ranks("test").items():
            self.log(f"test/{k}", float(v), sync_dist=True)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint["state_dict"]
        trained = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        for k in [k for k in sd if k.startswith("model.backbone.") and k not in trained]:
            del sd[k]   # the frozen backbone weights: rebuilt from backbone.name
        if self.trainer.state.fn == "fit" and "valid" in self.results:
            # this epoch's full validation metrics: after fit, the best checkpoint's are the
            # selected model's, and evaluating the validation users again would repeat them
            checkpoint["valid_results"] = dict(self.results["valid"])
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "numpy": [keys.tolist(), pos, has_gauss, gauss],
                             "python": list(random.getstate()[1])}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint_valid_results = checkpoint.get("valid_results")
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state(("MT19937", np.asarray(keys, np.uint32), pos, has_gauss, gauss))
            random.setstate((3, tuple(rng["python"]), None))
